//! Single-key operations and ranges: revisions, versions, ordering, prefix bounds.

use bytes::Bytes;

use super::{Backend, SuiteOptions};

/// put/get/delete keep etcd's revision and version bookkeeping.
pub async fn put_get_delete(kv: Backend, _opts: SuiteOptions) {
    let start = kv.revision().await.expect("revision");
    assert!(start >= 1, "revisions start at 1, got {start}");

    let r1 = kv
        .put(b"kv/k", Bytes::from_static(b"v1"), None)
        .await
        .expect("put");
    assert!(r1 > start, "a put bumps the revision ({r1} <= {start})");
    let got = kv.get(b"kv/k").await.expect("get").expect("key exists");
    assert_eq!(got.key, b"kv/k");
    assert_eq!(got.value, "v1");
    assert_eq!((got.create_revision, got.mod_revision), (r1, r1));
    assert_eq!(got.version, 1);
    assert_eq!(got.lease, None);

    let r2 = kv
        .put(b"kv/k", Bytes::from_static(b"v2"), None)
        .await
        .expect("overwrite");
    assert!(r2 > r1);
    let got = kv.get(b"kv/k").await.expect("get").expect("key exists");
    assert_eq!(got.value, "v2");
    assert_eq!(
        (got.create_revision, got.mod_revision, got.version),
        (r1, r2, 2)
    );
    assert!(kv.revision().await.expect("revision") >= r2);

    let deleted = kv.delete(b"kv/k").await.expect("delete");
    assert_eq!(deleted.deleted, 1);
    assert!(deleted.revision > r2);
    assert_eq!(kv.get(b"kv/k").await.expect("get"), None);
    assert_eq!(kv.delete(b"kv/k").await.expect("delete").deleted, 0);

    // Re-created keys start over.
    let r3 = kv
        .put(b"kv/k", Bytes::from_static(b"v3"), None)
        .await
        .expect("re-create");
    let got = kv.get(b"kv/k").await.expect("get").expect("key exists");
    assert_eq!(
        (got.create_revision, got.mod_revision, got.version),
        (r3, r3, 1)
    );

    // Empty values are values.
    kv.put(b"kv/empty", Bytes::new(), None).await.expect("put");
    let got = kv
        .get(b"kv/empty")
        .await
        .expect("get")
        .expect("empty value exists");
    assert!(got.value.is_empty());
    assert_eq!(kv.get(b"kv/missing").await.expect("get"), None);
}

/// Ranges are sorted by key bytes, bounded by the prefix and honour `limit`.
pub async fn range_is_sorted_and_prefix_bounded(kv: Backend, _opts: SuiteOptions) {
    let keys: [&[u8]; 9] = [
        b"r/b",
        b"r/a",
        b"r/c/1",
        b"r/c",
        b"r0",
        b"q",
        b"r/\xff",
        b"r/\xff\x01",
        b"r/\xfe",
    ];
    let mut last = 0;
    for key in keys {
        last = kv
            .put(key, Bytes::copy_from_slice(key), None)
            .await
            .expect("put");
    }
    let range = |prefix: &'static [u8], limit| {
        let kv = kv.clone();
        async move { kv.range(prefix, limit).await.expect("range") }
    };
    let names =
        |kvs: &[crate::kv::KeyValue]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();

    let all = range(b"r/", None).await;
    let expected: Vec<Vec<u8>> = [
        &b"r/a"[..],
        b"r/b",
        b"r/c",
        b"r/c/1",
        b"r/\xfe",
        b"r/\xff",
        b"r/\xff\x01",
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    assert_eq!(names(&all.kvs), expected);
    assert!(!all.more);
    assert!(
        all.revision >= last,
        "a range reads at or after the last write"
    );
    for kv in &all.kvs {
        assert_eq!(
            kv.value.as_ref(),
            kv.key.as_slice(),
            "values belong to their keys"
        );
    }

    let limited = range(b"r/", Some(2)).await;
    assert_eq!(names(&limited.kvs), expected[..2]);
    assert!(limited.more, "more is set when the limit cut the range");
    let exact = range(b"r/", Some(expected.len())).await;
    assert_eq!(exact.kvs.len(), expected.len());
    assert!(!exact.more);

    assert_eq!(
        names(&range(b"r/c", None).await.kvs),
        vec![b"r/c".to_vec(), b"r/c/1".to_vec()]
    );
    // Prefixes ending in 0xff are where naive "prefix end" computations break.
    assert_eq!(
        names(&range(b"r/\xff", None).await.kvs),
        vec![b"r/\xff".to_vec(), b"r/\xff\x01".to_vec()]
    );
    let none = range(b"nope/", None).await;
    assert!(none.kvs.is_empty() && !none.more);
    assert_eq!(
        range(b"", None).await.kvs.len(),
        keys.len(),
        "empty prefix = all keys"
    );
}

/// `delete_prefix` deletes exactly the keys under the prefix.
pub async fn delete_prefix(kv: Backend, _opts: SuiteOptions) {
    for key in ["d/1", "d/2", "d/3/x", "d0", "e/1"] {
        kv.put(key.as_bytes(), Bytes::from_static(b"v"), None)
            .await
            .expect("put");
    }
    let before = kv.revision().await.expect("revision");
    let resp = kv.delete_prefix(b"d/").await.expect("delete_prefix");
    assert_eq!(resp.deleted, 3);
    assert!(resp.revision > before);
    assert!(kv.range(b"d/", None).await.expect("range").kvs.is_empty());
    assert!(kv.get(b"d0").await.expect("get").is_some());
    assert!(kv.get(b"e/1").await.expect("get").is_some());
    assert_eq!(kv.delete_prefix(b"d/").await.expect("again").deleted, 0);
}

/// A range whose answer is larger than a gRPC client's default message limit (4 MiB) is read
/// whole: 6,000 keys of 1 KiB, written 100 to a txn. Listing every group's committed offsets
/// (and every topic) is one such range on a large cluster.
pub async fn a_range_over_4_mib_is_read_whole(kv: Backend, _opts: SuiteOptions) {
    use crate::kv::{Txn, TxnOp};
    let value = Bytes::from(vec![b'v'; 1024]);
    for batch in 0..60 {
        let ops = (0..100).map(|i| {
            TxnOp::put(
                format!("big/{:05}", batch * 100 + i).into_bytes(),
                value.clone(),
                None,
            )
        });
        let resp = kv.txn(Txn::new().and_then(ops)).await.expect("put a batch");
        assert!(resp.succeeded);
    }
    let all = kv.range(b"big/", None).await.expect("a range over 4 MiB");
    assert_eq!(all.kvs.len(), 6_000);
    assert!(!all.more);
    assert!(all.kvs.iter().all(|k| k.value == value));
}
