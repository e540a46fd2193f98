//! The low-level key-value contract every metadata backend implements: [`KvBackend`].
//!
//! The model is etcd v3's, so that an etcd backend maps onto it one to one:
//!
//! - **Revisions.** The store has one global revision, an `i64` that starts at 1 and grows by
//!   one with every request that changes something. All changes of one request (a put, a
//!   `delete_prefix`, a [`Txn`], a lease revocation) share one revision. A request that changes
//!   nothing (deleting an absent key, a read-only txn, a txn whose branch has no effect) does not
//!   bump it.
//! - **Keys.** Each live key carries `create_revision` (revision of its creation), `mod_revision`
//!   (revision of its last change), `version` (1 on creation, +1 per put; a deleted key starts
//!   again at 1) and the lease it is attached to, if any.
//! - **Transactions.** A [`Txn`] evaluates all its [`Compare`]s against one snapshot, then
//!   applies either its `success` or its `failure` ops atomically. Reads inside a txn see the
//!   txn's own earlier writes. A branch may not put the same key twice, nor put a key that one
//!   of its deletes covers ([`Error::InvalidArgument`]). A compare on the value of an absent key
//!   is always false; other compares treat an absent key as all zeros (version 0, revision 0,
//!   no lease): [`Compare::absent`] and [`Compare::exists`] are built on that.
//! - **Leases.** A lease has a TTL; [`KvBackend::keep_alive`] renews it for a full TTL. When it
//!   expires or is revoked, every key attached to it is deleted in one write that watchers see.
//!   Putting a key with an unknown or expired lease fails with [`Error::LeaseNotFound`].
//! - **Watches.** [`KvBackend::watch_prefix`] streams every change to keys under a prefix in
//!   revision order (and in op order within a revision), optionally replaying history from a
//!   start revision. When that history is gone the watch fails with [`Error::Compacted`], either
//!   from `watch_prefix` itself or as the stream's first item.
//!
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::LeaseNotFound`]: crate::Error::LeaseNotFound
//! [`Error::Compacted`]: crate::Error::Compacted

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// A lease handle, as etcd's `i64` lease ids (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A live key with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Bytes,
    /// Revision at which the key was (last) created.
    pub create_revision: i64,
    /// Revision of the key's last change.
    pub mod_revision: i64,
    /// Number of puts since creation (1 after the creating put).
    pub version: i64,
    pub lease: Option<LeaseId>,
}

/// Result of [`KvBackend::range`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys, sorted by key bytes.
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Store revision the range was read at.
    pub revision: i64,
}

/// Result of [`KvBackend::delete`] and [`KvBackend::delete_prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteResponse {
    pub deleted: u64,
    /// Store revision after the delete (unchanged when nothing was deleted).
    pub revision: i64,
}

/// How a [`Compare`] relates the key's current field to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// Which field of the key a [`Compare`] looks at, and the operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    Value(Bytes),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(Option<LeaseId>),
}

/// One condition of a [`Txn`]: `key.<field> <op> <operand>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Self {
            key: key.into(),
            op,
            target,
        }
    }

    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Self::new(key, op, CompareTarget::Value(value.into()))
    }

    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version(version))
    }

    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::CreateRevision(revision))
    }

    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::ModRevision(revision))
    }

    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: Option<LeaseId>) -> Self {
        Self::new(key, op, CompareTarget::Lease(lease))
    }

    /// The key does not exist (`version == 0`).
    pub fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::version(key, CompareOp::Equal, 0)
    }

    /// The key exists (`version > 0`).
    pub fn exists(key: impl Into<Vec<u8>>) -> Self {
        Self::version(key, CompareOp::Greater, 0)
    }

    /// Evaluates the compare against the key's current state (`None`: absent), with etcd's
    /// rules: a value compare on an absent key is false; other fields of an absent key are 0.
    pub fn evaluate(&self, kv: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ordering: Ordering = match (&self.target, kv) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(want), Some(kv)) => kv.value.as_ref().cmp(want.as_ref()),
            (CompareTarget::Version(want), kv) => kv.map_or(0, |kv| kv.version).cmp(want),
            (CompareTarget::CreateRevision(want), kv) => {
                kv.map_or(0, |kv| kv.create_revision).cmp(want)
            }
            (CompareTarget::ModRevision(want), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(want),
            (CompareTarget::Lease(want), kv) => {
                let have = kv.and_then(|kv| kv.lease).map_or(0, |l| l.0);
                have.cmp(&want.map_or(0, |l| l.0))
            }
        };
        match self.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Get {
        key: Vec<u8>,
    },
    Range {
        prefix: Vec<u8>,
        limit: Option<usize>,
    },
    Put {
        key: Vec<u8>,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: Vec<u8>,
    },
    DeletePrefix {
        prefix: Vec<u8>,
    },
}

impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::Get { key: key.into() }
    }

    pub fn range(prefix: impl Into<Vec<u8>>, limit: Option<usize>) -> Self {
        TxnOp::Range {
            prefix: prefix.into(),
            limit,
        }
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Bytes>, lease: Option<LeaseId>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        TxnOp::Delete { key: key.into() }
    }

    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        TxnOp::DeletePrefix {
            prefix: prefix.into(),
        }
    }
}

/// The result of one [`TxnOp`], in the same position as the op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    Get(Option<KeyValue>),
    Range {
        kvs: Vec<KeyValue>,
        more: bool,
    },
    Put,
    /// For both [`TxnOp::Delete`] and [`TxnOp::DeletePrefix`].
    Delete {
        deleted: u64,
    },
}

/// A compare-then-act transaction: if every compare holds, apply `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// Result of [`KvBackend::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether all compares held (so `success` ran).
    pub succeeded: bool,
    /// One response per op of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
    /// Store revision after the txn (its writes' revision if it wrote anything).
    pub revision: i64,
}

/// What happened to a key in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
///
/// For a delete, `kv` carries only the key and `mod_revision` (the delete's revision); its
/// other fields are zero/empty, as etcd reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub revision: i64,
}

/// The stream returned by [`KvBackend::watch_prefix`]. After an `Err` item the stream ends.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// Everything the cluster agrees on goes through this trait. See the module docs for the
/// semantics every implementation must honour; `crate::conformance` checks them.
///
/// Only [`KvBackend::txn`], the lease methods and [`KvBackend::watch_prefix`] are required;
/// the single-key helpers default to one-op transactions.
#[async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// Applies a transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Grants a lease that expires `ttl` after its last renewal. Backends may round the TTL up
    /// to their granularity (etcd: whole seconds, with a server-side minimum).
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId>;

    /// Renews the lease for a full TTL and returns that TTL; `LeaseNotFound` when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration>;

    /// Revokes the lease, deleting its keys; `LeaseNotFound` when it is already gone.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Streams changes to keys starting with `prefix`, from `start_revision` (inclusive) when
    /// given, else from the next write. `start_revision` must be >= 1.
    async fn watch_prefix(&self, prefix: &[u8], start_revision: Option<i64>)
    -> Result<WatchStream>;

    /// The store's current revision.
    async fn revision(&self) -> Result<i64> {
        Ok(self.txn(Txn::new()).await?.revision)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut resp = self.txn(Txn::new().and_then([TxnOp::get(key)])).await?;
        match resp.responses.pop() {
            Some(TxnOpResponse::Get(kv)) => Ok(kv),
            other => unreachable_response("get", other),
        }
    }

    /// Keys starting with `prefix` (all keys for an empty prefix), sorted, at most `limit`.
    async fn range(&self, prefix: &[u8], limit: Option<usize>) -> Result<RangeResponse> {
        let mut resp = self
            .txn(Txn::new().and_then([TxnOp::range(prefix, limit)]))
            .await?;
        match resp.responses.pop() {
            Some(TxnOpResponse::Range { kvs, more }) => Ok(RangeResponse {
                kvs,
                more,
                revision: resp.revision,
            }),
            other => unreachable_response("range", other),
        }
    }

    /// Puts `value` at `key`, optionally attached to `lease`; returns the write's revision.
    async fn put(&self, key: &[u8], value: Bytes, lease: Option<LeaseId>) -> Result<i64> {
        let resp = self
            .txn(Txn::new().and_then([TxnOp::put(key, value, lease)]))
            .await?;
        Ok(resp.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        let resp = self.txn(Txn::new().and_then([TxnOp::delete(key)])).await?;
        delete_response(resp)
    }

    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        let resp = self
            .txn(Txn::new().and_then([TxnOp::delete_prefix(prefix)]))
            .await?;
        delete_response(resp)
    }
}

