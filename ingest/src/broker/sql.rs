//! SQL on a node: the catalog the query engine sees through the broker.
//!
//! Topics and their partitions come from `meta`; committed segments from the partition's
//! manifest (the leader's own state, or a fresh read of the manifest elsewhere). The hot tail
//! is included for the partitions this node leads; on a cluster, a partition led by another
//! node contributes its committed records only (its newest records are at most one flush
//! interval behind).
//!
//! Invariant: a snapshot's hot tail starts exactly at its cold view's `next_offset`.

use async_trait::async_trait;
use query::{Catalog, ColdView, PartitionSnapshot, QueryConfig, QueryEngine, TopicInfo};

use super::Broker;
use crate::error::{Error, Result};

/// Attempts at a consistent snapshot when retention removes the hot records being read.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// The broker as a query catalog.
#[derive(Debug)]
struct NodeCatalog {
    broker: Broker,
}

fn to_query(e: Error) -> query::Error {
    match e {
        Error::UnknownTopic(t) => query::Error::UnknownTopic(t),
        Error::Storage(t) => query::Error::Storage(t),
        e => query::Error::Catalog {
            retryable: e.is_retryable(),
            message: e.to_string(),
        },
    }
}

#[async_trait]
impl Catalog for NodeCatalog {
    async fn topics(&self) -> query::Result<Vec<TopicInfo>> {
        let topics = self
            .broker
            .inner
            .meta
            .list_topics()
            .await
            .map_err(|e| to_query(e.into()))?;
        Ok(topics
            .into_iter()
            .map(|t| TopicInfo {
                partitions: (0..t.partitions()).collect(),
                name: t.name,
            })
            .collect())
    }

    async fn snapshot(
        &self,
        topic: &str,
        partition: u32,
        hot: bool,
    ) -> query::Result<PartitionSnapshot> {
        let (_, storage) = self
            .broker
            .partition(topic, partition)
            .await
            .map_err(to_query)?;
        let tier = &self.broker.inner.tier;
        for _ in 0..SNAPSHOT_ATTEMPTS {
            let (state, segments) = tier.cold_segments(&storage, partition).await?;
            let cold = ColdView {
                start_offset: state.start_offset,
                next_offset: state.next_offset,
                segments,
            };
            if !hot || self.broker.led(topic, partition).is_none() {
                return Ok(PartitionSnapshot {
                    cold,
                    hot: Vec::new(),
                });
            }
            match tier
                .read_hot_arrow(&storage, partition, cold.next_offset, i64::MAX)
                .await
            {
                Ok(Some(hot)) => return Ok(PartitionSnapshot { cold, hot }),
                // Uploaded and removed from local disk since: the cold view is newer now.
                Ok(None) => continue,
                // Handed to another node meanwhile: what is committed is what there is here.
                Err(tier::Error::UnknownPartition { .. }) => {
                    return Ok(PartitionSnapshot {
                        cold,
                        hot: Vec::new(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(query::Error::Catalog {
            message: format!(
                "{topic}/{partition} kept moving to the object store while it was read; retry"
            ),
            retryable: true,
        })
    }
}

impl Broker {
    /// A SQL engine over this node's topics (its catalog holds a handle to the broker).
    pub fn query_engine(&self, cfg: QueryConfig) -> Result<QueryEngine> {
        let catalog = NodeCatalog {
            broker: self.clone(),
        };
        let store = self.inner.tier.store().clone();
        QueryEngine::new(std::sync::Arc::new(catalog), store, cfg)
            .map_err(|e| Error::InvalidRequest(format!("cannot start the SQL engine: {e}")))
    }
}
