//! Kafka's group APIs over the core's coordinator: the classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and the admin calls (ListGroups, DescribeGroups, DeleteGroups,
//! OffsetDelete, ConsumerGroupDescribe). The only Kafka knowledge here is the wire format and
//! the consumer protocol's metadata layout, read so that views and lag can name a classic
//! member's topics and partitions; the metadata itself is passed on untouched.

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::consumer_group_describe_response::{
    self as cgd, ConsumerGroupDescribeResponse,
};
use kafka_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponse, OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerProtocolAssignment, ConsumerProtocolSubscription,
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetDeleteRequest, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::Decodable;
use meta::ClassicProtocol;

use super::Request;
use super::handlers::{partition, str, topic_name, topic_uuid};
use crate::broker::Broker;
use crate::error::{Code, Error, kafka_code};
use crate::group::{GroupView, JoinRequest, MemberAssignment, SyncRequest, Tp};

/// Kafka's consumer protocol type: members' metadata is a `ConsumerProtocolSubscription`,
/// assignments a `ConsumerProtocolAssignment`.
const CONSUMER: &str = crate::group::classic::CONSUMER_PROTOCOL;

/// A group call's error as Kafka's group APIs name it: clients retry COORDINATOR_NOT_AVAILABLE
/// and treat codes outside the group set as fatal, so a metadata outage or a draining node
/// must not surface as a storage or leadership error here.
fn group_code(e: &Error) -> i16 {
    match e.code() {
        Code::Unavailable | Code::ShuttingDown | Code::Backpressure => {
            kafka_code::COORDINATOR_NOT_AVAILABLE
        }
        Code::LimitExceeded => kafka_code::GROUP_MAX_SIZE_REACHED,
        c => c.kafka(),
    }
}

/// A consumer-protocol structure: a version, then the body at that version (newer versions
/// only append fields, so a newer one is read as the newest known).
fn consumer_protocol<T: Decodable>(bytes: &[u8], newest: i16) -> Option<T> {
    let mut b = Bytes::copy_from_slice(bytes);
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version < 0 {
        return None;
    }
    T::decode(&mut b, version.min(newest)).ok()
}

