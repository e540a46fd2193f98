//! The gRPC front end (`tierlog.v1.Tierlog`): a thin adapter over [`Broker`]. Every error becomes
//! a status whose code follows gRPC conventions and whose details hold an `ErrorDetail` with the
//! stable tierlog code; this is the only place that mapping lives.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use meta::{PartitionOffset, TopicConfig};
use prost::Message;
use proto::v1 as pb;
use proto::v1::tierlog_server::Tierlog;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use crate::broker::{Acks, Broker, Maintenance, ProduceRecord, StartAt, TopicInfo};
use crate::error::{Code, Error};
use crate::group::{HeartbeatRequest, ResetTo, Subscription};
use crate::metrics::Metrics;

/// How long one wait of a following fetch lasts before it re-checks (a client that went away is
/// noticed at the latest then).
const FOLLOW_WAIT: Duration = Duration::from_millis(500);
const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// The most a FetchBatches response carries (plus one batch; peers decode up to 64 MiB).
pub const MAX_FETCH_BATCHES_BYTES: usize = 16 << 20;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    broker: Broker,
}

impl Service {
    pub fn new(broker: Broker) -> Self {
        Service { broker }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> pb::tierlog_server::TierlogServer<Service> {
        pb::tierlog_server::TierlogServer::new(self).max_decoding_message_size(64 << 20)
    }
}

/// The error detail for a broker error.
pub fn detail(e: &Error) -> pb::ErrorDetail {
    pb::ErrorDetail {
        code: e.code() as i32,
        message: e.to_string(),
        retriable: e.is_retryable(),
        leader: e.leader().unwrap_or_default().to_string(),
    }
}

/// Maps a broker error to a gRPC status with an `ErrorDetail` in its details.
pub fn status(e: Error) -> Status {
    let code = match e.code() {
        Code::UnknownTopic | Code::UnknownPartition => tonic::Code::NotFound,
        Code::RecordTooLarge
        | Code::InvalidRecord
        | Code::InvalidTopicName
        | Code::InvalidRequest => tonic::Code::InvalidArgument,
        Code::TopicExists => tonic::Code::AlreadyExists,
        Code::OffsetOutOfRange => tonic::Code::OutOfRange,
        Code::Backpressure | Code::LimitExceeded => tonic::Code::ResourceExhausted,
        Code::NotLeader
        | Code::NotCoordinator
        | Code::OutOfOrderSequence
        | Code::ProducerFenced
        | Code::UnknownMember
        | Code::IllegalGeneration
        | Code::FencedInstance
        | Code::GroupNotEmpty
        | Code::InconsistentAssignor
        | Code::RebalanceInProgress
        | Code::InconsistentGroupProtocol => tonic::Code::FailedPrecondition,
        Code::UnknownGroup => tonic::Code::NotFound,
        Code::InvalidGroup | Code::UnsupportedAssignor => tonic::Code::InvalidArgument,
        Code::CorruptData => tonic::Code::DataLoss,
        Code::Unavailable | Code::ShuttingDown => tonic::Code::Unavailable,
        Code::Unsupported => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
    };
    let d = detail(&e);
    Status::with_details(code, d.message.clone(), Bytes::from(d.encode_to_vec()))
}

fn invalid(msg: impl Into<String>) -> Status {
    status(Error::InvalidRequest(msg.into()))
}

fn topic_config(c: Option<pb::TopicConfig>) -> Result<TopicConfig, Status> {
    let c = c.unwrap_or_default();
    let mut t = TopicConfig::new(c.partitions.max(1));
    let limit = |name, v| meta::retention_limit(name, v).map_err(|e| invalid(e.to_string()));
    t.retention_ms = limit("retention_ms", c.retention_ms)?;
    t.retention_bytes = limit("retention_bytes", c.retention_bytes)?;
    for (name, value) in &c.settings {
        t.set(name, Some(value))
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(t)
}

fn describe(t: TopicInfo) -> pb::TopicDescription {
    pb::TopicDescription {
        name: t.meta.name.clone(),
        id: t.meta.id,
        config: Some(pb::TopicConfig {
            partitions: t.meta.partitions(),
            retention_ms: meta::retention_wire(t.meta.config.retention_ms),
            retention_bytes: meta::retention_wire(t.meta.config.retention_bytes),
            settings: t
                .meta
                .config
                .settings()
                .into_iter()
                .map(|(name, value, _)| (name.to_string(), value))
                .collect(),
        }),
        partitions: t
            .partitions
            .into_iter()
            .map(|p| pb::PartitionDescription {
                partition: p.partition,
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                log_start_offset: p.offsets.log_start,
                high_watermark: p.offsets.next,
                cold_next: p.offsets.cold_next,
                hot_start: p.offsets.hot_start,
                hot_bytes: p.offsets.hot_bytes,
                cold_bytes: p.offsets.cold_bytes,
                cold_segments: p.offsets.cold_segments,
                merge_waiting_segments: p.offsets.merge_waiting_segments,
                merge_waiting_bytes: p.offsets.merge_waiting_bytes,
            })
            .collect(),
    }
}

/// Record headers from the wire.
pub(crate) fn headers(h: Vec<pb::Header>) -> Vec<tier::Header> {
    h.into_iter()
        .map(|h| tier::Header {
            key: h.key,
            value: h.value,
        })
        .collect()
}

fn fetched(r: tier::Record) -> pb::FetchedRecord {
    pb::FetchedRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| pb::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Tierlog for Service {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let req = request.into_inner();
        let acks = match pb::Acks::try_from(req.acks) {
            Ok(pb::Acks::None) => Acks::None,
            Ok(pb::Acks::Leader) => Acks::Leader,
            Ok(pb::Acks::All) => Acks::All,
            Err(_) => return Err(invalid(format!("unknown acks value {}", req.acks))),
        };
        let compression = match pb::Compression::try_from(req.compression) {
            Ok(pb::Compression::None) => tier::Compression::None,
            Ok(pb::Compression::Zstd) => tier::Compression::Zstd,
            Err(_) => return Err(invalid(format!("unknown compression {}", req.compression))),
        };
        if !req.record_batch.is_empty() {
            if !req.records.is_empty() {
                return Err(invalid(
                    "a produce request carries records or a record batch, not both",
                ));
            }
            let r = self
                .broker
                .produce_batch(&req.topic, req.partition, req.record_batch, acks)
                .await
                .map_err(status)?;
            return Ok(Response::new(produce_response(&r)));
        }
        let records = req
            .records
            .into_iter()
            .map(|r| ProduceRecord {
                key: r.key,
                value: r.value,
                headers: headers(r.headers),
                timestamp_ms: r.timestamp_ms,
            })
            .collect();
        let producer = req
            .producer
            .map(|p| {
                let epoch = i16::try_from(p.producer_epoch)
                    .ok()
                    .filter(|e| *e >= -1)
                    .ok_or_else(|| {
                        invalid(format!(
                            "producer epoch {} is out of range (0..=32767, or -1 for none)",
                            p.producer_epoch
                        ))
                    })?;
                Ok::<_, Status>(tier::ProducerInfo {
                    producer_id: p.producer_id,
                    producer_epoch: epoch,
                    base_sequence: p.base_sequence,
                })
            })
            .transpose()?;
        let r = self
            .broker
            .produce(
                &req.topic,
                req.partition,
                records,
                acks,
                compression,
                producer,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(produce_response(&r)))
    }

    async fn init_producer(
        &self,
        _request: Request<pb::InitProducerRequest>,
    ) -> Result<Response<pb::InitProducerResponse>, Status> {
        let (producer_id, producer_epoch) = self.broker.init_producer().await.map_err(status)?;
        Ok(Response::new(pb::InitProducerResponse {
            producer_id,
            producer_epoch: i32::from(producer_epoch),
        }))
    }

    async fn fetch_batches(
        &self,
        request: Request<pb::FetchBatchesRequest>,
    ) -> Result<Response<pb::FetchBatchesResponse>, Status> {
        let req = request.into_inner();
        let max_bytes = match req.max_bytes {
            0 => DEFAULT_MAX_BYTES,
            n => (n as usize).min(MAX_FETCH_BATCHES_BYTES),
        };
        let read = self
            .broker
            .read_batches(&req.topic, req.partition, req.offset, max_bytes)
            .await
            .map_err(status)?;
        Ok(Response::new(match read {
            Some((batches, log_end_offset)) => pb::FetchBatchesResponse {
                batches: batches.into_iter().map(|b| b.into_bytes()).collect(),
                log_end_offset,
                committed: false,
            },
            None => pb::FetchBatchesResponse {
                committed: true,
                ..Default::default()
            },
        }))
    }

    async fn maintain(
        &self,
        request: Request<pb::MaintainRequest>,
    ) -> Result<Response<pb::MaintainResponse>, Status> {
        let req = request.into_inner();
        let what = match pb::MaintainAction::try_from(req.action) {
            Ok(pb::MaintainAction::MaintainGc) => Maintenance::Gc {
                dry_run: req.dry_run,
            },
            Ok(pb::MaintainAction::MaintainCompact) => Maintenance::Compact,
            Err(_) => {
                return Err(status(Error::InvalidRequest(format!(
                    "unknown maintenance action {}",
                    req.action
                ))));
            }
        };
        let topic = (!req.topic.is_empty()).then_some(req.topic.as_str());
        let partitions = self
            .broker
            .maintain(topic, what, req.local_only)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MaintainResponse { partitions }))
    }

