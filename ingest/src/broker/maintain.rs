//! Storage maintenance on demand (`tierlog storage gc | compact`): each partition's leader
//! merges its small cold objects or collects its garbage now, instead of on the schedule. A
//! node does it for the partitions it leads and asks the leaders of the others, once per node.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::v1 as pb;

use super::{Broker, storage_name};
use crate::error::Result;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Delete what the manifests no longer name, once older than the grace period (`dry_run`:
    /// list it only).
    Gc { dry_run: bool },
    /// Compact compacted topics by key, and merge runs of small cold objects, now.
    Compact,
}

impl Broker {
    /// Runs `what` on every partition of `topic` (every topic when `None`) at its leader: here
    /// for the partitions this node leads, and (unless `local_only`) through the other leaders
    /// for theirs. One partition's failure is reported in its answer, not for the whole call.
    pub async fn maintain(
        &self,
        topic: Option<&str>,
        what: Maintenance,
        local_only: bool,
    ) -> Result<Vec<pb::PartitionMaintenance>> {
        let topics = match topic {
            Some(t) => vec![self.topic(t).await?],
            None => self.inner.meta.list_topics().await?,
        };
        let nodes = self.node_addrs().await?;
        let mut out = Vec::new();
        // Leaders elsewhere, with the topics they lead a partition of.
        let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &topics {
            let storage = storage_name(t);
            // One read for the topic's leaders, not one per partition.
            let leaders = self.inner.meta.topic_leaders(&t.name).await?;
            for p in 0..t.partitions() {
                if self.led(&t.name, p).is_some() {
                    out.push(self.maintain_led(&t.name, &storage, p, what).await);
                    continue;
                }
                let addr = leaders.get(&p).and_then(|l| nodes.get(&l.node_id).cloned());
                match addr {
                    Some(addr) if !local_only && addr != self.inner.cfg.advertised_addr => {
                        let topics = elsewhere.entry(addr).or_default();
                        if !topics.contains(&t.name) {
                            topics.push(t.name.clone());
                        }
                    }
                    _ if local_only => {}
                    _ => out.push(pb::PartitionMaintenance {
                        topic: t.name.clone(),
                        partition: p,
                        error: "no node leads the partition now".into(),
                        ..Default::default()
                    }),
                }
            }
        }
        let (dry_run, action) = match what {
            Maintenance::Gc { dry_run } => (dry_run, pb::MaintainAction::MaintainGc),
            Maintenance::Compact => (false, pb::MaintainAction::MaintainCompact),
        };
        for (addr, topics) in elsewhere {
            for name in topics {
                let asked = self
                    .peer(&addr)?
                    .maintain(pb::MaintainRequest {
                        topic: name.clone(),
                        action: action as i32,
                        dry_run,
                        local_only: true,
                    })
                    .await;
                match asked {
                    Ok(r) => out.extend(r.into_inner().partitions),
                    Err(e) => out.push(pb::PartitionMaintenance {
                        topic: name,
                        leader: addr.clone(),
                        error: format!("the leader did not answer: {}", e.message()),
                        ..Default::default()
                    }),
                }
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }

    /// `what` on a partition this node leads.
    async fn maintain_led(
        &self,
        topic: &str,
        storage: &str,
        partition: u32,
        what: Maintenance,
    ) -> pb::PartitionMaintenance {
        let tier = &self.inner.tier;
        let mut answer = pb::PartitionMaintenance {
            topic: topic.to_string(),
            partition,
            leader: self.inner.cfg.advertised_addr.clone(),
            ..Default::default()
        };
        let done = match what {
            Maintenance::Compact => {
                async {
                    // Key compaction first (compacted topics), then merging what is left small.
                    if let Some(r) = tier.compact_now(storage, partition, true).await? {
                        answer.compacted_away = r.removed;
                    }
                    answer.merges = tier.merge_now(storage, partition).await?;
                    Ok(())
                }
                .await
            }
            Maintenance::Gc { dry_run } => {
                let grace = Duration::from_millis(tier.config().orphan_grace_ms);
                tier.collect_garbage(storage, partition, grace, dry_run)
                    .await
                    .map(|r| {
                        answer.pending = r.pending;
                        answer.garbage = r
                            .garbage
                            .into_iter()
                            .map(|g| pb::Garbage {
                                path: g.path,
                                bytes: g.bytes,
                                why: g.why.to_string(),
                            })
                            .collect();
                    })
            }
        };
        if let Err(e) = done {
            answer.error = e.to_string();
        }
        if let Ok(o) = tier.offsets(storage, partition) {
            answer.cold_segments = o.cold_segments;
            answer.cold_bytes = o.cold_bytes;
        }
        if let Ok(st) = tier.merge_status(storage, partition) {
            answer.compacted_below = st.compacted_below;
        }
        answer
    }
}
