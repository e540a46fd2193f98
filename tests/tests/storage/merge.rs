//! Merging small cold objects and collecting the replaced ones, on the real S3-compatible
//! server: what every reader sees (tierlog's reads, pyarrow and DuckDB over the manifest) is the
//! same before and after, a crash at each step of a merge leaves the old or the new objects live,
//! and a reader in the middle of an object that gets merged finishes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tier::store::{Decorated, open_store};
use tier::{Compression, Record, Tier, TierConfig};
use tierlog_tests::{event, events_batch, python, s3_options, tests_dir, unique};

use super::config;

/// Merging and garbage collection on demand only (the tests collect with a one-second grace
/// period), no minimum age.
fn merge_config(hot: &std::path::Path) -> TierConfig {
    TierConfig {
        merge_enabled: false,
        merge_min_age_ms: 0,
        merge_min_segments: 16,
        flush_interval_ms: 0,
        ..config(hot, 4 << 20)
    }
}

/// A bucket on the S3 server (a fresh prefix) wrapped for fault injection, with its endpoint.
fn s3_bucket() -> Option<(Arc<Decorated>, Path, String)> {
    let opts = s3_options()?;
    let endpoint = opts
        .iter()
        .find(|(k, _)| k == "aws_endpoint")
        .map(|(_, v)| v.clone())
        .expect("the S3 options name the endpoint");
    let (store, root) = open_store(&format!("s3://tierlog/{}", unique("merge")), &opts).unwrap();
    Some((Arc::new(Decorated::new(store)), root, endpoint))
}

/// Appends `n` events from `from` one batch of `per` at a time, each committed at acks=all
/// before the next: one small cold object per batch.
async fn acks_all(t: &Tier, from: i64, n: i64, per: i64) {
    let mut i = from;
    while i < from + n {
        let r = t
            .append("events", 0, events_batch(0, i, per, Compression::None))
            .await
            .unwrap();
        t.wait_committed("events", 0, r.last_offset + 1)
            .await
            .unwrap();
        i += per;
    }
}

async fn read_all(t: &Tier, n: i64) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    while (out.len() as i64) < n {
        let r = t
            .read("events", 0, out.len() as i64, 1 << 20)
            .await
            .unwrap();
        assert!(!r.records.is_empty(), "nothing at {}", out.len());
        out.extend(r.records);
    }
    assert!(
        (0..n).all(|i| out[i as usize] == event(0, i)),
        "the generated events"
    );
    out
}

/// Object names under the partition's `dir` (log, merged).
async fn objects(store: &dyn ObjectStore, root: &Path, dir: &str) -> Vec<String> {
    let prefix = root
        .clone()
        .join("topics")
        .join("events")
        .join("0")
        .join(dir);
    let mut v: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}

/// Collects partition 0's garbage with a one-second grace period, once that has passed on the
/// store's clock (its HEAD answers in whole seconds) for what exists now.
async fn collect_after_grace(t: &Tier) -> tier::GcReport {
    tokio::time::sleep(Duration::from_millis(2100)).await;
    t.collect_garbage("events", 0, Duration::from_secs(1), false)
        .await
        .unwrap()
}