    type FetchStream = FetchStream;

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let req = request.into_inner();
        let start = match req.start {
            Some(pb::fetch_request::Start::Offset(o)) => StartAt::Offset(o),
            Some(pb::fetch_request::Start::TimestampMs(t)) => StartAt::Timestamp(t),
            Some(pb::fetch_request::Start::Position(p)) => match pb::StartPosition::try_from(p) {
                Ok(pb::StartPosition::StartLatest) => StartAt::Latest,
                _ => StartAt::Earliest,
            },
            None => StartAt::Earliest,
        };
        let broker = self.broker.clone();
        // A group member's stream is checked before it starts and before each answer.
        let fence = req.member.as_ref().map(|m| crate::FetchFence {
            group: m.group.clone(),
            member_id: m.member_id.clone(),
            member_epoch: m.member_epoch,
        });
        if let Some(f) = &fence {
            broker
                .fence_fetch(f, &req.topic, req.partition)
                .await
                .map_err(status)?;
        }
        let mut offset = broker
            .resolve(&req.topic, req.partition, start)
            .await
            .map_err(status)?;
        let max_bytes = if req.max_bytes == 0 {
            DEFAULT_MAX_BYTES
        } else {
            req.max_bytes as usize
        };
        // One answer waits in the channel while the one before it is sent: each is held
        // against the node's fetch buffer until the next one took its place.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let mut sent = 0u64;
            let mut in_transit: Option<crate::FetchPermit> = None;
            loop {
                let wait = req.follow.then_some(FOLLOW_WAIT);
                let (r, permit) = match broker
                    .read_held(&req.topic, req.partition, offset, max_bytes, wait)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                if r.records.is_empty() {
                    if !req.follow || tx.is_closed() {
                        return;
                    }
                    continue;
                }
                let mut records = r.records;
                if req.max_records > 0 {
                    records.truncate((req.max_records - sent).min(records.len() as u64) as usize);
                }
                if let Some(f) = &fence
                    && let Err(e) = broker.fence_fetch(f, &req.topic, req.partition).await
                {
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
                offset = records.last().map_or(offset, |x| x.offset + 1);
                sent += records.len() as u64;
                let msg = pb::FetchResponse {
                    records: records.into_iter().map(fetched).collect(),
                    high_watermark: r.high_watermark,
                    log_start_offset: r.log_start_offset,
                    source: match r.source {
                        tier::Source::Hot => "hot".into(),
                        tier::Source::Cold => "cold".into(),
                        tier::Source::None => String::new(),
                    },
                };
                // A client that went away ends the stream; a read writes nothing, so nothing is
                // left half-done.
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                drop(in_transit.replace(permit));
                if req.max_records > 0 && sent >= req.max_records {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let offset = match req.spec {
            Some(pb::list_offsets_request::Spec::TimestampMs(ts)) => self
                .broker
                .offset_for_timestamp(&req.topic, req.partition, ts)
                .await
                .map_err(status)?
                .unwrap_or(-1),
            Some(pb::list_offsets_request::Spec::Position(p)) => {
                let at = match pb::StartPosition::try_from(p) {
                    Ok(pb::StartPosition::StartLatest) => StartAt::Latest,
                    _ => StartAt::Earliest,
                };
                self.broker
                    .resolve(&req.topic, req.partition, at)
                    .await
                    .map_err(status)?
            }
            None => return Err(invalid("list offsets needs a position or a timestamp")),
        };
        Ok(Response::new(pb::ListOffsetsResponse { offset }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let t = self
            .broker
            .create_topic(&req.name, topic_config(req.config)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(describe(t)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.broker
            .delete_topic(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let names = self.broker.list_topics().await.map_err(status)?;
        Ok(Response::new(pb::ListTopicsResponse { names }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let t = self
            .broker
            .describe_topic(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(describe(t)),
        }))
    }

    async fn alter_topic(
        &self,
        request: Request<pb::AlterTopicRequest>,
    ) -> Result<Response<pb::AlterTopicResponse>, Status> {
        let req = request.into_inner();
        let changes: Vec<(String, Option<String>)> = req
            .settings
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect();
        self.broker
            .alter_topic_settings(&req.name, &changes, false, req.validate_only)
            .await
            .map_err(status)?;
        let t = self
            .broker
            .describe_topic(&req.name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AlterTopicResponse {
            topic: Some(describe(t)),
        }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        let req = request.into_inner();
        self.broker
            .add_partitions(&req.name, req.count, req.validate_only)
            .await
            .map_err(status)?;
        let t = self
            .broker
            .describe_topic(&req.name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddPartitionsResponse {
            topic: Some(describe(t)),
        }))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let req = request.into_inner();
        let offsets = req
            .offsets
            .into_iter()
            .map(|o| PartitionOffset {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        let epoch = if req.member_id.is_empty() {
            -1
        } else {
            req.member_epoch
        };
        self.broker
            .commit_group_offsets(&req.group, &req.member_id, epoch, offsets)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let req = request.into_inner();
        let topic = (!req.topic.is_empty()).then_some(req.topic.as_str());
        let offsets = self
            .broker
            .fetch_offsets(&req.group, topic)
            .await
            .map_err(status)?
            .into_iter()
            .map(|o| pb::GroupOffset {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        Ok(Response::new(pb::FetchOffsetsResponse { offsets }))
    }

    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let req = request.into_inner();
        let (node_id, addr) = self
            .broker
            .find_coordinator(&req.group)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FindCoordinatorResponse { node_id, addr }))
    }

    async fn group_heartbeat(
        &self,
        request: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        let host = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let r = request.into_inner();
        let req = HeartbeatRequest {
            group: r.group,
            member_id: r.member_id,
            instance_id: (!r.instance_id.is_empty()).then_some(r.instance_id),
            member_epoch: r.member_epoch,
            client_id: r.client_id,
            host,
            subscription: r.subscription.map(|s| Subscription {
                topics: s.topics,
                regex: (!s.regex.is_empty()).then_some(s.regex),
            }),
            assignor: (!r.assignor.is_empty()).then_some(r.assignor),
            session_timeout_ms: r.session_timeout_ms,
            rebalance_timeout_ms: r.rebalance_timeout_ms,
            owned: r.owned.map(|o| from_topic_partitions(o.topics)),
        };
        let reply = self.broker.group_heartbeat(req).await.map_err(status)?;
        Ok(Response::new(pb::GroupHeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            heartbeat_interval_ms: reply.heartbeat_interval_ms,
            assignment: to_topic_partitions(&reply.assignment),
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let groups = self
            .broker
            .list_groups()
            .await
            .map_err(status)?
            .into_iter()
            .map(|g| pb::GroupListing {
                group: g.group,
                state: g.state.to_string(),
                members: g.members as u32,
            })
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let req = request.into_inner();
        let report = self.broker.group_report(&req.group).await.map_err(status)?;
        let (view, coordinator) = (report.view, report.coordinator);
        let offsets = report
            .partitions
            .into_iter()
            .map(|(r, owner)| pb::GroupPartitionLag {
                lag: r.lag(),
                lag_ms: r.lag_ms,
                member_id: owner.unwrap_or_default(),
                topic: r.topic,
                partition: r.partition,
                committed: r.committed,
                high_watermark: r.high_watermark,
            })
            .collect();
        Ok(Response::new(pb::DescribeGroupResponse {
            offsets,
            group: view.group,
            state: view.state.to_string(),
            generation: view.generation,
            assignor: view.assignor,
            coordinator: coordinator.unwrap_or(0),
            members: view
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id.unwrap_or_default(),
                    client_id: m.client_id,
                    host: m.host,
                    member_epoch: m.member_epoch,
                    owned: to_topic_partitions(&m.owned),
                    target: to_topic_partitions(&m.target),
                })
                .collect(),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let req = request.into_inner();
        self.broker.delete_group(&req.group).await.map_err(status)?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        use pb::reset_offsets_request::To;
        let req = request.into_inner();
        let to = match req.to {
            None => {
                return Err(invalid(
                    "a reset names where to: a position, a time, an offset or a shift",
                ));
            }
            Some(To::Position(p)) => match pb::StartPosition::try_from(p) {
                Ok(pb::StartPosition::StartEarliest) => ResetTo::Earliest,
                Ok(pb::StartPosition::StartLatest) => ResetTo::Latest,
                Err(_) => return Err(invalid(format!("unknown start position {p}"))),
            },
            Some(To::TimestampMs(ts)) => ResetTo::Timestamp(ts),
            Some(To::Offset(o)) => ResetTo::Offset(o),
            Some(To::ShiftBy(n)) => ResetTo::ShiftBy(n),
        };
        let offsets = self
            .broker
            .reset_offsets(&req.group, &req.topic, &req.partitions, to, req.dry_run)
            .await
            .map_err(status)?
            .into_iter()
            .map(|r| pb::ResetOffset {
                topic: r.topic,
                partition: r.partition,
                before: r.before.unwrap_or(-1),
                after: r.after,
            })
            .collect();
        Ok(Response::new(pb::ResetOffsetsResponse { offsets }))
    }
}

/// HTTP/2 flow-control windows. The defaults (64 KiB) allow one 64 KiB window per round trip
/// on a connection that every partition's requests share, which caps a producer far below the
/// disk; these let several batches of up to a few MiB be in flight at once.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// The gRPC transport as a node serves it: flow-control windows sized for batches, no Nagle,
/// every request counted and timed in `metrics`.
pub fn transport(
    limits: &crate::Limits,
    metrics: Arc<Metrics>,
) -> tonic::transport::Server<tower::layer::util::Stack<CountRequests, tower::layer::util::Identity>>
{
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .concurrency_limit_per_connection(limits.max_requests_per_connection)
        .tcp_nodelay(true)
        .layer(CountRequests(metrics))
}

/// Counts and times each gRPC request by method and status. The status is the one sent with
/// the response headers (an error before any message); a call answered with messages counts
/// as `Ok` and is timed to its headers. Unknown methods count as `unknown`, so a client
/// cannot add series.
#[derive(Debug, Clone)]
pub struct CountRequests(Arc<Metrics>);

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// A service wrapped by [`CountRequests`].
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<S::Response, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let started = std::time::Instant::now();
        // A span per request (exported when tracing is on; see the CLI's `telemetry`).
        let span = tracing::debug_span!("grpc", api = %method, code = tracing::field::Empty);
        let answer = span.in_scope(|| self.inner.call(req));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let r = tracing::Instrument::instrument(answer, span.clone()).await;
            let status = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            let method = if status == tonic::Code::Unimplemented {
                "unknown"
            } else {
                &method
            };
            let code = format!("{status:?}");
            span.record("code", code.as_str());
            metrics.request("grpc", method, &code, started.elapsed());
            r
        })
    }
}

fn produce_response(r: &crate::ProduceResult) -> pb::ProduceResponse {
    pb::ProduceResponse {
        base_offset: r.base_offset,
        accepted: r.accepted as u32,
        errors: r
            .errors
            .iter()
            .map(|(i, e)| pb::RecordError {
                index: *i as u32,
                error: Some(detail(e)),
            })
            .collect(),
        duplicate: r.duplicate,
    }
}

fn to_topic_partitions(tps: &[(String, u32)]) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for (t, p) in tps {
        match out.last_mut() {
            Some(last) if &last.topic == t => last.partitions.push(*p),
            _ => out.push(pb::TopicPartitions {
                topic: t.clone(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

fn from_topic_partitions(tps: Vec<pb::TopicPartitions>) -> Vec<(String, u32)> {
    tps.into_iter()
        .flat_map(|t| {
            let topic = t.topic;
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect()
}
