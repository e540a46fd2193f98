//! Topics: `topics/<name>` holds a JSON [`TopicMeta`]; ids come from the `ids/topic` counter.
//!
//! Invariants: a topic id is never reused (the counter only grows, and creation bumps it in
//! the same txn that writes the topic); a topic's partition count never shrinks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// How long records are kept: `None` = cluster default, `Some(-1)` = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// Bytes kept per partition: `None` = cluster default, `Some(-1)` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
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
        for (name, value) in [
            ("retention_ms", self.retention_ms),
            ("retention_bytes", self.retention_bytes),
        ] {
            if let Some(v) = value.filter(|v| *v != -1 && *v <= 0) {
                return Err(Error::invalid(format!(
                    "{name} must be positive or -1 (unlimited), got {v}"
                )));
            }
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
        validate_topic_name(name)?;
        config.validate()?;
        let key = self.keys.topic(name);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let Some(kv) = self.kv.get(key.as_bytes()).await? else {
                return Err(Error::TopicNotFound {
                    topic: name.to_owned(),
                });
            };
            let mut topic: TopicMeta = decode_json(&kv)?;
            if config.partitions < topic.config.partitions {
                return Err(Error::invalid(format!(
                    "topic {name} has {} partitions; partitions can only be added",
                    topic.config.partitions
                )));
            }
            topic.config = config.clone();
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
        Err(contention(format!("update_topic_config({name})")))
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

    /// Deletes leader keys of `topic` written before `deleted_at` (the topic's deletion).
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
                    Some((_, _, PartitionKey::Leader))
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
        config.retention_ms = Some(86_400_000);
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

    #[test]
    fn config_validation() {
        assert!(TopicConfig::new(1).validate().is_ok());
        assert!(TopicConfig::new(0).validate().is_err());
        let mut c = TopicConfig::new(1);
        c.retention_bytes = Some(-1);
        assert!(c.validate().is_ok());
        c.retention_ms = Some(0);
        assert!(c.validate().is_err());
        let mut c = TopicConfig::new(1);
        c.extra.insert("partitions".into(), "9".into());
        assert!(c.validate().is_err());
    }
}
