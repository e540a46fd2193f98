use super::*;
use crate::batch::{BatchBuilder, Compression, ProducerInfo};
use crate::cold::parquet::{SegmentShape, encode_segment};
use crate::config::TierConfig;
use crate::{PartitionId, Tier};
use object_store::path::Path;

fn entry(base: i64, n: i64, size: u64, max_ts: i64) -> SegmentEntry {
    SegmentEntry {
        path: format!("log/{base:020}.parquet"),
        base_offset: base,
        last_offset: base + n - 1,
        min_timestamp: 0,
        max_timestamp: max_ts,
        records: n as u64,
        size,
        raw_bytes: size * 3,
        row_groups: 1,
        epoch: 1,
        producers: Default::default(),
        footer_crc32c: None,
        leader_epochs: Vec::new(),
    }
}

const MIB: u64 = 1 << 20;

fn policy() -> Policy {
    Policy {
        target_bytes: 128 * MIB,
        min_segments: 4,
        min_age_ms: 1000,
    }
}

/// Planning takes the oldest run of small, old-enough segments once it is long enough (or
/// holds the target's bytes), and only its prefix up to the target; large segments, young
/// ones and bad ones break runs and are never inputs.
#[test]
fn plans_take_the_oldest_run_of_small_old_segments_up_to_the_target() {
    let now = 1_000_000;
    let small = |i: i64| entry(i * 10, 10, MIB, 0);
    // 3 small, 1 large, 5 small, then 2 young small ones.
    let mut segs: Vec<_> = (0..3).map(small).collect();
    segs.push(entry(30, 10, 100 * MIB, 0));
    segs.extend((4..9).map(small));
    segs.extend((9..11).map(|i| entry(i * 10, 10, MIB, now)));
    let p = plan(&segs, policy(), now, &BTreeSet::new());
    let bases: Vec<i64> = p.inputs.iter().map(|s| s.base_offset).collect();
    assert_eq!(
        bases,
        vec![40, 50, 60, 70, 80],
        "the run after the large segment"
    );
    assert_eq!(p.frontier, Some(0), "the first small segment");
    assert_eq!((p.waiting_segments, p.waiting_bytes), (10, 10 * MIB));

    // A bad segment splits the run below the minimum.
    let bad: BTreeSet<String> = [segs[6].path.clone()].into();
    assert!(plan(&segs, policy(), now, &bad).inputs.is_empty());

    // A run holding more than the target: its prefix up to the target's bytes.
    let big: Vec<_> = (0..100).map(|i| entry(i * 10, 10, 20 * MIB, 0)).collect();
    let p = plan(&big, policy(), now, &BTreeSet::new());
    assert_eq!(p.inputs.len(), 6, "6 × 20 MiB ≤ 128 MiB < 7 × 20 MiB");
    // Two segments at least, however large the first ones are for the target.
    let p = plan(
        &big[..2],
        Policy {
            min_segments: 2,
            ..policy()
        },
        now,
        &BTreeSet::new(),
    );
    assert_eq!(p.inputs.len(), 2);

    // Nothing old enough, nothing long enough.
    assert!(
        plan(&segs[9..], policy(), now, &BTreeSet::new())
            .inputs
            .is_empty()
    );
    assert!(
        plan(&segs[..3], policy(), now, &BTreeSet::new())
            .inputs
            .is_empty()
    );
    // An earlier merge's object followed by small ones it outweighs: it waits for them.
    let mut tiered = vec![entry(0, 100, 10 * MIB, 0)];
    tiered.extend((1..6).map(|i| entry(i * 100, 10, MIB, 0)));
    let p = plan(&tiered, policy(), now, &BTreeSet::new());
    let bases: Vec<i64> = p.inputs.iter().map(|s| s.base_offset).collect();
    assert_eq!(bases, vec![100, 200, 300, 400, 500], "10 MiB > 5 × 1 MiB");
    tiered.extend((6..17).map(|i| entry(i * 100, 10, MIB, 0)));
    assert_eq!(
        plan(&tiered, policy(), now, &BTreeSet::new()).inputs.len(),
        17,
        "16 × 1 MiB outweigh it"
    );
    // Thousands of tiny segments: at most MAX_INPUTS in one merge.
    let tiny: Vec<_> = (0..2500).map(|i| entry(i, 1, 1000, 0)).collect();
    assert_eq!(
        plan(&tiny, policy(), now, &BTreeSet::new()).inputs.len(),
        MAX_INPUTS
    );
}

