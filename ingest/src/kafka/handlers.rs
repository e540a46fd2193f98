//! One function per Kafka API: decode, call the [`Broker`], encode. No storage or group logic
//! lives here; what two front ends need is in the broker.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, ConsumerGroupHeartbeatResponse, TopicPartitions,
};
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsResponse, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use kafka_protocol::messages::describe_cluster_response::{
    DescribeClusterBroker, DescribeClusterResponse,
};
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderEpochResponse, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ConsumerGroupHeartbeatRequest, CreateTopicsRequest, DeleteRecordsRequest,
    DeleteTopicsRequest, FetchRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use meta::{PartitionOffset, TopicConfig};

use super::sessions::{FetchSessions, Key, Plan, Wanted};
use super::{KafkaSettings, Request, SUPPORTED, configs, groups, respond, respond_as};
use crate::broker::{Acks, Broker, ClusterView, OffsetSpec};
use crate::error::{Code, Error, kafka_code};
use crate::group::{HeartbeatRequest, Subscription, Tp};

type Handled = anyhow::Result<Option<super::Reply>>;

/// High half of the topic ids shown to Kafka clients ("tierlog" in ASCII); the low half is
/// the topic's id, which is never reused.
const TOPIC_UUID_HIGH: u64 = 0x7469_6572_6c6f_6700;
/// The longest a fetch waits for records, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

pub(super) fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(super) fn topic_name(s: &str) -> TopicName {
    TopicName(str(s))
}

pub(super) fn topic_uuid(id: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(TOPIC_UUID_HIGH, id)
}

/// A node's Kafka listener as (host, port), when it has one.
fn kafka_endpoint(n: &meta::NodeInfo) -> Option<(String, i32)> {
    let addr = n.kafka_addr.as_deref()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((
        host.trim_matches(['[', ']']).to_string(),
        port.parse().ok()?,
    ))
}

/// A partition number from the wire (negative ones name no partition).
pub(super) fn partition(p: i32) -> Result<u32, Error> {
    u32::try_from(p).map_err(|_| Error::InvalidRequest(format!("partition {p} is negative")))
}

fn node_id(n: u64) -> BrokerId {
    BrokerId(i32::try_from(n).unwrap_or(i32::MAX))
}

fn epoch(e: u64) -> i32 {
    i32::try_from(e).unwrap_or(i32::MAX)
}

/// ApiVersions, at any version: a version not served gets UNSUPPORTED_VERSION at v0 with the
/// versions served. No tagged fields are sent (librdkafka up to 2.1 mis-reads them in v3).
pub(super) fn api_versions(req: &Request, served: Option<(i16, i16)>) -> super::Answer {
    let ok = served.is_some_and(|(lo, hi)| (lo..=hi).contains(&req.version));
    let mut r = ApiVersionsResponse::default();
    r.error_code = if ok {
        kafka_code::NONE
    } else {
        kafka_code::UNSUPPORTED_VERSION
    };
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    respond_as(req, if ok { req.version } else { 0 }, &r)
}