/// What pyarrow and DuckDB read of partition 0 through the manifest alone: rows and objects.
fn external(endpoint: &str, root: &Path, n: i64) -> Option<serde_json::Value> {
    let py = python()?;
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..5)
        .map(|i| String::from_utf8(event(0, i).value.unwrap().to_vec()).unwrap())
        .collect();
    let spec = dir.path().join("expected.json");
    std::fs::write(
        &spec,
        serde_json::to_vec(&serde_json::json!({"0": {"count": n, "values": values}})).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(py)
        .arg(tests_dir().join("python/s3_bucket.py"))
        .arg(endpoint)
        .arg(format!("tierlog/{root}/topics/events"))
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pyarrow / DuckDB over the manifest failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// 2,000 small acks=all commits on one partition merge into two objects (a merge takes at most
/// 1,000); every record, and what pyarrow and DuckDB read over the manifest's files, is the
/// same before and after; after garbage collection the bucket holds the merged objects and the
/// fence, nothing else of the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_small_commits_merge_into_a_few_objects() {
    let Some((store, root, endpoint)) = s3_bucket() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = Tier::open(
        merge_config(&dir.path().join("hot")),
        store.clone(),
        root.clone(),
    )
    .await
    .unwrap();
    t.open_partition("events", 0, 1).await.unwrap();
    let n = 2000 * 3;
    acks_all(&t, 0, n, 3).await;
    let o = t.offsets("events", 0).unwrap();
    assert_eq!(
        o.cold_segments, 2000,
        "one object per acks=all commit: {o:?}"
    );
    let before = read_all(&t, n).await;
    let ext_before = external(&endpoint, &root, n);
    assert_eq!(t.merge_now("events", 0).await.unwrap(), 2);
    let o = t.offsets("events", 0).unwrap();
    assert_eq!((o.cold_segments, o.cold_next), (2, n), "{o:?}");
    assert_eq!(read_all(&t, n).await, before, "tierlog's reads");
    if let (Some(b), Some(a)) = (ext_before, external(&endpoint, &root, n)) {
        assert_eq!(
            (b["rows"].clone(), b["objects"].clone()),
            (n.into(), 2000.into())
        );
        assert_eq!(
            (a["rows"].clone(), a["objects"].clone()),
            (n.into(), 2.into())
        );
    }
    // Replaced objects stay through the grace period.
    assert_eq!(objects(&*store, &root, "log").await.len(), 2000 + 1 + 2);
    let r = collect_after_grace(&t).await;
    assert_eq!(r.failed, 0, "{r:?}");
    // Left in the bucket: what the manifest names, and the fence.
    let mut live: Vec<String> = t
        .cold_segments("events", 0, false)
        .await
        .unwrap()
        .1
        .iter()
        .map(|(p, _)| p.as_ref().rsplit('/').take(2).collect::<Vec<_>>().join("<"))
        .collect();
    live.push(format!("{:020}.parquet<log", 1));
    live.sort();
    let mut stored: Vec<String> = Vec::new();
    for dir in ["log", "merged"] {
        stored.extend(
            objects(&*store, &root, dir)
                .await
                .into_iter()
                .map(|n| format!("{n}<{dir}")),
        );
    }
    stored.sort();
    assert_eq!(
        stored, live,
        "the bucket holds what the manifest names, and the fence"
    );
    assert_eq!(read_all(&t, n).await, before);
    t.close(false).await.unwrap();
    // A new leader loads the merged, collected history.
    let t = Tier::open(merge_config(&dir.path().join("hot2")), store, root)
        .await
        .unwrap();
    t.open_partition("events", 0, 2).await.unwrap();
    assert_eq!(read_all(&t, n).await, before);
    t.close(false).await.unwrap();
}

