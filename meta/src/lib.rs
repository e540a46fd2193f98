//! `meta`: everything the tierlog cluster must agree on.
//!
//! # What it owns
//!
//! - [`KvBackend`]: one object-safe key-value contract with etcd v3 semantics (global
//!   revisions, per-key versions, compare-and-act [`Txn`]s, leases that delete their keys,
//!   prefix watches with replay). See [`kv`] for the exact rules.
//! - [`EmbeddedKv`]: the single-node backend (`tierlog serve`'s default), in memory with every
//!   write committed to a local redb file first; [`EmbeddedKv::memory`] is the same without the
//!   disk, for tests.
//! - [`EtcdKv`]: the same trait on an etcd v3 cluster, namespaced under a key prefix so that
//!   several clusters (or test runs) can share one etcd. See [`etcd`] for the mapping.
//! - [`Meta`]: the typed layer over any `Arc<dyn KvBackend>`: topics, id counters, partition
//!   leadership with fencing epochs, the node registry, committed consumer offsets.
//! - `conformance` (feature `conformance`): the checks every backend must pass.
//!
//! # Key layout
//!
//! Under a configurable root ([`MetaOptions::root`], default `/tierlog/`):
//!
//! | key                                    | value                              | lease |
//! |----------------------------------------|------------------------------------|-------|
//! | `topics/<name>`                        | JSON [`TopicMeta`]                 | no    |
//! | `ids/<counter>`                        | last id handed out, decimal        | no    |
//! | `partitions/<topic>/<p>/epoch`         | last leader epoch granted, decimal | no    |
//! | `partitions/<topic>/<p>/leader`        | JSON [`Leader`]                    | yes   |
//! | `cluster/id`                           | the cluster's id, made once        | no    |
//! | `nodes/<id>`                           | JSON [`NodeInfo`]                  | yes   |
//! | `groups/<group>/offsets/<topic>/<p>`   | JSON `{"offset":N,"metadata":".."}`| no    |
//! | `groups/<group>/state`                 | JSON [`GroupRecord`]               | no    |
//! | `coordinators/<group>`                 | JSON [`Coordinator`]               | yes   |
//!
//! Topic and counter names are `[A-Za-z0-9._-]{1,249}` (not `.`/`..`); group ids are
//! 1..=255 bytes without control characters, with `%` and `/` percent-encoded in keys.
//!
//! # Invariants
//!
//! - Revisions only grow; every change is visible to watchers, in revision order.
//! - Every acknowledged write is durable: [`EmbeddedKv`] commits to disk (fsync) before it
//!   returns or shows the change to anyone; etcd acknowledges after quorum commit.
//! - Leader epochs of a partition never decrease and are never granted twice: the epoch key
//!   is not leased and survives leader loss, restarts and topic deletion.
//! - At most one node holds a partition's leader key, and only while its lease lives.
//! - Ids from a counter (topic ids included) are unique and never reused.
//! - Leases are process-local in [`EmbeddedKv`]: reopening a store deletes every key that
//!   was attached to a lease.
//!
//! # Errors
//!
//! One enum, [`Error`], classified once by [`Error::class`]: retryable (`Unavailable`,
//! `Timeout`, `Contention`), the caller's (`InvalidArgument`, `TopicNotFound`, `TopicExists`,
//! `LeaseNotFound`, `Compacted`), fenced (`Fenced`, `LeaderExists`), corruption (`Corrupt`),
//! fatal (`Backend`, `Storage`, `Closed`).

pub mod clock;
pub mod domain;
pub mod embedded;
pub mod error;
pub mod etcd;
pub mod kv;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use clock::{Clock, ManualClock, SystemClock};
pub use domain::{
    CLEANUP_POLICY, COMPRESSION_TYPE, ClassicMemberRecord, ClassicProtocol, ClassicRecord,
    Coordinator, DELETE_RETENTION_MS, GroupClaim, GroupRecord, Leader, LeaderEpoch, LeaderEvent,
    LeaderSnapshot, MAX_GROUP_ID_LEN, MAX_MESSAGE_BYTES, MIN_COMPACTION_LAG_MS, MemberRecord, Meta,
    MetaOptions, NodeId, NodeInfo, PartitionLeader, PartitionOffset, TOPIC_ID_COUNTER, TopicConfig,
    TopicMeta, Unable, VISIBILITY, retention_limit, retention_wire, validate_group,
    validate_topic_name,
};
pub use embedded::{EmbeddedKv, EmbeddedOptions};
pub use error::{Error, ErrorClass, Result};
pub use etcd::{EtcdKv, EtcdOptions};
pub use kv::{
    Compare, CompareOp, CompareTarget, DeleteResponse, EventKind, KeyValue, KvBackend, KvObserver,
    LeaseId, ObservedKv, RangeResponse, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent,
    WatchStream,
};
