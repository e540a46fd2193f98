//! Watches: order, kinds, replay from a revision, txn and lease deletes.
//!
//! "Nothing else arrived" is checked with a sentinel write: the next event must be the
//! sentinel's, so no check depends on how long an absent event takes not to arrive.

use bytes::Bytes;

use super::{Backend, LONG_TTL, SuiteOptions, next_event};
use crate::kv::{EventKind, Txn, TxnOp, WatchEvent, WatchStream};

fn v(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[track_caller]
fn assert_event(event: &WatchEvent, kind: EventKind, key: &[u8], revision: i64) {
    assert_eq!(
        (event.kind, event.kv.key.as_slice(), event.revision),
        (kind, key, revision),
        "unexpected event {event:?}"
    );
    assert_eq!(event.kv.mod_revision, revision);
}

async fn expect_sentinel(kv: &Backend, stream: &mut WatchStream, key: &[u8], opts: SuiteOptions) {
    let rev = kv.put(key, v("sentinel"), None).await.expect("sentinel");
    let event = next_event(stream, opts).await;
    assert_event(&event, EventKind::Put, key, rev);
}

/// Puts and deletes under the prefix arrive in order with full key metadata; other keys don't.
pub async fn sees_changes_in_order(kv: Backend, opts: SuiteOptions) {
    let mut stream = kv.watch_prefix(b"w/", None).await.expect("watch");
    let mut other = kv.watch_prefix(b"w/", None).await.expect("second watch");
    let r1 = kv.put(b"w/a", v("1"), None).await.expect("put");
    kv.put(b"outside", v("x"), None).await.expect("put");
    let r2 = kv.put(b"w/b", v("2"), None).await.expect("put");
    let r3 = kv.put(b"w/a", v("3"), None).await.expect("put");
    let r4 = kv.delete(b"w/a").await.expect("delete").revision;

    for stream in [&mut stream, &mut other] {
        let e = next_event(stream, opts).await;
        assert_event(&e, EventKind::Put, b"w/a", r1);
        assert_eq!(
            (e.kv.value.as_ref(), e.kv.version, e.kv.create_revision),
            (&b"1"[..], 1, r1)
        );
        assert_event(&next_event(stream, opts).await, EventKind::Put, b"w/b", r2);
        let e = next_event(stream, opts).await;
        assert_event(&e, EventKind::Put, b"w/a", r3);
        assert_eq!((e.kv.version, e.kv.create_revision), (2, r1));
        assert_event(
            &next_event(stream, opts).await,
            EventKind::Delete,
            b"w/a",
            r4,
        );
    }
    expect_sentinel(&kv, &mut stream, b"w/zz", opts).await;
}

/// A watch from a past revision replays history from there, then continues live.
pub async fn replays_from_start_revision(kv: Backend, opts: SuiteOptions) {
    let r1 = kv.put(b"h/1", v("a"), None).await.expect("put");
    let r2 = kv.put(b"h/2", v("b"), None).await.expect("put");
    let r3 = kv.delete(b"h/1").await.expect("delete").revision;

    let mut from_r2 = kv.watch_prefix(b"h/", Some(r2)).await.expect("watch");
    assert_event(
        &next_event(&mut from_r2, opts).await,
        EventKind::Put,
        b"h/2",
        r2,
    );
    assert_event(
        &next_event(&mut from_r2, opts).await,
        EventKind::Delete,
        b"h/1",
        r3,
    );

    let mut from_r1 = kv.watch_prefix(b"h/", Some(r1)).await.expect("watch");
    assert_event(
        &next_event(&mut from_r1, opts).await,
        EventKind::Put,
        b"h/1",
        r1,
    );
    assert_event(
        &next_event(&mut from_r1, opts).await,
        EventKind::Put,
        b"h/2",
        r2,
    );
    assert_event(
        &next_event(&mut from_r1, opts).await,
        EventKind::Delete,
        b"h/1",
        r3,
    );

    let r4 = kv.put(b"h/3", v("c"), None).await.expect("put");
    assert_event(
        &next_event(&mut from_r2, opts).await,
        EventKind::Put,
        b"h/3",
        r4,
    );
    assert_event(
        &next_event(&mut from_r1, opts).await,
        EventKind::Put,
        b"h/3",
        r4,
    );

    // A start revision in the future waits for it.
    let mut future = kv.watch_prefix(b"h/", Some(r4 + 1)).await.expect("watch");
    expect_sentinel(&kv, &mut future, b"h/zz", opts).await;
}

/// All changes of one txn or one `delete_prefix` share its revision, in op order.
pub async fn sees_txn_and_prefix_deletes_at_one_revision(kv: Backend, opts: SuiteOptions) {
    kv.put(b"tx/old", v("x"), None).await.expect("put");
    let mut stream = kv.watch_prefix(b"tx/", None).await.expect("watch");
    let txn = Txn::new().and_then([
        TxnOp::put(b"tx/b".to_vec(), "1", None),
        TxnOp::delete(b"tx/old".to_vec()),
        TxnOp::put(b"tx/a".to_vec(), "1", None),
    ]);
    let rev = kv.txn(txn).await.expect("txn").revision;
    assert_event(
        &next_event(&mut stream, opts).await,
        EventKind::Put,
        b"tx/b",
        rev,
    );
    assert_event(
        &next_event(&mut stream, opts).await,
        EventKind::Delete,
        b"tx/old",
        rev,
    );
    assert_event(
        &next_event(&mut stream, opts).await,
        EventKind::Put,
        b"tx/a",
        rev,
    );

    let rev = kv
        .delete_prefix(b"tx/")
        .await
        .expect("delete_prefix")
        .revision;
    let mut deleted = Vec::new();
    for _ in 0..2 {
        let event = next_event(&mut stream, opts).await;
        assert_eq!((event.kind, event.revision), (EventKind::Delete, rev));
        deleted.push(event.kv.key);
    }
    deleted.sort();
    assert_eq!(deleted, [b"tx/a".to_vec(), b"tx/b".to_vec()]);
    expect_sentinel(&kv, &mut stream, b"tx/zz", opts).await;
}

/// Revoking a lease shows up as deletes of its keys.
pub async fn sees_lease_revocation(kv: Backend, opts: SuiteOptions) {
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    let mut stream = kv.watch_prefix(b"wl/", None).await.expect("watch");
    let r1 = kv.put(b"wl/1", v("x"), Some(lease)).await.expect("put");
    let e = next_event(&mut stream, opts).await;
    assert_event(&e, EventKind::Put, b"wl/1", r1);
    assert_eq!(e.kv.lease, Some(lease));
    kv.revoke_lease(lease).await.expect("revoke");
    let e = next_event(&mut stream, opts).await;
    assert_eq!(
        (e.kind, e.kv.key.as_slice()),
        (EventKind::Delete, &b"wl/1"[..])
    );
    assert!(e.revision > r1);
    expect_sentinel(&kv, &mut stream, b"wl/zz", opts).await;
}
