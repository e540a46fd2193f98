//! The storage core end to end: real files, a real object store on the file system, and an
//! independent Parquet reader; and the metadata store on a real etcd (`meta_etcd`).

#[path = "storage/compact.rs"]
mod compact;
#[path = "storage/merge.rs"]
mod merge;
#[path = "storage/meta_etcd.rs"]
mod meta_etcd;
#[path = "storage/sql.rs"]
mod sql;

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tier::store::{Decorated, open_store};
use tier::{
    ColdRetention, Compression, Error, FsyncPolicy, PartitionOffsets, Source, Tier, TierConfig,
};
use tierlog_tests::{
    BASE_TS, event, events_batch, first_at_or_after, python, s3_options, tests_dir, unique,
};

fn config(hot: &FsPath, segment_bytes: u64) -> TierConfig {
    TierConfig {
        data_dir: hot.to_path_buf(),
        segment_bytes,
        fsync: FsyncPolicy::Interval { ms: 10 },
        housekeeping_ms: 50,
        upload_retry_initial_ms: 10,
        upload_retry_max_ms: 200,
        row_group_bytes: 256 << 10,
        max_batch_bytes: (segment_bytes / 2) as usize,
        hot_budget_bytes: 1 << 30,
        ..TierConfig::default()
    }
}

async fn open(cfg: TierConfig, store: Arc<dyn ObjectStore>) -> Tier {
    Tier::open(cfg, store, Path::from("cluster"))
        .await
        .expect("open tier")
}

/// Reads a partition from `from` to `n`, checking every record against the generator and that
/// reads below `cold_below` come from the cold tier and the rest from the hot tier.
async fn check_all(t: &Tier, partition: u32, from: i64, n: i64, cold_below: i64) {
    let mut next = from;
    while next < n {
        let r = t
            .read("events", partition, next, 256 << 10)
            .await
            .expect("read");
        assert!(!r.records.is_empty(), "empty read at {next}");
        let want = if next < cold_below {
            Source::Cold
        } else {
            Source::Hot
        };
        assert_eq!(r.source, want, "read at {next}");
        for rec in r.records.into_iter().take((n - next) as usize) {
            assert_eq!(
                rec,
                event(partition, next),
                "partition {partition} offset {next}"
            );
            next += 1;
        }
    }
    assert_eq!(next, n);
}

/// Polls `cond` every 20 ms; fails with `what` if it does not hold within 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}");
}

async fn produce(t: &Tier, partition: u32, from: i64, n: i64, batch: i64) {
    let mut i = from;
    while i < from + n {
        let k = batch.min(from + n - i);
        let codec = if i % 2 == 0 {
            Compression::Zstd
        } else {
            Compression::None
        };
        let r = t
            .append("events", partition, events_batch(partition, i, k, codec))
            .await
            .expect("append");
        assert_eq!(r.base_offset, i);
        i += k;
    }
}