/// A crash at each step of a merge (before its object is uploaded, after the upload, after the
/// commit, in the middle of garbage collection) leaves either the old objects or the new one
/// live, never both or neither: the next leader reads every record once, collects what is
/// left over, and merges again where the merge did not land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_each_step_of_a_merge_loses_and_duplicates_nothing() {
    let Some((store, root, _)) = s3_bucket() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut epoch = 1;
    let open = |epoch: u64| {
        let (store, root) = (store.clone(), root.clone());
        let hot = dir.path().join(format!("hot-{epoch}"));
        async move {
            let t = Tier::open(merge_config(&hot), store, root).await.unwrap();
            t.open_partition("events", 0, epoch).await.unwrap();
            t
        }
    };
    let t = open(epoch).await;
    let n = 40 * 10;
    acks_all(&t, 0, n, 10).await;
    let before = read_all(&t, n).await;
    let segments = |t: &Tier| t.offsets("events", 0).unwrap().cold_segments;
    assert_eq!(segments(&t), 40);

    // 1. The store takes no PUT: the merged object never lands, nothing is committed.
    store.faults.fail_puts.store(true, Ordering::SeqCst);
    let err = t.merge_now("events", 0).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    store.faults.fail_puts.store(false, Ordering::SeqCst);
    t.abort().await;
    epoch += 1;
    let t = open(epoch).await;
    assert_eq!(segments(&t), 40, "the old objects are live");
    assert_eq!(read_all(&t, n).await, before);
    assert!(objects(&*store, &root, "merged").await.is_empty());

    // 2. Crash after the upload, before the commit: the commit's create is held, and the
    //    process dies there.
    store.faults.hold_puts.lock().unwrap().push("/log/".into());
    let merging = {
        let t = t.clone();
        tokio::spawn(async move { t.merge_now("events", 0).await })
    };
    for _ in 0..500 {
        if store.faults.held_puts.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.faults.held_puts.load(Ordering::SeqCst) > 0,
        "the commit was reached"
    );
    assert_eq!(objects(&*store, &root, "merged").await.len(), 1, "uploaded");
    merging.abort();
    t.abort().await;
    store.faults.hold_puts.lock().unwrap().clear();
    epoch += 1;
    let t = open(epoch).await;
    assert_eq!(segments(&t), 40, "not committed: the old objects are live");
    assert_eq!(read_all(&t, n).await, before);
    let r = collect_after_grace(&t).await;
    assert_eq!(
        r.garbage
            .iter()
            .filter(|g| g.why.contains("no commit"))
            .count(),
        1,
        "the orphan goes: {r:?}"
    );
    assert!(objects(&*store, &root, "merged").await.is_empty());

    // 3. Crash right after the commit, before any garbage collection.
    assert_eq!(t.merge_now("events", 0).await.unwrap(), 1);
    t.abort().await;
    epoch += 1;
    let t = open(epoch).await;
    assert_eq!(segments(&t), 1, "committed: the merged object is live");
    assert_eq!(read_all(&t, n).await, before);

    // 4. Crash in the middle of garbage collection: some replaced objects deleted, not the
    //    commit that names them; the next collection finishes.
    // Past the grace period on the store's clock (its HEAD answers in whole seconds).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let logs = objects(&*store, &root, "log").await;
    let replaced: Vec<_> = logs
        .iter()
        .filter(|l| *l != &format!("{:020}.parquet", 1))
        .take(7)
        .collect();
    for name in replaced {
        let p = root
            .clone()
            .join("topics")
            .join("events")
            .join("0")
            .join("log")
            .join(name.as_str());
        store.delete(&p).await.unwrap();
    }
    t.abort().await;
    epoch += 1;
    let t = open(epoch).await;
    assert_eq!(read_all(&t, n).await, before);
    let r = collect_after_grace(&t).await;
    assert_eq!(r.failed, 0);
    assert_eq!(objects(&*store, &root, "merged").await.len(), 1);
    let left = objects(&*store, &root, "log").await;
    assert!(
        left.len() <= 6,
        "fences and the newest leaders' commits are left, not the replaced objects: {left:?}"
    );
    assert_eq!(read_all(&t, n).await, before);
    t.close(false).await.unwrap();
}

/// Reads the next records after `got` as a node that does not lead the partition.
async fn read_some(reader: &Tier, got: &mut Vec<Record>) {
    let r = reader
        .read_committed("events", 0, got.len() as i64, 16 << 10)
        .await
        .unwrap();
    assert!(!r.records.is_empty(), "nothing at {}", got.len());
    got.extend(r.records);
}

/// A reader on another node in the middle of an object (between two of its row groups) that
/// is merged and then collected finishes reading every record: within the grace period from
/// the old object, after it from the merged one (its view reloads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_in_the_middle_of_a_merged_object_finishes() {
    let Some((store, root, _)) = s3_bucket() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = |hot: &str| TierConfig {
        row_group_bytes: 64 << 10,
        ..merge_config(&dir.path().join(hot))
    };
    let t = Tier::open(cfg("leader"), store.clone(), root.clone())
        .await
        .unwrap();
    t.open_partition("events", 0, 1).await.unwrap();
    // Segments of about 400 KiB: several row groups each.
    let n = 20 * 1000;
    for i in 0..20 {
        t.append(
            "events",
            0,
            events_batch(0, i * 1000, 1000, Compression::None),
        )
        .await
        .unwrap();
        t.flush("events", 0).await.unwrap();
    }
    let reader = Tier::open(cfg("reader"), store.clone(), root.clone())
        .await
        .unwrap();
    let mut got: Vec<Record> = Vec::new();
    // Into the second row group of the first object.
    while got.len() < 300 {
        read_some(&reader, &mut got).await;
    }
    assert_eq!(t.merge_now("events", 0).await.unwrap(), 1);
    // Within the grace period: the old object is still there.
    while got.len() < 2500 {
        read_some(&reader, &mut got).await;
    }
    let r = collect_after_grace(&t).await;
    assert!(r.garbage.len() >= 20, "{r:?}");
    while (got.len() as i64) < n {
        read_some(&reader, &mut got).await;
    }
    assert!(
        (0..n).all(|i| got[i as usize] == event(0, i)),
        "every record, once, in order"
    );
    reader.abort().await;
    t.close(false).await.unwrap();
}
