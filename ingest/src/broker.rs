//! [`Broker`]: the one core every front end (gRPC today, the Kafka wire protocol later) calls.
//!
//! It owns the node's leadership of partitions (through `meta`, under the node's lease) and the
//! storage core (`tier`). Topic metadata lives in `meta`; a topic's data is stored under the name
//! `<topic>.<topic id>`, so a topic deleted and created again never sees the old data. Which
//! node leads which partition is decided in [`cluster`].
//!
//! Invariants:
//! - a partition is open in the tier only while this node holds its leadership, with the epoch
//!   `meta` granted; that epoch fences the partition's cold-tier commits;
//! - appends happen only under a partition's open gate and while the node's lease is valid by
//!   its own clock; hand-off and step-down close the gate first, which waits out appends in
//!   flight, so nothing is appended after a partition's final upload;
//! - a produce request is appended as one batch: its accepted records get consecutive offsets;
//! - records over `max_record_bytes` are refused one by one; the rest of the request proceeds;
//! - a node that does not lead a partition answers produce with NOT_LEADER (naming the leader
//!   when it knows it) and serves reads of the committed (cold) part only.

mod cluster;
mod fetch;
mod groups;
mod maintain;
mod observe;
mod sql;

pub use fetch::{Fetched, OffsetSpec};
pub use groups::{FetchFence, GroupListing};
pub use maintain::Maintenance;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meta::{LeaseId, Meta, NodeId, PartitionOffset, TopicConfig, TopicMeta};
use proto::v1 as pb;
use proto::v1::tierlog_client::TierlogClient;
use tier::{BatchBuilder, Compression, Header, PartitionOffsets, ReadResult, RecordBatch, Tier};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
pub use observe::{Browsed, GroupReport, PartitionLag};

/// Settings of the ingest core.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: NodeId,
    /// Address other nodes and clients reach this node at.
    pub advertised_addr: String,
    /// Address Kafka clients reach this node at, when it serves the Kafka protocol.
    pub kafka_advertised_addr: Option<String>,
    /// Lease TTL of the node's registration and leaderships.
    pub lease_ttl: Duration,
    /// The largest record (key + value + headers) accepted.
    pub max_record_bytes: usize,
    pub limits: Limits,
    /// How long a led partition may stay closed for a reopen that keeps failing (after a failed
    /// fsync) before this node gives it up and the cluster passes this node over for it.
    pub reopen_give_up: Duration,
    pub groups: GroupSettings,
    /// Where the node counts what it does (the caller may wrap the object store and the
    /// metadata store with it before starting the node).
    pub metrics: Arc<Metrics>,
}

/// Settings of the consumer-group coordinator (`[groups]` in the node's settings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// A group's committed offsets are deleted once the group has had no members, and the
    /// offsets no commit, for this long (Kafka's `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: u64,
    /// How long a new classic-protocol group waits for more members before its first round
    /// ends (Kafka's `group.initial.rebalance.delay.ms`, 3 s): a set of consumers started
    /// together settles in one round instead of one per member.
    pub initial_rebalance_delay_ms: u64,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            offsets_retention_ms: 7 * 24 * 3_600_000,
            initial_rebalance_delay_ms: 3_000,
        }
    }
}

impl BrokerConfig {
    /// How this node registers in the cluster.
    fn node_info(&self) -> meta::NodeInfo {
        meta::NodeInfo {
            node_id: self.node_id,
            addr: self.advertised_addr.clone(),
            kafka_addr: self.kafka_advertised_addr.clone(),
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            advertised_addr: "127.0.0.1:7070".into(),
            kafka_advertised_addr: None,
            lease_ttl: Duration::from_secs(10),
            max_record_bytes: 1 << 20,
            limits: Limits::default(),
            reopen_give_up: Duration::from_secs(30),
            groups: GroupSettings::default(),
            metrics: Arc::default(),
        }
    }
}

/// What one request, one connection or the whole node may make the node create or hold. The
/// counts and sizes clients send are checked against these before they size anything; past a
/// limit the client gets a clear error ([`Error::LimitExceeded`]) or waits (back-pressure).
/// docs/limits.md lists every limit with its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Topics in the cluster.
    pub max_topics: usize,
    /// Partitions of one topic.
    pub max_partitions_per_topic: u32,
    /// Record bytes one fetch answer carries (about; at least one record): a request for more
    /// gets this much.
    pub max_fetch_bytes: usize,
    /// Record bytes read for fetches and not yet handed to the network, over the whole node:
    /// past it, fetches wait until earlier answers are sent.
    pub fetch_buffer_bytes: usize,
    /// Connections each front end's listener serves at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Requests served at once on one connection; more wait.
    pub max_requests_per_connection: usize,
    /// Partitions `/metrics` exports one series each for; a node leading more exports
    /// per-topic sums only (a scrape's size stays bounded).
    pub metrics_partition_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_topics: 10_000,
            max_partitions_per_topic: 10_000,
            max_fetch_bytes: 16 << 20,
            fetch_buffer_bytes: 256 << 20,
            max_connections: 4096,
            max_requests_per_connection: 1024,
            metrics_partition_series: 2_000,
        }
    }
}