/// 1,000,000 records over four partitions: write, seal, upload, delete the hot tier, and read
/// everything back from offset 0 and by timestamp, identical to what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_records_round_trip_through_the_cold_tier() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let hot = dir.path().join("hot");
    const PARTS: u32 = 4;
    const N: i64 = 250_000;
    {
        let t = open(config(&hot, 8 << 20), store.clone()).await;
        let mut tasks = Vec::new();
        for p in 0..PARTS {
            t.open_partition("events", p, 1).await.unwrap();
            let t = t.clone();
            tasks.push(tokio::spawn(async move { produce(&t, p, 0, N, 500).await }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        // Hot reads first: identical to what was written.
        check_all(&t, 1, 0, N, 0).await;
        t.close(true).await.unwrap();
        for p in 0..PARTS {
            let off = t.offsets("events", p).unwrap();
            assert_eq!(off.cold_next, N);
            assert!(off.cold_segments > 1, "several segments per partition");
        }
    }
    std::fs::remove_dir_all(&hot).unwrap();
    let t = open(config(&hot, 8 << 20), store.clone()).await;
    for p in 0..PARTS {
        t.open_partition("events", p, 2).await.unwrap();
        let off = t.offsets("events", p).unwrap();
        assert_eq!((off.log_start, off.hot_start, off.next), (0, N, N));
    }
    for p in 0..PARTS {
        check_all(&t, p, 0, N, N).await;
    }
    for (p, ts) in [
        (0, BASE_TS),
        (1, BASE_TS + 7),
        (2, BASE_TS + 300_001),
        (3, BASE_TS + 3 * N - 40),
    ] {
        let want = first_at_or_after(p, N, ts);
        assert_eq!(
            t.offset_for_timestamp("events", p, ts).await.unwrap(),
            want,
            "p{p} ts {ts}"
        );
    }
    assert_eq!(
        t.offset_for_timestamp("events", 0, BASE_TS + 4 * N)
            .await
            .unwrap(),
        None
    );
    // New appends continue the offsets after the cold end, and timestamp seeks span both tiers.
    produce(&t, 0, N, 1000, 100).await;
    let ts = event(0, N + 500).timestamp;
    assert_eq!(
        t.offset_for_timestamp("events", 0, ts).await.unwrap(),
        first_at_or_after(0, N + 1000, ts)
    );
    check_all(&t, 0, N - 10, N + 1000, N).await;
    t.close(false).await.unwrap();
}

/// Uploads against a failing store: appends continue, nothing is uploaded, and once the store
/// heals everything is uploaded and readable from the cold tier alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    let hot = dir.path().join("hot");
    let t = open(config(&hot, 256 << 10), dec.clone()).await;
    t.open_partition("events", 0, 1).await.unwrap();
    dec.faults.fail_puts.store(true, Ordering::SeqCst);
    produce(&t, 0, 0, 20_000, 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let off = t.offsets("events", 0).unwrap();
    assert_eq!(off.cold_next, 0, "nothing can be uploaded");
    assert_eq!(off.next, 20_000);
    assert_eq!(off.hot_start, 0, "the hot copy is kept");
    dec.faults.fail_puts.store(false, Ordering::SeqCst);
    t.flush("events", 0).await.unwrap();
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 20_000);
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(&hot).unwrap();
    let t = open(config(&hot, 256 << 10), dec.clone()).await;
    t.open_partition("events", 0, 2).await.unwrap();
    check_all(&t, 0, 0, 20_000, 20_000).await;
    t.close(false).await.unwrap();
}

/// With uploads failing, the hot tier fills its disk budget and appends get a retriable
/// back-pressure error; when the store heals, uploads drain the hot tier and appends resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hot_tier_pushes_back_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    let hot = dir.path().join("hot");
    let mut cfg = config(&hot, 128 << 10);
    cfg.hot_budget_bytes = 512 << 10;
    cfg.hot_retention_bytes = 0;
    let t = open(cfg, dec.clone()).await;
    t.open_partition("events", 0, 1).await.unwrap();
    dec.faults.fail_puts.store(true, Ordering::SeqCst);
    let mut next = 0i64;
    let err = loop {
        match t
            .append("events", 0, events_batch(0, next, 100, Compression::None))
            .await
        {
            Ok(r) => next = r.last_offset + 1,
            Err(e) => break e,
        }
        assert!(next < 1_000_000, "back-pressure never came");
    };
    assert!(matches!(err, Error::Backpressure { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(t.hot_bytes() <= 512 << 10);
    dec.faults.fail_puts.store(false, Ordering::SeqCst);
    // Retry the refused batch until the budget frees up.
    let mut waited = 0;
    loop {
        match t
            .append("events", 0, events_batch(0, next, 100, Compression::None))
            .await
        {
            Ok(r) => {
                assert_eq!(r.base_offset, next, "nothing was lost or duplicated");
                next = r.last_offset + 1;
                break;
            }
            Err(e) if e.is_retryable() => {
                waited += 1;
                assert!(waited < 2000, "uploads never drained the hot tier");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    t.flush("events", 0).await.unwrap();
    // Housekeeping drops the uploaded segments (retention 0 bytes) on its own schedule; wait for
    // it so the read below knows where the hot tier starts. One more batch stays hot.
    let flushed = next;
    wait_until("uploaded segments to leave the hot tier", || {
        t.offsets("events", 0).unwrap().hot_start == flushed
    })
    .await;
    let r = t
        .append("events", 0, events_batch(0, next, 100, Compression::None))
        .await
        .unwrap();
    next = r.last_offset + 1;
    check_all(&t, 0, 0, next, flushed).await;
    t.close(false).await.unwrap();
}

/// A deposed leader keeps running but can commit nothing: its uploads fail fenced, its appends
/// are refused, and the manifest holds only what the current leader and earlier epochs wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let old = open(config(&dir.path().join("hot-a"), 64 << 10), store.clone()).await;
    old.open_partition("events", 0, 1).await.unwrap();
    produce(&old, 0, 0, 1000, 100).await;
    old.flush("events", 0).await.unwrap();
    // A new leader takes over with a higher epoch, from the committed manifest.
    let new = open(config(&dir.path().join("hot-b"), 64 << 10), store.clone()).await;
    new.open_partition("events", 0, 2).await.unwrap();
    assert_eq!(new.offsets("events", 0).unwrap().next, 1000);
    // The old leader still accepts this append locally (it has not learned yet) ...
    produce(&old, 0, 1000, 500, 100).await;
    // ... but cannot commit it.
    let err = old.flush("events", 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fenced {
                ours: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = old
        .append("events", 0, events_batch(0, 0, 1, Compression::None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    // A tier at a lower epoch cannot even open the partition.
    let stale = open(config(&dir.path().join("hot-c"), 64 << 10), store.clone()).await;
    let err = stale.open_partition("events", 0, 1).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    // The new leader's log continues at 1000 and its history is intact.
    produce(&new, 0, 1000, 300, 100).await;
    new.flush("events", 0).await.unwrap();
    assert_eq!(new.offsets("events", 0).unwrap().cold_next, 1300);
    check_all(&new, 0, 0, 1000, 1000).await;
    for t in [old, new, stale] {
        t.close(false).await.ok();
    }
}

/// Sets partition 0's cold retention to half of `cold_bytes` and waits until it applied.
async fn retain_half(t: &Tier, cold_bytes: u64) -> PartitionOffsets {
    let keep = cold_bytes / 2;
    t.set_cold_retention(
        "events",
        0,
        ColdRetention {
            age: None,
            bytes: std::num::NonZeroU64::new(keep),
            compact: None,
        },
    )
    .unwrap();
    wait_until("retention never ran", || {
        t.offsets("events", 0).unwrap().cold_bytes <= keep
    })
    .await;
    t.offsets("events", 0).unwrap()
}

/// Partition 0's log objects under a test directory (the bucket is `dir/bucket`).
const LOG_DIR: &str = "bucket/cluster/topics/events/0/log";

/// A tier over a file store in `dir/bucket` with small segments, partition 0 opened at `epoch`
/// and 5000 records committed to the cold tier in at least four segments; its offsets then.
async fn five_thousand_in_cold(
    dir: &FsPath,
    epoch: u64,
) -> (Tier, Arc<Decorated>, PartitionOffsets) {
    let bucket = dir.join("bucket");
    let (inner, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let store = Arc::new(Decorated::new(inner));
    let t = open(config(&dir.join("hot"), 64 << 10), store.clone()).await;
    t.open_partition("events", 0, epoch).await.unwrap();
    produce(&t, 0, 0, 5000, 100).await;
    t.flush("events", 0).await.unwrap();
    let before = t.offsets("events", 0).unwrap();
    assert!(before.cold_segments >= 4);
    (t, store, before)
}

/// Cold retention removes whole segments: manifest first, then the objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_retention_removes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (t, store, before) = five_thousand_in_cold(dir.path(), 1).await;
    // Every commit is a log object: the segments and the opening fence.
    let log_dir = dir.path().join(LOG_DIR);
    let count = || std::fs::read_dir(&log_dir).unwrap().count() as u64;
    assert_eq!(count(), before.cold_segments + 1);
    let after = retain_half(&t, before.cold_bytes).await;
    assert!(after.log_start > 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        count(),
        after.cold_segments + 2,
        "retired segments are deleted (the fence and the truncation stay)"
    );
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let t = open(config(&dir.path().join("hot"), 64 << 10), store).await;
    t.open_partition("events", 0, 2).await.unwrap();
    let err = t.read("events", 0, 0, 1000).await.unwrap_err();
    assert!(matches!(err, Error::OffsetOutOfRange { .. }), "{err}");
    check_all(&t, 0, after.log_start, 5000, 5000).await;
    t.close(false).await.unwrap();
}

/// A retired segment whose delete failed is collected once older than the grace period, and so
/// is the truncation commit (a checkpoint covers it); live segments, the fence (a deposed writer
/// may still try to create its slot) and names that do not parse are never touched, and a name
/// past the log (a gap) stops collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_segments_left_behind_are_swept_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (t, store, before) = five_thousand_in_cold(dir.path(), 3).await;
    let log_dir = dir.path().join(LOG_DIR);
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // Seq 1 is the fence, seq 2 the first segment.
    let first = format!("{:020}.parquet", 2);
    let first_bytes = std::fs::read(log_dir.join(&first)).unwrap();
    let after = retain_half(&t, before.cold_bytes).await;
    let kept = names();
    assert!(
        !kept.contains(&first),
        "retention deleted the first segment"
    );
    assert!(
        kept.contains(&format!("{:020}.parquet", 1)),
        "the fence stays"
    );
    // As if that delete had failed; plus a name past the committed log and one that does not
    // parse.
    std::fs::write(log_dir.join(&first), &first_bytes).unwrap();
    let ahead = format!("{:020}.parquet", before.cold_segments + 10);
    for name in [ahead.clone(), "notes.txt".to_string()] {
        let path = Path::from(format!("cluster/topics/events/0/log/{name}"));
        store.put(&path, b"not ours".to_vec().into()).await.unwrap();
    }
    // An object past the log is a gap in it, as a loader sees it: collection stops there with
    // the loader's error and deletes nothing.
    let err = t
        .collect_garbage("events", 0, Duration::ZERO, false)
        .await
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let ahead_path = Path::from(format!("cluster/topics/events/0/log/{ahead}"));
    store.delete(&ahead_path).await.unwrap();
    let swept = t
        .collect_garbage("events", 0, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(swept.garbage.is_empty(), "nothing is older than an hour");
    // Ages are taken on the store's clock: a store two hours behind this node does not make
    // the minutes-old objects look older than an hour.
    store
        .faults
        .clock_behind_ms
        .store(2 * 3600 * 1000, Ordering::SeqCst);
    let swept = t
        .collect_garbage("events", 0, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(
        swept.garbage.is_empty(),
        "nothing is older than an hour on the store's clock"
    );
    store.faults.clock_behind_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let swept = t
        .collect_garbage("events", 0, Duration::ZERO, false)
        .await
        .unwrap();
    let mut why: Vec<&str> = swept.garbage.iter().map(|g| g.why).collect();
    why.sort();
    assert_eq!(
        why,
        vec!["a commit a checkpoint covers", "retired by retention"],
        "{swept:?}"
    );
    let truncation = swept
        .garbage
        .iter()
        .find(|g| g.why.starts_with("a commit"))
        .map(|g| g.path.rsplit('/').next().unwrap().to_string())
        .unwrap();
    let mut expected: Vec<String> = kept.iter().filter(|n| **n != truncation).cloned().collect();
    expected.push("notes.txt".to_string());
    expected.sort();
    assert_eq!(names(), expected, "only {first} and the truncation went");
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let t = open(config(&dir.path().join("hot"), 64 << 10), store).await;
    t.open_partition("events", 0, 4).await.unwrap();
    check_all(&t, 0, after.log_start, 5000, 5000).await;
    t.close(false).await.unwrap();
}

/// Sixteen readers replaying the same cold history at once cost the same GETs as one, and a
/// sequential reader finds the next row group already fetched (read-ahead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_reads_share_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    {
        let t = open(config(&dir.path().join("hot"), 1 << 20), dec.clone()).await;
        t.open_partition("events", 0, 1).await.unwrap();
        produce(&t, 0, 0, 20_000, 500).await;
        t.close(true).await.unwrap();
    }
    let gets_for = |readers: usize, read_ahead: bool| {
        let dec = dec.clone();
        let hot = dir.path().join(format!("hot-{readers}-{read_ahead}"));
        async move {
            let mut cfg = config(&hot, 1 << 20);
            cfg.read_ahead_row_groups = if read_ahead { 2 } else { 0 };
            let t = open(cfg, dec.clone()).await;
            t.open_partition("events", 0, 2).await.unwrap();
            let before = dec.stats.gets();
            let mut tasks = Vec::new();
            for _ in 0..readers {
                let t = t.clone();
                tasks.push(tokio::spawn(async move {
                    t.read("events", 0, 0, 1000).await.unwrap().records.len()
                }));
            }
            for task in tasks {
                assert!(task.await.unwrap() > 0);
            }
            let gets = dec.stats.gets() - before;
            // Give read-ahead time to land (it runs in the background).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let cached = t.cache_bytes().await;
            t.close(false).await.unwrap();
            (gets, cached)
        }
    };
    let (one, _) = gets_for(1, false).await;
    let (sixteen, _) = gets_for(16, false).await;
    assert_eq!(
        one, sixteen,
        "16 concurrent readers coalesce into the same fetches"
    );
    let (_, without) = gets_for(1, false).await;
    let (_, with) = gets_for(1, true).await;
    assert!(
        with > without,
        "read-ahead fetched the next row group ({with} vs {without} bytes cached)"
    );
}

/// A replay of more cold data than the cache holds, in small reads (many per row group): each
/// row group is fetched from the store once, as with a cache that holds everything, and the
/// cache stays within its budget. (A cache that turned new row groups away in favour of ones
/// read often would load each again for every read.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_larger_than_the_cache_loads_each_row_group_once() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    {
        let mut cfg = config(&dir.path().join("hot"), 1 << 20);
        cfg.row_group_bytes = 64 << 10;
        let t = open(cfg, dec.clone()).await;
        t.open_partition("events", 0, 1).await.unwrap();
        produce(&t, 0, 0, 60_000, 500).await;
        t.close(true).await.unwrap();
    }
    // Replays in 4 KiB reads through a fresh node; returns (GETs, bytes cached at the end).
    let replay = |cache_bytes: u64, name: &'static str| {
        let dec = dec.clone();
        let hot = dir.path().join(name);
        async move {
            let mut cfg = config(&hot, 1 << 20);
            cfg.read_ahead_row_groups = 0;
            cfg.cache_bytes = cache_bytes;
            let t = open(cfg, dec.clone()).await;
            t.open_partition("events", 0, 2).await.unwrap();
            let before = dec.stats.gets();
            let mut next = 0;
            while next < 60_000 {
                let r = t.read("events", 0, next, 4 << 10).await.unwrap();
                assert_eq!(r.records[0].offset, next);
                next = r.records.last().unwrap().offset + 1;
            }
            let gets = dec.stats.gets() - before;
            let cached = t.cache_bytes().await;
            t.close(false).await.unwrap();
            (gets, cached)
        }
    };
    let (all_gets, all_bytes) = replay(1 << 30, "hot-big").await;
    let budget = all_bytes / 4;
    let (gets, cached) = replay(budget, "hot-small").await;
    assert!(
        cached <= budget,
        "cache {cached} B over its budget {budget} B"
    );
    assert_eq!(
        gets, all_gets,
        "a cache of a quarter of the data fetches each row group once, like one that holds all"
    );
}

/// The Parquet files are readable by independent engines (pyarrow and DuckDB) with the expected
/// rows, columns and values, using only the bucket (manifest + files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_is_read_by_pyarrow_and_duckdb() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (store, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let t = open(config(&dir.path().join("hot"), 256 << 10), store).await;
    const N: i64 = 12_345;
    let mut expected = serde_json::Map::new();
    for p in 0..3u32 {
        t.open_partition("events", p, 1).await.unwrap();
        produce(&t, p, 0, N, 250).await;
        let samples: Vec<_> = [0, 1, 5, 7, 17, 35, N - 1]
            .iter()
            .map(|&i| {
                let r = event(p, i);
                serde_json::json!({
                    "offset": i,
                    "timestamp": r.timestamp,
                    "key": r.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                    "value": String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                    "headers": r.headers.iter().map(|h| serde_json::json!([h.key, h.value.as_ref().map(|v| String::from_utf8(v.to_vec()).unwrap())])).collect::<Vec<_>>(),
                })
            })
            .collect();
        expected.insert(
            p.to_string(),
            serde_json::json!({ "count": N, "samples": samples }),
        );
    }
    t.close(true).await.unwrap();
    let spec = dir.path().join("expected.json");
    std::fs::write(&spec, serde_json::to_vec(&expected).unwrap()).unwrap();
    let out = std::process::Command::new(&py)
        .arg(tests_dir().join("python/check_parquet.py"))
        .arg(bucket.join("cluster/topics/events"))
        .arg(&spec)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "independent reader failed:\n{text}");
    assert!(
        text.contains("pyarrow ok") && text.contains("duckdb ok"),
        "{text}"
    );
}

/// The record batch codec agrees with an independent Kafka implementation (kafka-python).
#[test]
fn batches_decode_with_kafka_python() {
    let Some(py) = python() else { return };
    let batch = events_batch(1, 0, 20, Compression::None).with_assigned(1000, 4);
    let hex: String = batch
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expect: Vec<_> = (0..20)
        .map(|i| {
            let r = event(1, i);
            serde_json::json!([
                1000 + i,
                r.timestamp,
                r.key.map(|k| String::from_utf8(k.to_vec()).unwrap()),
                String::from_utf8(r.value.unwrap().to_vec()).unwrap()
            ])
        })
        .collect();
    let out = std::process::Command::new(&py)
        .arg(tests_dir().join("python/check_kafka_batch.py"))
        .arg(hex)
        .arg(serde_json::to_string(&expect).unwrap())
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("kafka-python ok"),
        "{text}"
    );
}

/// The same round trip and fencing on a real S3-compatible server (moto, started by the test
/// command): conditional creates, range GETs and listing through the S3 API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_fencing_on_s3() {
    let Some(opts) = s3_options() else { return };
    let url = format!("s3://tierlog/{}", unique("storage"));
    let (store, root) = open_store(&url, &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let open_at = |hot: &str| {
        let (store, root) = (store.clone(), root.clone());
        let cfg = config(&dir.path().join(hot), 256 << 10);
        async move { Tier::open(cfg, store, root).await.unwrap() }
    };
    let t = open_at("hot-a").await;
    for p in 0..2 {
        t.open_partition("events", p, 1).await.unwrap();
        produce(&t, p, 0, 10_000, 250).await;
    }
    t.close(true).await.unwrap();
    let t = open_at("hot-b").await;
    for p in 0..2 {
        t.open_partition("events", p, 2).await.unwrap();
        check_all(&t, p, 0, 10_000, 10_000).await;
    }
    let ts = event(1, 6000).timestamp;
    assert_eq!(
        t.offset_for_timestamp("events", 1, ts).await.unwrap(),
        first_at_or_after(1, 10_000, ts)
    );
    // A newer epoch takes partition 0: the epoch-2 tier can no longer commit there.
    let newer = open_at("hot-c").await;
    newer.open_partition("events", 0, 3).await.unwrap();
    produce(&t, 0, 10_000, 100, 100).await;
    let err = t.flush("events", 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fenced {
                ours: 2,
                current: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(newer.offsets("events", 0).unwrap().next, 10_000);
    t.close(false).await.ok();
    newer.close(false).await.unwrap();
}

/// A tier under `dir` whose partition `events`/0 took `n` records at epoch 1 and crashed before
/// uploading any (puts failed until then): its store and hot directory.
async fn crashed_before_upload(dir: &FsPath, n: i64) -> (Arc<Decorated>, std::path::PathBuf) {
    let (inner, _) = open_store(dir.join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    let hot = dir.join("hot");
    let t = open(config(&hot, 128 << 10), dec.clone()).await;
    t.open_partition("events", 0, 1).await.unwrap();
    dec.faults.fail_puts.store(true, Ordering::SeqCst);
    produce(&t, 0, 0, n, 200).await;
    t.sync_all().await.unwrap();
    t.abort().await;
    drop(t);
    dec.faults.fail_puts.store(false, Ordering::SeqCst);
    (dec, hot)
}

/// A crash before upload (no flush, no close): the reopened tier finds the sealed and active
/// segments on disk, uploads them, and the cold tier alone then holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (dec, hot) = crashed_before_upload(dir.path(), 8000).await;
    let t = open(config(&hot, 128 << 10), dec.clone()).await;
    t.open_partition("events", 0, 2).await.unwrap();
    assert_eq!(t.offsets("events", 0).unwrap().next, 8000);
    t.flush("events", 0).await.unwrap();
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 8000);
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(&hot).unwrap();
    let t = open(config(&hot, 128 << 10), dec).await;
    t.open_partition("events", 0, 3).await.unwrap();
    check_all(&t, 0, 0, 8000, 8000).await;
    t.close(false).await.unwrap();
}

/// Two opens of the same partition at once (a leadership retry racing the first attempt): one
/// recovers the hot tier, both succeed, and the hot bytes are counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_partition_count_its_hot_bytes_once() {
    let dir = tempfile::tempdir().unwrap();
    let (dec, hot) = crashed_before_upload(dir.path(), 4000).await;
    let t = open(config(&hot, 128 << 10), dec).await;
    let (a, b) = tokio::join!(
        t.open_partition("events", 0, 2),
        t.open_partition("events", 0, 2)
    );
    a.unwrap();
    b.unwrap();
    let o = t.offsets("events", 0).unwrap();
    assert_eq!(o.next, 4000);
    assert!(o.hot_bytes > 0);
    assert_eq!(
        t.hot_bytes(),
        o.hot_bytes,
        "the tier's hot bytes count the partition once"
    );
    t.close_partition("events", 0).await.unwrap();
    assert_eq!(t.hot_bytes(), 0, "closing gives back all of it");
    t.close(false).await.unwrap();
}

/// Time-based retention on both tiers: uploaded hot segments leave local disk once older than
/// `hot_retention_ms`; cold segments whose newest record is older than the topic's retention
/// leave the manifest, then the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_based_retention_on_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let mut cfg = config(&dir.path().join("hot"), 64 << 10);
    cfg.hot_retention_ms = 0;
    let t = open(cfg, store).await;
    t.open_partition("events", 0, 1).await.unwrap();
    produce(&t, 0, 0, 5000, 100).await;
    t.flush("events", 0).await.unwrap();
    wait_until("aged hot segments were never deleted", || {
        t.offsets("events", 0).unwrap().hot_start >= 5000
    })
    .await;
    // Keep records newer than the one at offset 2500 (event times are in the past).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let keep_ms = now - event(0, 2500).timestamp;
    t.set_cold_retention(
        "events",
        0,
        ColdRetention {
            age: Some(Duration::from_millis(keep_ms as u64)),
            bytes: None,
            compact: None,
        },
    )
    .unwrap();
    wait_until("time retention never ran", || {
        t.offsets("events", 0).unwrap().log_start != 0
    })
    .await;
    let start = t.offsets("events", 0).unwrap().log_start;
    assert!(
        start > 1000 && start <= 2500,
        "whole segments older than the cut are gone: {start}"
    );
    check_all(&t, 0, start, 5000, 5000).await;
    t.close(false).await.unwrap();
}

/// A dead object store at open time is a clear, retriable error, not an endless wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_at_open_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    dec.faults.set_all(true);
    let t = open(config(&dir.path().join("hot"), 64 << 10), dec.clone()).await;
    let err = t.open_partition("events", 0, 1).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("injected"), "{err}");
    dec.faults.set_all(false);
    t.open_partition("events", 0, 1).await.unwrap();
    t.close(false).await.unwrap();
}

