//! Topics: `topics/<name>` holds a JSON [`TopicMeta`]; ids come from the `ids/topic` counter.
//!
//! Invariants: a topic id is never reused (the counter only grows, and creation bumps it in
//! the same txn that writes the topic); a topic's partition count never shrinks.

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use serde::{Deserialize, Deserializer, Serialize};

use super::keys::{PartitionKey, validate_topic_name};
use super::{
    MAX_CAS_ATTEMPTS, Meta, TOPIC_ID_COUNTER, backoff, contention, decode_json, encode_json, guard,
    next_counter_value,
};
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};

/// Field names of [`TopicConfig`] that `extra` settings may not reuse.
const RESERVED: [&str; 3] = ["partitions", "retention_ms", "retention_bytes"];

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions, >= 1. May grow, never shrink.
    pub partitions: u32,
    /// How long records are kept, ms: `None` = forever (tierlog's default; there is no cluster
    /// default that shortens it). Wire forms (`-1` = unlimited) go through [`retention_limit`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stored_limit"
    )]
    pub retention_ms: Option<NonZeroU64>,
    /// Bytes kept per partition: `None` = unlimited.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stored_limit"
    )]
    pub retention_bytes: Option<NonZeroU64>,
    /// Other settings, stored as-is (e.g. Kafka's `cleanup.policy`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, String>,
}

