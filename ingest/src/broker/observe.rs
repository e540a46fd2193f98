//! What the node reports about itself: the metrics snapshot a scrape reads, consumer-group
//! lag (computed here once, for every front end), and readiness.
//!
//! Group lag is the partition's high watermark as `describe_topic` reports it (the log end)
//! minus the group's committed offset, never negative; a partition the group never committed
//! has no lag. Lag in time is now minus the timestamp of the first record the group has not
//! consumed (the record at the committed offset, read from whichever tier holds it, here or at
//! the leader; remembered per offset, so a stuck group costs one read); 0 when caught up. It
//! trusts record timestamps: a producer that sets them far from now skews it. A scrape exports the lag only of groups this node coordinates, so a cluster
//! exports each group once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;

use proto::v1 as pb;

use super::Broker;
use crate::error::{Error, Result};
use crate::metrics::{GroupLag, GroupStat, Metrics, PartitionStat, ProcessStat, Snapshot};

/// One partition of a group's lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The group's committed offset, if it committed one.
    pub committed: Option<i64>,
    /// The partition's high watermark (the log end).
    pub high_watermark: i64,
    /// Now minus the timestamp of the first record not consumed (0 when caught up); `None`
    /// without a commit, or when that record could not be read.
    pub lag_ms: Option<i64>,
}

impl PartitionLag {
    /// Records between the committed offset and the high watermark; `None` without a commit.
    pub fn lag(&self) -> Option<i64> {
        self.committed.map(|c| (self.high_watermark - c).max(0))
    }
}

/// A group as `groups describe` and the console show it: its state and members, and each
/// partition it committed or its members own, with lag and owner.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub view: crate::group::GroupView,
    /// The node coordinating it, when one does.
    pub coordinator: Option<meta::NodeId>,
    /// In topic and partition order; `owner` is the member holding it now.
    pub partitions: Vec<(PartitionLag, Option<String>)>,
}

/// What [`Broker::browse`] read.
#[derive(Debug, Clone)]
pub struct Browsed {
    pub records: Vec<tier::Record>,
    /// `hot` or `cold` (this node's tiers), `leader` (another node's hot tier), or empty.
    pub source: &'static str,
    pub high_watermark: i64,
    pub log_start: i64,
}

