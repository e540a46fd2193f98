//! `client`: the Rust client of tierlog's gRPC API.
//!
//! - [`Client`]: topics, offsets, and the raw calls.
//! - [`Producer`]: batches records per partition by size and linger, partitions by key with
//!   [`partition_for_key`] (Kafka's default: murmur2 of the key, so the same key lands on the same
//!   partition as with Kafka clients), retries retriable errors with backoff, and pushes back on
//!   the caller (bounded queues) instead of buffering without limit. Order is kept per partition:
//!   one request in flight per partition.
//! - [`Consumer`]: reads assigned partitions (or all of a topic for a group, from its committed
//!   offsets), seeks, and commits synchronously, asynchronously or automatically.

mod consumer;
mod producer;

use proto::v1 as pb;
use proto::v1::tierlog_client::TierlogClient;
use tonic::transport::Channel;

pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
pub use producer::{Acks, Producer, ProducerConfig, RecordMetadata};
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
            _ => Error::Server {
                code: match s.code() {
                    tonic::Code::Unavailable => ErrorCode::Unavailable,
                    _ => ErrorCode::Internal,
                },
                message: s.message().to_string(),
                retriable: matches!(s.code(), tonic::Code::Unavailable),
            },
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

/// A connection to a tierlog node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    rpc: TierlogClient<Channel>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Client> {
        let url = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let connect_error = |source| Error::Connect {
            addr: addr.to_string(),
            source,
        };
        // Flow-control windows sized for record batches (the 64 KiB defaults would cap fetch
        // throughput at one window per round trip), as the node sets them for produce.
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(connect_error)?
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(32 << 20)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(connect_error)?;
        let rpc = TierlogClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Client { rpc })
    }

    /// The generated gRPC client, for calls this wrapper does not cover.
    pub fn rpc(&self) -> TierlogClient<Channel> {
        self.rpc.clone()
    }

    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<TopicDescription> {
        let r = self
            .rpc()
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                config: Some(pb::TopicConfig {
                    partitions,
                    ..Default::default()
                }),
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

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let r = self
            .rpc()
            .describe_topic(pb::DescribeTopicRequest { name: name.into() })
            .await?;
        Ok(r.into_inner().topic.unwrap_or_default())
    }

    /// A group's committed offsets (the next offset to read) for `topic` (all topics if empty).
    pub async fn fetch_offsets(&self, group: &str, topic: &str) -> Result<Vec<pb::GroupOffset>> {
        let r = self
            .rpc()
            .fetch_offsets(pb::FetchOffsetsRequest {
                group: group.into(),
                topic: topic.into(),
            })
            .await?;
        Ok(r.into_inner().offsets)
    }

    pub async fn commit_offsets(&self, group: &str, offsets: Vec<pb::GroupOffset>) -> Result<()> {
        self.rpc()
            .commit_offsets(pb::CommitOffsetsRequest {
                group: group.into(),
                offsets,
            })
            .await?;
        Ok(())
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
