//! Kafka's config and partition APIs over the core's topic settings: DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs and CreatePartitions. Settings are read and changed by
//! their Kafka names through [`meta::TopicConfig::set`] (the core refuses names and values it
//! does not act on), so a setting tierlog stores is one it honours.

use kafka_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::{
    self as iac, IncrementalAlterConfigsResponse,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};

use super::Request;
use super::handlers::str;
use crate::broker::Broker;
use crate::error::{Code, Error, kafka_code};

/// Kafka's config resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const BROKER_LOGGER: i8 = 8;

/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

/// Kafka's config types (DescribeConfigs v3+).
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;
const LIST: i8 = 7;

/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;

fn config_type(name: &str) -> i8 {
    match name {
        "retention.ms"
        | "retention.bytes"
        | meta::MIN_COMPACTION_LAG_MS
        | meta::DELETE_RETENTION_MS => LONG,
        meta::MAX_MESSAGE_BYTES => INT,
        meta::CLEANUP_POLICY => LIST,
        _ => STRING,
    }
}

/// A refused settings change as Kafka names it: a bad name or value is INVALID_CONFIG.
fn config_error(e: &Error) -> i16 {
    match e.code() {
        Code::InvalidRequest => kafka_code::INVALID_CONFIG,
        c => c.kafka(),
    }
}

pub(super) async fn describe_configs(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<DescribeConfigsResponse> {
    let r: DescribeConfigsRequest = req.decode()?;
    let mut resp = DescribeConfigsResponse::default();
    for res in &r.resources {
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        match res.resource_type {
            TOPIC => match broker.describe_topic(&res.resource_name).await {
                Ok(t) => {
                    for (name, value, default) in t.meta.config.settings() {
                        if res
                            .configuration_keys
                            .as_ref()
                            .is_some_and(|keys| !keys.iter().any(|k| k.as_str() == name))
                        {
                            continue;
                        }
                        // The limit that applies: the topic's own, under the node's.
                        let value = if name == meta::MAX_MESSAGE_BYTES {
                            let node = broker.max_record_bytes();
                            t.meta
                                .config
                                .max_record_bytes()
                                .map_or(node, |own| node.min(own as usize))
                                .to_string()
                        } else {
                            value
                        };
                        out.configs.push(
                            DescribeConfigsResourceResult::default()
                                .with_name(str(name))
                                .with_value(Some(str(value)))
                                .with_config_source(if default {
                                    DEFAULT_CONFIG
                                } else {
                                    DYNAMIC_TOPIC_CONFIG
                                })
                                .with_config_type(config_type(name)),
                        );
                    }
                }
                Err(e) => {
                    out.error_code = e.code().kafka();
                    out.error_message = Some(str(e.to_string()));
                }
            },
            // Node settings live in the node's settings file, not behind this API: a node is
            // described with no entries, so tools that list every resource carry on.
            BROKER | BROKER_LOGGER => {}
            other => {
                out.error_code = kafka_code::INVALID_REQUEST;
                out.error_message =
                    Some(str(format!("config resource type {other} is not served")));
            }
        }
        resp.results.push(out);
    }
    Ok(resp)
}

/// Settings to change, by name (`None`: back to the default).
type Changes = Vec<(String, Option<String>)>;
/// A Kafka error code with its message.
type Refused = (i16, String);

/// What a resource change comes to: the topic's name, or the error for a resource that is
/// not a topic.
fn topic_resource(resource_type: i8, name: &str) -> Result<String, Refused> {
    match resource_type {
        TOPIC => Ok(name.to_string()),
        BROKER | BROKER_LOGGER => Err((
            kafka_code::INVALID_REQUEST,
            "node settings are changed in the node's settings file, not over the Kafka protocol"
                .into(),
        )),
        other => Err((
            kafka_code::INVALID_REQUEST,
            format!("config resource type {other} is not served"),
        )),
    }
}

async fn alter(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    changes: Result<Changes, Refused>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refused> {
    let topic = topic_resource(resource_type, name)?;
    let changes = changes?;
    broker
        .alter_topic_settings(&topic, &changes, replace, validate_only)
        .await
        .map(|_| ())
        .map_err(|e| (config_error(&e), e.to_string()))
}

pub(super) async fn alter_configs(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<AlterConfigsResponse> {
    let r: AlterConfigsRequest = req.decode()?;
    let mut resp = AlterConfigsResponse::default();
    for res in &r.resources {
        let changes = res
            .configs
            .iter()
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let result = alter(
            broker,
            res.resource_type,
            &res.resource_name,
            Ok(changes),
            true,
            r.validate_only,
        )
        .await;
        let mut out = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str(message));
        }
        resp.responses.push(out);
    }
    Ok(resp)
}

pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<IncrementalAlterConfigsResponse> {
    let r: IncrementalAlterConfigsRequest = req.decode()?;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in &r.resources {
        let changes = res
            .configs
            .iter()
            .map(|c| match c.config_operation {
                SET => match &c.value {
                    Some(v) => Ok((c.name.to_string(), Some(v.to_string()))),
                    None => Err((
                        kafka_code::INVALID_REQUEST,
                        format!(
                            "SET of {:?} without a value; DELETE (1) resets it",
                            c.name.as_str()
                        ),
                    )),
                },
                DELETE => Ok((c.name.to_string(), None)),
                // APPEND and SUBTRACT apply to list settings; the one tierlog has,
                // cleanup.policy, is set whole ("compact,delete"), so they are refused.
                op => Err((
                    kafka_code::INVALID_REQUEST,
                    format!(
                        "config operation {op} on {:?}: only SET (0) and DELETE (1) are served",
                        c.name.as_str()
                    ),
                )),
            })
            .collect();
        let result = alter(
            broker,
            res.resource_type,
            &res.resource_name,
            changes,
            false,
            r.validate_only,
        )
        .await;
        let mut out = iac::AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str(message));
        }
        resp.responses.push(out);
    }
    Ok(resp)
}

pub(super) async fn create_partitions(
    broker: &Broker,
    req: &Request,
) -> anyhow::Result<CreatePartitionsResponse> {
    let r: CreatePartitionsRequest = req.decode()?;
    let mut resp = CreatePartitionsResponse::default();
    for t in &r.topics {
        let result = if t.assignments.is_some() {
            Err((
                kafka_code::INVALID_REQUEST,
                "replica assignments are not taken: the object store keeps the replicas".into(),
            ))
        } else {
            match u32::try_from(t.count) {
                Err(_) => Err((
                    kafka_code::INVALID_PARTITIONS,
                    format!("{} partitions", t.count),
                )),
                Ok(count) => broker
                    .add_partitions(&t.name, count, r.validate_only)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let code = match e.code() {
                            Code::InvalidRequest => kafka_code::INVALID_PARTITIONS,
                            c => c.kafka(),
                        };
                        (code, e.to_string())
                    }),
            }
        };
        let mut out = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str(message));
        }
        resp.results.push(out);
    }
    Ok(resp)
}
