//! Committed consumer-group offsets: `groups/<group>/offsets/<topic>/<p>` holds
//! `{"offset":N,"metadata":"..."}`. `<group>` is percent-encoded (see `keys`).
//!
//! A commit is one txn when it has at most `max_txn_ops - 1` partitions (etcd's limit, one op
//! left for the fence); larger commits are split into several txns, each atomic and each
//! fenced by the coordinator's claim when one is given. Deleting a topic deletes the offsets
//! every group committed for it ([`Meta::delete_topic_offsets`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::keys::{validate_group, validate_topic_name};
use super::{GroupClaim, Meta, decode_json, encode_json};
use crate::error::{Error, Result};
use crate::kv::{Txn, TxnOp};

/// One partition's committed position for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: i64,
    /// Opaque client metadata, stored as-is.
    pub metadata: String,
}

#[derive(Serialize, Deserialize)]
struct StoredOffset {
    offset: i64,
    metadata: String,
    /// When it was committed (Unix ms; 0 in offsets stored before this was kept).
    #[serde(default)]
    commit_ms: i64,
}

impl Meta {
    /// Commits offsets for `group`, unfenced (see the module docs for atomicity).
    pub async fn commit_offsets(&self, group: &str, offsets: &[PartitionOffset]) -> Result<()> {
        self.commit_offsets_as(group, None, offsets).await
    }

    /// Commits offsets for `group`; with a claim, every txn holds only while the claim does
    /// ([`Error::GroupFenced`] from the first that does not).
    pub async fn commit_offsets_as(
        &self,
        group: &str,
        claim: Option<&GroupClaim>,
        offsets: &[PartitionOffset],
    ) -> Result<()> {
        validate_group(group)?;
        let mut seen = BTreeSet::new();
        for o in offsets {
            validate_topic_name(&o.topic)?;
            if o.offset < 0 {
                return Err(Error::invalid(format!(
                    "offset for {}/{} must be >= 0, got {}",
                    o.topic, o.partition, o.offset
                )));
            }
            if !seen.insert((o.topic.as_str(), o.partition)) {
                return Err(Error::invalid(format!(
                    "partition {}/{} appears twice in one commit",
                    o.topic, o.partition
                )));
            }
        }
        let now_ms = self.clock.unix_millis();
        for chunk in offsets.chunks(self.max_txn_ops - 1) {
            let puts = chunk.iter().map(|o| {
                let value = StoredOffset {
                    offset: o.offset,
                    metadata: o.metadata.clone(),
                    commit_ms: now_ms,
                };
                let key = self.keys.offset(group, &o.topic, o.partition);
                TxnOp::put(key, encode_json(&value), None)
            });
            match claim {
                Some(claim) => self.fenced_txn(group, claim, puts).await?,
                None => {
                    self.kv.txn(Txn::new().and_then(puts)).await?;
                }
            }
        }
        tracing::debug!(group, partitions = offsets.len(), "committed offsets");
        Ok(())
    }

    /// Offsets committed by `group` (only for `topic` when given), sorted by topic and
    /// partition. Empty for an unknown group.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<PartitionOffset>> {
        validate_group(group)?;
        let prefix = match topic {
            Some(topic) => {
                validate_topic_name(topic)?;
                self.keys.group_topic_offsets(group, topic)
            }
            None => self.keys.group_offsets(group),
        };
        let range = self.kv.range(prefix.as_bytes(), None).await?;
        let mut out = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some((topic, partition)) = self.keys.parse_offset(group, &kv.key) else {
                return Err(Error::corrupt(
                    format!("key {:?}", String::from_utf8_lossy(&kv.key)),
                    "not a valid offset key",
                ));
            };
            let stored: StoredOffset = decode_json(kv)?;
            out.push(PartitionOffset {
                topic,
                partition,
                offset: stored.offset,
                metadata: stored.metadata,
            });
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// Groups with at least one committed offset, sorted.
    pub async fn list_groups(&self) -> Result<Vec<String>> {
        let range = self.kv.range(self.keys.groups().as_bytes(), None).await?;
        let groups: BTreeSet<String> = range
            .kvs
            .iter()
            .filter_map(|kv| self.keys.parse_group(&kv.key))
            .collect();
        Ok(groups.into_iter().collect())
    }

    /// Deletes `group`'s offsets committed before `cutoff_ms` (Unix ms), fenced by `claim`;
    /// returns how many. The caller checks the group is empty.
    pub async fn expire_offsets(
        &self,
        group: &str,
        claim: &GroupClaim,
        cutoff_ms: i64,
    ) -> Result<usize> {
        validate_group(group)?;
        let range = self
            .kv
            .range(self.keys.group_offsets(group).as_bytes(), None)
            .await?;
        let mut old = Vec::new();
        for kv in &range.kvs {
            let stored: StoredOffset = decode_json(kv)?;
            if stored.commit_ms < cutoff_ms {
                old.push(kv.key.clone());
            }
        }
        for chunk in old.chunks(self.max_txn_ops - 1) {
            let deletes = chunk.iter().map(|k| TxnOp::delete(k.clone()));
            self.fenced_txn(group, claim, deletes).await?;
        }
        if !old.is_empty() {
            tracing::info!(group, offsets = old.len(), "expired committed offsets");
        }
        Ok(old.len())
    }

    /// Deletes `group`'s committed offsets of these partitions, fenced by `claim` (Kafka's
    /// OffsetDelete). Partitions with nothing committed are ignored.
    pub async fn delete_offsets_as(
        &self,
        group: &str,
        claim: &GroupClaim,
        partitions: &[(String, u32)],
    ) -> Result<()> {
        validate_group(group)?;
        for (topic, _) in partitions {
            validate_topic_name(topic)?;
        }
        for chunk in partitions.chunks(self.max_txn_ops - 1) {
            let deletes = chunk
                .iter()
                .map(|(t, p)| TxnOp::delete(self.keys.offset(group, t, *p)));
            self.fenced_txn(group, claim, deletes).await?;
        }
        tracing::info!(
            group,
            partitions = partitions.len(),
            "deleted committed offsets"
        );
        Ok(())
    }

    /// Deletes the offsets every group committed for `topic` (the topic was deleted: a topic
    /// created again under the name starts clean). Returns how many were deleted.
    pub async fn delete_topic_offsets(&self, topic: &str) -> Result<u64> {
        validate_topic_name(topic)?;
        let mut deleted = 0;
        for group in self.list_groups().await? {
            let prefix = self.keys.group_topic_offsets(&group, topic);
            deleted += self.kv.delete_prefix(prefix.as_bytes()).await?.deleted;
        }
        Ok(deleted)
    }

    /// Deletes everything stored for `group`; `false` if there was nothing.
    pub async fn delete_group(&self, group: &str) -> Result<bool> {
        validate_group(group)?;
        let resp = self
            .kv
            .delete_prefix(self.keys.group(group).as_bytes())
            .await?;
        if resp.deleted > 0 {
            tracing::info!(group, keys = resp.deleted, "deleted consumer group");
        }
        Ok(resp.deleted > 0)
    }
}