pub(super) async fn dispatch(
    broker: &Broker,
    settings: &KafkaSettings,
    sessions: &FetchSessions,
    req: Request,
) -> Handled {
    let answer = match req.key {
        ApiKey::Metadata => respond(&req, &metadata(broker, settings, &req).await?),
        ApiKey::Produce => return produce(broker, &req).await,
        ApiKey::Fetch => {
            let (resp, held) = fetch(broker, sessions, &req).await?;
            respond(&req, &resp).map(|r| r.map(|r| r.holding(held)))
        }
        ApiKey::ListOffsets => respond(&req, &list_offsets(broker, &req).await?),
        ApiKey::DeleteRecords => respond(&req, &delete_records(broker, &req).await?),
        ApiKey::OffsetForLeaderEpoch => {
            respond(&req, &offsets_for_leader_epoch(broker, &req).await?)
        }
        ApiKey::OffsetCommit => respond(&req, &offset_commit(broker, &req).await?),
        ApiKey::OffsetFetch => respond(&req, &offset_fetch(broker, &req).await?),
        ApiKey::FindCoordinator => respond(&req, &find_coordinator(broker, &req).await?),
        ApiKey::CreateTopics => respond(&req, &create_topics(broker, settings, &req).await?),
        ApiKey::DeleteTopics => respond(&req, &delete_topics(broker, &req).await?),
        ApiKey::InitProducerId => respond(&req, &init_producer_id(broker, &req).await?),
        ApiKey::DescribeCluster => respond(&req, &describe_cluster(broker).await?),
        ApiKey::ConsumerGroupHeartbeat => {
            respond(&req, &consumer_group_heartbeat(broker, &req).await?)
        }
        ApiKey::JoinGroup => respond(&req, &groups::join_group(broker, &req).await?),
        ApiKey::SyncGroup => respond(&req, &groups::sync_group(broker, &req).await?),
        ApiKey::Heartbeat => respond(&req, &groups::heartbeat(broker, &req).await?),
        ApiKey::LeaveGroup => respond(&req, &groups::leave_group(broker, &req).await?),
        ApiKey::ListGroups => respond(&req, &groups::list_groups(broker, &req).await?),
        ApiKey::DescribeGroups => respond(&req, &groups::describe_groups(broker, &req).await?),
        ApiKey::DeleteGroups => respond(&req, &groups::delete_groups(broker, &req).await?),
        ApiKey::OffsetDelete => respond(&req, &groups::offset_delete(broker, &req).await?),
        ApiKey::ConsumerGroupDescribe => {
            respond(&req, &groups::consumer_group_describe(broker, &req).await?)
        }
        ApiKey::DescribeConfigs => respond(&req, &configs::describe_configs(broker, &req).await?),
        ApiKey::AlterConfigs => respond(&req, &configs::alter_configs(broker, &req).await?),
        ApiKey::IncrementalAlterConfigs => respond(
            &req,
            &configs::incremental_alter_configs(broker, &req).await?,
        ),
        ApiKey::CreatePartitions => respond(&req, &configs::create_partitions(broker, &req).await?),
        other => anyhow::bail!("{other:?} has no handler"),
    };
    answer.map_err(anyhow::Error::msg)
}

/// The node that answers as the cluster's controller: the lowest id with a Kafka listener.
fn controller(view: &ClusterView) -> BrokerId {
    view.nodes
        .iter()
        .filter(|n| n.kafka_addr.is_some())
        .map(|n| node_id(n.node_id))
        .min_by_key(|b| b.0)
        .unwrap_or(BrokerId(-1))
}

async fn metadata(
    broker: &Broker,
    settings: &KafkaSettings,
    req: &Request,
) -> anyhow::Result<MetadataResponse> {
    let r: MetadataRequest = req.decode()?;
    // v0: an empty list means every topic; v1+: null does.
    let mut view = broker.cluster_view().await?;
    // A topic is asked for by name, or (v10+, as KIP-848 consumers do) by id alone.
    let mut unknown_ids = Vec::new();
    let asked: Option<Vec<String>> = match r.topics {
        None => None,
        Some(t) if t.is_empty() && req.version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| match t.name {
                    Some(n) => Some(n.0.to_string()),
                    None => {
                        let found = view.topics.iter().find(|x| topic_uuid(x.id) == t.topic_id);
                        if found.is_none() {
                            unknown_ids.push(t.topic_id);
                        }
                        found.map(|x| x.name.clone())
                    }
                })
                .collect(),
        ),
    };
    let may_create =
        settings.auto_create_topics && (req.version < 4 || r.allow_auto_topic_creation);
    if may_create && let Some(asked) = &asked {
        let mut created = false;
        for name in asked {
            if !view.topics.iter().any(|t| &t.name == name) {
                match broker
                    .create_topic(name, TopicConfig::new(settings.default_partitions))
                    .await
                {
                    Ok(_) => created = true,
                    Err(e) => tracing::debug!(topic = name, error = %e, "auto-create failed"),
                }
            }
        }
        if created {
            view = broker.cluster_view().await?;
        }
    }
    let listeners: HashMap<u64, (String, i32)> = view
        .nodes
        .iter()
        .filter_map(|n| kafka_endpoint(n).map(|e| (n.node_id, e)))
        .collect();
    let mut resp = MetadataResponse::default();
    resp.brokers = view
        .nodes
        .iter()
        .filter_map(|n| {
            let (host, port) = listeners.get(&n.node_id)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(node_id(n.node_id))
                    .with_host(str(host.clone()))
                    .with_port(*port),
            )
        })
        .collect();
    resp.cluster_id = Some(str(broker.cluster_id()));
    resp.controller_id = controller(&view);
    let names: Vec<String> = match asked {
        Some(a) => a,
        None => view.topics.iter().map(|t| t.name.clone()).collect(),
    };
    for id in unknown_ids {
        resp.topics.push(
            MetadataResponseTopic::default()
                .with_topic_id(id)
                .with_error_code(kafka_code::UNKNOWN_TOPIC_ID),
        );
    }
    for name in names {
        let mut topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
        let Some(t) = view.topics.iter().find(|t| t.name == name) else {
            topic.error_code = kafka_code::UNKNOWN_TOPIC_OR_PARTITION;
            resp.topics.push(topic);
            continue;
        };
        topic.topic_id = topic_uuid(t.id);
        topic.topic_authorized_operations = i32::MIN;
        for p in 0..t.partitions() {
            let mut part = MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1);
            match view.leaders.get(&(name.clone(), p)) {
                Some(l) if listeners.contains_key(&l.node_id) => {
                    let id = node_id(l.node_id);
                    part.leader_id = id;
                    part.leader_epoch = epoch(l.epoch);
                    part.replica_nodes = vec![id];
                    part.isr_nodes = vec![id];
                }
                _ => part.error_code = kafka_code::LEADER_NOT_AVAILABLE,
            }
            topic.partitions.push(part);
        }
        resp.topics.push(topic);
    }
    Ok(resp)
}

