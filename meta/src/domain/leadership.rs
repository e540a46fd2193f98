//! Partition leadership and fencing.
//!
//! Per partition there are two keys:
//! - `partitions/<topic>/<p>/epoch`: the last epoch granted, decimal text, **not** attached to
//!   any lease, so it survives leader loss, restarts and topic deletion. It only ever grows.
//! - `partitions/<topic>/<p>/leader`: JSON [`Leader`], attached to the leader's lease, so it
//!   vanishes when the leader dies.
//!
//! - `partitions/<topic>/<p>/unable/<node>`: JSON [`Unable`], attached to that node's lease:
//!   the node cannot open the partition now (its store or disk fails it), so the assignment
//!   passes it over until the time it names.
//!
//! Acquiring writes both in one txn, guarded by: the topic unchanged (and the partition in
//! range), the leader key absent or held by the same node under the same lease, and the epoch
//! unchanged. Hence epochs strictly increase across grants and at most one node holds a given
//! epoch. Fencing a write on the epoch is done with [`Meta::epoch_fence`] inside the writer's
//! own txn; [`Meta::check_epoch`] is the advisory (racy) form.

use std::collections::BTreeMap;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::keys::{PartitionKey, validate_topic_name};
use super::{
    LeaderEpoch, MAX_CAS_ATTEMPTS, Meta, NodeId, backoff, contention, decode_json, decode_number,
    encode_json, guard, guard_opt, take_gets,
};
use crate::domain::TopicMeta;
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, EventKind, LeaseId, Txn, TxnOp};

/// Who leads a partition, at which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub node_id: NodeId,
    pub epoch: LeaderEpoch,
}

/// A partition with its current leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLeader {
    pub topic: String,
    pub partition: u32,
    pub leader: Leader,
}

/// A node that cannot open a partition now: the assignment passes it over for that partition
/// until `until_ms` (Unix ms, by the reader's clock), or until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unable {
    pub topic: String,
    pub partition: u32,
    pub node_id: NodeId,
    pub until_ms: i64,
    /// Why, for people reading the cluster's state.
    pub reason: String,
}

/// All current leaders, read at `revision`: watch from `revision + 1` to follow changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSnapshot {
    pub leaders: Vec<PartitionLeader>,
    /// Nodes that said they cannot open a partition now (expired ones included: the reader
    /// compares `until_ms` with its clock).
    pub unable: Vec<Unable>,
    pub revision: i64,
}

/// A change of partition leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderEvent {
    /// A node acquired (or re-acquired) leadership.
    Elected {
        topic: String,
        partition: u32,
        leader: Leader,
        revision: i64,
    },
    /// The leader resigned, its lease ended, or the topic was deleted.
    Lost {
        topic: String,
        partition: u32,
        revision: i64,
    },
}

