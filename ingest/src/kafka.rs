//! The Kafka wire protocol front end: a thin adapter, like the gRPC one, that decodes Kafka
//! requests (with the `kafka-protocol` crate), calls the same [`Broker`] and encodes the
//! answers. Errors become Kafka codes through [`crate::Code::kafka`] only.
//!
//! Framing: a request is a 4-byte big-endian size and that many bytes; sizes past
//! [`KafkaSettings::max_request_bytes`] close the connection before anything is allocated for
//! them. Requests on one connection are handled concurrently (at most
//! [`crate::Limits::max_requests_per_connection`] at once; past it the connection is not read)
//! and answered in the order they came, as Kafka requires. A request the node cannot decode, of
//! an API it does not serve, or of a version it does not advertise closes the connection, as
//! Kafka brokers do; ApiVersions alone answers any version (with UNSUPPORTED_VERSION and the
//! versions served), so clients can negotiate.
//!
//! Invariants: only the versions in [`SUPPORTED`] are advertised and decoded; a produce with
//! acks=0 gets no answer; the connection's answers are never reordered.

mod configs;
mod errors;
mod groups;
mod handlers;
mod sessions;

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Limits};

/// Settings of the Kafka front end (`[kafka]` in the node's settings).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Where the node listens for Kafka clients (`host:port`; port 0 picks one); `off` turns
    /// the Kafka front end off.
    pub listen: String,
    /// The address Kafka clients reach this node at (`host:port`), as Metadata names it.
    /// Default: the address it listens on.
    pub advertise: Option<String>,
    /// Create a topic when a client asks for metadata of (or produces to) one that does not
    /// exist, as Kafka's `auto.create.topics.enable`. Off: such requests get
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub auto_create_topics: bool,
    /// Partitions of a topic created automatically, or by CreateTopics with -1 partitions.
    pub default_partitions: u32,
    /// The largest request accepted, bytes (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            listen: "127.0.0.1:9092".into(),
            advertise: None,
            auto_create_topics: false,
            default_partitions: 1,
            max_request_bytes: 100 << 20,
        }
    }
}

impl KafkaSettings {
    /// Whether the node serves Kafka clients at all.
    pub fn enabled(&self) -> bool {
        self.listen != "off"
    }

    /// Checks the settings, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.enabled() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "kafka.listen must be an address like 127.0.0.1:9092, or off; not {:?}",
                self.listen
            ));
        }
        if let Some(a) = &self.advertise
            && a.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
        {
            return Err(format!("kafka.advertise must be host:port, not {a:?}"));
        }
        if self.default_partitions == 0 {
            return Err("kafka.default_partitions must be at least 1".into());
        }
        if self.max_request_bytes < 1024 || i32::try_from(self.max_request_bytes).is_err() {
            return Err("kafka.max_request_bytes must be between 1 KiB and 2 GiB".into());
        }
        Ok(())
    }
}

/// The APIs and versions this node serves (ApiVersions advertises exactly these).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
];

/// The versions of `key` this node serves.
fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, lo, hi)| (lo, hi))
}

/// A decoded request: its header and the body after it.
pub(crate) struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's host, as Kafka shows it ("/127.0.0.1").
    pub host: Arc<str>,
}

impl Request {
    /// Decodes the body as `T` at the request's version.
    pub fn decode<T: Decodable>(&self) -> anyhow::Result<T> {
        let mut body = self.body.clone();
        let t = T::decode(&mut body, self.version)?;
        Ok(t)
    }
}

/// An encoded answer, with what it holds of the node's fetch buffer until it is written.
pub(crate) struct Reply {
    body: BytesMut,
    held: Vec<crate::FetchPermit>,
    /// The error codes in the answer other than NONE, for the metrics.
    errors: Vec<i16>,
}

impl Reply {
    /// This reply, holding `permits` until it is written.
    pub(crate) fn holding(mut self, permits: Vec<crate::FetchPermit>) -> Reply {
        self.held.extend(permits);
        self
    }
}

/// An answer to write (none for acks=0), or a reason to close the connection.
type Answer = Result<Option<Reply>, String>;

/// Encodes `response` with its header for `req`.
pub(crate) fn respond<T: Encodable + errors::ErrorCodes>(req: &Request, response: &T) -> Answer {
    respond_as(req, req.version, response)
}

/// Encodes `response` at `version` (ApiVersions answers an unsupported version at v0).
fn respond_as<T: Encodable + errors::ErrorCodes>(
    req: &Request,
    version: i16,
    response: &T,
) -> Answer {
    let mut buf = BytesMut::new();
    let header = ResponseHeader::default().with_correlation_id(req.header.correlation_id);
    let header_version = req.key.response_header_version(version);
    header
        .encode(&mut buf, header_version)
        .and_then(|()| response.encode(&mut buf, version))
        .map_err(|e| format!("encoding the {:?} v{version} answer: {e}", req.key))?;
    let mut errors = Vec::new();
    response.error_codes(&mut errors);
    errors.retain(|c| *c != 0);
    Ok(Some(Reply {
        body: buf,
        held: Vec::new(),
        errors,
    }))
}

