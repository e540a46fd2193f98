use super::*;
use crate::store::Decorated;
use object_store::memory::InMemory;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn retry() -> Retry {
    Retry::new(
        Duration::from_millis(1),
        Duration::from_millis(5),
        CancellationToken::new(),
    )
}

fn manifest(store: Arc<dyn ObjectStore>) -> Manifest {
    Manifest::new(store, &Path::from("root"), "events", 3)
}

fn seg(base: i64, n: i64, epoch: u64) -> SegmentEntry {
    SegmentEntry {
        producers: Default::default(),
        path: format!("segments/{base:020}.parquet"),
        base_offset: base,
        last_offset: base + n - 1,
        min_timestamp: base * 10,
        max_timestamp: (base + n - 1) * 10,
        records: n as u64,
        size: 100,
        raw_bytes: 500,
        row_groups: 1,
        epoch,
    }
}

async fn add(w: &mut ManifestWriter, base: i64, n: i64) -> Result<()> {
    let e = w.epoch();
    w.commit(Op::Add {
        segments: vec![seg(base, n, e)],
    })
    .await
}

#[tokio::test]
async fn commits_round_trip_through_load() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut w = ManifestWriter::open(manifest(store.clone()), 1, retry())
        .await
        .unwrap();
    for i in 0..10 {
        add(&mut w, i * 100, 100).await.unwrap();
    }
    let loaded = manifest(store).load().await.unwrap();
    assert_eq!(&loaded, w.state());
    assert_eq!(loaded.next_offset, 1000);
    assert_eq!(loaded.epoch, 1);
    assert_eq!(loaded.seq, 11, "a fence plus ten adds");
}

