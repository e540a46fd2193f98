//! [`Broker`]: the one core every front end (gRPC today, the Kafka wire protocol later) calls.
//!
//! It owns the node's leadership of partitions (through `meta`, under the node's lease) and the
//! storage core (`tier`). Topic metadata lives in `meta`; a topic's data is stored under the name
//! `<topic>.<topic id>`, so a topic deleted and created again never sees the old data.
//!
//! Invariants:
//! - a partition is open in the tier only while this node holds its leadership, with the epoch
//!   `meta` granted; that epoch fences the partition's cold-tier commits;
//! - a produce request is appended as one batch: its accepted records get consecutive offsets;
//! - records over `max_record_bytes` are refused one by one; the rest of the request proceeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meta::{LeaseId, Meta, NodeId, PartitionOffset, TopicConfig, TopicMeta};
use tier::{BatchBuilder, Compression, Header, PartitionOffsets, ReadResult, RecordBatch, Tier};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Settings of the ingest core.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: NodeId,
    /// Address other nodes and clients reach this node at.
    pub advertised_addr: String,
    /// Lease TTL of the node's registration and leaderships.
    pub lease_ttl: Duration,
    /// The largest record (key + value + headers) accepted.
    pub max_record_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_addr: "127.0.0.1:7070".into(),
            lease_ttl: Duration::from_secs(10),
            max_record_bytes: 1 << 20,
        }
    }
}

/// Acknowledgement level of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Return at once; nothing is reported.
    None,
    /// After the leader's hot-tier append (synced per the fsync policy).
    #[default]
    Leader,
    /// After the records are committed to the object store.
    All,
}

/// One record to produce.
#[derive(Debug, Clone, Default)]
pub struct ProduceRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch; 0 = now.
    pub timestamp_ms: i64,
}

/// The outcome of a produce request.
#[derive(Debug)]
pub struct ProduceResult {
    /// Offset of the first accepted record; -1 when none was accepted or acks = none.
    pub base_offset: i64,
    pub accepted: usize,
    /// Refused records by index in the request.
    pub errors: Vec<(usize, Error)>,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record with timestamp ≥ this (ms); the log end when there is none.
    Timestamp(i64),
}

/// A partition's state as described to users.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub partition: u32,
    pub leader: String,
    pub leader_epoch: u64,
    pub offsets: PartitionOffsets,
}

/// A topic as described to users.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub meta: TopicMeta,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Debug)]
struct Inner {
    tier: Tier,
    meta: Meta,
    cfg: BrokerConfig,
    lease: LeaseId,
    topics: RwLock<HashMap<String, TopicMeta>>,
    epochs: RwLock<HashMap<(String, u32), u64>>,
    arrivals: Mutex<HashMap<(String, u32), Arc<Notify>>>,
    cancel: CancellationToken,
    /// Cancelled when the node starts draining: waiting reads end, so open fetch streams close
    /// and the server's graceful shutdown can finish.
    draining: CancellationToken,
}

/// The ingest core. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The name a topic's data is stored under.
fn storage_name(t: &TopicMeta) -> String {
    format!("{}.{}", t.name, t.id)
}

impl Broker {
    /// Registers the node under a new lease, keeps the lease alive, and takes leadership of
    /// every partition of every topic (single node: all of them).
    pub async fn start(tier: Tier, meta: Meta, cfg: BrokerConfig) -> Result<Broker> {
        // A crash leaves this node's previous lease (and its leaderships) alive for a TTL.
        meta.reclaim_node(cfg.node_id).await?;
        let lease = meta.kv().grant_lease(cfg.lease_ttl).await?;
        meta.register_node(cfg.node_id, &cfg.advertised_addr, lease)
            .await?;
        let broker = Broker {
            inner: Arc::new(Inner {
                tier,
                meta,
                cfg,
                lease,
                topics: RwLock::default(),
                epochs: RwLock::default(),
                arrivals: Mutex::default(),
                cancel: CancellationToken::new(),
                draining: CancellationToken::new(),
            }),
        };
        broker.spawn_keep_alive();
        for t in broker.inner.meta.list_topics().await? {
            broker.open_topic(&t).await?;
        }
        Ok(broker)
    }

