//! `client`: the Rust client of tierlog's gRPC API.
//!
//! - [`Client`]: topics, offsets, and the raw calls.
//! - [`Producer`]: batches records per partition by size and linger, partitions by key with
//!   [`partition_for_key`] (Kafka's default: murmur2 of the key, so the same key lands on the same
//!   partition as with Kafka clients), retries retriable errors with backoff, and pushes back on
//!   the caller (bounded queues) instead of buffering without limit. Order is kept per partition:
//!   one request in flight per partition.
//! - [`Consumer`]: reads partitions it assigns itself (all of a topic, or some), from a group's
//!   committed offsets when given one, seeks, and commits synchronously, asynchronously or
//!   automatically.
//! - [`GroupConsumer`]: a member of a consumer group; the group's coordinator shares the
//!   subscribed partitions among the members, with rebalance callbacks ([`Rebalance`]).

mod consumer;
mod group;
mod producer;

use proto::v1 as pb;
use proto::v1::tierlog_client::TierlogClient;
use tonic::transport::Channel;

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo, Tp};
pub use group::{GroupConfig, GroupConsumer, OffsetReset, Rebalance};
pub use producer::{Acks, DEFAULT_LINGER, MAX_IN_FLIGHT, Producer, ProducerConfig, RecordMetadata};
pub use proto::v1::{ErrorCode, Header, TopicDescription};

/// A client error: the server's stable code when it sent one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the tierlog server at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("{message}")]
    Server {
        code: ErrorCode,
        message: String,
        retriable: bool,
    },
    #[error("the producer is closed")]
    Closed,
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Server { retriable, .. } => *retriable,
            Error::Connect { .. } => true,
            Error::Closed => false,
        }
    }
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use prost::Message;
        match pb::ErrorDetail::decode(s.details()) {
            Ok(d) if d.code != 0 => Error::Server {
                code: ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Internal),
                message: d.message,
                retriable: d.retriable,
            },
            // No detail: the node did not answer this itself. A broken or refused connection
            // (a node died or restarts) is worth retrying, elsewhere if need be.
            _ => {
                let transport = matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Aborted
                );
                Error::Server {
                    code: if transport {
                        ErrorCode::Unavailable
                    } else {
                        ErrorCode::Internal
                    },
                    message: s.message().to_string(),
                    retriable: transport,
                }
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Kafka's murmur2 hash (as in the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a key: `(murmur2(key) & 0x7fffffff) % partitions`, Kafka's default
/// partitioner. Stable: it is part of the API contract, because it decides where history goes.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// A connection to a tierlog cluster. Cheap to clone.
///
/// Requests about one partition (produce, fetch, offsets) go to the partition's leader: the
/// client learns leaders from `DescribeTopic`, follows the leader a NOT_LEADER error names, and
/// forgets a leader that cannot be reached, so the next attempt asks again. Other requests go to
/// the node it connected to.
#[derive(Debug, Clone)]
pub struct Client {
    rpc: TierlogClient<Channel>,
    routes: std::sync::Arc<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Connections by node address (`host:port`).
    nodes: std::sync::Mutex<std::collections::HashMap<String, TierlogClient<Channel>>>,
    /// The leader's address per (topic, partition), as last learned.
    leaders: std::sync::Mutex<std::collections::HashMap<(String, u32), String>>,
    /// The coordinator's address per group, as last learned.
    coordinators: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// The transport endpoint of a node address (`host:port` or a URL), tuned as the client uses it.
pub fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    // Flow-control windows sized for record batches (the 64 KiB defaults would cap fetch
    // throughput at one window per round trip), as the node sets them for produce.
    Ok(tonic::transport::Endpoint::from_shared(url)?
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .connect_timeout(std::time::Duration::from_secs(3))
        .tcp_nodelay(true))
}

fn rpc_over(channel: Channel) -> TierlogClient<Channel> {
    TierlogClient::new(channel).max_decoding_message_size(64 << 20)
}

/// The leader address a NOT_LEADER status names, if any.
pub fn leader_hint(s: &tonic::Status) -> Option<String> {
    hint(s, ErrorCode::NotLeader)
}

