//! The metadata store on a real etcd: the conformance suite the embedded backend passes, run
//! on the shared etcd of the test command (`TIERLOG_ETCD_ENDPOINTS`), and what a user sees
//! when etcd is unreachable, compacts its history, or dies and comes back (on a private etcd,
//! so nothing cluster-wide disturbs the shared one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use meta::conformance::{self, Backend, Check, SuiteOptions};
use meta::{Error, EtcdKv, EtcdOptions, EventKind, KvBackend};
use tierlog_tests::{PrivateEtcd, etcd_binary, etcd_endpoints, free_port, unique};

/// Upper bound for anything a test waits for; only a bound, never a timing assertion.
const BOUND: Duration = Duration::from_secs(60);

/// Runs `checks` on the shared etcd, each on a fresh namespace under one unique to this run,
/// then deletes that namespace so reruns against a long-lived etcd start clean.
async fn conformance_on_etcd(group: &str, checks: Vec<(&'static str, Check)>) {
    let Some(endpoints) = etcd_endpoints() else {
        return;
    };
    let root = format!("{}/", unique(&format!("tierlog-test-{group}")));
    let next = AtomicUsize::new(0);
    let make = || {
        let options = EtcdOptions::new(endpoints.clone())
            .with_namespace(format!("{root}{}/", next.fetch_add(1, Ordering::Relaxed)));
        async move {
            let kv = EtcdKv::connect(options).await.expect("connect to etcd");
            Arc::new(kv) as Backend
        }
    };
    // etcd's default minimum lease TTL is 2 s, the suite's default `lease_ttl`.
    conformance::run(make, SuiteOptions::default(), checks).await;

    let all = EtcdKv::connect(EtcdOptions::new(endpoints).with_namespace(root))
        .await
        .expect("connect to etcd");
    all.delete_prefix(b"")
        .await
        .expect("delete this run's keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_kv() {
    conformance_on_etcd("kv", conformance::kv_checks()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_txn() {
    conformance_on_etcd("txn", conformance::txn_checks()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_lease() {
    conformance_on_etcd("lease", conformance::lease_checks()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_watch() {
    conformance_on_etcd("watch", conformance::watch_checks()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_domain() {
    conformance_on_etcd("domain", conformance::domain_checks()).await;
}

/// Connecting to a closed port fails soon with a retryable error that names the endpoint,
/// instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_is_a_clear_error() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut options = EtcdOptions::new([endpoint.clone()]);
    options.connect_timeout = Duration::from_secs(2);
    let result = tokio::time::timeout(BOUND, EtcdKv::connect(options))
        .await
        .expect("connect gives up instead of hanging");
    let err = result.expect_err("nothing listens there");
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
}

/// Connects to all members of a private etcd once the cluster answers.
async fn connect(etcd: &PrivateEtcd) -> EtcdKv {
    let mut options = EtcdOptions::new(etcd.endpoints());
    // The product's request timeout: a loaded machine running three members and other tests
    // answers a write well past 2 s now and then.
    options.connect_timeout = Duration::from_secs(1);
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match EtcdKv::connect(options.clone()).await {
            Ok(kv) => return kv,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "etcd did not come up: {e:?}; logs in {}",
                etcd.logs().display()
            ),
        }
    }
}

/// History before a compaction is gone for watchers, with a clear error; etcd dying ends live
/// watches and fails requests with retryable errors within the request timeout; after a
/// restart on the same data the same handle works again and nothing acknowledged was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_and_restart() {
    let Some(binary) = etcd_binary() else {
        return;
    };
    let mut etcd = PrivateEtcd::start(binary, 1);
    let kv = connect(&etcd).await;
    let v = |s: &'static str| Bytes::from_static(s.as_bytes());

    let r1 = kv.put(b"c/1", v("a"), None).await.expect("put");
    kv.put(b"c/2", v("b"), None).await.expect("put");
    let r3 = kv.put(b"c/3", v("c"), None).await.expect("put");
    kv.compact(r3).await.expect("compact");

    // etcd 3.4 refuses a compacted start revision in the watch's first answer, newer ones may
    // refuse it at creation: the trait allows both.
    let compacted = match kv.watch_prefix(b"c/", Some(r1)).await {
        Err(e) => e,
        Ok(mut stream) => tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("the watch answers")
            .expect("an item")
            .expect_err("history before the compaction is gone"),
    };
    match compacted {
        Error::Compacted {
            requested,
            compacted,
        } => assert_eq!((requested, compacted), (r1, r3 - 1)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut from_r3 = kv.watch_prefix(b"c/", Some(r3)).await.expect("watch");
    let event = tokio::time::timeout(BOUND, from_r3.next())
        .await
        .expect("replay")
        .expect("an item")
        .expect("an event");
    assert_eq!(
        (event.kind, event.kv.key.as_slice(), event.revision),
        (EventKind::Put, &b"c/3"[..], r3)
    );

    // etcd dies.
    let mut live = kv.watch_prefix(b"c/", None).await.expect("watch");
    etcd.kill9(0);
    match tokio::time::timeout(BOUND, live.next())
        .await
        .expect("a live watch notices etcd's death")
    {
        Some(Err(e)) => assert!(e.is_retryable(), "{e:?}"),
        other => panic!("expected a retryable error, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(BOUND, live.next())
            .await
            .expect("ended")
            .is_none(),
        "a watch ends after its error"
    );
    let err = tokio::time::timeout(BOUND, kv.put(b"c/4", v("d"), None))
        .await
        .expect("a request to a dead etcd gives up")
        .expect_err("etcd is down");
    assert!(err.is_retryable(), "{err:?}");
    if let Error::Unavailable { .. } = err {
        assert!(err.to_string().contains(&etcd.endpoint(0)), "{err}");
    }

    // etcd comes back on the same data: the same handle recovers.
    etcd.spawn(0);
    let deadline = tokio::time::Instant::now() + BOUND;
    let r4 = loop {
        match kv.put(b"c/4", v("d"), None).await {
            Ok(rev) => break rev,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not come back: {e:?}"),
        }
    };
    assert!(r4 > r3);
    let keys: Vec<Vec<u8>> = kv
        .range(b"c/", None)
        .await
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [&b"c/1"[..], b"c/2", b"c/3", b"c/4"]);
}

/// With one member of three down, a client given all three endpoints connects and every
/// request succeeds: requests that could not reach the dead member go to a live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_down_is_transparent() {
    let Some(binary) = etcd_binary() else {
        return;
    };
    let mut etcd = PrivateEtcd::start(binary, 3);
    connect(&etcd).await;
    etcd.kill9(0);

    let kv = connect(&etcd).await;
    // If the dead member led, the others elect a new leader first (writes fail meanwhile).
    let deadline = tokio::time::Instant::now() + BOUND;
    while let Err(e) = kv.put(b"settled", Bytes::new(), None).await {
        assert!(
            e.is_retryable() && tokio::time::Instant::now() < deadline,
            "no leader after a member died: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut watch = kv.watch_prefix(b"m/", None).await.expect("watch");
    let mut last = 0;
    for i in 0..20u32 {
        last = kv
            .put(b"m/k", Bytes::from(i.to_string()), None)
            .await
            .expect("put while a member is down");
    }
    let got = kv.get(b"m/k").await.expect("get").expect("written");
    assert_eq!((got.version, got.mod_revision), (20, last));
    for i in 0..20u32 {
        let event = tokio::time::timeout(BOUND, watch.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        assert_eq!(event.kv.value, i.to_string());
    }
}