#[tokio::test]
async fn a_stale_epoch_cannot_commit() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut old = ManifestWriter::open(manifest(store.clone()), 1, retry())
        .await
        .unwrap();
    add(&mut old, 0, 10).await.unwrap();
    let mut new = ManifestWriter::open(manifest(store.clone()), 2, retry())
        .await
        .unwrap();
    // The deposed writer still believes it leads: its commit must fail and change nothing.
    let err = add(&mut old, 10, 10).await.unwrap_err();
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
    let err = add(&mut old, 10, 10).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "stays fenced: {err}");
    add(&mut new, 10, 5).await.unwrap();
    let state = manifest(store.clone()).load().await.unwrap();
    assert_eq!(state.next_offset, 15);
    assert_eq!(state.epoch, 2);
    // Opening with an epoch below the current one is refused too.
    let err = ManifestWriter::open(manifest(store), 1, retry())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_recognized() {
    let dec = Arc::new(Decorated::new(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = dec.clone();
    let mut w = ManifestWriter::open(manifest(store.clone()), 1, retry())
        .await
        .unwrap();
    dec.faults.lose_put_answers.store(true, Ordering::SeqCst);
    let mut r = retry();
    r.max_attempts = Some(2);
    w.retry = r;
    // First attempt lands but reports failure; the retry finds its own delta in the slot.
    let res = add(&mut w, 0, 10).await;
    dec.faults.lose_put_answers.store(false, Ordering::SeqCst);
    res.unwrap();
    assert_eq!(w.state().next_offset, 10);
    add(&mut w, 10, 10).await.unwrap();
    assert_eq!(manifest(store).load().await.unwrap().next_offset, 20);
}

#[tokio::test]
async fn gaps_and_overlaps_are_refused() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut w = ManifestWriter::open(manifest(store), 1, retry())
        .await
        .unwrap();
    add(&mut w, 0, 10).await.unwrap();
    assert!(add(&mut w, 11, 10).await.is_err(), "gap");
    assert!(add(&mut w, 5, 10).await.is_err(), "overlap");
    add(&mut w, 10, 1).await.unwrap();
}

#[tokio::test]
async fn corrupt_manifest_objects_are_reported_not_skipped() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    add(&mut w, 0, 10).await.unwrap();
    let p = m.paths.delta(2);
    let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
    let tampered = String::from_utf8(bytes.to_vec())
        .unwrap()
        .replace("\"records\":10", "\"records\":11");
    store
        .put(&p, PutPayload::from(tampered.into_bytes()))
        .await
        .unwrap();
    let err = m.load().await.unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

/// Thousands of commits: the checkpoint stays bounded (levels of at most FANOUT entries), deltas
/// are O(1), and lookups by offset and timestamp work across chunks.
#[tokio::test]
async fn history_grows_without_growing_commits() {
    let dec = Arc::new(Decorated::new(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = dec.clone();
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 7, retry()).await.unwrap();
    let n = 3 * FANOUT as i64 + 50;
    let mut max_delta = 0u64;
    for i in 0..n {
        let before = dec.stats.put_bytes.load(Ordering::Relaxed);
        let puts = dec.stats.puts();
        add(&mut w, i * 10, 10).await.unwrap();
        if dec.stats.puts() - puts == 1 {
            max_delta = max_delta.max(dec.stats.put_bytes.load(Ordering::Relaxed) - before);
        }
    }
    assert!(
        max_delta < 600,
        "a delta is small and constant: {max_delta} bytes"
    );
    let state = m.load().await.unwrap();
    assert!(state.levels.len() >= 2, "old entries moved into chunks");
    for level in &state.levels {
        assert!(level.len() <= FANOUT + CHECKPOINT_EVERY as usize);
    }
    let (_, records, segments) = state.totals();
    assert_eq!(segments as i64, n);
    assert_eq!(records as i64, n * 10);
    // Loading reads the checkpoint plus fewer than CHECKPOINT_EVERY deltas.
    let gets = dec.stats.gets();
    m.load().await.unwrap();
    assert!(dec.stats.gets() - gets <= CHECKPOINT_EVERY + 2);
    let fresh = manifest(store.clone());
    for off in [0, 5, 2559, 2560, 7777, n * 10 - 1] {
        let s = fresh.find_offset(&state, off).await.unwrap().unwrap();
        assert!(s.base_offset <= off && off <= s.last_offset, "{off}: {s:?}");
    }
    assert!(fresh.find_offset(&state, n * 10).await.unwrap().is_none());
    let s = fresh.find_timestamp(&state, 30_005).await.unwrap().unwrap();
    assert_eq!(s.base_offset, 3000);
    let all = fresh.segments(&state).await.unwrap();
    assert_eq!(all.len() as i64, n);
    assert!(
        all.windows(2)
            .all(|w| w[0].last_offset + 1 == w[1].base_offset)
    );
}

#[tokio::test]
async fn truncate_moves_the_start_and_drops_whole_entries() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    for i in 0..(FANOUT as i64 + 40) {
        add(&mut w, i * 10, 10).await.unwrap();
    }
    w.commit(Op::Truncate { start_offset: 1000 }).await.unwrap();
    let state = m.load().await.unwrap();
    assert_eq!(state.start_offset, 1000);
    assert!(m.find_offset(&state, 999).await.unwrap().is_none());
    assert_eq!(
        m.find_offset(&state, 1000)
            .await
            .unwrap()
            .unwrap()
            .base_offset,
        1000
    );
    let segs = m.segments(&state).await.unwrap();
    assert_eq!(segs[0].base_offset, 1000);
    assert_eq!(
        m.find_timestamp(&state, 0)
            .await
            .unwrap()
            .unwrap()
            .base_offset,
        1000
    );
}

#[test]
fn envelope_is_self_describing_json() {
    let b = encode("delta", &Hint { seq: 5 }).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["format"], "tierlog.delta");
    assert_eq!(v["body"]["seq"], 5);
    let back: Hint = decode("delta", &Path::from("x"), &b).unwrap();
    assert_eq!(back.seq, 5);
    assert!(decode::<Hint>("checkpoint", &Path::from("x"), &b).is_err());
}

/// Segment object names round-trip; any other name is left alone by those who parse them.
#[test]
fn segment_names_parse_or_are_left_alone() {
    let made =
        PartitionPaths::new(&object_store::path::Path::from("r"), "t", 0).new_segment(1234, 7);
    let name = made.rsplit('/').next().unwrap();
    assert_eq!(PartitionPaths::parse_segment(name), Some((1234, 7)));
    assert_eq!(PartitionPaths::segment_rel(name), made);
    assert_eq!(
        PartitionPaths::parse_segment("00000000000000001234-0000000007-ab12.parquet"),
        Some((1234, 7))
    );
    assert_eq!(
        PartitionPaths::parse_segment("00000000000000001234-0000000007.parquet"),
        None
    );
    assert_eq!(PartitionPaths::parse_segment("notes.txt"), None);
    assert_eq!(PartitionPaths::parse_segment("x-1-n.parquet"), None);
}
