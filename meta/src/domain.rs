//! [`Meta`]: the typed metadata API (topics, id counters, partition leadership, nodes,
//! consumer offsets) over any [`KvBackend`].
//!
//! Values are JSON (numbers as plain decimal text), keys follow the layout in the crate docs.
//! Every read-modify-write is an optimistic transaction guarded by the `mod_revision` (or
//! absence) of what it read, retried a bounded number of times ([`Error::Contention`] after
//! that).

mod groups;
mod keys;
mod leadership;
mod nodes;
mod offsets;
mod topics;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::groups::{
    ClassicMemberRecord, ClassicProtocol, ClassicRecord, Coordinator, GroupClaim, GroupRecord,
    MemberRecord,
};
pub use self::keys::{MAX_GROUP_ID_LEN, validate_group, validate_topic_name};
pub use self::leadership::{Leader, LeaderEvent, LeaderSnapshot, PartitionLeader, Unable};
pub use self::nodes::NodeInfo;
pub use self::offsets::PartitionOffset;
pub use self::topics::{
    CLEANUP_POLICY, COMPRESSION_TYPE, DELETE_RETENTION_MS, MAX_MESSAGE_BYTES,
    MIN_COMPACTION_LAG_MS, TopicConfig, TopicMeta, VISIBILITY, retention_limit, retention_wire,
};

use self::keys::Keys;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, KeyValue, KvBackend, TxnOpResponse, TxnResponse};

/// A broker's id.
pub type NodeId = u64;

/// A partition leader's epoch: grows by one with every leadership grant, never decreases.
pub type LeaderEpoch = u64;

/// Name of the id counter that numbers topics.
pub const TOPIC_ID_COUNTER: &str = "topic";

/// How many optimistic attempts a read-modify-write makes before giving up.
const MAX_CAS_ATTEMPTS: u32 = 1_000;

/// Options of [`Meta`].
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// Prefix of every key; must start and end with `/`. Lets several clusters share one etcd.
    pub root: String,
    /// Source of `created_at_ms` timestamps.
    pub clock: Arc<dyn Clock>,
    /// Largest txn this layer sends (etcd's `--max-txn-ops`, 128 by default). Larger offset
    /// commits are split into txns of at most this many keys.
    pub max_txn_ops: usize,
}

impl Default for MetaOptions {
    fn default() -> Self {
        Self {
            root: "/tierlog/".to_owned(),
            clock: Arc::new(SystemClock),
            max_txn_ops: 128,
        }
    }
}

/// Typed access to cluster metadata. Cheap to clone.
#[derive(Clone)]
pub struct Meta {
    kv: Arc<dyn KvBackend>,
    keys: Arc<Keys>,
    clock: Arc<dyn Clock>,
    max_txn_ops: usize,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("root", &self.root()).finish()
    }
}

impl Meta {
    /// `Meta` under the default root `/tierlog/`.
    pub fn new(kv: Arc<dyn KvBackend>) -> Self {
        Self::with_options(kv, MetaOptions::default()).expect("default options are valid")
    }

    pub fn with_options(kv: Arc<dyn KvBackend>, options: MetaOptions) -> Result<Self> {
        let root = &options.root;
        if !root.starts_with('/') || !root.ends_with('/') || root.contains("//") {
            return Err(Error::invalid(format!(
                "metadata root {root:?} must start and end with '/' and have no empty segment"
            )));
        }
        if options.max_txn_ops < 2 {
            return Err(Error::invalid("max_txn_ops must be at least 2"));
        }
        Ok(Self {
            kv,
            keys: Arc::new(Keys::new(options.root)),
            clock: options.clock,
            max_txn_ops: options.max_txn_ops,
        })
    }

    /// The backend underneath, for callers that build their own fenced transactions.
    pub fn kv(&self) -> &Arc<dyn KvBackend> {
        &self.kv
    }

    pub fn root(&self) -> &str {
        self.keys.root()
    }

    /// Allocates the next value of counter `name` (1, 2, 3, ...): unique across the cluster.
    pub async fn next_id(&self, name: &str) -> Result<u64> {
        keys::validate_name("counter", name)?;
        let key = self.keys.counter(name);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let current = self.kv.get(key.as_bytes()).await?;
            let (id, guard) = next_counter_value(&key, current.as_ref())?;
            let txn = crate::kv::Txn::new()
                .when([guard])
                .and_then([crate::kv::TxnOp::put(key.clone(), id.to_string(), None)]);
            if self.kv.txn(txn).await?.succeeded {
                return Ok(id);
            }
            backoff(attempt).await;
        }
        Err(contention(format!("next_id({name})")))
    }
}

/// The value after `current` and the compare that guards the increment.
fn next_counter_value(key: &str, current: Option<&KeyValue>) -> Result<(u64, Compare)> {
    match current {
        None => Ok((1, Compare::absent(key))),
        Some(kv) => {
            let value: u64 = decode_number(kv)?;
            let next = value
                .checked_add(1)
                .ok_or_else(|| Error::invalid(format!("counter {key} is exhausted")))?;
            Ok((next, guard(kv)))
        }
    }
}

/// Compare that holds while `kv` is unchanged.
fn guard(kv: &KeyValue) -> Compare {
    Compare::mod_revision(kv.key.clone(), CompareOp::Equal, kv.mod_revision)
}

/// Compare that holds while the key is as observed (`None`: still absent).
fn guard_opt(key: &str, kv: Option<&KeyValue>) -> Compare {
    kv.map_or_else(|| Compare::absent(key), guard)
}

fn encode_json<T: Serialize>(value: &T) -> Bytes {
    serde_json::to_vec(value)
        .expect("metadata types serialize to JSON infallibly (string keys, no custom impls)")
        .into()
}

fn decode_json<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| Error::corrupt(describe_key(kv), e))
}

fn decode_number(kv: &KeyValue) -> Result<u64> {
    std::str::from_utf8(&kv.value)
        .map_err(|e| Error::corrupt(describe_key(kv), e))?
        .parse::<u64>()
        .map_err(|e| Error::corrupt(describe_key(kv), e))
}

fn describe_key(kv: &KeyValue) -> String {
    format!("value of key {:?}", String::from_utf8_lossy(&kv.key))
}

/// Pulls the results of an all-`Get` txn, in order.
fn take_gets<const N: usize>(resp: TxnResponse) -> Result<[Option<KeyValue>; N]> {
    let gets: Vec<Option<KeyValue>> = resp
        .responses
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(kv) => Ok(kv),
            other => Err(Error::corrupt(
                "backend txn response",
                format!("expected a get response, got {other:?}"),
            )),
        })
        .collect::<Result<_>>()?;
    gets.try_into().map_err(|got: Vec<_>| {
        Error::corrupt(
            "backend txn response",
            format!("expected {N} responses, got {}", got.len()),
        )
    })
}

fn contention(what: String) -> Error {
    Error::Contention {
        what,
        attempts: MAX_CAS_ATTEMPTS,
    }
}

/// Between lost CAS races: yield first, then back off briefly so a crowd of contenders
/// spreads out.
async fn backoff(attempt: u32) {
    if attempt < 4 {
        tokio::task::yield_now().await;
    } else {
        let micros = 50 * u64::from(attempt.min(40));
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }
}