/// The batches in a produce request's record set, in order (a record set may hold several).
fn split_batches(mut records: Bytes) -> Result<Vec<Bytes>, Error> {
    let mut out = Vec::new();
    while !records.is_empty() {
        if records.len() < 12 {
            return Err(Error::InvalidRequest(format!(
                "{} stray bytes after the last record batch",
                records.len()
            )));
        }
        let len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(12))
            .filter(|t| *t <= records.len())
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "a record batch claims {len} bytes; {} are left",
                    records.len() - 12
                ))
            })?;
        out.push(records.split_to(total));
    }
    Ok(out)
}

async fn produce_partition(
    broker: &Broker,
    topic: &str,
    p: i32,
    records: Option<Bytes>,
    acks: Acks,
) -> PartitionProduceResponse {
    let mut resp = PartitionProduceResponse::default()
        .with_index(p)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1);
    let result = async {
        let p = partition(p)?;
        let batches = split_batches(records.unwrap_or_default())?;
        if batches.is_empty() {
            return Err(Error::InvalidRequest("a produce request without records".into()).into());
        }
        let mut first = None;
        for b in batches {
            let r = broker.produce_batch_whole(topic, p, b, acks).await?;
            if !r.errors.is_empty() {
                return Err(Refusal::Records(r.errors));
            }
            first.get_or_insert(r.base_offset);
        }
        Ok::<_, Refusal>(first.unwrap_or(-1))
    };
    match result.await {
        Ok(base) => resp.base_offset = base,
        Err(Refusal::Records(errors)) => {
            resp.error_code = errors[0].1.code().kafka();
            resp.error_message = Some(str(errors[0].1.to_string()));
            // As Kafka: MESSAGE_TOO_LARGE fails the batch without naming records (clients
            // read record errors as INVALID_RECORD, which a retry cannot cure either way).
            if errors.iter().all(|(_, e)| e.code() == Code::RecordTooLarge) {
                return resp;
            }
            resp.record_errors = errors
                .into_iter()
                .map(|(i, e)| {
                    BatchIndexAndErrorMessage::default()
                        .with_batch_index(i32::try_from(i).unwrap_or(i32::MAX))
                        .with_batch_index_error_message(Some(str(e.to_string())))
                })
                .collect();
        }
        Err(Refusal::Request(e)) => {
            tracing::debug!(topic, partition = p, error = %e, "kafka produce refused");
            resp.error_code = e.code().kafka();
            resp.error_message = Some(str(e.to_string()));
        }
    }
    resp
}

/// Why a partition's produce failed: the request, or some of its records (the batch was
/// appended not at all).
enum Refusal {
    Request(Error),
    Records(Vec<(usize, Error)>),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Request(e)
    }
}

async fn produce(broker: &Broker, req: &Request) -> Handled {
    let r: ProduceRequest = req.decode()?;
    let acks = match r.acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let transactional = r.transactional_id.is_some();
    let mut jobs = Vec::new();
    for t in &r.topic_data {
        for p in &t.partition_data {
            let name = t.name.0.to_string();
            let records = p.records.clone();
            let index = p.index;
            jobs.push(async move {
                let resp = match acks {
                    _ if transactional => PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(-1)
                        .with_error_code(kafka_code::TRANSACTIONS_REFUSED)
                        .with_error_message(Some(str(
                            "transactions are not supported yet: produce without a transactional id",
                        ))),
                    None => PartitionProduceResponse::default()
                        .with_index(index)
                        .with_base_offset(-1)
                        .with_error_code(kafka_code::INVALID_REQUIRED_ACKS)
                        .with_error_message(Some(str(format!(
                            "acks must be 0, 1 or -1, not {}",
                            r.acks
                        )))),
                    Some(acks) => produce_partition(broker, &name, index, records, acks).await,
                };
                (name, resp)
            });
        }
    }
    // Partitions at once: an acks=all request waits for the slowest upload, not their sum.
    let results = futures::future::join_all(jobs).await;
    if acks == Some(Acks::None) {
        return Ok(None);
    }
    let mut resp = ProduceResponse::default();
    for (name, p) in results {
        match resp
            .responses
            .iter_mut()
            .find(|t| t.name.0.as_str() == name)
        {
            Some(t) => t.partition_responses.push(p),
            None => resp.responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_name(&name))
                    .with_partition_responses(vec![p]),
            ),
        }
    }
    respond(req, &resp).map_err(anyhow::Error::msg)
}