impl TopicConfig {
    pub fn new(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            retention_ms: None,
            retention_bytes: None,
            extra: BTreeMap::new(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 {
            return Err(Error::invalid("a topic needs at least one partition"));
        }
        if let Some(key) = self
            .extra
            .keys()
            .find(|k| k.is_empty() || RESERVED.contains(&k.as_str()))
        {
            return Err(Error::invalid(format!(
                "extra topic setting {key:?} is empty or shadows a typed field"
            )));
        }
        Ok(())
    }
}

/// The setting that says which records consumers may read: `committed` (the default: records
/// committed to the object store, which no failover takes back) or `leader` (everything the
/// leader appended, as soon as it is appended: lower latency, and records acknowledged with
/// acks=leader may be read and then lost in a takeover). See docs/kafka.md.
pub const VISIBILITY: &str = "tierlog.visibility";
/// Kafka's `cleanup.policy`: `delete` (the default: retention by age and size only),
/// `compact` (keep each key's newest record; age and size retention do not apply) or
/// `compact,delete` (both).
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// Kafka's `min.compaction.lag.ms`: records younger than this are not compacted (default 0).
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";
/// Kafka's `delete.retention.ms`: how long a tombstone of a compacted topic stays after it was
/// compacted (default one day).
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// Kafka's default `delete.retention.ms`.
pub const DEFAULT_DELETE_RETENTION_MS: u64 = 24 * 3_600_000;
/// Kafka's `max.message.bytes`: the largest record the topic accepts (tierlog checks each
/// record: key, value and headers), under the node's own `max_record_bytes`.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Kafka's `compression.type`: only `producer` (batches are kept as producers compressed
/// them; the cold tier's Parquet is zstd).
pub const COMPRESSION_TYPE: &str = "compression.type";

impl TopicConfig {
    /// Sets a setting by name (Kafka's name where Kafka has one: `retention.ms`,
    /// `retention.bytes`, `cleanup.policy`; and [`VISIBILITY`]). `None` puts the default back.
    /// Unknown names and values are refused, naming what is accepted: a setting is stored only
    /// when the node acts on it.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<()> {
        let number = |v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Error::invalid(format!("{name} must be a number, got {v:?}")))
        };
        match name {
            "retention.ms" => {
                self.retention_ms = retention_limit(name, value.map(number).transpose()?)?;
            }
            "retention.bytes" => {
                self.retention_bytes = retention_limit(name, value.map(number).transpose()?)?;
            }
            CLEANUP_POLICY => {
                let policies: Option<Vec<&str>> =
                    value.map(|v| v.split(',').map(str::trim).collect());
                match policies.as_deref() {
                    None | Some(["delete"]) => {
                        self.extra.remove(CLEANUP_POLICY);
                    }
                    Some(["compact"]) => {
                        self.extra.insert(CLEANUP_POLICY.into(), "compact".into());
                    }
                    Some(["compact", "delete"] | ["delete", "compact"]) => {
                        self.extra
                            .insert(CLEANUP_POLICY.into(), "compact,delete".into());
                    }
                    Some(_) => {
                        return Err(Error::invalid(format!(
                            "{CLEANUP_POLICY} {:?} is not a policy; use \"delete\", \"compact\" or \"compact,delete\"",
                            value.unwrap_or_default()
                        )));
                    }
                }
            }
            MIN_COMPACTION_LAG_MS | DELETE_RETENTION_MS => match value {
                None => {
                    self.extra.remove(name);
                }
                Some(v) => {
                    let n = number(v)?;
                    if n < 0 {
                        return Err(Error::invalid(format!(
                            "{name} must be 0 or more (ms), got {n}"
                        )));
                    }
                    self.extra.insert(name.to_string(), n.to_string());
                }
            },
            MAX_MESSAGE_BYTES => match value {
                None => {
                    self.extra.remove(MAX_MESSAGE_BYTES);
                }
                Some(v) if number(v)? == -1 => {
                    // -1: no limit of the topic's own (the node's applies).
                    self.extra.remove(MAX_MESSAGE_BYTES);
                }
                Some(v) => {
                    let n = number(v)?;
                    if !(1..=i64::from(i32::MAX)).contains(&n) {
                        return Err(Error::invalid(format!(
                            "{MAX_MESSAGE_BYTES} must be between 1 and {}, got {n}",
                            i32::MAX
                        )));
                    }
                    self.extra.insert(MAX_MESSAGE_BYTES.into(), n.to_string());
                }
            },
            COMPRESSION_TYPE => match value {
                None | Some("producer") => {}
                Some(v) => {
                    return Err(Error::invalid(format!(
                        "{COMPRESSION_TYPE} {v:?} is not supported; only \"producer\" is (batches \
                         are kept as producers compressed them, and the cold tier is zstd Parquet)"
                    )));
                }
            },
            VISIBILITY => match value {
                None | Some("committed") => {
                    self.extra.remove(VISIBILITY);
                }
                Some("leader") => {
                    self.extra.insert(VISIBILITY.into(), "leader".into());
                }
                Some(v) => {
                    return Err(Error::invalid(format!(
                        "{VISIBILITY} must be \"committed\" or \"leader\", got {v:?}"
                    )));
                }
            },
            other => {
                return Err(Error::invalid(format!(
                    "unknown topic setting {other:?}; known: retention.ms, retention.bytes, \
                     {CLEANUP_POLICY}, {MIN_COMPACTION_LAG_MS}, {DELETE_RETENTION_MS}, \
                     {MAX_MESSAGE_BYTES}, {COMPRESSION_TYPE}, {VISIBILITY}"
                )));
            }
        }
        Ok(())
    }

    /// Every named setting as (name, value, is the default), in the forms [`TopicConfig::set`]
    /// takes.
    pub fn settings(&self) -> Vec<(&'static str, String, bool)> {
        let limit =
            |l: Option<NonZeroU64>| (retention_wire(l).unwrap_or(-1).to_string(), l.is_none());
        let (ms, ms_default) = limit(self.retention_ms);
        let (bytes, bytes_default) = limit(self.retention_bytes);
        let visibility = self.extra.get(VISIBILITY);
        vec![
            ("retention.ms", ms, ms_default),
            ("retention.bytes", bytes, bytes_default),
            (
                CLEANUP_POLICY,
                self.extra
                    .get(CLEANUP_POLICY)
                    .cloned()
                    .unwrap_or_else(|| "delete".into()),
                !self.extra.contains_key(CLEANUP_POLICY),
            ),
            (
                MIN_COMPACTION_LAG_MS,
                self.min_compaction_lag_ms().to_string(),
                !self.extra.contains_key(MIN_COMPACTION_LAG_MS),
            ),
            (
                DELETE_RETENTION_MS,
                self.delete_retention_ms().to_string(),
                !self.extra.contains_key(DELETE_RETENTION_MS),
            ),
            (
                MAX_MESSAGE_BYTES,
                self.extra
                    .get(MAX_MESSAGE_BYTES)
                    .cloned()
                    .unwrap_or_else(|| "-1".into()),
                !self.extra.contains_key(MAX_MESSAGE_BYTES),
            ),
            (COMPRESSION_TYPE, "producer".into(), true),
            (
                VISIBILITY,
                visibility.cloned().unwrap_or_else(|| "committed".into()),
                visibility.is_none(),
            ),
        ]
    }

    /// The topic's own limit on one record's size ([`MAX_MESSAGE_BYTES`]), if it has one.
    pub fn max_record_bytes(&self) -> Option<u64> {
        self.extra
            .get(MAX_MESSAGE_BYTES)
            .and_then(|v| v.parse().ok())
    }

    /// Whether the topic keeps only each key's newest record (`cleanup.policy` has `compact`).
    pub fn compacted(&self) -> bool {
        self.extra
            .get(CLEANUP_POLICY)
            .is_some_and(|v| v.split(',').any(|p| p == "compact"))
    }

    /// Whether retention by age and size applies (`cleanup.policy` has `delete`).
    pub fn deletes(&self) -> bool {
        self.extra
            .get(CLEANUP_POLICY)
            .is_none_or(|v| v.split(',').any(|p| p == "delete"))
    }

    /// [`MIN_COMPACTION_LAG_MS`], ms.
    pub fn min_compaction_lag_ms(&self) -> u64 {
        self.extra
            .get(MIN_COMPACTION_LAG_MS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// [`DELETE_RETENTION_MS`], ms.
    pub fn delete_retention_ms(&self) -> u64 {
        self.extra
            .get(DELETE_RETENTION_MS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_DELETE_RETENTION_MS)
    }

    /// Whether consumers may read what the leader appended before it is committed.
    pub fn leader_visible(&self) -> bool {
        self.extra.get(VISIBILITY).is_some_and(|v| v == "leader")
    }
}

/// Reads a retention limit as the wire states it (tierlog.v1's optional int64 and Kafka's
/// `retention.ms` / `retention.bytes`): absent or `-1` means unlimited, a positive number is the
/// limit, anything else is refused. The one place where the `-1` sentinel is understood.
pub fn retention_limit(name: &str, wire: Option<i64>) -> Result<Option<NonZeroU64>> {
    match wire {
        None | Some(-1) => Ok(None),
        Some(v) => u64::try_from(v)
            .ok()
            .and_then(NonZeroU64::new)
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{name} must be positive or -1 (unlimited), got {v}"
                ))
            }),
    }
}

