//! [`EtcdKv`]: the [`KvBackend`] on an etcd v3 cluster (etcd 3.4 or newer).
//!
//! The trait's model is etcd's, so the mapping is one to one: a [`Txn`] is one etcd `Txn`
//! (compares, then the success or failure ops, at one revision), the helpers are one-op txns,
//! leases are etcd leases and [`KvBackend::watch_prefix`] is one etcd watch (its own gRPC
//! stream) on the prefix, with etcd's start revision.
//!
//! # Invariants
//!
//! - **Namespace.** Every key is stored as [`EtcdOptions::namespace`] + key, and keys come back
//!   without it: ranges, deletes and watches never see or touch keys outside the namespace, so
//!   several clusters (or test runs) can share one etcd. Revisions and leases stay global to the
//!   etcd cluster: other namespaces' writes bump the revision too (the trait only promises that
//!   revisions grow), and a lease id is valid in every namespace.
//! - **Durability.** etcd answers a write after a quorum of members committed it; reads are
//!   linearizable (no serializable reads are used).
//! - **Leases.** TTLs are whole seconds, rounded up; etcd raises a TTL below its minimum
//!   (`1.5 × election timeout`, 2 s with default flags) to that minimum. Expiry is decided by
//!   the etcd leader's clock, and a new leader extends every lease by its TTL.
//! - **Watches.** Real etcd watches, never polling: history replay from a start revision, then
//!   live events in revision order. A compacted start revision, a watcher too slow for etcd's
//!   compaction, a cancellation by etcd or a broken stream ends the stream with an error
//!   ([`Error::Compacted`], else [`Error::Unavailable`]); nothing reconnects behind the caller's
//!   back, so no event can be silently skipped.
//! - **Bounded waits.** Every request is bounded by [`EtcdOptions::request_timeout`] (a watch,
//!   until it is established); [`EtcdKv::connect`] checks that etcd answers within
//!   [`EtcdOptions::connect_timeout`], so "etcd is down" is an error at start-up, not a hang.
//!
//! # Errors
//!
//! gRPC codes map onto [`Error`] once, in [`EtcdKv::error`]: `Unavailable`, `Unknown`,
//! `Cancelled`, `Aborted`, `ResourceExhausted` and transport failures are
//! [`Error::Unavailable`] (retryable, naming the endpoints); an elapsed request timeout or
//! `DeadlineExceeded` is [`Error::Timeout`] (the request may have been applied);
//! `InvalidArgument`/`OutOfRange` (duplicate keys in a txn, too many ops, a request too large)
//! are [`Error::InvalidArgument`]; etcd's "requested lease not found" is
//! [`Error::LeaseNotFound`]; anything else (permission denied, unimplemented, internal) is
//! [`Error::Backend`], which needs an operator.

mod watch;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as ec;
use tonic::Code;

use crate::error::{BoxError, Error, Result};
use crate::kv::{
    Compare, CompareOp, CompareTarget, KeyValue, KvBackend, LeaseId, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchStream,
};

/// How to reach etcd and which part of its key space to use.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://host:port`; a bare `host:port` means http). Requests
    /// are balanced over the members that are up.
    pub endpoints: Vec<String>,
    /// Prefix of every key this backend reads or writes (e.g. `b"cluster-a/"`); empty: the
    /// whole key space. Give each cluster sharing an etcd its own.
    pub namespace: Vec<u8>,
    /// Bound for establishing a connection, and for the reachability check of
    /// [`EtcdKv::connect`].
    pub connect_timeout: Duration,
    /// Bound for every request. Longer rides out a leader election (a few seconds) instead of
    /// failing with [`Error::Timeout`]; shorter reports a dead cluster sooner.
    pub request_timeout: Duration,
    /// HTTP/2 ping interval while a stream (a watch, a keep-alive) is open: how soon a silently
    /// dead connection, and the watches on it, is noticed (after a further `request_timeout`
    /// without an answer). etcd drops clients that ping more often than every 5 s by default.
    pub keep_alive_interval: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            namespace: Vec::new(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(10),
        }
    }

    pub fn with_namespace(mut self, namespace: impl Into<Vec<u8>>) -> Self {
        self.namespace = namespace.into();
        self
    }
}

/// The etcd metadata backend. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct EtcdKv {
    client: ec::Client,
    options: EtcdOptions,
    /// `etcd at <endpoints>`, for error messages.
    backend: String,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.options.endpoints)
            .field(
                "namespace",
                &String::from_utf8_lossy(&self.options.namespace),
            )
            .finish_non_exhaustive()
    }
}

