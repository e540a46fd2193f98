//! SQL on a node: the catalog the query engine sees through the broker.
//!
//! Topics and their partitions come from `meta`; committed segments from the partition's
//! manifest (the leader's own state, or a fresh read of the manifest elsewhere). The hot tail
//! comes from local disk for partitions this node leads and from the leader (`FetchBatches`,
//! the stored batches as they are) for the others; a partition without a live leader
//! contributes its committed records.
//!
//! Invariant: a snapshot's hot tail starts exactly at its cold view's `next_offset` and ends at
//! the leader's log end as it was when the snapshot was taken. When the tail's start is no
//! longer hot (uploaded meanwhile) or the leadership moved, the cold view is read again; the
//! tail is read a chunk at a time while the query runs, and fails the query (retryably) if its
//! records leave the hot tier before they are read.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use proto::v1 as pb;
use query::{Catalog, ColdView, HotTail, PartitionSnapshot, QueryConfig, QueryEngine, TopicInfo};
use tier::RecordBatch;

use super::Broker;
use crate::error::{Error, Result};

/// Attempts at a consistent snapshot when retention removes the hot records being read.
const SNAPSHOT_ATTEMPTS: usize = 3;
/// Bytes of stored batches per read of a hot tail.
const HOT_CHUNK_BYTES: usize = 8 << 20;
/// Rows per Arrow batch of a hot tail.
const ROWS_PER_BATCH: usize = 8192;

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
        for attempt in 0..SNAPSHOT_ATTEMPTS {
            let (state, segments) = tier.cold_segments(&storage, partition, attempt > 0).await?;
            let cold = ColdView {
                start_offset: state.start_offset,
                next_offset: state.next_offset,
                segments,
            };
            let source = if !hot {
                None
            } else if self.broker.led(topic, partition).is_some() {
                Some(Source::Local)
            } else {
                // No leader now: nothing newer than what is committed can be reached.
                self.broker
                    .leader_addr(topic, partition)
                    .await
                    .map(Source::Leader)
            };
            let Some(source) = source else {
                return Ok(PartitionSnapshot { cold, hot: None });
            };
            // One batch from the tail's start: it is still hot there, and where the log ends.
            let from = cold.next_offset;
            let probe = self
                .broker
                .hot_chunk(&source, topic, partition, from, 1)
                .await?;
            match probe {
                Some((_, end)) => {
                    let tail = NodeHotTail {
                        broker: self.broker.clone(),
                        source,
                        topic: topic.to_string(),
                        partition,
                        offsets: from..end.max(from),
                    };
                    return Ok(PartitionSnapshot {
                        cold,
                        hot: Some(Arc::new(tail)),
                    });
                }
                // Uploaded (or handed over) since the cold view was read: read both again.
                None => continue,
            }
        }
        Err(query::Error::Catalog {
            message: format!(
                "{topic}/{partition} kept moving to the object store or to another node while it \
                 was read; retry"
            ),
            retryable: true,
        })
    }
}

/// Where a partition's hot tail is read from.
#[derive(Debug, Clone)]
enum Source {
    /// This node leads the partition.
    Local,
    /// The leader at this address does.
    Leader(String),
}

/// A partition's hot tail as of a snapshot, read from its source a chunk at a time.
#[derive(Debug)]
struct NodeHotTail {
    broker: Broker,
    source: Source,
    topic: String,
    partition: u32,
    offsets: Range<i64>,
}

#[async_trait]
impl HotTail for NodeHotTail {
    fn offsets(&self) -> Range<i64> {
        self.offsets.clone()
    }

    async fn read(&self, at: i64) -> query::Result<(Vec<arrow_array::RecordBatch>, i64)> {
        let (topic, partition) = (&self.topic, self.partition);
        if at >= self.offsets.end {
            return Ok((Vec::new(), at));
        }
        let chunk = self
            .broker
            .hot_chunk(&self.source, topic, partition, at, HOT_CHUNK_BYTES)
            .await?;
        let Some((batches, _)) = chunk else {
            return Err(query::Error::Catalog {
                message: format!(
                    "the newest records of {topic}/{partition} moved to the object store or to \
                     another node while the query ran; run it again"
                ),
                retryable: true,
            });
        };
        let Some(last) = batches.last() else {
            return Ok((Vec::new(), at));
        };
        let next = last.header().next_offset().max(at);
        let rows = tier::cold::parquet::batches_to_arrow(
            partition,
            &batches,
            at..self.offsets.end,
            ROWS_PER_BATCH,
        )?;
        Ok((rows, next))
    }
}

impl Broker {
    /// One read of stored batches of a partition from `at` (about `max_bytes`), with the log end
    /// as it was before the read; `None` when `at` is no longer hot at the source or the source
    /// no longer leads the partition.
    async fn hot_chunk(
        &self,
        source: &Source,
        topic: &str,
        partition: u32,
        at: i64,
        max_bytes: usize,
    ) -> query::Result<Option<(Vec<RecordBatch>, i64)>> {
        match source {
            // Handed to another node meanwhile: NOT_LEADER, like the remote case.
            Source::Local => match self.read_batches(topic, partition, at, max_bytes).await {
                Err(Error::NotLeader { .. }) => Ok(None),
                r => r.map_err(to_query),
            },
            Source::Leader(addr) => {
                let asked = self
                    .peer(addr)
                    .map_err(to_query)?
                    .fetch_batches(pb::FetchBatchesRequest {
                        topic: topic.to_string(),
                        partition,
                        offset: at,
                        max_bytes: max_bytes as u32,
                    })
                    .await;
                let r = match asked {
                    Ok(r) => r.into_inner(),
                    // Leadership moved since the address was looked up.
                    Err(s)
                        if pb::ErrorDetail::decode(s.details())
                            .is_ok_and(|d| d.code == pb::ErrorCode::NotLeader as i32) =>
                    {
                        return Ok(None);
                    }
                    Err(s) => {
                        return Err(query::Error::Catalog {
                            message: format!(
                                "reading the newest records of {topic}/{partition} from its \
                                 leader at {addr}: {} (the table committed.{topic} needs only \
                                 the object store)",
                                s.message()
                            ),
                            retryable: true,
                        });
                    }
                };
                if r.committed {
                    return Ok(None);
                }
                let batches = r
                    .batches
                    .into_iter()
                    .map(RecordBatch::parse)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| {
                        query::Error::Storage(tier::Error::Corrupt {
                            location: format!("a batch of {topic}/{partition} from {addr}"),
                            position: at as u64,
                            reason: e.to_string(),
                        })
                    })?;
                Ok(Some((batches, r.log_end_offset)))
            }
        }
    }
}

impl Broker {
    /// A SQL engine over this node's topics (its catalog holds a handle to the broker).
    pub fn query_engine(&self, cfg: QueryConfig) -> Result<QueryEngine> {
        let catalog = NodeCatalog {
            broker: self.clone(),
        };
        let store = self.inner.tier.store().clone();
        QueryEngine::new(Arc::new(catalog), store, cfg)
            .map_err(|e| Error::InvalidRequest(format!("cannot start the SQL engine: {e}")))
    }
}
