//! The conformance suite on the embedded backend (in memory and on disk), plus what only the
//! embedded backend promises: durability across reopen and crashes, process-local leases,
//! bounded history, manual-clock expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::clock::ManualClock;
use crate::conformance::{self, Backend, Check, SuiteOptions};
use crate::domain::{Meta, TopicConfig};
use crate::kv::{Compare, EventKind, KvBackend, TxnOp};

fn fast_options() -> EmbeddedOptions {
    EmbeddedOptions {
        sweep_interval: Duration::from_millis(20),
        ..EmbeddedOptions::default()
    }
}

fn suite_options() -> SuiteOptions {
    SuiteOptions {
        lease_ttl: Duration::from_millis(500),
        wait_timeout: Duration::from_secs(30),
    }
}

async fn run_in_memory(checks: Vec<(&'static str, Check)>) {
    let make = || async { Arc::new(EmbeddedKv::memory_with(fast_options())) as Backend };
    conformance::run(make, suite_options(), checks).await;
}

async fn run_on_disk(checks: Vec<(&'static str, Check)>) {
    let root = tempfile::tempdir().expect("tempdir");
    let next = AtomicUsize::new(0);
    let make = || {
        let dir = root
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        async move {
            Arc::new(
                EmbeddedKv::open_with(dir, fast_options())
                    .await
                    .expect("open"),
            ) as Backend
        }
    };
    conformance::run(make, suite_options(), checks).await;
}

macro_rules! conformance_tests {
    ($($name:ident => $checks:path),* $(,)?) => {
        mod memory {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_in_memory($checks()).await;
            })*
        }
        mod disk {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_on_disk($checks()).await;
            })*
        }
    };
}

conformance_tests! {
    kv => conformance::kv_checks,
    txn => conformance::txn_checks,
    lease => conformance::lease_checks,
    watch => conformance::watch_checks,
    domain => conformance::domain_checks,
}

fn v(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[tokio::test]
async fn reopen_restores_keys_and_revision_and_drops_leased_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(dir.path()).await.expect("open");
    let meta = Meta::new(Arc::new(kv.clone()));
    kv.put(b"a", v("1"), None).await.expect("put");
    kv.put(b"a", v("2"), None).await.expect("put");
    kv.put(b"b", v("x"), None).await.expect("put");
    kv.delete(b"b").await.expect("delete");
    let topic = meta
        .create_topic("orders", TopicConfig::new(2))
        .await
        .expect("create");
    let lease = kv
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let epoch = meta
        .acquire_leadership("orders", 0, 1, lease)
        .await
        .expect("acquire");
    meta.register_node(1, "localhost:9092", lease)
        .await
        .expect("register");
    kv.put(b"leased", v("x"), Some(lease)).await.expect("put");
    let a_before = kv.get(b"a").await.expect("get").expect("a");
    let second = EmbeddedKv::open(dir.path())
        .await
        .expect_err("already open");
    assert!(matches!(second, Error::InvalidArgument(_)), "{second:?}");
    let revision = kv.revision().await.expect("revision");
    kv.close().await.expect("close");
    assert!(matches!(kv.get(b"a").await, Err(Error::Closed)));

    let kv = EmbeddedKv::open(dir.path()).await.expect("reopen");
    let meta = Meta::new(Arc::new(kv.clone()));
    assert_eq!(
        kv.revision().await.expect("revision"),
        revision + 1,
        "one write deleted the keys of the previous run's leases"
    );
    assert_eq!(kv.get(b"a").await.expect("get"), Some(a_before));
    assert_eq!(kv.get(b"b").await.expect("get"), None);
    assert_eq!(kv.get(b"leased").await.expect("get"), None);
    assert_eq!(meta.get_topic("orders").await.expect("get"), Some(topic));
    assert_eq!(
        meta.current_leader("orders", 0).await.expect("leader"),
        None
    );
    assert!(meta.list_nodes().await.expect("nodes").is_empty());
    meta.check_epoch("orders", 0, epoch)
        .await
        .expect("epoch survives");
    let lease = kv
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let next = meta
        .acquire_leadership("orders", 0, 2, lease)
        .await
        .expect("acquire");
    assert_eq!(next, epoch + 1, "epochs continue after a restart");
    let put_rev = kv.put(b"c", v("1"), None).await.expect("put");
    assert!(put_rev > revision + 1);

    // History does not survive a restart.
    let res = kv.watch_prefix(b"", Some(revision)).await;
    assert!(
        matches!(res, Err(Error::Compacted { .. })),
        "{:?}",
        res.err()
    );
    kv.close().await.expect("close");
}