/// The error code for a fetch or list-offsets against a leader epoch the client has.
fn epoch_check(asked: i32, current: u64) -> i16 {
    let current = epoch(current);
    if asked < 0 || asked == current {
        kafka_code::NONE
    } else if asked < current {
        kafka_code::FENCED_LEADER_EPOCH
    } else {
        kafka_code::UNKNOWN_LEADER_EPOCH
    }
}

/// The answer, and the fetch buffer permits of the records in it: held until it is written.
/// From version 7 a fetch may belong to an incremental fetch session (see [`super::sessions`]).
async fn fetch(
    broker: &Broker,
    sessions: &FetchSessions,
    req: &Request,
) -> anyhow::Result<(FetchResponse, Vec<crate::FetchPermit>)> {
    let r: FetchRequest = req.decode()?;
    let named: Vec<(Key, Wanted)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    (t.topic.0.to_string(), p.partition),
                    Wanted::new(
                        p.fetch_offset,
                        p.partition_max_bytes,
                        p.current_leader_epoch,
                    ),
                )
            })
        })
        .collect();
    // Before v7, and for clients without sessions (id 0, epoch -1: librdkafka, kafkajs), the
    // session cache is not touched.
    let sessionless = req.version < 7 || (r.session_id == 0 && r.session_epoch == -1);
    let plan = if !sessionless {
        let forgotten: Vec<Key> = r
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect();
        sessions.begin(r.session_id, r.session_epoch, named.clone(), &forgotten)
    } else {
        Plan::Sessionless
    };
    broker.metrics().kafka_fetch(match &plan {
        Plan::Sessionless => "none",
        Plan::Full(_) => "full",
        Plan::Incremental { .. } => "incremental",
        Plan::Refused(_) => "refused",
    });
    let (wanted, session) = match plan {
        Plan::Sessionless => (named, None),
        Plan::Full(id) => (named, Some((id, true))),
        Plan::Incremental { id, parts } => (parts, Some((id, false))),
        Plan::Refused(code) => {
            let mut resp = FetchResponse::default();
            resp.error_code = code;
            return Ok((resp, Vec::new()));
        }
    };
    let (mut resp, permits) = fetch_partitions(broker, &r, &wanted).await;
    if let Some((id, full)) = session {
        sessions.answered(id, full, &mut resp);
        resp.session_id = id;
    }
    Ok((resp, permits))
}

/// Reads `wanted` for a fetch: long poll (`max_wait_ms`, `min_bytes`) and `max_bytes` from
/// `r`. Partitions of a topic are answered together, in the order given.
async fn fetch_partitions(
    broker: &Broker,
    r: &FetchRequest,
    wanted: &[(Key, Wanted)],
) -> (FetchResponse, Vec<crate::FetchPermit>) {
    let wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = r.min_bytes.max(0) as usize;
    let max_bytes = if r.max_bytes > 0 {
        r.max_bytes as usize
    } else {
        usize::MAX
    };
    loop {
        let mut resp = FetchResponse::default();
        let mut total = 0usize;
        let mut failed = false;
        let mut waits = Vec::new();
        // Held until the answer is written: the node's fetch buffer bounds what is read.
        let mut permits = Vec::new();
        for ((name, index), p) in wanted {
            let mut data = PartitionData::default()
                .with_partition_index(*index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(Bytes::new()));
            let room = max_bytes.saturating_sub(total);
            // At least one batch for the first partition with records (KIP-74), then
            // within the request's max_bytes.
            let budget = if total == 0 {
                (p.partition_max_bytes.max(1) as usize).min(max_bytes)
            } else {
                (p.partition_max_bytes.max(0) as usize).min(room)
            };
            let fetched = match (partition(*index), budget) {
                (Err(e), _) => Err(e),
                (Ok(_), 0) => {
                    push_partition(&mut resp, name, data);
                    continue;
                }
                (Ok(pn), budget) => broker.fetch_visible(name, pn, p.fetch_offset, budget).await,
            };
            match fetched {
                Ok(f) => {
                    data.high_watermark = f.high_watermark;
                    data.last_stable_offset = f.high_watermark;
                    data.log_start_offset = f.log_start;
                    data.error_code = epoch_check(p.current_leader_epoch, f.leader_epoch);
                    if data.error_code != kafka_code::NONE {
                        failed = true;
                    } else if f.batches.is_empty() {
                        if let Ok(pn) = partition(*index) {
                            waits.push((name.clone(), pn, p.fetch_offset));
                        }
                    } else {
                        let size: usize = f.batches.iter().map(|b| b.len()).sum();
                        let mut records = BytesMut::with_capacity(size);
                        for b in &f.batches {
                            records.extend_from_slice(b.as_bytes());
                        }
                        total += size;
                        data.records = Some(records.freeze());
                    }
                    permits.extend(f.permit);
                }
                Err(e) => {
                    data.error_code = e.code().kafka();
                    failed = true;
                }
            }
            push_partition(&mut resp, name, data);
        }
        if total >= min_bytes.max(1)
            || failed
            || waits.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            return (resp, permits);
        }
        drop(permits);
        // Nothing yet: wait for any partition's high watermark to move, then read again.
        let waiting = waits
            .iter()
            .map(|(t, p, o)| Box::pin(broker.wait_visible(t, *p, *o, deadline)));
        let _ = futures::future::select_all(waiting).await;
    }
}