/// Decodes a request frame (what follows its size) as the node does before handling it: the
/// header, the version check, then the body as the message its API key and version name. No
/// broker is involved; the `kafka` fuzz target runs it. `Ok`: the API the frame holds.
#[doc(hidden)]
pub fn decode_frame(frame: Bytes) -> Result<ApiKey, String> {
    if frame.len() < 8 {
        return Err(format!("a frame of {} bytes", frame.len()));
    }
    let mut fixed = frame.clone();
    let (raw_key, version) = (fixed.get_i16(), fixed.get_i16());
    let key = ApiKey::try_from(raw_key).map_err(|()| format!("unknown API key {raw_key}"))?;
    check_served(key, version)?;
    let mut rest = frame;
    kafka_protocol::protocol::decode_request_header_from_buffer(&mut rest)
        .map_err(|e| format!("request header: {e}"))?;
    use kafka_protocol::messages::*;
    fn read<T: Decodable>(b: &mut Bytes, version: i16) -> anyhow::Result<()> {
        T::decode(b, version).map(drop)
    }
    let decoded = match key {
        ApiKey::Produce => read::<ProduceRequest>(&mut rest, version),
        ApiKey::Fetch => read::<FetchRequest>(&mut rest, version),
        ApiKey::ListOffsets => read::<ListOffsetsRequest>(&mut rest, version),
        ApiKey::OffsetForLeaderEpoch => read::<OffsetForLeaderEpochRequest>(&mut rest, version),
        ApiKey::DeleteRecords => read::<DeleteRecordsRequest>(&mut rest, version),
        ApiKey::Metadata => read::<MetadataRequest>(&mut rest, version),
        ApiKey::OffsetCommit => read::<OffsetCommitRequest>(&mut rest, version),
        ApiKey::OffsetFetch => read::<OffsetFetchRequest>(&mut rest, version),
        ApiKey::FindCoordinator => read::<FindCoordinatorRequest>(&mut rest, version),
        ApiKey::ApiVersions => read::<ApiVersionsRequest>(&mut rest, version),
        ApiKey::CreateTopics => read::<CreateTopicsRequest>(&mut rest, version),
        ApiKey::DeleteTopics => read::<DeleteTopicsRequest>(&mut rest, version),
        ApiKey::InitProducerId => read::<InitProducerIdRequest>(&mut rest, version),
        ApiKey::DescribeCluster => read::<DescribeClusterRequest>(&mut rest, version),
        ApiKey::ConsumerGroupHeartbeat => read::<ConsumerGroupHeartbeatRequest>(&mut rest, version),
        ApiKey::JoinGroup => read::<JoinGroupRequest>(&mut rest, version),
        ApiKey::SyncGroup => read::<SyncGroupRequest>(&mut rest, version),
        ApiKey::Heartbeat => read::<HeartbeatRequest>(&mut rest, version),
        ApiKey::LeaveGroup => read::<LeaveGroupRequest>(&mut rest, version),
        ApiKey::ListGroups => read::<ListGroupsRequest>(&mut rest, version),
        ApiKey::DescribeGroups => read::<DescribeGroupsRequest>(&mut rest, version),
        ApiKey::DeleteGroups => read::<DeleteGroupsRequest>(&mut rest, version),
        ApiKey::OffsetDelete => read::<OffsetDeleteRequest>(&mut rest, version),
        ApiKey::ConsumerGroupDescribe => read::<ConsumerGroupDescribeRequest>(&mut rest, version),
        ApiKey::DescribeConfigs => read::<DescribeConfigsRequest>(&mut rest, version),
        ApiKey::AlterConfigs => read::<AlterConfigsRequest>(&mut rest, version),
        ApiKey::IncrementalAlterConfigs => {
            read::<IncrementalAlterConfigsRequest>(&mut rest, version)
        }
        ApiKey::CreatePartitions => read::<CreatePartitionsRequest>(&mut rest, version),
        other => return Err(format!("{other:?} has no decoder here")),
    };
    decoded.map_err(|e| format!("{key:?} v{version}: {e:#}"))?;
    Ok(key)
}

/// Serves Kafka clients on `listener` until `stop` is cancelled.
pub async fn serve(
    broker: Broker,
    listener: TcpListener,
    settings: KafkaSettings,
    limits: Limits,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let sessions = Arc::new(sessions::FetchSessions::default());
    let mut incoming = Box::pin(crate::listen::accept_limited(
        listener,
        limits.max_connections,
    ));
    loop {
        let conn = tokio::select! {
            c = incoming.next() => c,
            _ = stop.cancelled() => return,
        };
        let conn = match conn {
            Some(Ok(c)) => c,
            // Accepting retries failures itself; an error here is a connection that is gone.
            Some(Err(_)) => continue,
            None => return,
        };
        let (broker, settings, stop) = (broker.clone(), settings.clone(), stop.clone());
        let sessions = sessions.clone();
        let in_flight = limits.max_requests_per_connection;
        tokio::spawn(async move {
            if let Err(e) = connection(broker, settings, sessions, conn, in_flight, stop).await {
                tracing::debug!(error = %e, "kafka connection ended");
            }
        });
    }
}