impl EtcdKv {
    /// Connects to etcd and checks that it answers within `connect_timeout`
    /// ([`Error::Unavailable`] naming the endpoints otherwise).
    pub async fn connect(options: EtcdOptions) -> Result<Self> {
        if options.endpoints.is_empty() {
            return Err(Error::invalid("no etcd endpoints given"));
        }
        let backend = format!("etcd at {}", options.endpoints.join(","));
        let connect = ec::ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(options.keep_alive_interval, options.request_timeout)
            // etcd (grpc-go) answers pings on a connection without open streams with GOAWAY.
            .with_keep_alive_while_idle(false);
        let client = match ec::Client::connect(&options.endpoints, Some(connect)).await {
            Ok(client) => client,
            Err(ec::Error::InvalidArgs(msg)) => return Err(Error::InvalidArgument(msg)),
            Err(ec::Error::InvalidUri(e)) => {
                return Err(Error::invalid(format!("bad etcd endpoint: {e}")));
            }
            Err(e) => {
                return Err(Error::Unavailable {
                    backend,
                    source: e.into(),
                });
            }
        };
        let kv = Self {
            client,
            options,
            backend,
        };
        // The channel connects lazily: one cheap read of one key proves a member answers.
        let key = match kv.options.namespace.as_slice() {
            [] => vec![0], // etcd refuses an empty key
            namespace => namespace.to_vec(),
        };
        let probe = kv
            .call_within(kv.options.connect_timeout, "connect", None, || {
                let mut client = kv.client.kv_client();
                let key = key.clone();
                let options = ec::GetOptions::new().with_count_only().with_serializable();
                async move { client.get(key, Some(options)).await }
            })
            .await;
        match probe {
            Ok(_) => {}
            Err(Error::Timeout { .. }) => {
                return Err(kv.unavailable(
                    format!("no answer within {:?}", kv.options.connect_timeout).into(),
                ));
            }
            Err(e) => return Err(e),
        }
        tracing::info!(backend = %kv.backend, namespace = %String::from_utf8_lossy(&kv.options.namespace), "connected to etcd");
        Ok(kv)
    }

    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Compacts etcd's history up to `revision` (exclusive): watches from older revisions fail
    /// with [`Error::Compacted`] afterwards. This is cluster-wide, not per namespace.
    pub async fn compact(&self, revision: i64) -> Result<()> {
        self.call("compact", None, || {
            let mut kv = self.client.kv_client();
            let options = ec::CompactionOptions::new().with_physical();
            async move { kv.compact(revision, Some(options)).await }
        })
        .await
        .map(drop)
    }

    /// Runs a request under the request timeout, mapping its error; see [`Self::call_within`].
    async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        lease: Option<LeaseId>,
        request: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ec::Error>>,
    {
        self.call_within(self.options.request_timeout, operation, lease, request)
            .await
    }