impl Meta {
    /// Makes `node_id` the leader of `topic`/`partition` under `lease` and returns its new
    /// epoch. Fails with [`Error::LeaderExists`] when another node (or the same node under
    /// another lease) leads; re-acquiring under the same lease bumps the epoch.
    pub async fn acquire_leadership(
        &self,
        topic: &str,
        partition: u32,
        node_id: NodeId,
        lease: LeaseId,
    ) -> Result<LeaderEpoch> {
        validate_topic_name(topic)?;
        let topic_key = self.keys.topic(topic);
        let leader_key = self.keys.leader(topic, partition);
        let epoch_key = self.keys.epoch(topic, partition);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let snapshot = Txn::new().and_then([
                TxnOp::get(topic_key.clone()),
                TxnOp::get(leader_key.clone()),
                TxnOp::get(epoch_key.clone()),
            ]);
            let [topic_kv, leader_kv, epoch_kv] = take_gets(self.kv.txn(snapshot).await?)?;
            let Some(topic_kv) = topic_kv else {
                return Err(Error::TopicNotFound {
                    topic: topic.to_owned(),
                });
            };
            let meta: TopicMeta = decode_json(&topic_kv)?;
            if partition >= meta.partitions() {
                return Err(Error::invalid(format!(
                    "topic {topic} has {} partitions, no partition {partition}",
                    meta.partitions()
                )));
            }
            if let Some(kv) = &leader_kv {
                let holder: Leader = decode_json(kv)?;
                if holder.node_id != node_id || kv.lease != Some(lease) {
                    return Err(Error::LeaderExists {
                        topic: topic.to_owned(),
                        partition,
                        holder: holder.node_id,
                        epoch: holder.epoch,
                    });
                }
            }
            let current = epoch_kv.as_ref().map(decode_number).transpose()?;
            let epoch = current.unwrap_or(0) + 1;
            let leader = Leader { node_id, epoch };
            let txn = Txn::new()
                .when([
                    guard(&topic_kv),
                    guard_opt(&leader_key, leader_kv.as_ref()),
                    guard_opt(&epoch_key, epoch_kv.as_ref()),
                ])
                .and_then([
                    TxnOp::put(epoch_key.clone(), epoch.to_string(), None),
                    TxnOp::put(leader_key.clone(), encode_json(&leader), Some(lease)),
                ]);
            if self.kv.txn(txn).await?.succeeded {
                tracing::info!(
                    topic,
                    partition,
                    node_id,
                    epoch,
                    "acquired partition leadership"
                );
                return Ok(epoch);
            }
            backoff(attempt).await;
        }
        Err(contention(format!(
            "acquire_leadership({topic}/{partition})"
        )))
    }

    pub async fn current_leader(&self, topic: &str, partition: u32) -> Result<Option<Leader>> {
        validate_topic_name(topic)?;
        let kv = self
            .kv
            .get(self.keys.leader(topic, partition).as_bytes())
            .await?;
        kv.map(|kv| decode_json(&kv)).transpose()
    }

    /// The current leaders of every partition of `topic` that has one, in one read (a
    /// topic's partitions are never asked one request each: a large topic would send that
    /// many requests at once).
    pub async fn topic_leaders(&self, topic: &str) -> Result<BTreeMap<u32, Leader>> {
        validate_topic_name(topic)?;
        let prefix = format!("{}{topic}/", self.keys.partitions());
        let range = self.kv.range(prefix.as_bytes(), None).await?;
        let mut out = BTreeMap::new();
        for kv in &range.kvs {
            if let Some((t, partition, PartitionKey::Leader)) =
                self.keys.parse_partition_key(&kv.key)
                && t == topic
            {
                out.insert(partition, decode_json(kv)?);
            }
        }
        Ok(out)
    }

    /// Gives up leadership held at `epoch`. Returns `false` (and changes nothing) when the
    /// partition is not led at that epoch any more.
    pub async fn resign_leadership(
        &self,
        topic: &str,
        partition: u32,
        epoch: LeaderEpoch,
    ) -> Result<bool> {
        validate_topic_name(topic)?;
        let key = self.keys.leader(topic, partition);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(kv) = self.kv.get(key.as_bytes()).await? else {
                return Ok(false);
            };
            let leader: Leader = decode_json(&kv)?;
            if leader.epoch != epoch {
                return Ok(false);
            }
            let txn = Txn::new()
                .when([guard(&kv)])
                .and_then([TxnOp::delete(key.clone())]);
            if self.kv.txn(txn).await?.succeeded {
                tracing::info!(topic, partition, epoch, "resigned partition leadership");
                return Ok(true);
            }
            backoff(attempt).await;
        }
        Err(contention(format!(
            "resign_leadership({topic}/{partition})"
        )))
    }

    /// `Ok` if `epoch` is the partition's latest epoch, [`Error::Fenced`] if a newer one was
    /// granted. Advisory only: to make a write conditional on the epoch, put
    /// [`Meta::epoch_fence`] into the write's txn.
    pub async fn check_epoch(&self, topic: &str, partition: u32, epoch: LeaderEpoch) -> Result<()> {
        validate_topic_name(topic)?;
        let kv = self
            .kv
            .get(self.keys.epoch(topic, partition).as_bytes())
            .await?;
        let current = kv.as_ref().map(decode_number).transpose()?.unwrap_or(0);
        match current.cmp(&epoch) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(Error::Fenced {
                topic: topic.to_owned(),
                partition,
                epoch,
                current,
            }),
            std::cmp::Ordering::Less => Err(Error::invalid(format!(
                "epoch {epoch} of {topic}/{partition} was never granted (latest is {current})"
            ))),
        }
    }

    /// A compare that holds only while `epoch` is the partition's latest epoch. Add it to a
    /// txn to make the txn's writes fenced.
    pub fn epoch_fence(&self, topic: &str, partition: u32, epoch: LeaderEpoch) -> Compare {
        Compare::value(
            self.keys.epoch(topic, partition),
            CompareOp::Equal,
            epoch.to_string(),
        )
    }

    /// Every partition's current leader, sorted by topic then partition.
    pub async fn list_leaders(&self) -> Result<LeaderSnapshot> {
        let range = self
            .kv
            .range(self.keys.partitions().as_bytes(), None)
            .await?;
        let mut leaders = Vec::new();
        let mut unable = Vec::new();
        for kv in &range.kvs {
            match self.keys.parse_partition_key(&kv.key) {
                Some((topic, partition, PartitionKey::Leader)) => {
                    leaders.push(PartitionLeader {
                        topic,
                        partition,
                        leader: decode_json(kv)?,
                    });
                }
                Some((_, _, PartitionKey::Unable(_))) => unable.push(decode_json(kv)?),
                _ => {}
            }
        }
        leaders.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(LeaderSnapshot {
            leaders,
            unable,
            revision: range.revision,
        })
    }

    /// Says that `node_id` cannot open `topic`/`partition` until `until_ms`, under the node's
    /// `lease` (so the word goes with the node). Overwrites an earlier word of the same node.
    pub async fn mark_unable(&self, unable: &Unable, lease: LeaseId) -> Result<()> {
        validate_topic_name(&unable.topic)?;
        let key = self
            .keys
            .unable(&unable.topic, unable.partition, unable.node_id);
        self.kv
            .put(key.as_bytes(), encode_json(unable), Some(lease))
            .await?;
        tracing::info!(
            topic = unable.topic,
            partition = unable.partition,
            node = unable.node_id,
            until_ms = unable.until_ms,
            reason = unable.reason,
            "node passed over for the partition"
        );
        Ok(())
    }

    /// Takes back `node_id`'s word that it cannot open the partition (it opened it).
    pub async fn clear_unable(&self, topic: &str, partition: u32, node_id: NodeId) -> Result<()> {
        validate_topic_name(topic)?;
        self.kv
            .delete(self.keys.unable(topic, partition, node_id).as_bytes())
            .await?;
        Ok(())
    }

    /// Follows leadership changes of all partitions, from `start_revision` when given.
    pub async fn watch_leaders(
        &self,
        start_revision: Option<i64>,
    ) -> Result<BoxStream<'static, Result<LeaderEvent>>> {
        let stream = self
            .kv
            .watch_prefix(self.keys.partitions().as_bytes(), start_revision)
            .await?;
        let keys = self.keys.clone();
        let events = stream.filter_map(move |item| {
            let event = item.and_then(|event| {
                let Some((topic, partition, PartitionKey::Leader)) =
                    keys.parse_partition_key(&event.kv.key)
                else {
                    return Ok(None);
                };
                Ok(Some(match event.kind {
                    EventKind::Put => LeaderEvent::Elected {
                        topic,
                        partition,
                        leader: decode_json(&event.kv)?,
                        revision: event.revision,
                    },
                    EventKind::Delete => LeaderEvent::Lost {
                        topic,
                        partition,
                        revision: event.revision,
                    },
                }))
            });
            futures::future::ready(event.transpose())
        });
        Ok(events.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_json_golden() {
        let leader = Leader {
            node_id: 3,
            epoch: 12,
        };
        assert_eq!(
            encode_json(&leader).as_ref(),
            br#"{"node_id":3,"epoch":12}"#
        );
    }
}
