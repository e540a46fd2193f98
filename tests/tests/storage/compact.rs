//! Key compaction on the real S3-compatible server: a million updates over ten thousand keys
//! compact to one record per key plus the uncompacted tail; a replay from offset 0 (tierlog's
//! reads, and pyarrow and DuckDB over the manifest) gives each key's newest value; tombstones
//! go once their retention passed; offsets only increase.

use std::collections::BTreeMap;
use std::time::Duration;

use tier::{BatchBuilder, ColdRetention, Compression, KeyCompaction, Record, Tier, TierConfig};
use tierlog_tests::{python, s3_options, tests_dir, unique};

use super::config;

const TOPIC: &str = "kv";

fn compact_config(hot: &std::path::Path) -> TierConfig {
    TierConfig {
        merge_enabled: false,
        // Passes run when the test asks.
        merge_interval_ms: 3_600_000,
        flush_interval_ms: 0,
        ..config(hot, 64 << 20)
    }
}

fn compacted(delete_retention: Duration) -> ColdRetention {
    ColdRetention {
        compact: Some(KeyCompaction {
            min_lag: Duration::ZERO,
            delete_retention,
        }),
        ..ColdRetention::default()
    }
}

/// Appends `n` updates from update `from` on, `per` a batch, each batch committed as an object
/// of its own; update `i` sets key `i % keys` (`None` from `value`: a tombstone).
async fn put(
    t: &Tier,
    from: usize,
    n: usize,
    per: usize,
    keys: usize,
    value: impl Fn(usize) -> Option<String>,
    newest: &mut BTreeMap<String, Option<String>>,
) {
    for start in (from..from + n).step_by(per) {
        let mut b = BatchBuilder::new(Compression::None);
        for i in start..(start + per).min(from + n) {
            let key = format!("key-{:05}", i % keys);
            let v = value(i);
            b.push(
                1_700_000_000_000 + i as i64,
                Some(key.as_bytes()),
                v.as_deref().map(str::as_bytes),
                &[],
            );
            newest.insert(key, v);
        }
        t.append(TOPIC, 0, b.build().unwrap()).await.unwrap();
        t.flush(TOPIC, 0).await.unwrap();
    }
}

/// Every record from offset 0, across gaps, in offset order.
async fn replay(t: &Tier) -> Vec<Record> {
    let end = t.offsets(TOPIC, 0).unwrap().next;
    let mut out: Vec<Record> = Vec::new();
    let mut pos = 0;
    while pos < end {
        let r = t.read(TOPIC, 0, pos, 4 << 20).await.unwrap();
        assert!(!r.records.is_empty(), "nothing at {pos} of {end}");
        pos = r.records.last().unwrap().offset + 1;
        out.extend(r.records);
    }
    assert!(
        out.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets only increase"
    );
    out
}

fn newest_of(records: &[Record]) -> BTreeMap<String, Option<String>> {
    let text = |b: &bytes::Bytes| String::from_utf8(b.to_vec()).unwrap();
    records
        .iter()
        .map(|r| (text(r.key.as_ref().unwrap()), r.value.as_ref().map(text)))
        .collect()
}

/// Records below `below` per key: at most one each.
fn once_per_key_below(records: &[Record], below: i64) {
    let mut seen = std::collections::BTreeSet::new();
    for r in records.iter().filter(|r| r.offset < below) {
        assert!(
            seen.insert(r.key.clone()),
            "key {:?} twice below the compaction point {below}",
            r.key
        );
    }
}

