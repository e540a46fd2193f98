//! The conformance suite every [`KvBackend`] must pass (feature `conformance`).
//!
//! Each check is a `pub async fn(Arc<dyn KvBackend>, SuiteOptions)` that panics on a
//! violation; it gets a fresh backend from the factory and must be able to run next to other
//! writers of the same store (it never assumes revisions are contiguous, only increasing), as
//! an etcd backend namespaced under a unique prefix would be. The factory must return a backend
//! with no keys.
//!
//! Checks that wait for a lease to expire use [`SuiteOptions::lease_ttl`] and poll with
//! [`SuiteOptions::wait_timeout`] as an upper bound; nothing asserts how fast anything is.
//!
//! ```ignore
//! meta::conformance::run_all(|| async { make_backend().await }, SuiteOptions::default()).await;
//! ```

pub mod domain;
pub mod kv;
pub mod lease;
pub mod txn;
pub mod watch;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::kv::{KvBackend, WatchEvent, WatchStream};

/// A backend under test.
pub type Backend = Arc<dyn KvBackend>;

/// One named check.
pub type Check = fn(Backend, SuiteOptions) -> BoxFuture<'static, ()>;

/// Timing parameters of the suite.
#[derive(Debug, Clone, Copy)]
pub struct SuiteOptions {
    /// TTL of leases that checks let expire. Must be one the backend honours (etcd rounds to
    /// seconds and has a minimum, about 2 s by default).
    pub lease_ttl: Duration,
    /// Upper bound for anything awaited (an expiry, a watch event). Only a bound: checks poll
    /// and move on as soon as the condition holds.
    pub wait_timeout: Duration,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(2),
            wait_timeout: Duration::from_secs(30),
        }
    }
}

macro_rules! checks {
    ($($check:path),* $(,)?) => {
        vec![$((
            stringify!($check),
            (|kv, opts| Box::pin($check(kv, opts)) as BoxFuture<'static, ()>) as Check,
        )),*]
    };
}

/// Basic key-value operations.
pub fn kv_checks() -> Vec<(&'static str, Check)> {
    checks![
        kv::put_get_delete,
        kv::range_is_sorted_and_prefix_bounded,
        kv::delete_prefix,
        kv::a_range_over_4_mib_is_read_whole,
    ]
}

/// Transactions.
pub fn txn_checks() -> Vec<(&'static str, Check)> {
    checks![
        txn::every_compare_kind,
        txn::branches_apply_atomically,
        txn::rejected_txn_changes_nothing,
        txn::cas_counter_race,
        txn::readers_never_see_half_a_txn,
    ]
}

/// Leases.
pub fn lease_checks() -> Vec<(&'static str, Check)> {
    checks![
        lease::revoke_deletes_attached_keys,
        lease::expiry_deletes_attached_keys,
        lease::keep_alive_extends_lease,
    ]
}

/// Watches.
pub fn watch_checks() -> Vec<(&'static str, Check)> {
    checks![
        watch::sees_changes_in_order,
        watch::replays_from_start_revision,
        watch::sees_txn_and_prefix_deletes_at_one_revision,
        watch::sees_lease_revocation,
    ]
}

/// The typed [`crate::Meta`] layer.
pub fn domain_checks() -> Vec<(&'static str, Check)> {
    checks![
        domain::topics_crud,
        domain::topic_name_validation,
        domain::id_counters_unique_under_concurrency,
        domain::leadership_exclusive_and_epochs_increase,
        domain::leadership_lost_on_lease_expiry,
        domain::leadership_race_has_one_winner,
        domain::leader_watch_and_snapshot,
        domain::unable_words_follow_their_node,
        domain::node_registry,
        domain::offsets_commit_and_fetch,
        domain::group_claims_fence_coordinator_writes,
    ]
}

/// Every check.
pub fn all_checks() -> Vec<(&'static str, Check)> {
    let mut all = kv_checks();
    all.extend(txn_checks());
    all.extend(lease_checks());
    all.extend(watch_checks());
    all.extend(domain_checks());
    all
}

/// Runs `checks` one after the other, each on a fresh backend from `make`. A failure panics
/// with the check's name.
pub async fn run<F, Fut>(make: F, opts: SuiteOptions, checks: Vec<(&'static str, Check)>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Backend>,
{
    for (name, check) in checks {
        tracing::info!(check = name, "conformance check");
        let backend = make().await;
        if let Err(panic) = AssertUnwindSafe(check(backend, opts)).catch_unwind().await {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("conformance check `{name}` failed: {msg}");
        }
    }
}

/// Runs the whole suite.
pub async fn run_all<F, Fut>(make: F, opts: SuiteOptions)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Backend>,
{
    run(make, opts, all_checks()).await;
}

// ---- helpers for the checks ---------------------------------------------------------------

/// Polls `condition` until it holds; panics after `timeout`.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event of `stream`; panics on error, end of stream or timeout.
pub(crate) async fn next_event(stream: &mut WatchStream, opts: SuiteOptions) -> WatchEvent {
    tokio::time::timeout(opts.wait_timeout, stream.next())
        .await
        .expect("watch event arrives in time")
        .expect("watch stream stays open")
        .expect("watch event is not an error")
}

/// A lease long enough not to expire during a check.
pub(crate) const LONG_TTL: Duration = Duration::from_secs(60);