    /// Runs `request` until it succeeds, fails, or `timeout` has passed ([`Error::Timeout`]).
    /// Attempts that failed before reaching any member (no connection could be made: that
    /// member is down) are retried with a short backoff, so that the client's balancer moves on
    /// to a member that is up. Nothing that may have reached a member is ever retried.
    async fn call_within<T, F, Fut>(
        &self,
        timeout: Duration,
        operation: &'static str,
        lease: Option<LeaseId>,
        mut request: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ec::Error>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e))
                    if never_sent(&e) && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::debug!(backend = %self.backend, operation, error = %e, "etcd member unreachable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
                Ok(Err(e)) => return Err(self.error(operation, e, lease)),
                Err(_) => return Err(Error::Timeout { operation }),
            }
        }
    }

    fn unavailable(&self, source: BoxError) -> Error {
        Error::Unavailable {
            backend: self.backend.clone(),
            source,
        }
    }

    /// The one place etcd client errors become [`Error`]s (see the module docs). `lease` is the
    /// lease the request refers to, reported if etcd says it does not exist.
    fn error(&self, operation: &'static str, e: ec::Error, lease: Option<LeaseId>) -> Error {
        let lease_not_found = |lease: Option<LeaseId>, e: ec::Error| match lease {
            Some(lease) => Error::LeaseNotFound { lease },
            None => self.backend_error(e),
        };
        match &e {
            ec::Error::GRpcStatus(status) => match status.code() {
                Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted => self.unavailable(e.into()),
                Code::DeadlineExceeded => Error::Timeout { operation },
                Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(format!(
                    "etcd rejected the request, or its answer was over the client's limit: {}",
                    status.message()
                )),
                Code::NotFound if status.message().contains("lease not found") => {
                    lease_not_found(lease, e)
                }
                _ => self.backend_error(e),
            },
            ec::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
                lease_not_found(lease, e)
            }
            ec::Error::TransportError(_)
            | ec::Error::IoError(_)
            | ec::Error::WatchError(_)
            | ec::Error::LeaseKeepAliveError(_) => self.unavailable(e.into()),
            ec::Error::InvalidArgs(msg) => Error::InvalidArgument(msg.clone()),
            _ => self.backend_error(e),
        }
    }

    fn backend_error(&self, e: ec::Error) -> Error {
        Error::Backend {
            backend: self.backend.clone(),
            source: e.into(),
        }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.options.namespace.len() + key.len());
        full.extend_from_slice(&self.options.namespace);
        full.extend_from_slice(key);
        full
    }

    /// `[start, end)` of the keys under `prefix` within the namespace.
    fn prefix_range(&self, prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let start = self.key(prefix);
        if start.is_empty() {
            // etcd: key "\0" with range end "\0" is the whole key space.
            return (vec![0], vec![0]);
        }
        let end = prefix_end(&start);
        (start, end)
    }

    fn strip(&self, key: Vec<u8>) -> Result<Vec<u8>> {
        match key.strip_prefix(self.options.namespace.as_slice()) {
            Some(rest) => Ok(rest.to_vec()),
            None => Err(Error::corrupt(
                "etcd returned a key outside the namespace",
                String::from_utf8_lossy(&key).into_owned(),
            )),
        }
    }

    fn key_value(&self, kv: ec::KeyValue) -> Result<KeyValue> {
        let (create_revision, mod_revision, version, lease) = (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease(),
        );
        let (key, value) = kv.into_key_value();
        Ok(KeyValue {
            key: self.strip(key)?,
            value: Bytes::from(value),
            create_revision,
            mod_revision,
            version,
            lease: (lease != 0).then_some(LeaseId(lease)),
        })
    }

    fn compare(&self, c: Compare) -> ec::Compare {
        let op = match c.op {
            CompareOp::Equal => ec::CompareOp::Equal,
            CompareOp::NotEqual => ec::CompareOp::NotEqual,
            CompareOp::Greater => ec::CompareOp::Greater,
            CompareOp::Less => ec::CompareOp::Less,
        };
        let key = self.key(&c.key);
        match c.target {
            CompareTarget::Value(v) => ec::Compare::value(key, op, v.to_vec()),
            CompareTarget::Version(v) => ec::Compare::version(key, op, v),
            CompareTarget::CreateRevision(r) => ec::Compare::create_revision(key, op, r),
            CompareTarget::ModRevision(r) => ec::Compare::mod_revision(key, op, r),
            CompareTarget::Lease(l) => ec::Compare::lease(key, op, l.map_or(0, |l| l.0)),
        }
    }

    fn op(&self, op: &TxnOp) -> ec::TxnOp {
        match op {
            TxnOp::Get { key } => ec::TxnOp::get(self.key(key), None),
            TxnOp::Range { prefix, limit } => {
                let (start, end) = self.prefix_range(prefix);
                let mut opts = ec::GetOptions::new().with_range(end);
                if let Some(limit) = limit {
                    // etcd reads limit 0 as "no limit": ask for one and drop it.
                    let limit = i64::try_from(*limit).unwrap_or(i64::MAX).max(1);
                    opts = opts.with_limit(limit);
                }
                ec::TxnOp::get(start, Some(opts))
            }
            TxnOp::Put { key, value, lease } => {
                let opts = lease.map(|l| ec::PutOptions::new().with_lease(l.0));
                ec::TxnOp::put(self.key(key), value.to_vec(), opts)
            }
            TxnOp::Delete { key } => ec::TxnOp::delete(self.key(key), None),
            TxnOp::DeletePrefix { prefix } => {
                let (start, end) = self.prefix_range(prefix);
                ec::TxnOp::delete(start, Some(ec::DeleteOptions::new().with_range(end)))
            }
        }
    }

    fn op_response(&self, op: &TxnOp, response: ec::TxnOpResponse) -> Result<TxnOpResponse> {
        Ok(match (op, response) {
            (TxnOp::Get { .. }, ec::TxnOpResponse::Get(mut get)) => {
                let kv = get.take_kvs().into_iter().next();
                TxnOpResponse::Get(kv.map(|kv| self.key_value(kv)).transpose()?)
            }
            (TxnOp::Range { limit, .. }, ec::TxnOpResponse::Get(mut get)) => {
                let mut more = get.more();
                let mut kvs = get
                    .take_kvs()
                    .into_iter()
                    .map(|kv| self.key_value(kv))
                    .collect::<Result<Vec<_>>>()?;
                if let Some(limit) = *limit
                    && kvs.len() > limit
                {
                    kvs.truncate(limit);
                    more = true;
                }
                TxnOpResponse::Range { kvs, more }
            }
            (TxnOp::Put { .. }, ec::TxnOpResponse::Put(_)) => TxnOpResponse::Put,
            (
                TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. },
                ec::TxnOpResponse::Delete(delete),
            ) => TxnOpResponse::Delete {
                deleted: u64::try_from(delete.deleted()).unwrap_or(0),
            },
            (op, response) => {
                return Err(Error::corrupt(
                    "etcd answered a txn op with the wrong response kind",
                    format!("{op:?} got {response:?}"),
                ));
            }
        })
    }
}

