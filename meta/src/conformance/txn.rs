//! Transactions: every compare kind on both paths, branch atomicity, CAS races.

use std::sync::Arc;

use bytes::Bytes;

use super::{Backend, LONG_TTL, SuiteOptions};
use crate::error::Error;
use crate::kv::{Compare, CompareOp, KvBackend, Txn, TxnOp, TxnOpResponse};

/// Each compare target and operator, on a present and an absent key, decides the branch.
pub async fn every_compare_kind(kv: Backend, _opts: SuiteOptions) {
    use CompareOp::*;
    let r1 = kv
        .put(b"t/k", Bytes::from_static(b"v"), None)
        .await
        .expect("put");
    let r2 = kv
        .put(b"t/k", Bytes::from_static(b"v"), None)
        .await
        .expect("put");
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    kv.put(b"t/leased", Bytes::from_static(b"x"), Some(lease))
        .await
        .expect("put with lease");

    let k = || b"t/k".to_vec();
    let missing = || b"t/missing".to_vec();
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::value(k(), Equal, "v"), true),
        (Compare::value(k(), Equal, "x"), false),
        (Compare::value(k(), NotEqual, "x"), true),
        (Compare::value(k(), NotEqual, "v"), false),
        (Compare::value(k(), Greater, "u"), true),
        (Compare::value(k(), Less, "u"), false),
        (Compare::value(k(), Less, "w"), true),
        (Compare::version(k(), Equal, 2), true),
        (Compare::version(k(), Equal, 1), false),
        (Compare::version(k(), Greater, 1), true),
        (Compare::version(k(), Less, 2), false),
        (Compare::create_revision(k(), Equal, r1), true),
        (Compare::create_revision(k(), Equal, r2), false),
        (Compare::create_revision(k(), Less, r2), true),
        (Compare::mod_revision(k(), Equal, r2), true),
        (Compare::mod_revision(k(), Equal, r1), false),
        (Compare::mod_revision(k(), Greater, r1), true),
        (Compare::mod_revision(k(), Less, r2), false),
        (Compare::lease(k(), Equal, None), true),
        (Compare::lease(k(), NotEqual, None), false),
        (
            Compare::lease(b"t/leased".to_vec(), Equal, Some(lease)),
            true,
        ),
        (Compare::lease(b"t/leased".to_vec(), Equal, None), false),
        (Compare::exists(k()), true),
        (Compare::absent(k()), false),
        (Compare::absent(missing()), true),
        (Compare::exists(missing()), false),
        (Compare::create_revision(missing(), Equal, 0), true),
        (Compare::mod_revision(missing(), Equal, 0), true),
        (Compare::lease(missing(), Equal, None), true),
        // A value compare on an absent key is always false.
        (Compare::value(missing(), Equal, ""), false),
        (Compare::value(missing(), NotEqual, "x"), false),
    ];
    for (compare, expected) in cases {
        let txn = Txn::new()
            .when([compare.clone()])
            .and_then([TxnOp::get(k())])
            .or_else([TxnOp::get(missing())]);
        let resp = kv.txn(txn).await.expect("txn");
        assert_eq!(resp.succeeded, expected, "{compare:?}");
        match resp.responses.as_slice() {
            [TxnOpResponse::Get(Some(got))] if expected => assert_eq!(got.key, k()),
            [TxnOpResponse::Get(None)] if !expected => {}
            other => panic!("{compare:?}: wrong branch responses {other:?}"),
        }
    }

    // All compares must hold; no compares always succeed.
    let mixed = Txn::new().when([Compare::exists(k()), Compare::exists(missing())]);
    assert!(!kv.txn(mixed).await.expect("txn").succeeded);
    let both = Txn::new().when([Compare::exists(k()), Compare::absent(missing())]);
    assert!(kv.txn(both).await.expect("txn").succeeded);
    assert!(kv.txn(Txn::new()).await.expect("empty txn").succeeded);
    kv.revoke_lease(lease).await.expect("revoke");
}

/// The chosen branch applies all its ops at one revision, and reads see earlier writes of the
/// same txn; the other branch runs when a compare fails.
pub async fn branches_apply_atomically(kv: Backend, _opts: SuiteOptions) {
    kv.put(b"a/c", Bytes::from_static(b"old"), None)
        .await
        .expect("put");
    let txn = || {
        Txn::new()
            .when([Compare::absent(b"a/a".to_vec())])
            .and_then([
                TxnOp::put(b"a/a".to_vec(), "1", None),
                TxnOp::put(b"a/b".to_vec(), "1", None),
                TxnOp::delete(b"a/c".to_vec()),
                TxnOp::get(b"a/a".to_vec()),
                TxnOp::range(b"a/".to_vec(), None),
            ])
            .or_else([TxnOp::put(b"a/else".to_vec(), "1", None)])
    };
    let resp = kv.txn(txn()).await.expect("txn");
    assert!(resp.succeeded);
    let rev = resp.revision;
    match resp.responses.as_slice() {
        [
            TxnOpResponse::Put,
            TxnOpResponse::Put,
            TxnOpResponse::Delete { deleted: 1 },
            TxnOpResponse::Get(Some(a)),
            TxnOpResponse::Range { kvs, more: false },
        ] => {
            assert_eq!(a.value, "1", "a read sees the txn's own earlier write");
            assert_eq!(a.mod_revision, rev);
            let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert_eq!(keys, [&b"a/a"[..], b"a/b"]);
        }
        other => panic!("unexpected responses {other:?}"),
    }
    for key in [&b"a/a"[..], b"a/b"] {
        let got = kv.get(key).await.expect("get").expect("written");
        assert_eq!((got.create_revision, got.mod_revision), (rev, rev));
    }
    assert_eq!(kv.get(b"a/c").await.expect("get"), None);

    // Now the compare fails: only the failure branch runs.
    let resp = kv.txn(txn()).await.expect("txn");
    assert!(!resp.succeeded);
    assert_eq!(resp.responses, vec![TxnOpResponse::Put]);
    assert!(resp.revision > rev);
    assert!(kv.get(b"a/else").await.expect("get").is_some());
    assert_eq!(
        kv.get(b"a/a")
            .await
            .expect("get")
            .expect("still there")
            .version,
        1,
        "success ops did not run again"
    );

    // An empty failure branch changes nothing.
    let resp = kv
        .txn(Txn::new().when([Compare::absent(b"a/a".to_vec())]))
        .await
        .expect("txn");
    assert!(!resp.succeeded && resp.responses.is_empty());
}