    fn spawn_keep_alive(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let every = inner.cfg.lease_ttl / 3;
            loop {
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Err(e) = inner.meta.kv().keep_alive(inner.lease).await {
                    tracing::error!(error = %e, "lease keep-alive failed");
                }
            }
        });
    }

    pub fn tier(&self) -> &Tier {
        &self.inner.tier
    }

    async fn open_topic(&self, t: &TopicMeta) -> Result<()> {
        let inner = &self.inner;
        let name = storage_name(t);
        for p in 0..t.partitions() {
            let epoch = inner
                .meta
                .acquire_leadership(&t.name, p, inner.cfg.node_id, inner.lease)
                .await?;
            inner.tier.open_partition(&name, p, epoch).await?;
            inner.tier.set_cold_retention(
                &name,
                p,
                tier::ColdRetention {
                    ms: t.config.retention_ms,
                    bytes: t.config.retention_bytes.map(|b| b.max(0) as u64),
                },
            )?;
            inner
                .epochs
                .write()
                .expect("epochs lock poisoned")
                .insert((t.name.clone(), p), epoch);
        }
        inner
            .topics
            .write()
            .expect("topics lock poisoned")
            .insert(t.name.clone(), t.clone());
        Ok(())
    }

    /// The topic's metadata (cached; `meta` is the source of truth).
    async fn topic(&self, name: &str) -> Result<TopicMeta> {
        if let Some(t) = self
            .inner
            .topics
            .read()
            .expect("topics lock poisoned")
            .get(name)
        {
            return Ok(t.clone());
        }
        match self.inner.meta.get_topic(name).await? {
            Some(t) => {
                self.open_topic(&t).await?;
                Ok(t)
            }
            None => Err(Error::UnknownTopic(name.to_string())),
        }
    }

    async fn partition(&self, topic: &str, partition: u32) -> Result<(TopicMeta, String)> {
        let t = self.topic(topic).await?;
        if partition >= t.partitions() {
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: t.partitions(),
            });
        }
        let name = storage_name(&t);
        Ok((t, name))
    }

    fn arrivals(&self, topic: &str, partition: u32) -> Arc<Notify> {
        self.inner
            .arrivals
            .lock()
            .expect("arrivals lock poisoned")
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        meta::validate_topic_name(name).map_err(|e| match e {
            meta::Error::InvalidArgument(m) => Error::InvalidTopicName(m),
            other => Error::Meta(other),
        })?;
        let t = self.inner.meta.create_topic(name, config).await?;
        self.open_topic(&t).await?;
        self.describe_topic(name).await
    }

    /// Deletes a topic: metadata first (so nobody produces to it), then every byte of its data.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let t = self.inner.meta.delete_topic(name).await?;
        self.inner
            .topics
            .write()
            .expect("topics lock poisoned")
            .remove(name);
        let storage = storage_name(&t);
        for p in 0..t.partitions() {
            self.inner.tier.remove_partition(&storage, p).await?;
            self.inner
                .epochs
                .write()
                .expect("epochs lock poisoned")
                .remove(&(name.to_string(), p));
        }
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self
            .inner
            .meta
            .list_topics()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let t = self.topic(name).await?;
        let storage = storage_name(&t);
        let mut partitions = Vec::new();
        for p in 0..t.partitions() {
            let leader = self.inner.meta.current_leader(name, p).await?;
            let addr = match &leader {
                Some(l) if l.node_id == self.inner.cfg.node_id => {
                    self.inner.cfg.advertised_addr.clone()
                }
                Some(l) => format!("node {}", l.node_id),
                None => String::new(),
            };
            partitions.push(PartitionInfo {
                partition: p,
                leader: addr,
                leader_epoch: leader.map_or(0, |l| l.epoch),
                offsets: self.inner.tier.offsets(&storage, p)?,
            });
        }
        Ok(TopicInfo {
            meta: t,
            partitions,
        })
    }

    /// Appends records to one partition as one batch. Oversized records are refused one by one.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<ProduceRecord>,
        acks: Acks,
        compression: Compression,
    ) -> Result<ProduceResult> {
        let (_, storage) = self.partition(topic, partition).await?;
        if records.is_empty() {
            return Err(Error::InvalidRequest(
                "a produce request needs at least one record".into(),
            ));
        }
        let limit = self.inner.cfg.max_record_bytes;
        let now = now_ms();
        let mut errors = Vec::new();
        let mut b = BatchBuilder::new(compression);
        for (index, r) in records.iter().enumerate() {
            let size = record_size(r.key.as_ref(), r.value.as_ref(), &r.headers);
            if size > limit {
                errors.push((index, Error::RecordTooLarge { index, size, limit }));
                continue;
            }
            let ts = if r.timestamp_ms == 0 {
                now
            } else {
                r.timestamp_ms
            };
            b.push(ts, r.key.as_deref(), r.value.as_deref(), &r.headers);
        }
        let accepted = b.len();
        if accepted == 0 {
            return Ok(ProduceResult {
                base_offset: -1,
                accepted,
                errors,
            });
        }
        let batch = b.build()?;
        self.append(topic, &storage, partition, batch, acks, accepted, errors)
            .await
    }

    /// Appends a record batch the producer built (Kafka v2, base offset 0). Every record is
    /// checked; the batch is stored as sent unless records over the size limit must be refused,
    /// in which case the others are re-batched (timestamps and producer fields kept) and appended.
    pub async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        bytes: Bytes,
        acks: Acks,
    ) -> Result<ProduceResult> {
        let (_, storage) = self.partition(topic, partition).await?;
        let batch = RecordBatch::parse(bytes)
            .map_err(|e| Error::InvalidRequest(format!("record batch: {e}")))?;
        // An uncompressed batch no larger than the limit cannot hold an oversized record: skip
        // decoding it here (the tier still checks every record on append).
        let limit = self.inner.cfg.max_record_bytes;
        let compressed = batch.header().compression()? != Compression::None;
        if !compressed && batch.len() <= limit {
            let accepted = batch.header().record_count.max(0) as usize;
            return self
                .append(
                    topic,
                    &storage,
                    partition,
                    batch,
                    acks,
                    accepted,
                    Vec::new(),
                )
                .await;
        }
        let records = batch
            .records()
            .map_err(|e| Error::InvalidRequest(format!("record batch: {e}")))?;
        let mut errors = Vec::new();
        for (index, r) in records.iter().enumerate() {
            let size = record_size(r.key.as_ref(), r.value.as_ref(), &r.headers);
            if size > limit {
                errors.push((index, Error::RecordTooLarge { index, size, limit }));
            }
        }
        let (batch, accepted) = if errors.is_empty() {
            (batch, records.len())
        } else {
            let h = batch.header();
            let mut b = BatchBuilder::new(batch.header().compression()?)
                .producer(h.producer, h.is_transactional());
            let refused: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
            for (i, r) in records.iter().enumerate() {
                if !refused.contains(&i) {
                    b.push(
                        r.timestamp,
                        r.key.as_deref(),
                        r.value.as_deref(),
                        &r.headers,
                    );
                }
            }
            let accepted = b.len();
            if accepted == 0 {
                return Ok(ProduceResult {
                    base_offset: -1,
                    accepted,
                    errors,
                });
            }
            (b.build()?, accepted)
        };
        self.append(topic, &storage, partition, batch, acks, accepted, errors)
            .await
    }

    /// Appends a checked batch and waits as `acks` asks.
    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        topic: &str,
        storage: &str,
        partition: u32,
        batch: RecordBatch,
        acks: Acks,
        accepted: usize,
        errors: Vec<(usize, Error)>,
    ) -> Result<ProduceResult> {
        let append = {
            let this = self.clone();
            let (topic, storage) = (topic.to_string(), storage.to_string());
            async move {
                let r = this.inner.tier.append(&storage, partition, batch).await?;
                this.arrivals(&topic, partition).notify_waiters();
                Ok::<_, Error>(r)
            }
        };
        if acks == Acks::None {
            tokio::spawn(async move {
                if let Err(e) = append.await {
                    tracing::warn!(error = %e, "acks=none append failed");
                }
            });
            return Ok(ProduceResult {
                base_offset: -1,
                accepted,
                errors,
            });
        }
        let r = append.await?;
        if acks == Acks::All {
            self.inner
                .tier
                .wait_committed(storage, partition, r.last_offset + 1)
                .await?;
        }
        Ok(ProduceResult {
            base_offset: r.base_offset,
            accepted,
            errors,
        })
    }

    /// Resolves a start position to an offset.
    pub async fn resolve(&self, topic: &str, partition: u32, at: StartAt) -> Result<i64> {
        let (_, storage) = self.partition(topic, partition).await?;
        let o = self.inner.tier.offsets(&storage, partition)?;
        Ok(match at {
            StartAt::Earliest => o.log_start,
            StartAt::Latest => o.next,
            StartAt::Offset(off) => off,
            StartAt::Timestamp(ts) => self
                .inner
                .tier
                .offset_for_timestamp(&storage, partition, ts)
                .await?
                .unwrap_or(o.next),
        })
    }

    /// The first offset with timestamp ≥ `ts`, or `None`.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<i64>> {
        let (_, storage) = self.partition(topic, partition).await?;
        Ok(self
            .inner
            .tier
            .offset_for_timestamp(&storage, partition, ts)
            .await?)
    }

    /// Reads from `offset`; with `wait`, waits up to that long for records when caught up.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        wait: Option<Duration>,
    ) -> Result<ReadResult> {
        let (_, storage) = self.partition(topic, partition).await?;
        let arrivals = self.arrivals(topic, partition);
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            // Register interest before reading, so an append between the read and the wait
            // still wakes us.
            let notified = arrivals.notified();
            let r = self
                .inner
                .tier
                .read(&storage, partition, offset, max_bytes)
                .await?;
            let Some(deadline) = deadline else {
                return Ok(r);
            };
            if !r.records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(r);
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.inner.cancel.cancelled() => return Err(Error::ShuttingDown),
                _ = self.inner.draining.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }

    /// Starts draining: reads waiting for new records end with [`Error::ShuttingDown`], so
    /// follow-mode fetch streams close. Call before stopping the server, then [`Broker::shutdown`].
    pub fn drain(&self) {
        self.inner.draining.cancel();
    }

    pub async fn commit_offsets(&self, group: &str, offsets: Vec<PartitionOffset>) -> Result<()> {
        if group.is_empty() {
            return Err(Error::InvalidRequest("the group id is empty".into()));
        }
        for o in &offsets {
            self.partition(&o.topic, o.partition).await?;
            if o.offset < 0 {
                return Err(Error::InvalidRequest(format!(
                    "offset {} is negative",
                    o.offset
                )));
            }
        }
        Ok(self.inner.meta.commit_offsets(group, &offsets).await?)
    }

    pub async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<PartitionOffset>> {
        Ok(self.inner.meta.fetch_offsets(group, topic).await?)
    }

    /// Graceful shutdown: seals and uploads every partition, resigns leaderships, revokes the
    /// lease.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.draining.cancel();
        self.inner.cancel.cancel();
        let closed = self.inner.tier.close(true).await;
        let epochs: Vec<_> = self
            .inner
            .epochs
            .read()
            .expect("epochs lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for ((topic, p), epoch) in epochs {
            if let Err(e) = self.inner.meta.resign_leadership(&topic, p, epoch).await {
                tracing::warn!(topic, partition = p, error = %e, "could not resign leadership");
            }
        }
        if let Err(e) = self.inner.meta.kv().revoke_lease(self.inner.lease).await {
            tracing::warn!(error = %e, "could not revoke the node's lease");
        }
        closed.map_err(Error::from)
    }
}

#[cfg(test)]
mod tests;

/// The bytes of a record that count against the size limit: key, value and headers.
fn record_size(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[Header]) -> usize {
    key.map_or(0, Bytes::len)
        + value.map_or(0, Bytes::len)
        + headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}