impl Limits {
    /// Checks the limits themselves and names the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidRequest(m.to_string()));
        if self.max_topics == 0 || self.max_partitions_per_topic == 0 {
            return bad("max_topics and max_partitions_per_topic must be at least 1");
        }
        if self.max_fetch_bytes == 0 || self.fetch_buffer_bytes < self.max_fetch_bytes {
            return bad(
                "max_fetch_bytes must be at least 1 and fetch_buffer_bytes at least max_fetch_bytes",
            );
        }
        if u32::try_from(self.fetch_buffer_bytes).is_err() {
            return bad("fetch_buffer_bytes must be below 4 GiB");
        }
        if self.max_connections == 0 || self.max_requests_per_connection == 0 {
            return bad("max_connections and max_requests_per_connection must be at least 1");
        }
        Ok(())
    }
}

/// Record bytes of one fetch answer held against [`Limits::fetch_buffer_bytes`]: released when
/// dropped (once the answer is handed to the network).
#[derive(Debug)]
pub struct FetchPermit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

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
    /// The batch repeated one its idempotent producer had appended: `base_offset` is the
    /// original's and nothing was written.
    pub duplicate: bool,
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

/// Live nodes, topics and partition leaders, as [`Broker::cluster_view`] read them.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub nodes: Vec<meta::NodeInfo>,
    pub topics: Vec<TopicMeta>,
    pub leaders: HashMap<(String, u32), meta::Leader>,
}

type PartitionKey = (String, u32);

/// A partition this node leads.
#[derive(Debug)]
struct Led {
    epoch: u64,
    /// The name its data is stored under.
    storage: String,
    /// `true` while appends are accepted. Appends hold the read side; hand-off and step-down
    /// take the write side (waiting out appends in flight) and set it to `false`.
    open: Arc<tokio::sync::RwLock<bool>>,
}