/// The first key after every key starting with `prefix` (non-empty); `"\0"` (the end of the
/// key space, for etcd) when there is none, i.e. `prefix` is all `0xff`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether a request failed before reaching any etcd member, so retrying cannot apply it
/// twice: tonic reports failures to establish a connection as its transport error, and
/// failures on an established connection (where a request may have been received) otherwise.
fn never_sent(e: &ec::Error) -> bool {
    match e {
        ec::Error::GRpcStatus(status) => std::error::Error::source(status)
            .is_some_and(|source| source.is::<tonic::transport::Error>()),
        ec::Error::TransportError(_) => true,
        _ => false,
    }
}

/// Leases that the puts of a txn attach, in op order (the one reported if etcd says a lease
/// is gone: etcd does not say which).
fn leases_of(txn: &Txn) -> Option<LeaseId> {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            TxnOp::Put { lease, .. } => *lease,
            _ => None,
        })
}

fn ttl_seconds(ttl: Duration) -> Result<i64> {
    if ttl.is_zero() {
        return Err(Error::invalid("lease TTL must be positive"));
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).map_err(|_| Error::invalid(format!("lease TTL {ttl:?} is too long")))
}

/// The largest answer read from etcd (a range of many keys). etcd's own limit on what it
/// sends is 2 GiB; a request stays under etcd's 1.5 MiB.
const MAX_ANSWER_BYTES: usize = 512 << 20;

#[async_trait]
impl KvBackend for EtcdKv {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let lease = leases_of(&txn);
        let request = ec::Txn::new()
            .when(
                txn.compares
                    .iter()
                    .cloned()
                    .map(|c| self.compare(c))
                    .collect::<Vec<_>>(),
            )
            .and_then(txn.success.iter().map(|op| self.op(op)).collect::<Vec<_>>())
            .or_else(txn.failure.iter().map(|op| self.op(op)).collect::<Vec<_>>());
        let response = self
            .call("txn", lease, || {
                // A range's answer may be far over gRPC's default 4 MiB limit (every group's
                // committed offsets, every topic): take what etcd sends.
                let mut kv = self
                    .client
                    .kv_client()
                    .max_decoding_message_size(MAX_ANSWER_BYTES);
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await?;
        let succeeded = response.succeeded();
        let revision = response.header().map_or(0, |h| h.revision());
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let responses = response.op_responses();
        if responses.len() != ops.len() {
            return Err(Error::corrupt(
                "etcd answered a txn with the wrong number of responses",
                format!("{} ops, {} responses", ops.len(), responses.len()),
            ));
        }
        let responses = ops
            .iter()
            .zip(responses)
            .map(|(op, response)| self.op_response(op, response))
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded,
            responses,
            revision,
        })
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl_seconds(ttl)?;
        let response = self
            .call("grant_lease", None, || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(secs, None).await }
            })
            .await?;
        if !response.error().is_empty() {
            return Err(self.backend_error(ec::Error::Internal(format!(
                "lease grant failed: {}",
                response.error()
            ))));
        }
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let ttl = self
            .call("keep_alive", Some(lease), || {
                let mut client = self.client.lease_client();
                async move {
                    // The client renews once to open the stream but keeps that answer's TTL to
                    // itself: renew again to learn it (renewing twice is harmless).
                    let (mut keeper, mut stream) = client.keep_alive(lease.0).await?;
                    keeper.keep_alive().await?;
                    match stream.message().await? {
                        Some(response) => Ok(response.ttl()),
                        None => Err(ec::Error::LeaseKeepAliveError(
                            "keep-alive stream closed by etcd".into(),
                        )),
                    }
                }
            })
            .await?;
        if ttl <= 0 {
            return Err(Error::LeaseNotFound { lease });
        }
        Ok(Duration::from_secs(ttl.unsigned_abs()))
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call("revoke_lease", Some(lease), || {
            let mut client = self.client.lease_client();
            async move { client.revoke(lease.0).await }
        })
        .await
        .map(drop)
    }

    async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: Option<i64>,
    ) -> Result<WatchStream> {
        watch::watch_prefix(self, prefix, start_revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(2)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::from_millis(2001)).unwrap(), 3);
        assert!(matches!(
            ttl_seconds(Duration::ZERO),
            Err(Error::InvalidArgument(_))
        ));
    }
}