/// Parquet objects under `dir`, recursively.
/// Files under `dir` (recursively) for which `keep` holds.
fn files_where(dir: &FsPath, keep: impl Fn(&FsPath) -> bool) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if keep(&e.path()) {
                n += 1;
            }
        }
    }
    n
}

/// Segment objects under `dir`: log objects with rows (the other commits have none).
fn parquet_files(dir: &FsPath) -> usize {
    files_where(dir, |p| {
        use parquet::file::reader::FileReader;
        p.extension().is_some_and(|x| x == "parquet")
            && parquet::file::reader::SerializedFileReader::new(std::fs::File::open(p).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
                > 0
    })
}

/// Whether the hot tier under `dir` has a segment file starting at `base`.
fn hot_segment_at(dir: &FsPath, base: i64) -> bool {
    let name = format!("{base:020}.log");
    files_where(dir, |p| p.file_name().is_some_and(|n| *n == *name)) > 0
}

/// With two uploads in flight, the next cut is taken and converted while the first one's write
/// is slow, and written right after it: nothing is committed (nor anyone answered) past the
/// first until it lands, and a third request waits for a free slot before its records are cut.
/// Cuts commit the active segment without sealing it: the hot tier stays one segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_overlap_but_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (inner, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    let hot = dir.path().join("hot");
    let cfg = TierConfig {
        uploads_in_flight: 2,
        ..config(&hot, 64 << 20)
    };
    let t = open(cfg, dec.clone()).await;
    t.open_partition("events", 0, 1).await.unwrap();
    // The first segment's commit (log seq 2, after the opening fence) is written slowly.
    dec.faults
        .hold_puts
        .lock()
        .unwrap()
        .push(format!("log/{:020}.parquet", 2));
    produce(&t, 0, 0, 100, 100).await;
    let waiter = |end: i64| {
        let t = t.clone();
        tokio::spawn(async move { t.wait_committed("events", 0, end).await })
    };
    let uploading = || t.offsets("events", 0).unwrap().uploading_next;
    let w1 = waiter(100);
    wait_until("the first cut is being written", || {
        dec.faults.held_puts.load(Ordering::SeqCst) == 1
    })
    .await;
    produce(&t, 0, 100, 50, 50).await;
    let w2 = waiter(150);
    wait_until("the second cut is taken while the first is held", || {
        uploading() == 150
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(parquet_files(&bucket), 0, "nothing written past the first");
    assert_eq!(
        t.offsets("events", 0).unwrap().cold_next,
        0,
        "no commit past a gap"
    );
    assert!(
        !w1.is_finished() && !w2.is_finished(),
        "nobody answered early"
    );
    // A third request waits: both upload slots are taken, so its records are not cut yet.
    produce(&t, 0, 150, 10, 10).await;
    let w3 = waiter(160);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(uploading(), 150, "at most two cuts in flight");

    dec.faults.hold_puts.lock().unwrap().clear();
    for w in [w1, w2, w3] {
        w.await.unwrap().unwrap();
    }
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 160);
    assert_eq!(parquet_files(&bucket), 3, "one object per cut");
    assert!(
        hot_segment_at(&hot, 0) && !hot_segment_at(&hot, 100),
        "nothing was sealed"
    );
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(&hot).unwrap();
    let t = open(config(&hot, 64 << 20), dec.clone()).await;
    t.open_partition("events", 0, 2).await.unwrap();
    check_all(&t, 0, 0, 160, 160).await;
    t.close(false).await.unwrap();
}

/// A tier with `flush_interval_ms` over a file store in `dir/bucket`, partition 0 of `events`
/// open; and the bucket's directory.
async fn tier_with_interval(dir: &FsPath, interval: u64) -> (Tier, std::path::PathBuf) {
    let bucket = dir.join("bucket");
    let (store, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let cfg = TierConfig {
        flush_interval_ms: interval,
        ..config(&dir.join("hot"), 64 << 20)
    };
    let t = open(cfg, store).await;
    t.open_partition("events", 0, 1).await.unwrap();
    (t, bucket)
}

/// Under steady acks=all load a partition cuts for waiters about once per
/// `flush_interval_ms` (sooner by its conversion time, at most a quarter of the interval), so
/// its object count (the store's request bill) is bounded by the interval, not the request
/// rate; every waiter is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_commits_about_once_per_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let interval = 300;
    let (t, bucket) = tier_with_interval(dir.path(), interval).await;
    let started = std::time::Instant::now();
    let mut waiters = tokio::task::JoinSet::new();
    let mut next = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        produce(&t, 0, next, 10, 10).await;
        next += 10;
        let (t, end) = (t.clone(), next);
        waiters.spawn(async move { t.wait_committed("events", 0, end).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let requests = waiters.len();
    while let Some(w) = waiters.join_next().await {
        w.unwrap().unwrap();
    }
    // Alone on the tier, cuts are taken at least 3/4 of the interval apart, the first at once:
    // k cuts need (k-1) such spacings.
    let most = started.elapsed().as_millis() as usize * 4 / (interval as usize * 3) + 1;
    let objects = parquet_files(&bucket);
    assert!(
        (1..=most).contains(&objects),
        "{requests} acks=all requests over {:?} went up in {objects} objects; at most {most} \
         with a {interval} ms interval",
        started.elapsed()
    );
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, next);
    t.close(false).await.unwrap();
}

/// The flush interval holds back a waiter only when the partition cut for waiters recently:
/// the first is served at once, the next waits for the interval (or an explicit flush).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_partition_is_not_held_by_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (t, bucket) = tier_with_interval(dir.path(), 60_000).await;
    produce(&t, 0, 0, 10, 10).await;
    // Not held for the minute: nothing was cut for waiters before.
    tokio::time::timeout(Duration::from_secs(20), t.wait_committed("events", 0, 10))
        .await
        .expect("a quiet partition is served without waiting for the interval")
        .unwrap();
    produce(&t, 0, 10, 10, 10).await;
    let second = {
        let t = t.clone();
        tokio::spawn(async move { t.wait_committed("events", 0, 20).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "held until the interval has passed");
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 10);
    t.flush("events", 0).await.unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(parquet_files(&bucket), 2);
    t.close(false).await.unwrap();
}

/// acks=all is group-committed: a waiter on a quiet partition gets its own small segment at
/// once, and the waiters that arrive while `uploads_in_flight` uploads are in flight share the
/// next one, so objects grow with the upload rate, not the request rate. Nobody is released
/// before the cold tier holds their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_waiters_share_cold_commits() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (inner, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let dec = Arc::new(Decorated::new(inner));
    let hot = dir.path().join("hot");
    let t = open(config(&hot, 64 << 20), dec.clone()).await;
    t.open_partition("events", 0, 1).await.unwrap();
    produce(&t, 0, 0, 100, 100).await;
    t.wait_committed("events", 0, 100).await.unwrap();
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 100);
    assert_eq!(parquet_files(&bucket), 1);

    dec.faults.fail_puts.store(true, Ordering::SeqCst);
    let mut waiters = Vec::new();
    for k in 0..50 {
        let from = 100 + k * 10;
        produce(&t, 0, from, 10, 10).await;
        let t = t.clone();
        waiters.push(tokio::spawn(async move {
            t.wait_committed("events", 0, from + 10).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "no waiter is released before its records are in the cold tier"
    );
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 100);
    dec.faults.fail_puts.store(false, Ordering::SeqCst);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!(t.offsets("events", 0).unwrap().cold_next, 600);
    // The first waiters get up to `uploads_in_flight` cuts taken while the store fails;
    // everyone after them shares one more.
    let depth = config(&hot, 64 << 20).uploads_in_flight;
    assert_eq!(depth, 1, "the default");
    let objects = parquet_files(&bucket) - 1;
    assert!(
        (1..=depth + 1).contains(&objects),
        "50 waiting requests went up in {objects} objects ({depth} uploads in flight)"
    );
    t.close(false).await.unwrap();
    std::fs::remove_dir_all(&hot).unwrap();
    let t = open(config(&hot, 64 << 20), dec.clone()).await;
    t.open_partition("events", 0, 2).await.unwrap();
    check_all(&t, 0, 0, 600, 600).await;
    t.close(false).await.unwrap();
}

/// A short fixed-seed run of each fuzz target (docs/fuzzing.md): the corpus is replayed and
/// new inputs generated; nothing may break an oracle, and some inputs must get through the
/// decoder (or the generators have lost their way).
#[test]
fn fuzz_targets_short_fixed_seed_run() {
    use tierlog_tests::fuzz::{self, Target};
    for (target, execs) in [
        (Target::Batch, 10_000),
        (Target::Produce, 500),
        (Target::Cold, 1_000),
        (Target::Kafka, 20_000),
    ] {
        let r = fuzz::run(target, 20_261_204, execs);
        println!(
            "{}: {} executions, {} accepted, {} replayed",
            target.name(),
            r.executions,
            r.accepted,
            r.replayed
        );
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert!(r.accepted > execs / 20, "{} accepted", r.accepted);
    }
}