#[derive(Debug)]
struct Inner {
    /// The cluster's id (`meta`'s, the same on every node).
    cluster_id: String,
    tier: Tier,
    meta: Meta,
    cfg: BrokerConfig,
    /// The lease the node's registration and leaderships hang on (replaced after it is lost).
    lease: Mutex<LeaseId>,
    /// By the node's own clock, the lease is valid until then: appends stop after it even when
    /// the metadata store cannot be asked (a paused or partitioned node stops acknowledging).
    lease_valid_until: Mutex<Instant>,
    topics: RwLock<HashMap<String, TopicMeta>>,
    led: RwLock<HashMap<PartitionKey, Arc<Led>>>,
    /// Leaders and node addresses as last read from `meta`, for NOT_LEADER hints.
    leaders: RwLock<HashMap<PartitionKey, NodeId>>,
    nodes: RwLock<HashMap<NodeId, String>>,
    /// Connections to other nodes (for their partitions' offsets), by address.
    peers: Mutex<HashMap<String, TierlogClient<Channel>>>,
    arrivals: Mutex<HashMap<PartitionKey, Arc<Notify>>>,
    /// One reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// Partitions that failed to open here: not tried again before the instant, and the delay
    /// after the next failure.
    take_backoff: Mutex<HashMap<PartitionKey, (Instant, Duration)>>,
    /// Partitions this node told the cluster it cannot open (`meta::Unable`): the word is taken
    /// back once it opens one of them again.
    passed_over: Mutex<std::collections::HashSet<PartitionKey>>,
    /// After rejoining under a new lease: until when, and which partitions this node led when
    /// the old lease was lost. See [`cluster`]'s module docs.
    rejoined: Mutex<Option<(Instant, std::collections::HashSet<PartitionKey>)>>,
    /// Wakes the controller (lease lost, topic created here).
    wake: Notify,
    cancel: CancellationToken,
    /// Cancelled when the node starts draining: waiting reads end, so open fetch streams close
    /// and the server's graceful shutdown can finish.
    draining: CancellationToken,
    /// Bytes of fetch answers not yet sent ([`Limits::fetch_buffer_bytes`] permits).
    fetch_buffer: Arc<tokio::sync::Semaphore>,
    /// Consumer groups this node coordinates.
    coordinated: Mutex<HashMap<String, Arc<groups::Coordinated>>>,
    /// The cluster's topics and partition counts as the coordinator last read them.
    group_topics: Mutex<Option<(Instant, groups::TopicPartitions)>>,
    /// Group records read to fence members' fetches at a node that does not coordinate them.
    group_fences: Mutex<HashMap<String, Arc<groups::FenceCopy>>>,
    /// Timestamps of records at committed offsets, for group lag in time (see [`observe`]).
    record_times: Mutex<HashMap<(PartitionKey, i64), i64>>,
    metrics: Arc<Metrics>,
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

/// Renews the node's lease once. `Ok(false)`: the lease no longer exists in the store (it
/// expired or was revoked), so neither do the leaderships attached to it.
async fn renew_lease(inner: &Inner) -> Result<bool> {
    let lease = *inner.lease.lock().expect("lease lock poisoned");
    let sent = Instant::now();
    match inner.meta.kv().keep_alive(lease).await {
        Ok(_) => {
            let mut until = inner.lease_valid_until.lock().expect("lease lock poisoned");
            // The store counts the TTL from when it received the renewal, which is after `sent`.
            *until = (*until).max(sent + inner.cfg.lease_ttl);
            Ok(true)
        }
        Err(meta::Error::LeaseNotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Broker {
    /// Registers the node under a new lease, keeps the lease alive, takes the partitions the
    /// cluster assigns it (a single node: all of them) and keeps following the cluster.
    pub async fn start(tier: Tier, meta: Meta, cfg: BrokerConfig) -> Result<Broker> {
        cfg.limits.validate()?;
        let cluster_id = meta.cluster_id().await?;
        // A crash leaves this node's previous lease (and its leaderships) alive for a TTL.
        meta.reclaim_node(cfg.node_id).await?;
        let granted_at = Instant::now();
        let lease = meta.kv().grant_lease(cfg.lease_ttl).await?;
        meta.register(&cfg.node_info(), lease).await?;
        let fetch_buffer = Arc::new(tokio::sync::Semaphore::new(cfg.limits.fetch_buffer_bytes));
        let metrics = cfg.metrics.clone();
        if metrics.enabled() {
            tier.observe_uploads(metrics.clone());
        }
        let broker = Broker {
            inner: Arc::new(Inner {
                cluster_id,
                fetch_buffer,
                lease_valid_until: Mutex::new(granted_at + cfg.lease_ttl),
                tier,
                meta,
                cfg,
                lease: Mutex::new(lease),
                topics: RwLock::default(),
                led: RwLock::default(),
                leaders: RwLock::default(),
                nodes: RwLock::default(),
                peers: Mutex::default(),
                arrivals: Mutex::default(),
                reconciling: tokio::sync::Mutex::default(),
                take_backoff: Mutex::default(),
                passed_over: Mutex::default(),
                rejoined: Mutex::default(),
                wake: Notify::new(),
                cancel: CancellationToken::new(),
                draining: CancellationToken::new(),
                coordinated: Mutex::default(),
                group_topics: Mutex::default(),
                group_fences: Mutex::default(),
                record_times: Mutex::default(),
                metrics,
            }),
        };
        broker.spawn_keep_alive();
        if let Err(e) = broker.reconcile().await {
            tracing::warn!(error = %e, "first reconciliation failed; retrying in the background");
        }
        broker.spawn_controller();
        broker.spawn_group_ticker();
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
                match renew_lease(&inner).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("the node's lease is gone; stepping down");
                        inner.wake.notify_one();
                    }
                    Err(e) => tracing::error!(error = %e, "lease keep-alive failed"),
                }
            }
        });
    }

    /// `true` once the lease may have expired by the node's own clock.
    fn lease_lapsed(&self) -> bool {
        Instant::now()
            >= *self
                .inner
                .lease_valid_until
                .lock()
                .expect("lease lock poisoned")
    }

    fn led(&self, topic: &str, partition: u32) -> Option<Arc<Led>> {
        self.inner
            .led
            .read()
            .expect("led lock poisoned")
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// NOT_LEADER for a partition, naming the leader's address when it is known.
    async fn not_leader(&self, topic: &str, partition: u32, why: &str) -> Error {
        Error::NotLeader {
            topic: topic.to_string(),
            partition,
            leader: self.leader_addr(topic, partition).await,
            why: why.to_string(),
        }
    }

    /// The address of another node leading the partition, when it is known: from the cached
    /// view, else from `meta` (the cache may predate the latest election).
    async fn leader_addr(&self, topic: &str, partition: u32) -> Option<String> {
        let me = self.inner.cfg.node_id;
        let key = (topic.to_string(), partition);
        let cached = self
            .inner
            .leaders
            .read()
            .expect("leaders lock poisoned")
            .get(&key)
            .copied()
            .filter(|&n| n != me);
        let leader = match cached {
            Some(n) => n,
            None => match self.inner.meta.current_leader(topic, partition).await {
                Ok(Some(l)) if l.node_id != me => {
                    self.inner
                        .leaders
                        .write()
                        .expect("leaders lock poisoned")
                        .insert(key, l.node_id);
                    l.node_id
                }
                _ => return None,
            },
        };
        self.node_addr(leader).await
    }

    /// The node's address by id (from the cached view, else `meta`).
    async fn node_addr(&self, node: NodeId) -> Option<String> {
        let cached = self
            .inner
            .nodes
            .read()
            .expect("nodes lock poisoned")
            .get(&node)
            .cloned();
        match cached {
            Some(a) => Some(a),
            None => self
                .inner
                .meta
                .list_nodes()
                .await
                .ok()?
                .into_iter()
                .find(|n| n.node_id == node)
                .map(|n| n.addr),
        }
    }

    /// The storage name of a partition this node leads; NOT_LEADER otherwise.
    async fn led_storage(&self, topic: &str, partition: u32) -> Result<String> {
        let (_, storage) = self.partition(topic, partition).await?;
        if self.led(topic, partition).is_none() {
            return Err(self
                .not_leader(topic, partition, "this node does not lead it")
                .await);
        }
        Ok(storage)
    }

    /// A tier error about a partition that was closed under us (hand-off) or taken over
    /// becomes NOT_LEADER.
    async fn tier_error(&self, topic: &str, partition: u32, e: tier::Error) -> Error {
        match e {
            tier::Error::UnknownPartition { .. } => {
                self.not_leader(topic, partition, "it was handed to another node")
                    .await
            }
            tier::Error::Fenced { .. } => {
                self.not_leader(topic, partition, "a newer leader took over")
                    .await
            }
            e => Error::Storage(e),
        }
    }

    /// A client for the node at `addr` (connected lazily, kept).
    fn peer(&self, addr: &str) -> Result<TierlogClient<Channel>> {
        let mut peers = self.inner.peers.lock().expect("peers lock poisoned");
        if let Some(c) = peers.get(addr) {
            return Ok(c.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::InvalidRequest(format!("node address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let c = TierlogClient::new(channel).max_decoding_message_size(64 << 20);
        peers.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    pub fn tier(&self) -> &Tier {
        &self.inner.tier
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
                self.inner
                    .topics
                    .write()
                    .expect("topics lock poisoned")
                    .insert(t.name.clone(), t.clone());
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

    /// Creates a topic and waits (up to the lease TTL) until every partition has a leader.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        meta::validate_topic_name(name).map_err(|e| match e {
            meta::Error::InvalidArgument(m) => Error::InvalidTopicName(m),
            other => Error::Meta(other),
        })?;
        let limits = &self.inner.cfg.limits;
        if config.partitions > limits.max_partitions_per_topic {
            return Err(Error::LimitExceeded {
                what: "partitions of one topic",
                asked: config.partitions.into(),
                limit: limits.max_partitions_per_topic.into(),
                setting: "limits.max_partitions_per_topic",
            });
        }
        // Checked before the create, not in its transaction: concurrent creates on several
        // nodes may pass the limit by a few.
        let topics = self.inner.meta.list_topics().await?.len();
        if topics >= limits.max_topics {
            return Err(Error::LimitExceeded {
                what: "topics in the cluster",
                asked: topics as u64 + 1,
                limit: limits.max_topics as u64,
                setting: "limits.max_topics",
            });
        }
        let t = self.inner.meta.create_topic(name, config).await?;
        if let Err(e) = self.reconcile().await {
            tracing::warn!(topic = name, error = %e, "reconciliation after create failed");
        }
        self.await_leaders(name, t.partitions()).await?;
        self.describe_topic(name).await
    }

    /// Changes a topic's settings by name ([`TopicConfig::set`]; `None` puts a setting's
    /// default back). With `replace`, every setting not named goes back to its default (Kafka's
    /// AlterConfigs); otherwise only those named change (IncrementalAlterConfigs). With
    /// `validate_only` nothing is written. Returns the topic as it is (or would be).
    pub async fn alter_topic_settings(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
        replace: bool,
        validate_only: bool,
    ) -> Result<TopicMeta> {
        let apply = |c: &mut TopicConfig| -> meta::Result<()> {
            if replace {
                let partitions = c.partitions;
                *c = TopicConfig::new(partitions);
            }
            for (k, v) in changes {
                c.set(k, v.as_deref())?;
            }
            Ok(())
        };
        if validate_only {
            let mut t = self.topic(name).await?;
            apply(&mut t.config)?;
            t.config.validate()?;
            return Ok(t);
        }
        let t = self.inner.meta.modify_topic_config(name, apply).await?;
        if let Err(e) = self.reconcile().await {
            tracing::warn!(topic = name, error = %e, "reconciliation after a settings change failed");
        }
        Ok(t)
    }

    /// Grows a topic to `count` partitions (Kafka's CreatePartitions); partitions are never
    /// removed. New partitions get leaders as created topics do. With `validate_only` nothing
    /// is written.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: u32,
        validate_only: bool,
    ) -> Result<TopicMeta> {
        let limits = &self.inner.cfg.limits;
        if count > limits.max_partitions_per_topic {
            return Err(Error::LimitExceeded {
                what: "partitions of one topic",
                asked: count.into(),
                limit: limits.max_partitions_per_topic.into(),
                setting: "limits.max_partitions_per_topic",
            });
        }
        let grow = |c: &mut TopicConfig| -> meta::Result<()> {
            if count <= c.partitions {
                return Err(meta::Error::InvalidArgument(format!(
                    "topic {name} has {} partitions; it can only grow, to more than that",
                    c.partitions
                )));
            }
            c.partitions = count;
            Ok(())
        };
        if validate_only {
            let mut t = self.topic(name).await?;
            grow(&mut t.config)?;
            return Ok(t);
        }
        let t = self.inner.meta.modify_topic_config(name, grow).await?;
        if let Err(e) = self.reconcile().await {
            tracing::warn!(topic = name, error = %e, "reconciliation after adding partitions failed");
        }
        self.await_leaders(name, t.partitions()).await?;
        tracing::info!(topic = name, partitions = count, "added partitions");
        Ok(t)
    }

    /// Deletes a topic: metadata first (so nobody produces to it), then every byte of the
    /// partitions this node leads; the other leaders delete theirs when they see it gone.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let t = self.inner.meta.delete_topic(name).await?;
        self.inner
            .topics
            .write()
            .expect("topics lock poisoned")
            .remove(name);
        let storage = storage_name(&t);
        for p in 0..t.partitions() {
            if let Some(led) = self.led(name, p).filter(|l| l.storage == storage) {
                self.retire(name, p, &led, cluster::Retire::Delete).await?;
            }
        }
        // A topic created again under the name starts with no group's offsets.
        let deleted = self.inner.meta.delete_topic_offsets(name).await?;
        if deleted > 0 {
            tracing::info!(
                topic = name,
                offsets = deleted,
                "deleted the topic's committed offsets"
            );
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

    /// The live nodes' addresses, from `meta` now.
    async fn node_addrs(&self) -> Result<HashMap<NodeId, String>> {
        Ok(self
            .inner
            .meta
            .list_nodes()
            .await?
            .into_iter()
            .map(|n| (n.node_id, n.addr))
            .collect())
    }

    /// Waits (up to the lease TTL) until each of the topic's first `partitions` partitions has a
    /// leader, reading the topic's leaders in one request at a time.
    async fn await_leaders(&self, name: &str, partitions: u32) -> Result<()> {
        let deadline = Instant::now() + self.inner.cfg.lease_ttl;
        while self.inner.meta.topic_leaders(name).await?.len() < partitions as usize
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        let t = self.topic(name).await?;
        let storage = storage_name(&t);
        let (nodes, leaders) = futures::try_join!(self.node_addrs(), async {
            Ok(self.inner.meta.topic_leaders(name).await?)
        })?;
        // Partitions a few at a time: asking a slow leader for its log end must not add up,
        // and a large topic must not become thousands of requests at once.
        let describe = |p: u32| {
            let (nodes, storage, leaders) = (&nodes, &storage, &leaders);
            async move {
                let leader = leaders.get(&p).copied();
                let addr = leader
                    .and_then(|l| nodes.get(&l.node_id).cloned())
                    .unwrap_or_default();
                let offsets = match self.led(name, p) {
                    Some(_) => self.inner.tier.offsets(storage, p)?,
                    None => self.remote_offsets(name, storage, p, &addr).await?,
                };
                Ok::<_, Error>(PartitionInfo {
                    partition: p,
                    leader: addr,
                    leader_epoch: leader.map_or(0, |l| l.epoch),
                    offsets,
                })
            }
        };
        use futures::{StreamExt as _, TryStreamExt as _};
        let partitions: Vec<PartitionInfo> = futures::stream::iter(0..t.partitions())
            .map(describe)
            .buffered(DESCRIBE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(TopicInfo {
            meta: t,
            partitions,
        })
    }

    /// The cluster as clients see it, read from `meta` now: live nodes, topics and the
    /// partitions' leaders.
    pub async fn cluster_view(&self) -> Result<ClusterView> {
        let (nodes, topics, leaders) = futures::try_join!(
            self.inner.meta.list_nodes(),
            self.inner.meta.list_topics(),
            self.inner.meta.list_leaders(),
        )?;
        Ok(ClusterView {
            nodes,
            topics,
            leaders: leaders
                .leaders
                .into_iter()
                .map(|l| ((l.topic, l.partition), l.leader))
                .collect(),
        })
    }

    /// Every topic, as `meta` has it now.
    pub async fn topic_metas(&self) -> Result<Vec<TopicMeta>> {
        Ok(self.inner.meta.list_topics().await?)
    }

    /// The cluster's id, the same on every node.
    pub fn cluster_id(&self) -> &str {
        &self.inner.cluster_id
    }

    /// The largest record this node accepts (`max_record_bytes`).
    pub fn max_record_bytes(&self) -> usize {
        self.inner.cfg.max_record_bytes
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// A partition led elsewhere: what its manifest says, with the log end asked of its leader
    /// (when that answers).
    async fn remote_offsets(
        &self,
        topic: &str,
        storage: &str,
        partition: u32,
        leader: &str,
    ) -> Result<PartitionOffsets> {
        let mut o = self
            .inner
            .tier
            .committed_offsets(storage, partition)
            .await?;
        if leader.is_empty() || leader == self.inner.cfg.advertised_addr {
            return Ok(o);
        }
        let asked = self
            .peer(leader)?
            .list_offsets(pb::ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                spec: Some(pb::list_offsets_request::Spec::Position(
                    pb::StartPosition::StartLatest as i32,
                )),
            })
            .await;
        match asked {
            Ok(r) => {
                let next = r.into_inner().offset;
                if next >= o.cold_next {
                    o.next = next;
                    o.durable_next = next;
                }
            }
            Err(e) => {
                tracing::debug!(topic, partition, leader, error = %e, "leader did not say its log end")
            }
        }
        Ok(o)
    }

    /// What `topic` accepts of a record: at most the node's `max_record_bytes`, or the
    /// topic's own `max.message.bytes` when that is lower; and a key, when it is compacted.
    async fn record_rules(&self, topic: &str) -> Result<RecordRules> {
        let node = self.inner.cfg.max_record_bytes;
        let t = self.topic(topic).await?;
        let own = t.config.max_record_bytes();
        Ok(RecordRules {
            topic: topic.to_string(),
            limit: own.map_or(node, |t| node.min(usize::try_from(t).unwrap_or(usize::MAX))),
            key_required: t.config.compacted(),
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
        producer: Option<tier::ProducerInfo>,
    ) -> Result<ProduceResult> {
        let (_, storage) = self.partition(topic, partition).await?;
        if records.is_empty() {
            return Err(Error::InvalidRequest(
                "a produce request needs at least one record".into(),
            ));
        }
        let rules = self.record_rules(topic).await?;
        let now = now_ms();
        let mut errors = Vec::new();
        let mut b = BatchBuilder::new(compression);
        if let Some(p) = producer {
            b = b.producer(p, false);
        }
        for (index, r) in records.iter().enumerate() {
            if let Err(e) = rules.check(index, r.key.as_ref(), r.value.as_ref(), &r.headers) {
                errors.push((index, e));
                continue;
            }
            let ts = match r.timestamp_ms {
                0 => now,
                ts if (1..=MAX_TIMESTAMP_MS).contains(&ts) => ts,
                ts => {
                    errors.push((
                        index,
                        Error::InvalidRequest(format!(
                            "record {index} has timestamp {ts}; timestamps are 1..={MAX_TIMESTAMP_MS} ms since 1970 (0 = now)"
                        )),
                    ));
                    continue;
                }
            };
            b.push(ts, r.key.as_deref(), r.value.as_deref(), &r.headers);
        }
        if producer.is_some_and(|p| p.producer_id >= 0) && !errors.is_empty() {
            return Ok(refuse_whole(records.len(), errors));
        }
        let accepted = b.len();
        if accepted == 0 {
            return Ok(ProduceResult {
                base_offset: -1,
                accepted,
                errors,
                duplicate: false,
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
        self.produce_batch_as(topic, partition, bytes, acks, false)
            .await
    }

    /// [`Broker::produce_batch`] that appends the batch whole or not at all, as Kafka does:
    /// when a record is refused, none is appended (and the result names each refused one).
    pub async fn produce_batch_whole(
        &self,
        topic: &str,
        partition: u32,
        bytes: Bytes,
        acks: Acks,
    ) -> Result<ProduceResult> {
        self.produce_batch_as(topic, partition, bytes, acks, true)
            .await
    }

    async fn produce_batch_as(
        &self,
        topic: &str,
        partition: u32,
        bytes: Bytes,
        acks: Acks,
        whole: bool,
    ) -> Result<ProduceResult> {
        // Leadership first: a node that does not lead the partition decodes nothing.
        let storage = self.led_storage(topic, partition).await?;
        let batch = RecordBatch::parse(bytes)
            .map_err(|e| Error::InvalidRequest(format!("record batch: {e}")))?;
        // An uncompressed batch no larger than the limit cannot hold an oversized record: skip
        // decoding it here (the tier still checks every record on append).
        let rules = self.record_rules(topic).await?;
        let compressed = batch.header().compression()? != Compression::None;
        if !compressed && batch.len() <= rules.limit && !rules.key_required {
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
            if let Err(e) = rules.check(index, r.key.as_ref(), r.value.as_ref(), &r.headers) {
                errors.push((index, e));
            }
        }
        let (batch, accepted) = if errors.is_empty() {
            (batch, records.len())
        } else if whole || batch.header().producer.producer_id >= 0 {
            return Ok(refuse_whole(records.len(), errors));
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
                    duplicate: false,
                });
            }
            (b.build()?, accepted)
        };
        self.append(topic, &storage, partition, batch, acks, accepted, errors)
            .await
    }

    /// Appends a checked batch and waits as `acks` asks.
    #[allow(clippy::too_many_arguments)]
    #[tracing::instrument(level = "debug", name = "produce", skip_all,
        fields(topic = %topic, partition = partition, records = batch.header().record_count, acks = ?acks))]
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
        let Some(led) = self.led(topic, partition) else {
            return Err(self
                .not_leader(topic, partition, "this node does not lead it")
                .await);
        };
        if self.lease_lapsed() {
            return Err(self
                .not_leader(
                    topic,
                    partition,
                    "this node's lease with the metadata store lapsed",
                )
                .await);
        }
        let gate = led.open.clone().read_owned().await;
        if !*gate {
            return Err(self
                .not_leader(topic, partition, "it is being handed over")
                .await);
        }
        let append = {
            let this = self.clone();
            let (topic, storage) = (topic.to_string(), storage.to_string());
            let (records, bytes) = (
                batch.header().record_count.max(0) as u64,
                batch.len() as u64,
            );
            let span = tracing::debug_span!("append");
            tracing::Instrument::instrument(
                async move {
                    let arrivals = this.arrivals(&topic, partition);
                    let r = this
                        .append_in_order(&arrivals, &storage, partition, batch)
                        .await;
                    drop(gate);
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => return Err(this.tier_error(&topic, partition, e).await),
                    };
                    if !r.duplicate {
                        this.inner.metrics.produced(&topic, records, bytes);
                    }
                    arrivals.notify_waiters();
                    Ok::<_, Error>(r)
                },
                span,
            )
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
                duplicate: false,
            });
        }
        let r = append.await?;
        if acks == Acks::All
            && let Err(e) = self
                .inner
                .tier
                .wait_committed(storage, partition, r.last_offset + 1)
                .instrument(tracing::debug_span!(
                    "await_upload",
                    end = r.last_offset + 1
                ))
                .await
        {
            return Err(self.tier_error(topic, partition, e).await);
        }
        Ok(ProduceResult {
            base_offset: r.base_offset,
            accepted,
            errors,
            duplicate: r.duplicate,
        })
    }

    /// Appends `batch`; a batch of an idempotent producer that arrived ahead of its
    /// predecessor (pipelined requests may be handled out of order) waits for it, for at most
    /// [`OVERTAKE_WAIT`], and is then refused as out of order (the producer sends it again).
    async fn append_in_order(
        &self,
        arrivals: &Notify,
        storage: &str,
        partition: u32,
        batch: RecordBatch,
    ) -> tier::Result<tier::AppendResult> {
        let deadline = tokio::time::Instant::now() + OVERTAKE_WAIT;
        loop {
            // Registered before the attempt, so an append in between is not missed.
            let appended = arrivals.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            match self
                .inner
                .tier
                .append(storage, partition, batch.clone())
                .await
            {
                Err(tier::Error::OutOfOrderSequence { expected, got, .. })
                    if overtakes(expected, got) && tokio::time::Instant::now() < deadline =>
                {
                    let _ = tokio::time::timeout_at(deadline, appended).await;
                }
                r => return r,
            }
        }
    }

    /// Resolves a start position to an offset. A node that does not lead the partition
    /// resolves only what the committed log answers (earliest, an explicit offset).
    pub async fn resolve(&self, topic: &str, partition: u32, at: StartAt) -> Result<i64> {
        let (_, storage) = self.partition(topic, partition).await?;
        if self.led(topic, partition).is_none() {
            return match at {
                StartAt::Offset(off) => Ok(off),
                StartAt::Earliest => Ok(self
                    .inner
                    .tier
                    .committed_offsets(&storage, partition)
                    .await?
                    .log_start),
                StartAt::Latest | StartAt::Timestamp(_) => Err(self
                    .not_leader(topic, partition, "this node does not lead it")
                    .await),
            };
        }
        let resolved = async {
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
        };
        match resolved.await {
            Ok(o) => Ok(o),
            Err(e) => Err(self.tier_error(topic, partition, e).await),
        }
    }

    /// The first offset with timestamp ≥ `ts`, or `None`.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<i64>> {
        let storage = self.led_storage(topic, partition).await?;
        match self
            .inner
            .tier
            .offset_for_timestamp(&storage, partition, ts)
            .await
        {
            Ok(o) => Ok(o),
            Err(e) => Err(self.tier_error(topic, partition, e).await),
        }
    }

    /// Stored batches of a partition this node leads, from the one holding `offset` (about
    /// `max_bytes`), with the log end as it was before the read; `None` when `offset` was
    /// uploaded and is no longer on local disk (read it from the object store).
    pub async fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<(Vec<RecordBatch>, i64)>> {
        let storage = self.led_storage(topic, partition).await?;
        match self
            .inner
            .tier
            .read_hot_batches(&storage, partition, offset, max_bytes)
            .await
        {
            Ok(r) => {
                if let Some((batches, _)) = &r {
                    self.count_fetched(topic, batches);
                }
                Ok(r)
            }
            Err(e) => Err(self.tier_error(topic, partition, e).await),
        }
    }

    /// Counts stored batches handed to a consumer.
    pub(crate) fn count_fetched(&self, topic: &str, batches: &[RecordBatch]) {
        let records = batches
            .iter()
            .map(|b| b.header().record_count.max(0) as u64)
            .sum();
        let bytes = batches.iter().map(|b| b.len() as u64).sum();
        self.inner.metrics.fetched(topic, records, bytes);
    }

    /// Counts records handed to a consumer (their keys, values and headers as bytes).
    fn count_records(&self, topic: &str, r: &ReadResult) {
        let bytes = r
            .records
            .iter()
            .map(|r| record_size(r.key.as_ref(), r.value.as_ref(), &r.headers) as u64)
            .sum();
        self.inner
            .metrics
            .fetched(topic, r.records.len() as u64, bytes);
    }

    /// Reads from `offset`; with `wait`, waits up to that long for records when caught up.
    /// `max_bytes` is cut to [`Limits::max_fetch_bytes`].
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        wait: Option<Duration>,
    ) -> Result<ReadResult> {
        Ok(self
            .read_held(topic, partition, offset, max_bytes, wait)
            .await?
            .0)
    }

    /// [`Broker::read`] for a front end that sends the answer: the permit holds its bytes
    /// against [`Limits::fetch_buffer_bytes`] until it is dropped, once the answer is sent. A
    /// read waits for the permit first when the node's fetch buffer is full; a read waiting for
    /// new records holds none while it waits.
    #[tracing::instrument(level = "debug", name = "read", skip_all,
        fields(topic = %topic, partition = partition, offset = offset, max_bytes = max_bytes))]
    pub async fn read_held(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
        wait: Option<Duration>,
    ) -> Result<(ReadResult, FetchPermit)> {
        let max_bytes = max_bytes.clamp(1, self.inner.cfg.limits.max_fetch_bytes);
        let (_, storage) = self.partition(topic, partition).await?;
        if self.led(topic, partition).is_none() {
            let permit = self.fetch_permit(max_bytes).await?;
            // Another node leads: serve what is committed; the rest is the leader's to serve.
            let r = self
                .inner
                .tier
                .read_committed(&storage, partition, offset, max_bytes)
                .await?;
            self.count_records(topic, &r);
            if r.records.is_empty() {
                return Err(self
                    .not_leader(
                        topic,
                        partition,
                        "this node serves only its committed records; newer ones are at the leader",
                    )
                    .await);
            }
            return Ok((r, permit));
        }
        let arrivals = self.arrivals(topic, partition);
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            // Register interest before reading, so an append between the read and the wait
            // still wakes us.
            let notified = arrivals.notified();
            let permit = self.fetch_permit(max_bytes).await?;
            let r = match self
                .inner
                .tier
                .read(&storage, partition, offset, max_bytes)
                .await
            {
                Ok(r) => r,
                Err(e) => return Err(self.tier_error(topic, partition, e).await),
            };
            let Some(deadline) = deadline else {
                self.count_records(topic, &r);
                return Ok((r, permit));
            };
            if !r.records.is_empty() || tokio::time::Instant::now() >= deadline {
                self.count_records(topic, &r);
                return Ok((r, permit));
            }
            drop(permit);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.inner.cancel.cancelled() => return Err(Error::ShuttingDown),
                _ = self.inner.draining.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }

    /// Holds `bytes` of the node's fetch buffer, waiting while it is full.
    async fn fetch_permit(&self, bytes: usize) -> Result<FetchPermit> {
        let permits = u32::try_from(bytes).expect("at most max_fetch_bytes, validated below 4 GiB");
        tokio::select! {
            biased;
            p = self.inner.fetch_buffer.clone().acquire_many_owned(permits) => {
                Ok(FetchPermit(p.map_err(|_| Error::ShuttingDown)?))
            }
            _ = self.inner.cancel.cancelled() => Err(Error::ShuttingDown),
            _ = self.inner.draining.cancelled() => Err(Error::ShuttingDown),
        }
    }

    /// Starts draining: reads waiting for new records end with [`Error::ShuttingDown`], so
    /// follow-mode fetch streams close. Call before stopping the server, then [`Broker::shutdown`].
    pub fn drain(&self) {
        self.inner.draining.cancel();
    }

    /// A new idempotent-producer identity: an id unique in the cluster, epoch 0.
    pub async fn init_producer(&self) -> Result<(i64, i16)> {
        let id = self.inner.meta.next_id("producer").await?;
        let id = i64::try_from(id)
            .map_err(|_| Error::InvalidRequest("producer ids are exhausted".into()))?;
        Ok((id, 0))
    }

    /// Commits a group's offsets without membership (a consumer that assigns partitions
    /// itself): accepted only while the group has no members. Members commit through
    /// [`Broker::commit_group_offsets`].
    pub async fn commit_offsets(&self, group: &str, offsets: Vec<PartitionOffset>) -> Result<()> {
        self.commit_group_offsets(group, "", -1, offsets).await
    }

    pub async fn fetch_offsets(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<Vec<PartitionOffset>> {
        Ok(self.inner.meta.fetch_offsets(group, topic).await?)
    }

    /// Graceful shutdown: stops following the cluster, seals and uploads every partition,
    /// resigns leaderships, revokes the lease (so other nodes take over at once).
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.draining.cancel();
        self.inner.cancel.cancel();
        // Wait out a reconciliation in flight, and keep others from starting.
        let _one = self.inner.reconciling.lock().await;
        let closed = self.inner.tier.close(true).await;
        let led: Vec<_> = self
            .inner
            .led
            .write()
            .expect("led lock poisoned")
            .drain()
            .collect();
        for ((topic, p), led) in led {
            if let Err(e) = self
                .inner
                .meta
                .resign_leadership(&topic, p, led.epoch)
                .await
            {
                tracing::warn!(topic, partition = p, error = %e, "could not resign leadership");
            }
        }
        let lease = *self.inner.lease.lock().expect("lease lock poisoned");
        if let Err(e) = self.inner.meta.kv().revoke_lease(lease).await {
            tracing::warn!(error = %e, "could not revoke the node's lease");
        }
        closed.map_err(Error::from)
    }
}