fn delete_response(mut resp: TxnResponse) -> Result<DeleteResponse> {
    match resp.responses.pop() {
        Some(TxnOpResponse::Delete { deleted }) => Ok(DeleteResponse {
            deleted,
            revision: resp.revision,
        }),
        other => unreachable_response("delete", other),
    }
}

/// A backend answered a one-op txn with the wrong response shape: a backend bug.
fn unreachable_response<T>(op: &str, got: Option<TxnOpResponse>) -> Result<T> {
    Err(crate::Error::corrupt(
        format!("backend returned a malformed response to `{op}`"),
        format!("{got:?}"),
    ))
}

/// Told about every request to the metadata store an [`ObservedKv`] wraps: the operation
/// (`txn`, `get`, `range`, `put`, `delete`, `lease_grant`, `lease_keep_alive`,
/// `lease_revoke`, `watch`), whether it succeeded, and how long it took. Must not block.
pub trait KvObserver: Send + Sync + 'static {
    fn observed(&self, op: &'static str, ok: bool, took: Duration);
}

/// A [`KvBackend`] that reports every request to a [`KvObserver`] (for metrics) and
/// forwards it unchanged.
pub struct ObservedKv {
    inner: std::sync::Arc<dyn KvBackend>,
    observer: std::sync::Arc<dyn KvObserver>,
}

impl ObservedKv {
    pub fn new(
        inner: std::sync::Arc<dyn KvBackend>,
        observer: std::sync::Arc<dyn KvObserver>,
    ) -> Self {
        ObservedKv { inner, observer }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let r = f.await;
        self.observer.observed(op, r.is_ok(), started.elapsed());
        r
    }
}

#[async_trait]
impl KvBackend for ObservedKv {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.timed("txn", self.inner.txn(txn)).await
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.timed("lease_grant", self.inner.grant_lease(ttl)).await
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        self.timed("lease_keep_alive", self.inner.keep_alive(lease))
            .await
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.timed("lease_revoke", self.inner.revoke_lease(lease))
            .await
    }
    async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: Option<i64>,
    ) -> Result<WatchStream> {
        self.timed("watch", self.inner.watch_prefix(prefix, start_revision))
            .await
    }
    async fn revision(&self) -> Result<i64> {
        self.timed("revision", self.inner.revision()).await
    }
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.timed("get", self.inner.get(key)).await
    }
    async fn range(&self, prefix: &[u8], limit: Option<usize>) -> Result<RangeResponse> {
        self.timed("range", self.inner.range(prefix, limit)).await
    }
    async fn put(&self, key: &[u8], value: Bytes, lease: Option<LeaseId>) -> Result<i64> {
        self.timed("put", self.inner.put(key, value, lease)).await
    }
    async fn delete(&self, key: &[u8]) -> Result<DeleteResponse> {
        self.timed("delete", self.inner.delete(key)).await
    }
    async fn delete_prefix(&self, prefix: &[u8]) -> Result<DeleteResponse> {
        self.timed("delete", self.inner.delete_prefix(prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &'static [u8], version: i64, lease: Option<i64>) -> KeyValue {
        KeyValue {
            key: b"k".to_vec(),
            value: Bytes::from_static(value),
            create_revision: 5,
            mod_revision: 7,
            version,
            lease: lease.map(LeaseId),
        }
    }

    #[test]
    fn compare_follows_etcd_rules() {
        use CompareOp::*;
        let k = kv(b"b", 2, Some(9));
        assert!(Compare::value("k", Equal, "b").evaluate(Some(&k)));
        assert!(Compare::value("k", Greater, "a").evaluate(Some(&k)));
        assert!(Compare::value("k", Less, "c").evaluate(Some(&k)));
        // A value compare on an absent key is false, whatever the operator.
        assert!(!Compare::value("k", NotEqual, "x").evaluate(None));
        assert!(Compare::version("k", Equal, 2).evaluate(Some(&k)));
        assert!(Compare::create_revision("k", Equal, 5).evaluate(Some(&k)));
        assert!(Compare::mod_revision("k", Greater, 6).evaluate(Some(&k)));
        assert!(Compare::lease("k", Equal, Some(LeaseId(9))).evaluate(Some(&k)));
        assert!(Compare::lease("k", Equal, None).evaluate(None));
        assert!(Compare::absent("k").evaluate(None));
        assert!(!Compare::absent("k").evaluate(Some(&k)));
        assert!(Compare::exists("k").evaluate(Some(&k)));
        assert!(Compare::mod_revision("k", Equal, 0).evaluate(None));
    }
}