async fn connection(
    broker: Broker,
    settings: Arc<KafkaSettings>,
    sessions: Arc<sessions::FetchSessions>,
    conn: crate::listen::Limited,
    in_flight: usize,
    stop: CancellationToken,
) -> Result<(), String> {
    let host: Arc<str> = conn
        .peer()
        .map_or_else(|| "/unknown".into(), |a| format!("/{}", a.ip()).into());
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Answers in request order: the reader queues a receiver per request, the writer awaits
    // them in turn. The queue's bound is the connection's requests in flight.
    let (tx, mut rx) = mpsc::channel::<oneshot::Receiver<Answer>>(in_flight);
    let closed = CancellationToken::new();
    let writer = {
        let closed = closed.clone();
        async move {
            let mut frame = BytesMut::new();
            while let Some(answer) = rx.recv().await {
                let answer = match answer.await {
                    Ok(Ok(a)) => a,
                    Ok(Err(why)) => {
                        tracing::warn!(why, "closing a kafka connection");
                        break;
                    }
                    Err(_) => break,
                };
                let Some(reply) = answer else { continue };
                frame.clear();
                frame.put_u32(reply.body.len() as u32);
                frame.extend_from_slice(&reply.body);
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
                // Written: its fetch buffer permits go back to the node.
                drop(reply.held);
            }
            closed.cancel();
        }
    };
    let reader = async move {
        loop {
            let size = tokio::select! {
                s = rd.read_i32() => s.map_err(|e| e.to_string())?,
                _ = stop.cancelled() => return Ok(()),
                _ = closed.cancelled() => return Ok(()),
            };
            let size = usize::try_from(size)
                .ok()
                .filter(|s| *s >= 8 && *s <= settings.max_request_bytes)
                .ok_or_else(|| {
                    format!(
                        "a request of {size} bytes (8..={} accepted, kafka.max_request_bytes)",
                        settings.max_request_bytes
                    )
                })?;
            let mut buf = vec![0u8; size];
            rd.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            let (otx, orx) = oneshot::channel();
            if tx.send(orx).await.is_err() {
                return Ok(());
            }
            let broker = broker.clone();
            let settings = settings.clone();
            let sessions = sessions.clone();
            let host = host.clone();
            tokio::spawn(async move {
                let api = i16::from_be_bytes([buf[0], buf[1]]);
                let api = ApiKey::try_from(api).map_or("unknown".to_string(), |k| format!("{k:?}"));
                let started = std::time::Instant::now();
                let span = tracing::debug_span!("kafka", api = %api);
                let answer = tracing::Instrument::instrument(
                    handle(&broker, &settings, &sessions, Bytes::from(buf), host),
                    span,
                )
                .await;
                // Kafka errors travel inside answers; a request that is not answered closes
                // the connection.
                let code = if answer.is_ok() { "answered" } else { "closed" };
                let metrics = broker.metrics();
                metrics.request("kafka", &api, code, started.elapsed());
                if let Ok(Some(reply)) = &answer {
                    for &e in &reply.errors {
                        metrics.kafka_error(&api, &errors::name(e));
                    }
                }
                let _ = otx.send(answer);
            });
        }
    };
    // The reader owns the queue's sender: when it stops, the writer drains what is queued
    // and stops too.
    let (r, ()) = tokio::join!(reader, writer);
    r
}

/// Decodes the header, checks the version, and dispatches.
async fn handle(
    broker: &Broker,
    settings: &KafkaSettings,
    sessions: &sessions::FetchSessions,
    mut frame: Bytes,
    host: Arc<str>,
) -> Answer {
    let mut fixed = frame.clone();
    let (raw_key, version, correlation_id) = (fixed.get_i16(), fixed.get_i16(), fixed.get_i32());
    let key = ApiKey::try_from(raw_key).map_err(|()| format!("unknown API key {raw_key}"))?;
    let header = match kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame) {
        Ok(h) => h,
        // A client newer than this node may send an ApiVersions header this node cannot
        // read; it still gets the versions served, so it can negotiate down.
        Err(_) if key == ApiKey::ApiVersions => RequestHeader::default()
            .with_request_api_key(raw_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id),
        Err(e) => return Err(format!("request header: {e}")),
    };
    let req = Request {
        key,
        version,
        header,
        body: frame,
        host,
    };
    let served = supported(key);
    if key == ApiKey::ApiVersions {
        return handlers::api_versions(&req, served);
    }
    check_served(key, version)?;
    handlers::dispatch(broker, settings, sessions, req)
        .await
        .map_err(|e| format!("{key:?} v{version}: {e:#}"))
}

/// `Ok` when this node serves `version` of `key`; else why not (the connection closes).
fn check_served(key: ApiKey, version: i16) -> Result<(), String> {
    match supported(key) {
        Some((lo, hi)) if (lo..=hi).contains(&version) => Ok(()),
        Some((lo, hi)) => Err(format!(
            "{key:?} v{version} is not served (v{lo} to v{hi} are)"
        )),
        None => Err(format!("{key:?} is not served")),
    }
}

#[cfg(test)]
mod tests;