/// A real segment of `n` records from `base`, with keys, headers and an idempotent producer.
fn segment(id: &PartitionId, base: i64, n: i64) -> (SegmentEntry, Bytes) {
    let info = ProducerInfo {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: base as i32,
    };
    let mut b = BatchBuilder::new(Compression::None).producer(info, false);
    for i in 0..n {
        let o = base + i;
        let h = [crate::batch::Header {
            key: "h".into(),
            value: Some(Bytes::from(format!("{o}"))),
        }];
        b.push(
            1_700_000_000_000 + o,
            Some(format!("k{}", o % 7).as_bytes()),
            Some(format!("v{o}").as_bytes()),
            &h,
        );
    }
    let batch = b.build().unwrap().with_assigned(base, 1);
    let shape = SegmentShape {
        base_offset: base,
        last_offset: base + n - 1,
        raw_bytes: batch.len() as u64,
    };
    let (bytes, e) = encode_segment(id, shape, [Ok(vec![batch])], 1 << 20, 3, |sum| {
        let mut e = entry(base, n, 0, sum.max_timestamp);
        e.min_timestamp = sum.min_timestamp;
        e.raw_bytes = sum.raw_bytes;
        e.footer_crc32c = Some(sum.footer_digest);
        Ok((Vec::new(), e))
    })
    .unwrap();
    let mut e = e;
    e.size = bytes.len() as u64;
    (e, bytes)
}

fn rows(bytes: Bytes, digest: Option<u32>) -> Vec<arrow_array::RecordBatch> {
    decode_checked(bytes, "test", digest).unwrap()
}

/// A merged object holds exactly its inputs' rows (every column, producer fields included),
/// with a footer digest that checks; a damaged input stops the merge with an error naming it.
#[test]
fn merged_objects_hold_exactly_their_inputs_rows() {
    let id = PartitionId::new("t", 0);
    let inputs: Vec<_> = [(0, 5), (5, 300), (305, 1)]
        .into_iter()
        .map(|(b, n)| {
            let (e, bytes) = segment(&id, b, n);
            (e.path.clone(), e, bytes)
        })
        .collect();
    let (merged, e) = encode_merged(&id, &inputs, 9, 1 << 20, 3).unwrap();
    assert_eq!(
        (e.base_offset, e.last_offset, e.records, e.epoch),
        (0, 305, 306, 9)
    );
    let want: Vec<_> = inputs
        .iter()
        .flat_map(|(_, e, b)| rows(b.clone(), e.footer_crc32c))
        .collect();
    let want = arrow_select_concat(&want);
    let got = arrow_select_concat(&rows(merged.clone(), e.footer_crc32c));
    assert_eq!(got, want, "the same rows, column for column");

    // A flipped byte inside an input's data.
    let mut damaged = inputs.clone();
    let mut b = damaged[1].2.to_vec();
    b[20] ^= 0x40;
    damaged[1].2 = Bytes::from(b);
    let err = encode_merged(&id, &damaged, 9, 1 << 20, 3).unwrap_err();
    assert!(
        err.is_corruption() && err.to_string().contains(&damaged[1].0),
        "{err}"
    );
    // An input that is not the next one.
    let gap = vec![inputs[0].clone(), inputs[2].clone()];
    assert!(encode_merged(&id, &gap, 9, 1 << 20, 3).is_err());
}