/// What pyarrow and DuckDB read of the partition through the manifest alone.
fn external(endpoint: &str, root: &object_store::path::Path) -> Option<serde_json::Value> {
    let py = python()?;
    let out = std::process::Command::new(py)
        .arg(tests_dir().join("python/compacted_bucket.py"))
        .arg(endpoint)
        .arg(format!("tierlog/{root}/topics/{TOPIC}/0"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow / DuckDB over the manifest failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// A million updates over ten thousand keys compact to at most one record per key plus the
/// uncompacted tail; replaying from offset 0 gives each key's newest value, to tierlog's
/// reads and to pyarrow and DuckDB over the manifest; tombstones stay for their retention and
/// then vanish; offsets only increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_updates_over_ten_thousand_keys_compact_to_one_record_per_key() {
    let Some(opts) = s3_options() else {
        return;
    };
    let endpoint = opts
        .iter()
        .find(|(k, _)| k == "aws_endpoint")
        .map(|(_, v)| v.clone())
        .expect("the S3 options name the endpoint");
    let (store, root) =
        tier::store::open_store(&format!("s3://tierlog/{}", unique("compact")), &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open = |epoch: u64| {
        let (store, root) = (store.clone(), root.clone());
        let hot = dir.path().join(format!("hot-{epoch}"));
        async move {
            let t = Tier::open(compact_config(&hot), store, root).await.unwrap();
            t.open_partition(TOPIC, 0, epoch).await.unwrap();
            t.set_cold_retention(TOPIC, 0, compacted(Duration::from_secs(2)))
                .unwrap();
            t
        }
    };
    let t = open(1).await;
    let (updates, keys, per) = (1_000_000, 10_000, 50_000);
    let mut newest = BTreeMap::new();
    put(
        &t,
        0,
        updates,
        per,
        keys,
        |i| Some(format!("v{i}")),
        &mut newest,
    )
    .await;
    // Every hundredth key deleted, then a tail that compaction leaves alone (the newest
    // object).
    put(
        &t,
        updates,
        keys,
        keys,
        keys,
        |i| (i % 100 != 0).then(|| format!("v{i}")),
        &mut newest,
    )
    .await;
    let tail_from = (updates + keys) as i64;
    put(
        &t,
        updates + keys,
        100,
        100,
        keys,
        |i| Some(format!("tail{i}")),
        &mut newest,
    )
    .await;
    let end = t.offsets(TOPIC, 0).unwrap().next;
    assert_eq!(end, tail_from + 100);

    let r = t.compact_now(TOPIC, 0, true).await.unwrap().unwrap();
    assert_eq!(
        r.below, tail_from,
        "everything but the newest object: {r:?}"
    );
    assert_eq!(r.kept, keys as u64, "one record per key: {r:?}");
    assert_eq!(r.removed, updates as u64, "{r:?}");
    t.close(false).await.unwrap();

    // A new leader reads the compacted history from the bucket.
    let t = open(2).await;
    let all = replay(&t).await;
    once_per_key_below(&all, tail_from);
    assert_eq!(all.len(), keys + 100, "a record per key and the tail");
    assert_eq!(newest_of(&all), newest, "each key's newest value");
    let tombstones = all.iter().filter(|r| r.value.is_none()).count();
    assert_eq!(tombstones, keys / 100, "kept within their retention");
    if let Some(x) = external(&endpoint, &root) {
        assert_eq!(x["rows"], serde_json::json!(keys + 100), "{}", x["objects"]);
        assert_eq!(x["increasing"], serde_json::json!(true));
        let want = serde_json::to_value(&newest).unwrap();
        assert_eq!(x["newest"], want, "pyarrow");
        assert_eq!(x["duckdb_newest"], want, "DuckDB");
    }

    // tierlog's SQL over the bucket: bounds of a compacted object come from its rows, not
    // from the offset range it covers.
    let catalog = std::sync::Arc::new(query::BucketCatalog::new(store.clone(), root.clone()));
    let engine =
        query::QueryEngine::new(catalog, store.clone(), query::QueryConfig::default()).unwrap();
    let sql = format!(
        r#"SELECT COUNT(*) AS n, MIN("offset") AS lo, MAX("offset") AS hi,
                  COUNT(DISTINCT key) AS keys, COUNT(*) - COUNT(value) AS tombstones
           FROM {TOPIC} WHERE "offset" < {tail_from}"#
    );
    let (_, batches) = engine.collect(&sql).await.unwrap();
    assert_eq!(
        super::sql::rows(&batches),
        vec![vec![
            serde_json::json!(keys),
            serde_json::json!(updates),
            serde_json::json!(tail_from - 1),
            serde_json::json!(keys),
            serde_json::json!(keys / 100),
        ]],
        "{sql}"
    );
    let (_, batches) = engine
        .collect(&format!(r#"SELECT MIN("offset") AS lo FROM {TOPIC}"#))
        .await
        .unwrap();
    assert_eq!(
        super::sql::rows(&batches),
        vec![vec![serde_json::json!(updates)]]
    );

    // Past their retention, the tombstones go (and their keys with them).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = t.compact_now(TOPIC, 0, true).await.unwrap().unwrap();
    assert_eq!(r.removed, (keys / 100) as u64, "{r:?}");
    t.close(false).await.unwrap();
    let t = open(3).await;
    let all = replay(&t).await;
    once_per_key_below(&all, tail_from);
    assert_eq!(all.iter().filter(|r| r.value.is_none()).count(), 0);
    let gone: BTreeMap<_, _> = newest
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(newest_of(&all), gone);
    if let Some(x) = external(&endpoint, &root) {
        assert_eq!(x["newest"], serde_json::to_value(&gone).unwrap());
    }
    t.close(false).await.unwrap();
}