/// Record timestamps remembered for lag in time, at most (then forgotten all at once).
const RECORD_TIMES_MAX: usize = 100_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a readiness probe waits for each store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Broker {
    /// The node's counters (front ends report their requests here).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Lag of each partition `group` committed, in topic and partition order. Partitions of
    /// a topic deleted since are left out.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        self.group_lag_with(group, []).await
    }

    /// [`Broker::group_lag`], plus a row (without a commit) for each of `also` the group did
    /// not commit: the partitions its members own, for `groups describe`.
    pub async fn group_lag_with(
        &self,
        group: &str,
        also: impl IntoIterator<Item = (String, u32)>,
    ) -> Result<Vec<PartitionLag>> {
        let mut rows: std::collections::BTreeMap<(String, u32), Option<i64>> = self
            .inner
            .meta
            .fetch_offsets(group, None)
            .await?
            .into_iter()
            .map(|o| ((o.topic, o.partition), Some(o.offset)))
            .collect();
        for k in also {
            rows.entry(k).or_insert(None);
        }
        let mut highs: HashMap<String, Option<Vec<i64>>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for ((topic, partition), committed) in rows {
            if !highs.contains_key(&topic) {
                let h = match self.describe_topic(&topic).await {
                    Ok(t) => Some(t.partitions.iter().map(|p| p.offsets.next).collect()),
                    Err(Error::UnknownTopic(_)) => None,
                    Err(e) => return Err(e),
                };
                highs.insert(topic.clone(), h);
            }
            let Some(Some(high)) = highs[&topic]
                .as_ref()
                .map(|h| h.get(partition as usize).copied())
            else {
                continue;
            };
            let lag_ms = match committed {
                Some(c) if c >= high => Some(0),
                Some(c) => self
                    .record_timestamp(&topic, partition, c)
                    .await
                    .map(|ts| (now_ms() - ts).max(0)),
                None => None,
            };
            out.push(PartitionLag {
                topic,
                partition,
                committed,
                high_watermark: high,
                lag_ms,
            });
        }
        Ok(out)
    }

    /// `group` described with its lag per partition (committed ones, and those its members
    /// own without a commit yet).
    pub async fn group_report(&self, group: &str) -> Result<GroupReport> {
        let (view, coordinator) = self.describe_group(group).await?;
        let owners: HashMap<(String, u32), String> = view
            .members
            .iter()
            .flat_map(|m| {
                m.owned
                    .iter()
                    .map(move |tp| (tp.clone(), m.member_id.clone()))
            })
            .collect();
        let partitions = self
            .group_lag_with(group, owners.keys().cloned())
            .await?
            .into_iter()
            .map(|r| {
                let owner = owners.get(&(r.topic.clone(), r.partition)).cloned();
                (r, owner)
            })
            .collect();
        Ok(GroupReport {
            view,
            coordinator,
            partitions,
        })
    }

    /// The timestamp of the first record at or after `offset`, from this node's tiers or the
    /// leader's; `None` when none can be read now (logged at debug). Remembered per offset.
    async fn record_timestamp(&self, topic: &str, partition: u32, offset: i64) -> Option<i64> {
        let key = ((topic.to_string(), partition), offset);
        let times = &self.inner.record_times;
        if let Some(ts) = times.lock().expect("record times lock poisoned").get(&key) {
            return Some(*ts);
        }
        let ts = match self.first_timestamp(topic, partition, offset).await {
            Ok(ts) => ts?,
            Err(e) => {
                tracing::debug!(topic, partition, offset, error = %e, "no record time for lag");
                return None;
            }
        };
        let mut t = times.lock().expect("record times lock poisoned");
        if t.len() >= RECORD_TIMES_MAX {
            t.clear();
        }
        t.insert(key, ts);
        Some(ts)
    }

    async fn first_timestamp(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<Option<i64>> {
        // One byte asks for one batch: its first record is the one wanted.
        Ok(self
            .browse(topic, partition, offset, 1)
            .await?
            .records
            .first()
            .map(|r| r.timestamp))
    }

    /// Records from `offset` (at least one batch, else about `max_bytes`) for a person or a
    /// report (the console's record browser, lag in time), from whichever tier holds them:
    /// this node's, or the leader's for records not yet in the object store. Not counted as
    /// records fetched.
    pub async fn browse(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Browsed> {
        let (_, storage) = self.partition(topic, partition).await?;
        let max_bytes = max_bytes.clamp(1, self.inner.cfg.limits.max_fetch_bytes);
        let tier = &self.inner.tier;
        let r = if self.led(topic, partition).is_some() {
            tier.read(&storage, partition, offset, max_bytes).await?
        } else {
            tier.read_committed(&storage, partition, offset, max_bytes)
                .await?
        };
        let here = Browsed {
            source: match r.source {
                tier::Source::Hot => "hot",
                tier::Source::Cold => "cold",
                tier::Source::None => "",
            },
            records: r.records,
            high_watermark: r.high_watermark,
            log_start: r.log_start_offset,
        };
        if !here.records.is_empty() || self.led(topic, partition).is_some() {
            return Ok(here);
        }
        // Not in the object store yet: the leader has it.
        let Some(leader) = self.leader_addr(topic, partition).await else {
            return Ok(here);
        };
        let unavailable = |s: tonic::Status| {
            Error::Unavailable(format!("the leader at {leader}: {}", s.message()))
        };
        let mut stream = self
            .peer(&leader)?
            .fetch(pb::FetchRequest {
                topic: topic.to_string(),
                partition,
                start: Some(pb::fetch_request::Start::Offset(offset)),
                max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
                max_records: 0,
                member: None,
                follow: false,
            })
            .await
            .map_err(unavailable)?
            .into_inner();
        let Some(m) = stream.message().await.map_err(unavailable)? else {
            return Ok(here);
        };
        Ok(Browsed {
            source: "leader",
            high_watermark: m.high_watermark,
            log_start: m.log_start_offset,
            records: m
                .records
                .into_iter()
                .map(|r| tier::Record {
                    offset: r.offset,
                    timestamp: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: crate::server::headers(r.headers),
                })
                .collect(),
        })
    }

    /// What a scrape reads now: partitions this node leads, groups it coordinates and their
    /// lag, the tiers' sizes and the process. A group whose lag cannot be read now is left
    /// out of this scrape (and logged).
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let tier = &self.inner.tier;
        let led: Vec<((String, u32), String)> = self
            .inner
            .led
            .read()
            .expect("led lock poisoned")
            .iter()
            .map(|(k, l)| (k.clone(), l.storage.clone()))
            .collect();
        let mut partitions = Vec::with_capacity(led.len());
        for ((topic, partition), storage) in led {
            // Closed meanwhile: not led any more.
            let Ok(o) = tier.offsets(&storage, partition) else {
                continue;
            };
            partitions.push(PartitionStat {
                topic,
                partition,
                log_start: o.log_start,
                log_end: o.next,
                committed: o.cold_next,
                upload_lag_seconds: o.upload_lag.as_secs_f64(),
                hot_bytes: o.hot_bytes,
                hot_segments: o.hot_segments,
                cold_bytes: o.cold_bytes,
                cold_objects: o.cold_segments,
            });
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));

        // Groups this node coordinates (or would be asked to: a group of simple commits has
        // no coordinator in memory), with members and generation from memory when loaded.
        let coordinated = self.coordinated_groups();
        let mut here: HashMap<String, (u64, Option<i64>)> = HashMap::new();
        match self.list_groups_here().await {
            Ok(listed) => {
                for g in listed {
                    here.insert(g.group, (g.members as u64, None));
                }
            }
            Err(e) => tracing::warn!(error = %e, "groups not listed for metrics"),
        }
        for (group, c) in coordinated {
            let view = c.state.lock().await.view();
            here.insert(
                group,
                (view.members.len() as u64, Some(i64::from(view.generation))),
            );
        }
        let mut groups = Vec::new();
        let mut lag = Vec::new();
        for (group, (members, generation)) in here {
            groups.push(GroupStat {
                group: group.clone(),
                members,
                generation,
            });
            match self.group_lag(&group).await {
                Ok(ps) => lag.extend(ps.into_iter().filter_map(|p| {
                    Some(GroupLag {
                        records: p.lag()?,
                        seconds: p.lag_ms.map(|ms| ms as f64 / 1000.0),
                        group: group.clone(),
                        topic: p.topic,
                        partition: p.partition,
                    })
                })),
                Err(e) => tracing::warn!(%group, error = %e, "group lag not read for metrics"),
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        let (cache_hits, cache_misses) = tier.cache_hits_and_misses();
        let until = *self
            .inner
            .lease_valid_until
            .lock()
            .expect("lease lock poisoned");
        let now = std::time::Instant::now();
        let lease_valid_seconds = if until >= now {
            (until - now).as_secs_f64()
        } else {
            -(now - until).as_secs_f64()
        };
        Snapshot {
            max_partition_series: self.inner.cfg.limits.metrics_partition_series,
            lease_valid_seconds,
            cache_hits,
            cache_misses,
            partitions,
            groups,
            lag,
            hot_budget_bytes: tier.config().hot_budget_bytes,
            hot_bytes: tier.hot_bytes(),
            cache_bytes: tier.cache_bytes().await,
            process: ProcessStat::read(),
        }
    }

    /// Whether the node can serve: started and not draining, its lease with the metadata
    /// store current, the metadata store and the object store answering. `Err` says what is
    /// wrong.
    pub async fn ready(&self) -> std::result::Result<(), String> {
        if self.inner.draining.is_cancelled() {
            return Err("the node is shutting down".into());
        }
        if self.lease_lapsed() {
            return Err("the node's lease with the metadata store lapsed".into());
        }
        match tokio::time::timeout(PROBE_TIMEOUT, self.inner.meta.list_nodes()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("metadata store: {e}")),
            Err(_) => return Err(format!("metadata store: no answer in {PROBE_TIMEOUT:?}")),
        }
        let tier = &self.inner.tier;
        let probe = tier.root().clone().join("readyz-probe");
        match tokio::time::timeout(PROBE_TIMEOUT, tier.store().head(&probe)).await {
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
            Ok(Err(e)) => Err(format!("object store: {e}")),
            Err(_) => Err(format!("object store: no answer in {PROBE_TIMEOUT:?}")),
        }
    }
}