fn subscribed_topics(protocol_type: &str, protocols: &[ClassicProtocol]) -> Vec<String> {
    if protocol_type != CONSUMER {
        return Vec::new();
    }
    let mut topics: Vec<String> = protocols
        .iter()
        .filter_map(|p| consumer_protocol::<ConsumerProtocolSubscription>(&p.metadata, 3))
        .flat_map(|s| s.topics.into_iter().map(|t| t.to_string()))
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

fn assigned_partitions(protocol_type: &str, assignment: &[u8]) -> Vec<Tp> {
    if protocol_type != CONSUMER {
        return Vec::new();
    }
    consumer_protocol::<ConsumerProtocolAssignment>(assignment, 3)
        .map(|a| {
            a.assigned_partitions
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter_map(|p| u32::try_from(*p).ok())
                        .map(|p| (t.topic.0.to_string(), p))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn client_id(req: &Request) -> String {
    req.header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}

fn ms(v: i32) -> u32 {
    // A negative timeout is refused by the core's range check, as 0 is.
    u32::try_from(v).unwrap_or(0)
}

pub(super) async fn join_group(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<JoinGroupResponse> {
    let r: JoinGroupRequest = req.decode()?;
    let protocols: Vec<ClassicProtocol> = r
        .protocols
        .iter()
        .map(|p| ClassicProtocol {
            name: p.name.to_string(),
            metadata: p.metadata.to_vec(),
        })
        .collect();
    let protocol_type = r.protocol_type.to_string();
    let topics = subscribed_topics(&protocol_type, &protocols);
    let join = JoinRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.group_instance_id.as_ref().map(|i| i.to_string()),
        client_id: client_id(req),
        host: req.host.to_string(),
        session_timeout_ms: ms(r.session_timeout_ms),
        // v0 has no rebalance timeout: the session timeout serves as both.
        rebalance_timeout_ms: if req.version == 0 {
            0
        } else {
            ms(r.rebalance_timeout_ms)
        },
        protocol_type,
        protocols,
        // Since v4 a new member is handed its id and joins again with it.
        require_known_member_id: req.version >= 4,
        topics,
    };
    let mut resp = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_member_id(r.member_id.clone());
    match broker.join_group(join).await {
        Ok(Ok(j)) => {
            resp.generation_id = j.generation;
            resp.protocol_type = Some(str(j.protocol_type));
            resp.protocol_name = Some(str(j.protocol));
            resp.leader = str(j.leader);
            resp.member_id = str(j.member_id);
            resp.members = j
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str(m.member_id))
                        .with_group_instance_id(m.instance_id.map(str))
                        .with_metadata(Bytes::from(m.metadata))
                })
                .collect();
        }
        Ok(Err(member_id)) => {
            resp.error_code = kafka_code::MEMBER_ID_REQUIRED;
            resp.member_id = str(member_id);
        }
        // The only bad input a join can carry past decoding is its session timeout.
        Err(e @ Error::InvalidRequest(_)) => {
            tracing::debug!(error = %e, "kafka join refused");
            resp.error_code = kafka_code::INVALID_SESSION_TIMEOUT;
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Ok(resp)
}

pub(super) async fn sync_group(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<SyncGroupResponse> {
    let r: SyncGroupRequest = req.decode()?;
    // Assignments are read as a consumer's; the core keeps what was read only for groups of
    // the consumer protocol type (the type is not sent before v5).
    let sync = SyncRequest {
        group: r.group_id.0.to_string(),
        member_id: r.member_id.to_string(),
        instance_id: r.group_instance_id.as_ref().map(|i| i.to_string()),
        generation: r.generation_id,
        protocol_type: r.protocol_type.as_ref().map(|t| t.to_string()),
        protocol: r.protocol_name.as_ref().map(|p| p.to_string()),
        assignments: r
            .assignments
            .iter()
            .map(|a| MemberAssignment {
                member_id: a.member_id.to_string(),
                partitions: assigned_partitions(CONSUMER, &a.assignment),
                assignment: a.assignment.to_vec(),
            })
            .collect(),
    };
    let mut resp = SyncGroupResponse::default();
    match broker.sync_group(sync).await {
        Ok(s) => {
            resp.protocol_type = Some(str(s.protocol_type));
            resp.protocol_name = Some(str(s.protocol));
            resp.assignment = Bytes::from(s.assignment);
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Ok(resp)
}

pub(super) async fn heartbeat(broker: &Broker, req: &Request) -> anyhow::Result<HeartbeatResponse> {
    let r: HeartbeatRequest = req.decode()?;
    let result = broker
        .classic_heartbeat(&r.group_id.0, &r.member_id, r.generation_id)
        .await;
    Ok(HeartbeatResponse::default().with_error_code(match result {
        Ok(()) => kafka_code::NONE,
        Err(e) => group_code(&e),
    }))
}

pub(super) async fn leave_group(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<LeaveGroupResponse> {
    let r: LeaveGroupRequest = req.decode()?;
    // Before v3 one member leaves, named by the request itself.
    let leaving: Vec<(String, Option<String>)> = if req.version < 3 {
        vec![(r.member_id.to_string(), None)]
    } else {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    };
    let mut resp = LeaveGroupResponse::default();
    match broker.leave_group(&r.group_id.0, leaving.clone()).await {
        Ok(results) if req.version < 3 => {
            if let Some(Err(e)) = results.first() {
                resp.error_code = group_code(e);
            }
        }
        Ok(results) => {
            resp.members = leaving
                .into_iter()
                .zip(results)
                .map(|((member, instance), result)| {
                    MemberResponse::default()
                        .with_member_id(str(result.as_ref().map_or(member, Clone::clone)))
                        .with_group_instance_id(instance.map(str))
                        .with_error_code(result.map_or_else(|e| group_code(&e), |_| 0))
                })
                .collect();
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Ok(resp)
}

pub(super) async fn list_groups(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<ListGroupsResponse> {
    let r: ListGroupsRequest = req.decode()?;
    let mut resp = ListGroupsResponse::default();
    // Each node lists the groups it coordinates (or would): clients ask every node and
    // join the answers, as they do with Kafka.
    let groups = match broker.list_groups_here().await {
        Ok(g) => g,
        Err(e) => {
            resp.error_code = e.code().kafka();
            return Ok(resp);
        }
    };
    for g in groups {
        // The stored record says whether there are members; the coordinator's memory knows
        // the phase.
        let state = match broker.describe_group(&g.group).await {
            Ok((v, _)) if v.classic => v.state.to_string(),
            Ok((v, _)) => kip848_state(v.state).to_string(),
            Err(_) => g.state.to_string(),
        };
        // A group with server-side assignment members is a "consumer" group; one used only
        // for commits is "classic", as in Kafka.
        let group_type = if g.members > 0 && !g.classic {
            "consumer"
        } else {
            "classic"
        };
        let view_state = state;
        let states = &r.states_filter;
        if !states.is_empty()
            && !states
                .iter()
                .any(|s| s.eq_ignore_ascii_case(view_state.as_str()))
        {
            continue;
        }
        if !r.types_filter.is_empty()
            && !r
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(group_type))
        {
            continue;
        }
        resp.groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(str(g.group)))
                .with_protocol_type(str(g.protocol_type))
                .with_group_state(str(view_state))
                .with_group_type(str(group_type)),
        );
    }
    Ok(resp)
}

/// A server-side-assignment group's state by KIP-848's names.
fn kip848_state(state: &str) -> &str {
    match state {
        "Reconciling" => "Reconciling",
        "Stable" => "Stable",
        _ => "Empty",
    }
}

pub(super) async fn describe_groups(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<DescribeGroupsResponse> {
    let r: DescribeGroupsRequest = req.decode()?;
    let mut resp = DescribeGroupsResponse::default();
    for group in &r.groups {
        let mut out = DescribedGroup::default().with_group_id(group.clone());
        match broker.describe_group(group).await {
            Ok((v, _)) => describe_classic(&mut out, v),
            // An unknown group is "Dead" (v6 adds GROUP_ID_NOT_FOUND).
            Err(Error::UnknownGroup(_)) => {
                out.group_state = str("Dead");
                if req.version >= 6 {
                    out.error_code = kafka_code::GROUP_ID_NOT_FOUND;
                    out.error_message = Some(str(format!("unknown group {:?}", group.0)));
                }
            }
            Err(e) => {
                out.error_code = group_code(&e);
                // Versions before 6 have no message field.
                if req.version >= 6 {
                    out.error_message = Some(str(e.to_string()));
                }
            }
        }
        resp.groups.push(out);
    }
    Ok(resp)
}

fn describe_classic(out: &mut DescribedGroup, v: GroupView) {
    out.group_state = str(v.state);
    out.protocol_type = str(v.protocol_type.clone());
    out.protocol_data = str(v.assignor.clone());
    // Server-side-assignment members have no classic metadata: only a classic group's
    // members are listed, as Kafka does for a consumer group described this way.
    if v.classic {
        out.members = v
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(str(m.member_id))
                    .with_group_instance_id(m.instance_id.map(str))
                    .with_client_id(str(m.client_id))
                    .with_client_host(str(m.host))
                    .with_member_metadata(Bytes::from(m.metadata))
                    .with_member_assignment(Bytes::from(m.assignment))
            })
            .collect();
    }
}

pub(super) async fn delete_groups(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<DeleteGroupsResponse> {
    let r: DeleteGroupsRequest = req.decode()?;
    let mut resp = DeleteGroupsResponse::default();
    for group in &r.groups_names {
        let code = match broker.delete_group(group).await {
            Ok(()) => kafka_code::NONE,
            Err(e) => e.code().kafka(),
        };
        resp.results.push(
            DeletableGroupResult::default()
                .with_group_id(group.clone())
                .with_error_code(code),
        );
    }
    Ok(resp)
}

pub(super) async fn offset_delete(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<OffsetDeleteResponse> {
    let r: OffsetDeleteRequest = req.decode()?;
    let mut resp = OffsetDeleteResponse::default();
    let mut parts = Vec::new();
    for t in &r.topics {
        for p in &t.partitions {
            match partition(p.partition_index) {
                Ok(pn) => parts.push((t.name.0.to_string(), pn)),
                Err(e) => {
                    resp.error_code = e.code().kafka();
                    return Ok(resp);
                }
            }
        }
    }
    // An error for the request (the group's), or per topic (one its members consume).
    match broker.delete_group_offsets(&r.group_id.0, parts).await {
        Ok(subscribed) => {
            for t in &r.topics {
                let code = if subscribed.contains(t.name.0.as_str()) {
                    kafka_code::GROUP_SUBSCRIBED_TO_TOPIC
                } else {
                    kafka_code::NONE
                };
                resp.topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        ),
                );
            }
        }
        Err(e) => resp.error_code = group_code(&e),
    }
    Ok(resp)
}

pub(super) async fn consumer_group_describe(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<ConsumerGroupDescribeResponse> {
    let r: ConsumerGroupDescribeRequest = req.decode()?;
    let mut resp = ConsumerGroupDescribeResponse::default();
    let ids: HashMap<String, uuid::Uuid> = broker
        .topic_metas()
        .await
        .map(|ts| ts.into_iter().map(|t| (t.name, topic_uuid(t.id))).collect())
        .unwrap_or_default();
    let assignment = |tps: &[Tp]| {
        let mut out: Vec<cgd::TopicPartitions> = Vec::new();
        for (t, p) in tps {
            let Some(id) = ids.get(t) else { continue };
            match out.iter_mut().find(|x| x.topic_id == *id) {
                Some(x) => x.partitions.push(*p as i32),
                None => out.push(
                    cgd::TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_topic_name(topic_name(t))
                        .with_partitions(vec![*p as i32]),
                ),
            }
        }
        cgd::Assignment::default().with_topic_partitions(out)
    };
    for group in &r.group_ids {
        let mut out = cgd::DescribedGroup::default().with_group_id(group.clone());
        match broker.describe_group(group).await {
            Ok((v, _)) if v.classic => {
                out.error_code = kafka_code::GROUP_ID_NOT_FOUND;
                out.error_message = Some(str(format!(
                    "group {:?} uses the classic protocol; describe it with DescribeGroups",
                    group.0
                )));
            }
            Ok((v, _)) => {
                out.group_state = str(match v.state {
                    "Reconciling" => "Reconciling",
                    "Stable" => "Stable",
                    _ => "Empty",
                });
                out.group_epoch = v.generation;
                out.assignment_epoch = v.generation;
                out.assignor_name = str(match v.assignor.as_str() {
                    "cooperative-sticky" => "uniform".to_string(),
                    a => a.to_string(),
                });
                out.members = v
                    .members
                    .iter()
                    .map(|m| {
                        cgd::Member::default()
                            .with_member_id(str(m.member_id.clone()))
                            .with_instance_id(m.instance_id.clone().map(str))
                            .with_member_epoch(m.member_epoch)
                            .with_client_id(str(m.client_id.clone()))
                            .with_client_host(str(m.host.clone()))
                            .with_subscribed_topic_names(
                                m.topics.iter().map(|t| topic_name(t)).collect(),
                            )
                            .with_subscribed_topic_regex(m.regex.clone().map(str))
                            .with_assignment(assignment(&m.owned))
                            .with_target_assignment(assignment(&m.target))
                            // 1: a member of the new protocol.
                            .with_member_type(1)
                    })
                    .collect();
            }
            Err(e) => {
                out.error_code = e.code().kafka();
                out.error_message = Some(str(e.to_string()));
            }
        }
        resp.groups.push(out);
    }
    Ok(resp)
}