#[tokio::test]
async fn acknowledged_writes_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(dir.path()).await.expect("open");
    let mut revision = 0;
    for i in 0..20u32 {
        revision = kv
            .put(
                format!("k/{i:02}").as_bytes(),
                Bytes::from(i.to_string()),
                None,
            )
            .await
            .expect("put");
    }
    // Copy the file while the store is open and was never closed: what a kill -9 leaves.
    let crashed = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        dir.path().join(store::FILE_NAME),
        crashed.path().join(store::FILE_NAME),
    )
    .expect("copy");
    let recovered = EmbeddedKv::open(crashed.path()).await.expect("open copy");
    assert_eq!(recovered.revision().await.expect("revision"), revision);
    let keys = recovered.range(b"k/", None).await.expect("range");
    assert_eq!(keys.kvs.len(), 20);
    assert_eq!(keys.kvs[19].value, "19");
}

#[tokio::test]
async fn open_reports_corrupt_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = EmbeddedKv::open(dir.path()).await.expect("open");
    kv.put(b"k", v("value"), None).await.expect("put");
    kv.close().await.expect("close");
    store::overwrite_raw(
        dir.path(),
        b"k",
        b"\x01garbage-that-is-long-enough-for-a-header",
    )
    .expect("overwrite");
    let err = EmbeddedKv::open(dir.path()).await.expect_err("corrupt");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert_eq!(err.class(), crate::ErrorClass::Corruption);
}

#[tokio::test]
async fn lease_expiry_with_a_manual_clock() {
    let clock = Arc::new(ManualClock::new());
    let kv = EmbeddedKv::memory_with(EmbeddedOptions {
        clock: clock.clone(),
        sweep_interval: Duration::from_secs(3600), // lazy expiry only
        ..EmbeddedOptions::default()
    });
    let lease = kv
        .grant_lease(Duration::from_secs(10))
        .await
        .expect("grant");
    kv.put(b"k", v("x"), Some(lease)).await.expect("put");
    let mut watch = kv.watch_prefix(b"k", None).await.expect("watch");

    clock.advance(Duration::from_secs(9));
    assert!(kv.get(b"k").await.expect("get").is_some());
    assert_eq!(
        kv.keep_alive(lease).await.expect("keep_alive"),
        Duration::from_secs(10)
    );
    clock.advance(Duration::from_secs(9));
    assert!(kv.get(b"k").await.expect("get").is_some(), "renewed");

    clock.advance(Duration::from_secs(2));
    // Expired but not yet collected: the lease is unusable already.
    assert!(matches!(
        kv.keep_alive(lease).await,
        Err(Error::LeaseNotFound { .. })
    ));
    let before = kv.revision().await.expect("revision");
    assert_eq!(kv.get(b"k").await.expect("get"), None);
    let event = watch.next().await.expect("open").expect("event");
    assert_eq!(
        (event.kind, event.kv.key.as_slice()),
        (EventKind::Delete, &b"k"[..])
    );
    assert_eq!(event.revision, before, "the expiry is a write of its own");
}

#[tokio::test]
async fn sweeper_expires_idle_leases_for_watchers() {
    let clock = Arc::new(ManualClock::new());
    let kv = EmbeddedKv::memory_with(EmbeddedOptions {
        clock: clock.clone(),
        sweep_interval: Duration::from_millis(10),
        ..EmbeddedOptions::default()
    });
    let lease = kv.grant_lease(Duration::from_secs(5)).await.expect("grant");
    kv.put(b"n/1", v("x"), Some(lease)).await.expect("put");
    let mut watch = kv.watch_prefix(b"n/", None).await.expect("watch");
    clock.advance(Duration::from_secs(6));
    // No operation on the store: only the sweeper can produce this event.
    let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the sweeper runs")
        .expect("open")
        .expect("event");
    assert_eq!(event.kind, EventKind::Delete);
}