/// Adds a partition's answer under its topic: the same topic as the last one answered joins
/// it, as a request names each topic once.
fn push_partition(resp: &mut FetchResponse, topic: &str, data: PartitionData) {
    match resp.responses.last_mut() {
        Some(t) if t.topic.0.as_str() == topic => t.partitions.push(data),
        _ => resp.responses.push(
            FetchableTopicResponse::default()
                .with_topic(TopicName(str(topic)))
                .with_partitions(vec![data]),
        ),
    }
}

async fn list_offsets(broker: &Broker, req: &Request) -> anyhow::Result<ListOffsetsResponse> {
    let r: ListOffsetsRequest = req.decode()?;
    let mut resp = ListOffsetsResponse::default();
    for t in &r.topics {
        let name = t.name.0.to_string();
        let mut topic = ListOffsetsTopicResponse::default().with_name(t.name.clone());
        for p in &t.partitions {
            let spec = match p.timestamp {
                -2 => Some(OffsetSpec::Earliest),
                -1 => Some(OffsetSpec::Latest),
                -3 if req.version >= 7 => Some(OffsetSpec::MaxTimestamp),
                ts if ts >= 0 => Some(OffsetSpec::Timestamp(ts)),
                _ => None,
            };
            let mut out = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            let found = match (partition(p.partition_index), spec) {
                (Err(e), _) => Err(e),
                (_, None) => Err(Error::InvalidRequest(format!(
                    "timestamp {} asks for nothing served (-2 earliest, -1 latest, -3 the highest \
                     timestamp from version 7 on, or a time)",
                    p.timestamp
                ))),
                (Ok(pn), Some(spec)) => broker.list_offset(&name, pn, spec).await,
            };
            match found {
                Ok(Some((offset, ts, epoch))) => {
                    out.offset = offset;
                    out.timestamp = ts;
                    if req.version >= 4 {
                        out.leader_epoch = epoch;
                    }
                }
                Ok(None) => {}
                Err(e) => out.error_code = e.code().kafka(),
            }
            topic.partitions.push(out);
        }
        resp.topics.push(topic);
    }
    Ok(resp)
}