/// All rows of `batches` as one batch.
fn arrow_select_concat(batches: &[arrow_array::RecordBatch]) -> Vec<String> {
    // Compared as text, row by row: one form for rows however they were batched.
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let row: Vec<String> = b
                .columns()
                .iter()
                .map(|c| format!("{:?}", c.slice(i, 1)))
                .collect();
            out.push(row.join("|"));
        }
    }
    out
}

/// A tier whose partitions merge on demand (no schedule, no minimum age), on a file-system
/// bucket under `dir`.
/// Merging on demand only, with no minimum age.
fn config(hot: &std::path::Path) -> TierConfig {
    TierConfig {
        data_dir: hot.to_path_buf(),
        merge_enabled: false,
        merge_min_age_ms: 0,
        merge_min_segments: 4,
        ..TierConfig::default()
    }
}

async fn tier(dir: &std::path::Path) -> (Tier, Arc<dyn object_store::ObjectStore>) {
    let bucket = dir.join("bucket");
    let (store, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let cfg = config(&dir.join("hot"));
    (
        Tier::open(cfg, store.clone(), Path::from("c"))
            .await
            .unwrap(),
        store,
    )
}

/// Every record of partition `t/0` read from offset 0.
async fn read_all(t: &Tier) -> Vec<crate::Record> {
    let mut out = Vec::new();
    let end = t.offsets("t", 0).unwrap().next;
    while (out.len() as i64) < end {
        let r = t.read("t", 0, out.len() as i64, 1 << 20).await.unwrap();
        assert!(!r.records.is_empty());
        out.extend(r.records);
    }
    out
}

/// Small committed segments merge into one object that reads back identically; the replaced
/// objects stay through the grace period and go after it, with nothing else; a new leader
/// loads the merged history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_segments_merge_and_their_objects_go_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (t, store) = tier(dir.path()).await;
    t.open_partition("t", 0, 1).await.unwrap();
    let id = PartitionId::new("t", 0);
    forty_segments(&t).await;
    let before = read_all(&t).await;
    assert_eq!(t.offsets("t", 0).unwrap().cold_segments, 40);
    // A node that does not lead the partition counts what waits from the manifest.
    let other = tempfile::tempdir().unwrap();
    let reader = Tier::open(
        config(&other.path().join("hot")),
        store.clone(),
        Path::from("c"),
    )
    .await
    .unwrap();
    let seen = |reader: &Tier| {
        let reader = reader.clone();
        async move {
            let o = reader.committed_offsets("t", 0).await.unwrap();
            (o.cold_segments, o.merge_waiting_segments)
        }
    };
    assert_eq!(seen(&reader).await, (40, 40));
    assert_eq!(t.merge_now("t", 0).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        seen(&reader).await,
        (1, 1),
        "the merged object, small for the target"
    );
    reader.close(false).await.unwrap();
    let o = t.offsets("t", 0).unwrap();
    assert_eq!(o.cold_segments, 1, "{o:?}");
    assert_eq!(read_all(&t).await, before, "the same records");
    let st = t.merge_status("t", 0).unwrap();
    // What waits, as the last look saw it: the merged object (small for the target).
    assert_eq!(
        (st.merges, st.merged_segments, st.waiting_segments),
        (1, 40, 1)
    );

    let dir_of = |d: &str| dir.path().join("bucket/c/topics/t/0").join(d);
    let count = |d: &str| std::fs::read_dir(dir_of(d)).map_or(0, |d| d.count());
    let logs_before = count("log");
    // Within the grace period nothing goes; the report says what waits.
    let r = t
        .collect_garbage("t", 0, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(r.garbage.is_empty(), "{r:?}");
    assert!(
        r.pending >= 41,
        "40 replaced objects and their commit: {r:?}"
    );
    // A dry run lists them and deletes nothing.
    let dry = t
        .collect_garbage("t", 0, Duration::ZERO, true)
        .await
        .unwrap();
    let replaced = dry
        .garbage
        .iter()
        .filter(|g| g.why == crate::cold::gc::WHY_REPLACED)
        .count();
    assert_eq!(replaced, 40, "{dry:?}");
    assert_eq!(count("log"), logs_before);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = t
        .collect_garbage("t", 0, Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(r.failed, 0);
    let live = t.cold_segments("t", 0, false).await.unwrap().1;
    assert_eq!(live.len(), 1);
    assert!(live[0].0.as_ref().contains("/merged/"), "{live:?}");
    assert!(std::fs::metadata(dir.path().join("bucket").join(live[0].0.as_ref())).is_ok());
    // Left: the fence and nothing else of the log; the merged object.
    assert_eq!(count("log"), 1, "{r:?}");
    assert_eq!(count("merged"), 1);
    assert_eq!(read_all(&t).await, before);
    t.close(false).await.unwrap();
    let _ = id;

    // A new leader loads the merged history and reads it.
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let (t, _) = tier(dir.path()).await;
    t.open_partition("t", 0, 2).await.unwrap();
    assert_eq!(read_all(&t).await, before);
    t.close(false).await.unwrap();
    drop(store);
}

/// An object under `merged/` that no commit names (a merge that died after its upload) goes
/// after the grace period; one that is named stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_merged_objects_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let (t, store) = tier(dir.path()).await;
    t.open_partition("t", 0, 1).await.unwrap();
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, None, Some(b"v"), &[]);
    t.append("t", 0, b.build().unwrap()).await.unwrap();
    t.flush("t", 0).await.unwrap();
    let orphan =
        Path::from("c/topics/t/0/merged/00000000000000000000-00000000000000000009-dead.parquet");
    store
        .put(&orphan, Bytes::from_static(b"PAR1").into())
        .await
        .unwrap();
    let r = t
        .collect_garbage("t", 0, Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(r.garbage.is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = t
        .collect_garbage("t", 0, Duration::ZERO, false)
        .await
        .unwrap();
    let orphans: Vec<_> = r
        .garbage
        .iter()
        .filter(|g| g.why == crate::cold::gc::WHY_ORPHAN)
        .collect();
    assert_eq!(orphans.len(), 1, "{r:?}");
    assert!(store.head(&orphan).await.is_err());
    t.close(false).await.unwrap();
}

/// Appends 40 batches of 25 records to `t/0`, each its own committed segment.
async fn forty_segments(t: &Tier) {
    for i in 0..40 {
        let mut b = BatchBuilder::new(Compression::None);
        for j in 0..25 {
            b.push(
                i * 100 + j,
                Some(b"k"),
                Some(format!("v{i}-{j}").as_bytes()),
                &[],
            );
        }
        t.append("t", 0, b.build().unwrap()).await.unwrap();
        t.flush("t", 0).await.unwrap();
    }
}

/// Two nodes that both believe they lead merge at once: the deposed one's merge is fenced
/// (nothing of it committed), the new leader's lands, and the history stays one line that a
/// later leader reads once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_leaders_merging_at_once_commit_one_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (old, store) = tier(dir.path()).await;
    old.open_partition("t", 0, 1).await.unwrap();
    forty_segments(&old).await;
    let before = read_all(&old).await;
    let other = tempfile::tempdir().unwrap();
    let new = Tier::open(
        config(&other.path().join("hot")),
        store.clone(),
        Path::from("c"),
    )
    .await
    .unwrap();
    new.open_partition("t", 0, 2).await.unwrap();
    let (a, b) = tokio::join!(old.merge_now("t", 0), new.merge_now("t", 0));
    let e = a.unwrap_err();
    assert!(matches!(e, Error::Fenced { .. }), "{e}");
    assert_eq!(b.unwrap(), 1);
    old.close(false).await.unwrap();
    new.close(false).await.unwrap();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let (t, _) = tier(dir.path()).await;
    t.open_partition("t", 0, 3).await.unwrap();
    assert_eq!(t.offsets("t", 0).unwrap().cold_segments, 1);
    assert_eq!(read_all(&t).await, before);
    t.close(false).await.unwrap();
}

/// Retention that commits while a merge uploads its object: the merge finds its inputs
/// changed, gives up and deletes its object; what retention kept reads back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_racing_retention_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (fs, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let store = Arc::new(crate::store::Decorated::new(fs));
    let t = Tier::open(
        config(&dir.path().join("hot")),
        store.clone(),
        Path::from("c"),
    )
    .await
    .unwrap();
    t.open_partition("t", 0, 1).await.unwrap();
    forty_segments(&t).await;
    let before = read_all(&t).await;
    store
        .faults
        .hold_puts
        .lock()
        .unwrap()
        .push("/merged/".into());
    let merging = {
        let t = t.clone();
        tokio::spawn(async move { t.merge_now("t", 0).await })
    };
    while store
        .faults
        .held_puts
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Retention retires the first ten segments while the merged object is on its way.
    t.truncate_cold("t", 0, 250).await.unwrap();
    store.faults.hold_puts.lock().unwrap().clear();
    assert_eq!(merging.await.unwrap().unwrap(), 0, "nothing merged");
    assert_eq!(t.merge_status("t", 0).unwrap().abandoned, 1);
    let merged = std::fs::read_dir(bucket.join("c/topics/t/0/merged")).map_or(0, |d| d.count());
    assert_eq!(merged, 0, "the abandoned object is deleted");
    let o = t.offsets("t", 0).unwrap();
    assert_eq!((o.log_start, o.cold_segments), (250, 30));
    let mut kept = Vec::new();
    let mut pos = 250;
    while pos < o.next {
        let r = t.read("t", 0, pos, 1 << 20).await.unwrap();
        pos = r.records.last().unwrap().offset + 1;
        kept.extend(r.records);
    }
    assert_eq!(kept, before[250..].to_vec());
    // The next merge plans from what is there now.
    assert_eq!(t.merge_now("t", 0).await.unwrap(), 1);
    t.close(false).await.unwrap();
}