/// The address an error with `code` names (NOT_LEADER, NOT_COORDINATOR), if any.
fn hint(s: &tonic::Status, code: ErrorCode) -> Option<String> {
    use prost::Message;
    pb::ErrorDetail::decode(s.details())
        .ok()
        .filter(|d| d.code == code as i32 && !d.leader.is_empty())
        .map(|d| d.leader)
}

impl Client {
    /// Connects to the first reachable of `addrs`: one or more comma-separated `host:port` (or
    /// `http://host:port`) of nodes of the cluster.
    pub async fn connect(addrs: &str) -> Result<Client> {
        let mut last = None;
        for addr in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let connect_error = |source| Error::Connect {
                addr: addr.to_string(),
                source,
            };
            let channel = match endpoint(addr).map_err(connect_error) {
                Ok(e) => e.connect().await.map_err(connect_error),
                Err(e) => Err(e),
            };
            match channel {
                Ok(channel) => {
                    let rpc = rpc_over(channel);
                    let client = Client {
                        rpc: rpc.clone(),
                        routes: std::sync::Arc::default(),
                    };
                    let key = addr.trim_start_matches("http://").to_string();
                    client
                        .routes
                        .nodes
                        .lock()
                        .expect("routes lock")
                        .insert(key, rpc);
                    // The other addresses given: fallbacks for metadata (connected lazily).
                    for other in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                        let _ = client.node_rpc(other.trim_start_matches("http://"));
                    }
                    return Ok(client);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Server {
            code: ErrorCode::InvalidRequest,
            message: "no server address given".into(),
            retriable: false,
        }))
    }

    /// The generated gRPC client of the node this client connected to, for calls this wrapper
    /// does not cover.
    pub fn rpc(&self) -> TierlogClient<Channel> {
        self.rpc.clone()
    }

    /// The gRPC client of `topic`/`partition`'s leader (as far as this client knows; it asks
    /// the cluster when it does not know).
    pub async fn leader_rpc(&self, topic: &str, partition: u32) -> Result<TierlogClient<Channel>> {
        let key = (topic.to_string(), partition);
        let known = self
            .routes
            .leaders
            .lock()
            .expect("routes lock")
            .get(&key)
            .cloned();
        let addr = match known {
            Some(a) => a,
            None => {
                let d = self.describe_topic(topic).await?;
                let mut leaders = self.routes.leaders.lock().expect("routes lock");
                for p in &d.partitions {
                    if !p.leader.is_empty() {
                        leaders.insert((topic.to_string(), p.partition), p.leader.clone());
                    }
                }
                match leaders.get(&key) {
                    Some(a) => a.clone(),
                    None => return Ok(self.rpc()),
                }
            }
        };
        self.node_rpc(&addr)
    }

    fn node_rpc(&self, addr: &str) -> Result<TierlogClient<Channel>> {
        let mut nodes = self.routes.nodes.lock().expect("routes lock");
        if let Some(c) = nodes.get(addr) {
            return Ok(c.clone());
        }
        let e = endpoint(addr).map_err(|source| Error::Connect {
            addr: addr.to_string(),
            source,
        })?;
        let c = rpc_over(e.connect_lazy());
        nodes.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Learns from a failed partition request: a NOT_LEADER that names the leader moves the
    /// route there; any other retriable failure forgets the route, so the next attempt asks the
    /// cluster again. Returns whether the error named a new leader (retry at once).
    pub fn reroute(&self, topic: &str, partition: u32, status: &tonic::Status) -> bool {
        let key = (topic.to_string(), partition);
        let mut leaders = self.routes.leaders.lock().expect("routes lock");
        match leader_hint(status) {
            Some(addr) => leaders.insert(key, addr.clone()).as_deref() != Some(addr.as_str()),
            None => {
                leaders.remove(&key);
                false
            }
        }
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicDescription> {
        self.create_topic_with(name, partitions, &[]).await
    }

    /// Creates a topic with settings by Kafka's names (`cleanup.policy`, `retention.ms`, ...).
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        settings: &[(String, String)],
    ) -> Result<TopicDescription> {
        let r = self
            .rpc()
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                config: Some(pb::TopicConfig {
                    partitions,
                    settings: settings.iter().cloned().collect(),
                    ..Default::default()
                }),
            })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// Changes a topic's settings by Kafka's names (`None`: back to the default). Returns the
    /// topic as it is afterwards.
    pub async fn alter_topic(
        &self,
        name: &str,
        settings: &[(String, Option<String>)],
    ) -> Result<TopicDescription> {
        let r = self
            .rpc()
            .alter_topic(pb::AlterTopicRequest {
                name: name.into(),
                settings: settings
                    .iter()
                    .map(|(name, value)| pb::TopicSetting {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                validate_only: false,
            })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// Grows a topic to `count` partitions.
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<TopicDescription> {
        let r = self
            .rpc()
            .add_partitions(pb::AddPartitionsRequest {
                name: name.into(),
                count,
                validate_only: false,
            })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.rpc()
            .delete_topic(pb::DeleteTopicRequest { name: name.into() })
            .await?;
        Ok(())
    }

    pub async fn list_topics(&self) -> Result<Vec<String>> {
        Ok(self
            .rpc()
            .list_topics(pb::ListTopicsRequest {})
            .await?
            .into_inner()
            .names)
    }

    /// Runs a request that any node can answer: on the node this client connected to, and
    /// when that one cannot be reached (it may have died), on the other nodes it knows.
    async fn any_node<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(TierlogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let err = match call(self.rpc()).await {
            Ok(r) => return Ok(r),
            Err(s) => Error::from(s),
        };
        if !err.is_retriable() {
            return Err(err);
        }
        let others: Vec<TierlogClient<Channel>> = self
            .routes
            .nodes
            .lock()
            .expect("routes lock")
            .values()
            .cloned()
            .collect();
        for other in others {
            if let Ok(r) = call(other).await {
                return Ok(r);
            }
        }
        Err(err)
    }

    /// A topic's partitions, leaders and offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let req = pb::DescribeTopicRequest { name: name.into() };
        let r = self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.describe_topic(req).await }
            })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// An offset of `topic`/`partition` (earliest, latest, or the first at a timestamp; -1 when
    /// no record is that new), asked of its leader, following leader changes for a few attempts.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: pb::list_offsets_request::Spec,
    ) -> Result<i64> {
        let mut delay = std::time::Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rpc = self.leader_rpc(topic, partition).await?;
            let asked = rpc
                .list_offsets(pb::ListOffsetsRequest {
                    topic: topic.to_string(),
                    partition,
                    spec: Some(spec),
                })
                .await;
            match asked {
                Ok(r) => return Ok(r.into_inner().offset),
                Err(s) => {
                    let moved = self.reroute(topic, partition, &s);
                    let e = Error::from(s);
                    if !e.is_retriable() || attempt >= 8 {
                        return Err(e);
                    }
                    if !moved {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    }
                }
            }
        }
    }

    /// A new idempotent-producer identity: (producer id, epoch).
    pub async fn init_producer(&self) -> Result<(i64, i16)> {
        let r = self
            .any_node(|mut c| async move { c.init_producer(pb::InitProducerRequest {}).await })
            .await?
            .into_inner();
        Ok((r.producer_id, r.producer_epoch as i16))
    }

    /// A group's committed offsets (the next offset to read) for `topic` (all topics if empty).
    pub async fn fetch_offsets(&self, group: &str, topic: &str) -> Result<Vec<pb::GroupOffset>> {
        let req = pb::FetchOffsetsRequest {
            group: group.into(),
            topic: topic.into(),
        };
        let r = self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.fetch_offsets(req).await }
            })
            .await?;
        Ok(r.into_inner().offsets)
    }

    /// Commits offsets for a group that has no members (a consumer that assigns partitions
    /// itself). Members commit with [`Client::commit_member_offsets`].
    pub async fn commit_offsets(&self, group: &str, offsets: Vec<pb::GroupOffset>) -> Result<()> {
        self.commit_member_offsets(group, "", -1, offsets).await
    }

    /// Commits offsets as a member of a group at its current epoch, at the coordinator.
    pub async fn commit_member_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<pb::GroupOffset>,
    ) -> Result<()> {
        let req = pb::CommitOffsetsRequest {
            group: group.into(),
            offsets,
            member_id: member_id.into(),
            member_epoch,
        };
        self.coordinator_call(group, |mut c| {
            let req = req.clone();
            async move { c.commit_offsets(req).await }
        })
        .await?;
        Ok(())
    }

    /// The node coordinating `group`: (node id, address).
    pub async fn find_coordinator(&self, group: &str) -> Result<(u64, String)> {
        let req = pb::FindCoordinatorRequest {
            group: group.into(),
        };
        let r = self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.find_coordinator(req).await }
            })
            .await?
            .into_inner();
        Ok((r.node_id, r.addr))
    }

    /// Runs a request at `group`'s coordinator, finding it first and following
    /// NOT_COORDINATOR (and other retriable failures) for a few attempts.
    pub async fn coordinator_call<T, F, Fut>(&self, group: &str, call: F) -> Result<T>
    where
        F: Fn(TierlogClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut delay = std::time::Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let known = self
                .routes
                .coordinators
                .lock()
                .expect("routes lock")
                .get(group)
                .cloned();
            let addr = match known {
                Some(a) => a,
                None => match self.find_coordinator(group).await {
                    Ok((_, a)) => a,
                    Err(e) if e.is_retriable() && attempt < 10 => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let rpc = self.node_rpc(&addr)?;
            let s = match call(rpc).await {
                Ok(r) => {
                    self.routes
                        .coordinators
                        .lock()
                        .expect("routes lock")
                        .insert(group.to_string(), addr);
                    return Ok(r);
                }
                Err(s) => s,
            };
            let moved = {
                let mut routes = self.routes.coordinators.lock().expect("routes lock");
                match hint(&s, ErrorCode::NotCoordinator) {
                    Some(a) => routes.insert(group.to_string(), a.clone()).as_deref() != Some(&a),
                    None => {
                        routes.remove(group);
                        false
                    }
                }
            };
            let e = Error::from(s);
            if !e.is_retriable() || attempt >= 10 {
                return Err(e);
            }
            if !moved {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(2));
            }
        }
    }

    /// One heartbeat of a group member, at the coordinator.
    pub async fn group_heartbeat(
        &self,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<pb::GroupHeartbeatResponse> {
        let group = req.group.clone();
        Ok(self
            .coordinator_call(&group, |mut c| {
                let req = req.clone();
                async move { c.group_heartbeat(req).await }
            })
            .await?
            .into_inner())
    }

    pub async fn list_groups(&self) -> Result<Vec<pb::GroupListing>> {
        Ok(self
            .any_node(|mut c| async move { c.list_groups(pb::ListGroupsRequest {}).await })
            .await?
            .into_inner()
            .groups)
    }

    /// Storage maintenance now, at each partition's leader (any node passes it on): `topic`
    /// (every topic when `None`), merging or garbage collection (`dry_run`: list only).
    pub async fn maintain(
        &self,
        topic: Option<&str>,
        action: pb::MaintainAction,
        dry_run: bool,
    ) -> Result<Vec<pb::PartitionMaintenance>> {
        let req = pb::MaintainRequest {
            topic: topic.unwrap_or_default().to_string(),
            action: action as i32,
            dry_run,
            local_only: false,
        };
        Ok(self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.maintain(req).await }
            })
            .await?
            .into_inner()
            .partitions)
    }

    pub async fn describe_group(&self, group: &str) -> Result<pb::DescribeGroupResponse> {
        let req = pb::DescribeGroupRequest {
            group: group.into(),
        };
        Ok(self
            .any_node(|mut c| {
                let req = req.clone();
                async move { c.describe_group(req).await }
            })
            .await?
            .into_inner())
    }

    /// Deletes a group's offsets; refused while it has members.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let req = pb::DeleteGroupRequest {
            group: group.into(),
        };
        self.coordinator_call(group, |mut c| {
            let req = req.clone();
            async move { c.delete_group(req).await }
        })
        .await?;
        Ok(())
    }

    /// Moves a group's committed offsets (see `ResetOffsetsRequest`); refused while it has
    /// members.
    pub async fn reset_offsets(
        &self,
        req: pb::ResetOffsetsRequest,
    ) -> Result<Vec<pb::ResetOffset>> {
        let group = req.group.clone();
        Ok(self
            .coordinator_call(&group, |mut c| {
                let req = req.clone();
                async move { c.reset_offsets(req).await }
            })
            .await?
            .into_inner()
            .offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's own partitioner tests, so keys land where Kafka clients put them.
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for n in 1..20 {
            for k in 0..100 {
                let key = format!("user-{k}");
                let p = partition_for_key(key.as_bytes(), n);
                assert!(p < n);
                assert_eq!(p, partition_for_key(key.as_bytes(), n));
            }
        }
    }
}