/// A retention limit as the wire states it: the limit, or `None` (absent: unlimited).
pub fn retention_wire(limit: Option<NonZeroU64>) -> Option<i64> {
    limit.map(|v| i64::try_from(v.get()).unwrap_or(i64::MAX))
}

/// Stored limits: a positive number; `-1` (written by earlier versions for "unlimited") reads as
/// unlimited.
fn stored_limit<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<NonZeroU64>, D::Error> {
    let v = Option::<i64>::deserialize(d)?;
    retention_limit("a stored retention limit", v).map_err(serde::de::Error::custom)
}

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Cluster-unique, never reused, even after the topic is deleted.
    pub id: u64,
    pub config: TopicConfig,
    /// Wall-clock creation time, Unix milliseconds.
    pub created_at_ms: i64,
}

impl TopicMeta {
    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }
}

impl Meta {
    /// Creates a topic with a fresh id; [`Error::TopicExists`] when the name is taken.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        config.validate()?;
        let topic_key = self.keys.topic(name);
        let counter_key = self.keys.counter(TOPIC_ID_COUNTER);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let counter = self.kv.get(counter_key.as_bytes()).await?;
            let (id, counter_guard) = next_counter_value(&counter_key, counter.as_ref())?;
            let topic = TopicMeta {
                name: name.to_owned(),
                id,
                config: config.clone(),
                created_at_ms: self.clock.unix_millis(),
            };
            let txn = Txn::new()
                .when([Compare::absent(topic_key.clone()), counter_guard])
                .and_then([
                    TxnOp::put(counter_key.clone(), id.to_string(), None),
                    TxnOp::put(topic_key.clone(), encode_json(&topic), None),
                ])
                .or_else([TxnOp::get(topic_key.clone())]);
            let resp = self.kv.txn(txn).await?;
            if resp.succeeded {
                tracing::info!(
                    topic = name,
                    id,
                    partitions = config.partitions,
                    "created topic"
                );
                return Ok(topic);
            }
            if let Some(TxnOpResponse::Get(Some(_))) = resp.responses.first() {
                return Err(Error::TopicExists {
                    topic: name.to_owned(),
                });
            }
            backoff(attempt).await; // lost the id counter race
        }
        Err(contention(format!("create_topic({name})")))
    }

    pub async fn get_topic(&self, name: &str) -> Result<Option<TopicMeta>> {
        validate_topic_name(name)?;
        let kv = self.kv.get(self.keys.topic(name).as_bytes()).await?;
        kv.map(|kv| decode_json(&kv)).transpose()
    }

    /// All topics, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicMeta>> {
        let range = self.kv.range(self.keys.topics().as_bytes(), None).await?;
        range.kvs.iter().map(decode_json).collect()
    }

    /// Replaces a topic's config. The partition count may grow but not shrink.
    pub async fn update_topic_config(&self, name: &str, config: TopicConfig) -> Result<TopicMeta> {
        self.modify_topic_config(name, |c| {
            *c = config.clone();
            Ok(())
        })
        .await
    }

    /// Changes a topic's config with `change`, applied to the stored config and written only if
    /// nobody changed it meanwhile (else read again and applied again), so concurrent changes
    /// of different settings are all kept. The partition count may grow but not shrink.
    pub async fn modify_topic_config(
        &self,
        name: &str,
        change: impl Fn(&mut TopicConfig) -> Result<()>,
    ) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        let key = self.keys.topic(name);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(kv) = self.kv.get(key.as_bytes()).await? else {
                return Err(Error::TopicNotFound {
                    topic: name.to_owned(),
                });
            };
            let mut topic: TopicMeta = decode_json(&kv)?;
            let before = topic.config.partitions;
            change(&mut topic.config)?;
            topic.config.validate()?;
            if topic.config.partitions < before {
                return Err(Error::invalid(format!(
                    "topic {name} has {before} partitions; partitions can only be added"
                )));
            }
            let txn = Txn::new().when([guard(&kv)]).and_then([TxnOp::put(
                key.clone(),
                encode_json(&topic),
                None,
            )]);
            if self.kv.txn(txn).await?.succeeded {
                tracing::info!(topic = name, "updated topic config");
                return Ok(topic);
            }
            backoff(attempt).await;
        }
        Err(contention(format!("modify_topic_config({name})")))
    }

    /// Deletes a topic and returns what it was. Partition leader keys of the topic are removed
    /// too; partition epochs are kept, so a topic re-created under the same name continues
    /// from them and no epoch is ever handed out twice. Committed offsets are left to their
    /// groups.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        let key = self.keys.topic(name);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(kv) = self.kv.get(key.as_bytes()).await? else {
                return Err(Error::TopicNotFound {
                    topic: name.to_owned(),
                });
            };
            let topic: TopicMeta = decode_json(&kv)?;
            let txn = Txn::new()
                .when([guard(&kv)])
                .and_then([TxnOp::delete(key.clone())]);
            let resp = self.kv.txn(txn).await?;
            if resp.succeeded {
                tracing::info!(topic = name, id = topic.id, "deleted topic");
                self.drop_stale_leaders(name, resp.revision).await?;
                return Ok(topic);
            }
            backoff(attempt).await;
        }
        Err(contention(format!("delete_topic({name})")))
    }

    /// Deletes leader keys (and nodes' words that they cannot open a partition) of `topic`
    /// written before `deleted_at` (the topic's deletion).
    /// Leadership is only granted while the topic exists, so after this no leader key of the
    /// deleted incarnation is left; keys of a re-created incarnation are newer and untouched.
    async fn drop_stale_leaders(&self, topic: &str, deleted_at: i64) -> Result<()> {
        let prefix = self.keys.topic_partitions(topic);
        let range = self.kv.range(prefix.as_bytes(), None).await?;
        let stale: Vec<_> = range
            .kvs
            .iter()
            .filter(|kv| kv.mod_revision < deleted_at)
            .filter(|kv| {
                matches!(
                    self.keys.parse_partition_key(&kv.key),
                    Some((_, _, PartitionKey::Leader | PartitionKey::Unable(_)))
                )
            })
            .collect();
        for chunk in stale.chunks(self.max_txn_ops) {
            let compares = chunk
                .iter()
                .map(|kv| Compare::mod_revision(kv.key.clone(), CompareOp::Less, deleted_at));
            let deletes = chunk.iter().map(|kv| TxnOp::delete(kv.key.clone()));
            let txn = Txn::new().when(compares).and_then(deletes);
            if !self.kv.txn(txn).await?.succeeded {
                // A leader key changed meanwhile: it belongs to a newer incarnation or was
                // already released. Retry the keys one by one.
                for kv in chunk {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(
                            kv.key.clone(),
                            CompareOp::Less,
                            deleted_at,
                        )])
                        .and_then([TxnOp::delete(kv.key.clone())]);
                    self.kv.txn(txn).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the stored JSON of a topic.
    #[test]
    fn topic_json_golden() {
        let mut config = TopicConfig::new(3);
        config.retention_ms = NonZeroU64::new(86_400_000);
        config
            .extra
            .insert("cleanup.policy".to_owned(), "delete".to_owned());
        let topic = TopicMeta {
            name: "orders".to_owned(),
            id: 7,
            config,
            created_at_ms: 1_700_000_000_000,
        };
        let json = String::from_utf8(encode_json(&topic).to_vec()).expect("utf8");
        assert_eq!(
            json,
            r#"{"name":"orders","id":7,"config":{"partitions":3,"retention_ms":86400000,"cleanup.policy":"delete"},"created_at_ms":1700000000000}"#
        );
        let back: TopicMeta = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, topic);
    }

    /// `-1` and absent are both "unlimited" and never become a limit; zero and other negative
    /// numbers are refused; what earlier versions stored as `-1` reads back as unlimited.
    #[test]
    fn retention_limits_from_the_wire_and_the_store() {
        assert_eq!(retention_limit("retention_ms", None).unwrap(), None);
        assert_eq!(retention_limit("retention_ms", Some(-1)).unwrap(), None);
        assert_eq!(
            retention_limit("retention_ms", Some(5)).unwrap(),
            NonZeroU64::new(5)
        );
        for bad in [0, -2, i64::MIN] {
            let e = retention_limit("retention_bytes", Some(bad)).unwrap_err();
            assert!(e.to_string().contains("retention_bytes"), "{e}");
        }
        assert_eq!(retention_wire(None), None);
        assert_eq!(retention_wire(NonZeroU64::new(7)), Some(7));
        let old = r#"{"partitions":1,"retention_ms":-1,"retention_bytes":-1}"#;
        let c: TopicConfig = serde_json::from_str(old).unwrap();
        assert_eq!((c.retention_ms, c.retention_bytes), (None, None));
        assert!(
            serde_json::from_str::<TopicConfig>(r#"{"partitions":1,"retention_ms":0}"#).is_err()
        );
    }

    #[test]
    fn config_validation() {
        assert!(TopicConfig::new(1).validate().is_ok());
        assert!(TopicConfig::new(0).validate().is_err());
        let mut c = TopicConfig::new(1);
        c.extra.insert("partitions".into(), "9".into());
        assert!(c.validate().is_err());
    }
}