/// Deleted records cut through a segment: the log starts inside it, offsets below are out of
/// range, the start never moves back, and a merge whose first input begins below the start
/// commits (the merged object keeps the cut rows, which stay outside the log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_inside_a_segment_and_a_merge_over_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (t, _) = tier(dir.path()).await;
    t.open_partition("t", 0, 1).await.unwrap();
    forty_segments(&t).await;
    let before = read_all(&t).await;
    assert_eq!(t.delete_records("t", 0, 260).await.unwrap(), 260);
    assert_eq!(
        t.delete_records("t", 0, 10).await.unwrap(),
        260,
        "never back"
    );
    let e = t.delete_records("t", 0, 5000).await.unwrap_err();
    assert!(matches!(e, Error::OffsetOutOfRange { .. }), "{e}");
    let o = t.offsets("t", 0).unwrap();
    // Segments of 25 records: [250, 274] holds the start and stays whole.
    assert_eq!((o.log_start, o.cold_segments), (260, 30));
    let e = t.read("t", 0, 259, 1 << 20).await.unwrap_err();
    assert!(matches!(e, Error::OffsetOutOfRange { .. }), "{e}");
    let first = t.read("t", 0, 260, 1 << 20).await.unwrap();
    assert_eq!(first.records[0], before[260]);
    assert_eq!(t.merge_now("t", 0).await.unwrap(), 1);
    assert_eq!(t.merge_status("t", 0).unwrap().abandoned, 0);
    let o = t.offsets("t", 0).unwrap();
    assert_eq!(o.log_start, 260);
    let mut kept = Vec::new();
    let mut pos = 260;
    while pos < o.next {
        let r = t.read("t", 0, pos, 1 << 20).await.unwrap();
        pos = r.records.last().unwrap().offset + 1;
        kept.extend(r.records.into_iter().filter(|r| r.offset >= 260));
    }
    assert_eq!(kept, before[260..].to_vec());
    t.close(false).await.unwrap();
}