/// A txn that fails validation applies none of its ops.
pub async fn rejected_txn_changes_nothing(kv: Backend, _opts: SuiteOptions) {
    let dead = kv.grant_lease(LONG_TTL).await.expect("grant");
    kv.revoke_lease(dead).await.expect("revoke");

    let with_dead_lease = Txn::new().and_then([
        TxnOp::put(b"x/1".to_vec(), "1", None),
        TxnOp::put(b"x/2".to_vec(), "1", Some(dead)),
    ]);
    let res = kv.txn(with_dead_lease).await;
    assert!(
        matches!(res, Err(Error::LeaseNotFound { .. })),
        "put with a dead lease: {res:?}"
    );

    let duplicate = Txn::new().and_then([
        TxnOp::put(b"x/1".to_vec(), "1", None),
        TxnOp::put(b"x/1".to_vec(), "2", None),
    ]);
    let res = kv.txn(duplicate).await;
    assert!(
        matches!(res, Err(Error::InvalidArgument(_))),
        "duplicate put: {res:?}"
    );

    let put_and_delete = Txn::new().and_then([
        TxnOp::put(b"x/1".to_vec(), "1", None),
        TxnOp::delete(b"x/1".to_vec()),
    ]);
    let res = kv.txn(put_and_delete).await;
    assert!(
        matches!(res, Err(Error::InvalidArgument(_))),
        "put and delete of one key: {res:?}"
    );

    assert!(
        kv.range(b"x/", None).await.expect("range").kvs.is_empty(),
        "rejected txns wrote nothing"
    );
}

/// Compare-and-swap increments from 16 concurrent tasks lose no update.
pub async fn cas_counter_race(kv: Backend, _opts: SuiteOptions) {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 20;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let kv = Arc::clone(&kv);
            tokio::spawn(async move {
                for _ in 0..PER_TASK {
                    increment(kv.as_ref(), b"cas/counter").await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("increment task");
    }
    let got = kv.get(b"cas/counter").await.expect("get").expect("counter");
    let value: u64 = std::str::from_utf8(&got.value)
        .expect("utf8")
        .parse()
        .expect("number");
    assert_eq!(value, TASKS * PER_TASK);
    assert_eq!(
        got.version as u64,
        TASKS * PER_TASK,
        "one put per increment"
    );
}

async fn increment(kv: &dyn KvBackend, key: &[u8]) {
    loop {
        let current = kv.get(key).await.expect("get");
        let (value, guard) = match &current {
            None => (0u64, Compare::absent(key.to_vec())),
            Some(kv) => (
                std::str::from_utf8(&kv.value)
                    .expect("utf8")
                    .parse()
                    .expect("number"),
                Compare::mod_revision(key.to_vec(), CompareOp::Equal, kv.mod_revision),
            ),
        };
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(
            key.to_vec(),
            (value + 1).to_string(),
            None,
        )]);
        if kv.txn(txn).await.expect("txn").succeeded {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Concurrent readers never observe a txn half applied: transfers between two keys keep
/// their sum constant in every range read.
pub async fn readers_never_see_half_a_txn(kv: Backend, _opts: SuiteOptions) {
    kv.put(b"bank/x", Bytes::from_static(b"50"), None)
        .await
        .expect("put");
    kv.put(b"bank/y", Bytes::from_static(b"50"), None)
        .await
        .expect("put");
    let writer = {
        let kv = Arc::clone(&kv);
        tokio::spawn(async move {
            for i in 0..50u32 {
                let range = kv.range(b"bank/", None).await.expect("range");
                let [x, y] = [&range.kvs[0], &range.kvs[1]];
                let (from, to) = if i % 2 == 0 { (x, y) } else { (y, x) };
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(
                            from.key.clone(),
                            CompareOp::Equal,
                            from.mod_revision,
                        ),
                        Compare::mod_revision(to.key.clone(), CompareOp::Equal, to.mod_revision),
                    ])
                    .and_then([
                        TxnOp::put(from.key.clone(), (parse(&from.value) - 7).to_string(), None),
                        TxnOp::put(to.key.clone(), (parse(&to.value) + 7).to_string(), None),
                    ]);
                assert!(
                    kv.txn(txn).await.expect("transfer").succeeded,
                    "single writer"
                );
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 10 {
        let range = kv.range(b"bank/", None).await.expect("range");
        let sum: i64 = range.kvs.iter().map(|kv| parse(&kv.value)).sum();
        assert_eq!(sum, 100, "a read saw half a txn: {:?}", range.kvs);
        reads += 1;
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
}

fn parse(value: &[u8]) -> i64 {
    std::str::from_utf8(value)
        .expect("utf8")
        .parse()
        .expect("number")
}