/// Moves partitions' log starts (`Broker::delete_records`), each within the request's timeout
/// (REQUEST_TIMED_OUT past it: the cut may still land).
async fn delete_records(broker: &Broker, req: &Request) -> anyhow::Result<DeleteRecordsResponse> {
    let r: DeleteRecordsRequest = req.decode()?;
    let timeout = Duration::from_millis(u64::try_from(r.timeout_ms.max(0)).unwrap_or(0));
    let mut resp = DeleteRecordsResponse::default();
    for t in &r.topics {
        let name = t.name.0.to_string();
        let jobs = t.partitions.iter().map(|p| {
            let name = &name;
            async move {
                let mut out = DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(-1);
                let cut = async {
                    let pn = partition(p.partition_index)?;
                    broker.delete_records(name, pn, p.offset).await
                };
                match tokio::time::timeout(timeout, cut).await {
                    Ok(Ok(start)) => out.low_watermark = start,
                    Ok(Err(e)) => out.error_code = e.code().kafka(),
                    Err(_) => out.error_code = kafka_code::REQUEST_TIMED_OUT,
                }
                out
            }
        });
        let partitions = futures::future::join_all(jobs).await;
        resp.topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    Ok(resp)
}

/// KIP-320: where a leader epoch ends, so a consumer that saw a new leader can check that its
/// position is still in the log (`Broker::end_offset_for_epoch`).
async fn offsets_for_leader_epoch(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<OffsetForLeaderEpochResponse> {
    let r: OffsetForLeaderEpochRequest = req.decode()?;
    let mut resp = OffsetForLeaderEpochResponse::default();
    for t in &r.topics {
        let name = t.topic.0.to_string();
        let mut topic = OffsetForLeaderTopicResult::default().with_topic(t.topic.clone());
        for p in &t.partitions {
            let mut out = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let found = match partition(p.partition) {
                Ok(pn) => broker.end_offset_for_epoch(&name, pn, p.leader_epoch).await,
                Err(e) => Err(e),
            };
            match found {
                Ok((leader, found)) => {
                    out.error_code = epoch_check(p.current_leader_epoch, leader);
                    if let (kafka_code::NONE, Some((epoch, end))) = (out.error_code, found) {
                        out.leader_epoch = epoch;
                        out.end_offset = end;
                    }
                }
                Err(e) => out.error_code = e.code().kafka(),
            }
            topic.partitions.push(out);
        }
        resp.topics.push(topic);
    }
    Ok(resp)
}

async fn offset_commit(broker: &Broker, req: &Request) -> anyhow::Result<OffsetCommitResponse> {
    let r: OffsetCommitRequest = req.decode()?;
    let group = r.group_id.0.to_string();
    let mut offsets = Vec::new();
    let mut bad = None;
    for t in &r.topics {
        for p in &t.partitions {
            match partition(p.partition_index) {
                Ok(pn) => offsets.push(PartitionOffset {
                    topic: t.name.0.to_string(),
                    partition: pn,
                    offset: p.committed_offset,
                    metadata: p
                        .committed_metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                }),
                Err(e) => bad = Some(e),
            }
        }
    }
    let member = r.member_id.to_string();
    let result = match bad {
        Some(e) => Err(e),
        None if member.is_empty() && r.generation_id_or_member_epoch < 0 => {
            broker.commit_offsets(&group, offsets).await
        }
        None => {
            broker
                .commit_group_offsets(&group, &member, r.generation_id_or_member_epoch, offsets)
                .await
        }
    };
    let code = match result {
        Ok(()) => kafka_code::NONE,
        Err(e) => {
            tracing::debug!(group, error = %e, "kafka offset commit refused");
            e.code().kafka()
        }
    };
    let mut resp = OffsetCommitResponse::default();
    for t in &r.topics {
        resp.topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                ),
        );
    }
    Ok(resp)
}

async fn offset_fetch(broker: &Broker, req: &Request) -> anyhow::Result<OffsetFetchResponse> {
    let r: OffsetFetchRequest = req.decode()?;
    let group = r.group_id.0.to_string();
    let mut resp = OffsetFetchResponse::default();
    let committed = match broker.fetch_offsets(&group, None).await {
        Ok(c) => c,
        Err(e) => {
            resp.error_code = e.code().kafka();
            return Ok(resp);
        }
    };
    let partition_of = |o: &PartitionOffset| {
        OffsetFetchResponsePartition::default()
            .with_partition_index(o.partition as i32)
            .with_committed_offset(o.offset)
            .with_committed_leader_epoch(-1)
            .with_metadata(Some(str(o.metadata.clone())))
    };
    match &r.topics {
        // Every committed offset of the group.
        None => {
            for o in &committed {
                match resp
                    .topics
                    .iter_mut()
                    .find(|t| t.name.0.as_str() == o.topic)
                {
                    Some(t) => t.partitions.push(partition_of(o)),
                    None => resp.topics.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(topic_name(&o.topic))
                            .with_partitions(vec![partition_of(o)]),
                    ),
                }
            }
        }
        Some(topics) => {
            for t in topics {
                let name = t.name.0.as_str();
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&p| {
                        match committed
                            .iter()
                            .find(|o| o.topic == name && o.partition as i32 == p)
                        {
                            Some(o) => partition_of(o),
                            None => OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(-1)
                                .with_committed_leader_epoch(-1)
                                .with_metadata(Some(str(""))),
                        }
                    })
                    .collect();
                resp.topics.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions),
                );
            }
        }
    }
    Ok(resp)
}