#[tokio::test]
async fn slow_or_late_watchers_get_compacted() {
    let kv = EmbeddedKv::memory_with(EmbeddedOptions {
        history_limit: 4,
        ..EmbeddedOptions::default()
    });
    let first = kv.put(b"k", v("0"), None).await.expect("put");
    let mut slow = kv.watch_prefix(b"k", None).await.expect("watch");
    for i in 1..10 {
        kv.put(b"k", Bytes::from(i.to_string()), None)
            .await
            .expect("put");
    }
    match slow.next().await {
        Some(Err(Error::Compacted {
            requested,
            compacted,
        })) => {
            assert_eq!(requested, first + 1);
            assert!(compacted >= requested);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        slow.next().await.is_none(),
        "the stream ends after an error"
    );

    let res = kv.watch_prefix(b"k", Some(first)).await;
    assert!(
        matches!(res, Err(Error::Compacted { .. })),
        "{:?}",
        res.err()
    );
    let recent = kv.revision().await.expect("revision") - 2;
    let mut late = kv.watch_prefix(b"k", Some(recent)).await.expect("watch");
    let event = late.next().await.expect("open").expect("event");
    assert_eq!(event.revision, recent);
    let res = kv.watch_prefix(b"k", Some(0)).await;
    assert!(
        matches!(res, Err(Error::InvalidArgument(_))),
        "{:?}",
        res.err()
    );
}

#[tokio::test]
async fn writes_that_change_nothing_keep_the_revision() {
    let kv = EmbeddedKv::memory();
    let rev = kv.put(b"k", v("x"), None).await.expect("put");
    assert_eq!(kv.delete(b"missing").await.expect("delete").revision, rev);
    assert_eq!(
        kv.delete_prefix(b"nothing/")
            .await
            .expect("delete")
            .revision,
        rev
    );
    let failed = Txn::new()
        .when([Compare::absent(b"k".to_vec())])
        .and_then([TxnOp::put(b"k".to_vec(), "y", None)]);
    let resp = kv.txn(failed).await.expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, rev);
    let lease = kv
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    kv.revoke_lease(lease).await.expect("revoke");
    assert_eq!(
        kv.revision().await.expect("revision"),
        rev,
        "empty lease revoked"
    );
    assert_eq!(kv.put(b"k", v("x"), None).await.expect("put"), rev + 1);
}

#[tokio::test]
async fn txn_size_is_limited_like_etcd() {
    let kv = EmbeddedKv::memory_with(EmbeddedOptions {
        max_txn_ops: 3,
        ..EmbeddedOptions::default()
    });
    let ops = |n: usize| (0..n).map(|i| TxnOp::put(format!("k{i}"), "v", None));
    kv.txn(Txn::new().and_then(ops(3)))
        .await
        .expect("at the limit");
    let res = kv.txn(Txn::new().and_then(ops(4))).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    assert!(matches!(
        kv.grant_lease(Duration::ZERO).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn close_ends_watches_and_rejects_calls() {
    let kv = EmbeddedKv::memory();
    let mut watch = kv.watch_prefix(b"", None).await.expect("watch");
    kv.close().await.expect("close");
    assert!(matches!(watch.next().await, Some(Err(Error::Closed))));
    assert!(watch.next().await.is_none());
    assert!(matches!(
        kv.put(b"k", v("x"), None).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        kv.grant_lease(Duration::from_secs(1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        kv.watch_prefix(b"", None).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn dropping_the_backend_ends_watches() {
    let kv = EmbeddedKv::memory();
    let mut watch = kv.watch_prefix(b"", None).await.expect("watch");
    drop(kv);
    assert!(watch.next().await.is_none());
}