#[cfg(test)]
mod tests;

/// The latest record timestamp accepted: the end of year 9999, ms. Bounds the deltas a batch
/// stores, so none can overflow.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// How long a pipelined batch that got ahead of its predecessor waits for it.
const OVERTAKE_WAIT: Duration = Duration::from_millis(500);

/// Partitions a DescribeTopic asks about at once (their leaders are read in one request).
const DESCRIBE_CONCURRENCY: usize = 64;

/// Whether sequence `got` is ahead of `expected` (a later batch), with Kafka's wrap-around.
fn overtakes(expected: i32, got: i32) -> bool {
    let ahead = (i64::from(got) - i64::from(expected)).rem_euclid(i64::from(i32::MAX) + 1);
    ahead > 0 && ahead < 1 << 30
}

/// A batch appended whole or not at all (an idempotent producer's, whose sequence numbers
/// cover every record, or a Kafka producer's): when some records are refused (too large, a
/// bad timestamp), the others are refused too, naming why.
/// What a topic accepts of one record (see [`Broker::record_rules`]).
struct RecordRules {
    topic: String,
    limit: usize,
    key_required: bool,
}

impl RecordRules {
    fn check(
        &self,
        index: usize,
        key: Option<&Bytes>,
        value: Option<&Bytes>,
        headers: &[Header],
    ) -> Result<()> {
        let size = record_size(key, value, headers);
        if size > self.limit {
            return Err(Error::RecordTooLarge {
                index,
                size,
                limit: self.limit,
            });
        }
        if self.key_required && key.is_none() {
            return Err(Error::InvalidRecord {
                index,
                why: format!(
                    "has no key: topic {:?} is compacted (cleanup.policy=compact keeps each \
                     key's newest record), so every record needs one",
                    self.topic
                ),
            });
        }
        Ok(())
    }
}

fn refuse_whole(records: usize, mut errors: Vec<(usize, Error)>) -> ProduceResult {
    let refused: std::collections::BTreeSet<usize> = errors.iter().map(|(i, _)| *i).collect();
    for index in 0..records {
        if !refused.contains(&index) {
            errors.push((
                index,
                Error::InvalidRequest(format!(
                    "not appended: the batch is appended whole, and it also holds refused records ({refused:?})"
                )),
            ));
        }
    }
    errors.sort_by_key(|(i, _)| *i);
    ProduceResult {
        base_offset: -1,
        accepted: 0,
        errors,
        duplicate: false,
    }
}

/// The bytes of a record that count against the size limit: key, value and headers.
fn record_size(key: Option<&Bytes>, value: Option<&Bytes>, headers: &[Header]) -> usize {
    key.map_or(0, Bytes::len)
        + value.map_or(0, Bytes::len)
        + headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
            .sum::<usize>()
}