async fn find_coordinator(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<FindCoordinatorResponse> {
    let r: FindCoordinatorRequest = req.decode()?;
    let keys: Vec<String> = if req.version >= 4 {
        r.coordinator_keys.iter().map(|k| k.to_string()).collect()
    } else {
        vec![r.key.to_string()]
    };
    let mut found = Vec::new();
    for key in keys {
        let mut c = Coordinator::default()
            .with_key(str(key.clone()))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
        if r.key_type != 0 {
            c.error_code = kafka_code::TRANSACTIONS_REFUSED;
            c.error_message = Some(str(
                "transactions are not supported yet: there is no transaction coordinator",
            ));
        } else {
            match broker.coordinator_node(&key).await {
                Ok(n) => match kafka_endpoint(&n) {
                    Some((host, port)) => {
                        c.node_id = node_id(n.node_id);
                        c.host = str(host);
                        c.port = port;
                    }
                    None => {
                        c.error_code = kafka_code::COORDINATOR_NOT_AVAILABLE;
                        c.error_message = Some(str(format!(
                            "the coordinator, node {}, has no Kafka listener",
                            n.node_id
                        )));
                    }
                },
                Err(e) => {
                    c.error_code = e.code().kafka();
                    c.error_message = Some(str(e.to_string()));
                }
            }
        }
        found.push(c);
    }
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        resp.coordinators = found;
    } else if let Some(c) = found.pop() {
        resp.error_code = c.error_code;
        resp.error_message = c.error_message;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
    }
    Ok(resp)
}

async fn create_topics(
    broker: &Broker,
    settings: &KafkaSettings,
    req: &Request,
) -> anyhow::Result<CreateTopicsResponse> {
    let r: CreateTopicsRequest = req.decode()?;
    let mut resp = CreateTopicsResponse::default();
    for t in &r.topics {
        let name = t.name.0.to_string();
        let mut out = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let config = (|| {
            if !t.assignments.is_empty() {
                return Err((
                    kafka_code::INVALID_REQUEST,
                    "replica assignments are not taken: the object store keeps the replicas".into(),
                ));
            }
            let partitions = match t.num_partitions {
                -1 => settings.default_partitions,
                n => u32::try_from(n).ok().filter(|n| *n > 0).ok_or((
                    kafka_code::INVALID_PARTITIONS,
                    format!("a topic needs at least one partition, not {n}"),
                ))?,
            };
            let mut config = TopicConfig::new(partitions);
            for c in &t.configs {
                config
                    .set(c.name.as_str(), c.value.as_deref())
                    .map_err(|e| (kafka_code::INVALID_CONFIG, e.to_string()))?;
            }
            meta::validate_topic_name(&name)
                .map_err(|e| (kafka_code::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
            Ok(config)
        })();
        let created = match config {
            Err(e) => Err(e),
            Ok(config) if r.validate_only => Ok(config),
            Ok(config) => match broker.create_topic(&name, config).await {
                Ok(info) => {
                    out.topic_id = topic_uuid(info.meta.id);
                    Ok(info.meta.config)
                }
                Err(e) => Err((e.code().kafka(), e.to_string())),
            },
        };
        match created {
            Ok(config) => {
                out.num_partitions = config.partitions as i32;
                out.replication_factor = 1;
                out.configs = Some(
                    config
                        .settings()
                        .into_iter()
                        .map(|(name, value, default)| {
                            CreatableTopicConfigs::default()
                                .with_name(str(name))
                                .with_value(Some(str(value)))
                                // 5 = DEFAULT_CONFIG, 1 = DYNAMIC_TOPIC_CONFIG
                                .with_config_source(if default { 5 } else { 1 })
                        })
                        .collect(),
                );
            }
            Err((code, message)) => {
                out.error_code = code;
                out.error_message = Some(str(message));
            }
        }
        resp.topics.push(out);
    }
    Ok(resp)
}

async fn delete_topics(broker: &Broker, req: &Request) -> anyhow::Result<DeleteTopicsResponse> {
    let r: DeleteTopicsRequest = req.decode()?;
    let mut resp = DeleteTopicsResponse::default();
    for name in &r.topic_names {
        let mut out = DeletableTopicResult::default().with_name(Some(name.clone()));
        if let Err(e) = broker.delete_topic(name.0.as_str()).await {
            out.error_code = e.code().kafka();
            out.error_message = Some(str(e.to_string()));
        }
        resp.responses.push(out);
    }
    Ok(resp)
}

async fn init_producer_id(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<InitProducerIdResponse> {
    let r: InitProducerIdRequest = req.decode()?;
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if r.transactional_id.is_some() {
        // Transactions come later; until then a transactional producer is told plainly.
        resp.error_code = kafka_code::TRANSACTIONS_REFUSED;
        return Ok(resp);
    }
    match broker.init_producer().await {
        Ok((id, epoch)) => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Err(e) => resp.error_code = e.code().kafka(),
    }
    Ok(resp)
}

async fn describe_cluster(broker: &Broker) -> anyhow::Result<DescribeClusterResponse> {
    let view = broker.cluster_view().await?;
    let mut resp = DescribeClusterResponse::default();
    resp.cluster_id = str(broker.cluster_id());
    resp.controller_id = controller(&view);
    resp.brokers = view
        .nodes
        .iter()
        .filter_map(|n| {
            let (host, port) = kafka_endpoint(n)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(node_id(n.node_id))
                    .with_host(str(host))
                    .with_port(port),
            )
        })
        .collect();
    resp.cluster_authorized_operations = i32::MIN;
    Ok(resp)
}

/// KIP-848's heartbeat: the core's coordinator already works this way (server-side
/// assignment, epochs, what the member holds in each heartbeat), so this only translates topic
/// ids to names and back, and names the errors as KIP-848 does.
async fn consumer_group_heartbeat(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<ConsumerGroupHeartbeatResponse> {
    let r: ConsumerGroupHeartbeatRequest = req.decode()?;
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    let fail = |resp: &mut ConsumerGroupHeartbeatResponse, e: Error| {
        resp.error_code = match e.code() {
            Code::IllegalGeneration => kafka_code::FENCED_MEMBER_EPOCH,
            c => c.kafka(),
        };
        resp.error_message = Some(str(e.to_string()));
    };
    let topics = match broker.topic_metas().await {
        Ok(t) => t,
        Err(e) => {
            fail(&mut resp, e);
            return Ok(resp);
        }
    };
    let name_of: HashMap<uuid::Uuid, &str> = topics
        .iter()
        .map(|t| (topic_uuid(t.id), t.name.as_str()))
        .collect();
    // A topic id no longer known (its topic was deleted) is not held any more.
    let owned = r.topic_partitions.as_ref().map(|held| {
        held.iter()
            .filter_map(|t| name_of.get(&t.topic_id).map(|name| (name, &t.partitions)))
            .flat_map(|(name, ps)| {
                ps.iter()
                    .filter_map(|p| u32::try_from(*p).ok())
                    .map(|p| (name.to_string(), p))
            })
            .collect::<Vec<Tp>>()
    });
    let subscription = match (&r.subscribed_topic_names, &r.subscribed_topic_regex) {
        (None, None) => None,
        (names, regex) => Some(Subscription {
            topics: names.iter().flatten().map(|n| n.0.to_string()).collect(),
            regex: regex.as_ref().map(|r| r.to_string()),
        }),
    };
    let hb = HeartbeatRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.instance_id.as_ref().map(|i| i.to_string()),
        member_epoch: r.member_epoch,
        client_id: req
            .header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        host: String::new(),
        subscription,
        // KIP-848's "uniform" assignor is a sticky, balanced one: the core's cooperative-sticky.
        assignor: r.server_assignor.as_ref().map(|a| match a.as_str() {
            "uniform" => "cooperative-sticky".to_string(),
            other => other.to_string(),
        }),
        // The session timeout is the coordinator's (KIP-848: a group setting, 45 s).
        session_timeout_ms: 0,
        rebalance_timeout_ms: u32::try_from(r.rebalance_timeout_ms)
            .map(|ms| ms.clamp(1_000, 1_800_000))
            .unwrap_or(0),
        owned,
    };
    match broker.group_heartbeat(hb).await {
        Ok(reply) => {
            resp.member_id = Some(str(reply.member_id));
            resp.member_epoch = reply.member_epoch;
            resp.heartbeat_interval_ms = reply.heartbeat_interval_ms as i32;
            let id_of: HashMap<&str, uuid::Uuid> = topics
                .iter()
                .map(|t| (t.name.as_str(), topic_uuid(t.id)))
                .collect();
            let mut assigned: Vec<TopicPartitions> = Vec::new();
            for (topic, p) in &reply.assignment {
                let Some(id) = id_of.get(topic.as_str()) else {
                    continue;
                };
                match assigned.iter_mut().find(|t| t.topic_id == *id) {
                    Some(t) => t.partitions.push(*p as i32),
                    None => assigned.push(
                        TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_partitions(vec![*p as i32]),
                    ),
                }
            }
            resp.assignment = Some(Assignment::default().with_topic_partitions(assigned));
        }
        Err(e) => fail(&mut resp, e),
    }
    Ok(resp)
}
