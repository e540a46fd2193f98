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
        footer_crc32c: None,
        leader_epochs: Vec::new(),
    }
}

/// A segment entry as a log object with no rows (the manifest reads only the footer), under
/// `w`'s epoch.
fn segment_commit(w: &ManifestWriter, base: i64, n: i64) -> Result<SegmentCommit> {
    let e = w.epoch();
    let (delta, kv) = segment_footer(e, seg(base, n, e))?;
    let id = crate::PartitionId::new("events", 3);
    let bytes = crate::cold::parquet::encode_empty(&id, vec![kv])?;
    Ok(SegmentCommit { bytes, delta })
}

/// Commits a segment entry as a log object with no rows.
async fn add(w: &mut ManifestWriter, base: i64, n: i64) -> Result<()> {
    let commit = segment_commit(w, base, n)?;
    w.commit_segment(commit, |_| {}).await
}

/// Points the hint at checkpoint `seq`, as a slow writer could leave it.
async fn put_hint(m: &Manifest, seq: u64) {
    let hint = encode("hint", &Hint { seq }).unwrap();
    m.store
        .put(&m.paths.hint(), PutPayload::from(hint))
        .await
        .unwrap();
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
    let p = m.paths.log(2);
    let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
    // Same length, so the Parquet footer still parses and only the checksum can tell.
    let tampered = replace_bytes(&bytes, b"\"records\":10", b"\"records\":11");
    store.put(&p, PutPayload::from(tampered)).await.unwrap();
    let err = m.load().await.unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = hay.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

/// Thousands of commits: the checkpoint stays bounded (levels of at most FANOUT entries), commits
/// are O(1), and lookups by offset and timestamp work across chunks.
#[tokio::test]
async fn history_grows_without_growing_commits() {
    let dec = Arc::new(Decorated::new(Arc::new(InMemory::new())));
    let store: Arc<dyn ObjectStore> = dec.clone();
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 7, retry()).await.unwrap();
    let n = 3 * FANOUT as i64 + 50;
    let (mut min_delta, mut max_delta) = (u64::MAX, 0u64);
    for i in 0..n {
        let before = dec.stats.put_bytes.load(Ordering::Relaxed);
        let puts = dec.stats.puts();
        add(&mut w, i * 10, 10).await.unwrap();
        if dec.stats.puts() - puts == 1 {
            let size = dec.stats.put_bytes.load(Ordering::Relaxed) - before;
            min_delta = min_delta.min(size);
            max_delta = max_delta.max(size);
        }
    }
    assert!(
        max_delta - min_delta < 64,
        "a commit does not grow with history: {min_delta}..{max_delta} bytes"
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

/// Log object names round-trip; any other name is left alone by those who parse them.
#[test]
fn log_names_parse_or_are_left_alone() {
    let rel = PartitionPaths::log_rel(1234);
    assert_eq!(rel, "log/00000000000000001234.parquet");
    let name = rel.rsplit('/').next().unwrap();
    assert_eq!(PartitionPaths::parse_log(name), Some(1234));
    assert_eq!(PartitionPaths::parse_log("1234.parquet"), None);
    assert_eq!(PartitionPaths::parse_log("00000000000000001234.json"), None);
    assert_eq!(PartitionPaths::parse_log("notes.txt"), None);
}

/// A segment commit reads back with the object's own path and size, and the footer is all the
/// manifest needs.
#[tokio::test]
async fn a_segment_commit_is_its_log_object() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 4, retry()).await.unwrap();
    add(&mut w, 0, 10).await.unwrap();
    let puts_before = store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len();
    add(&mut w, 10, 5).await.unwrap();
    let after = store
        .list(None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len();
    assert_eq!(after, puts_before + 1, "one object per segment commit");
    let state = m.load().await.unwrap();
    let segs = m.segments(&state).await.unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].path, "log/00000000000000000003.parquet");
    let size = store.head(&m.paths.log(3)).await.unwrap().size;
    assert_eq!(segs[1].size, size);
    assert_eq!(
        (segs[1].base_offset, segs[1].last_offset, segs[1].epoch),
        (10, 14, 4)
    );
    // Adding a segment any other way is refused.
    let err = w
        .commit(Op::Add {
            segments: vec![seg(15, 1, 4)],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("commit_segment"), "{err}");
}

/// Log objects a checkpoint covers may be deleted: loading starts from the checkpoint (even when
/// the hint names an older one), and a reader whose state is older than the gap reloads.
#[tokio::test]
async fn covered_log_objects_can_go() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    add(&mut w, 0, 10).await.unwrap();
    let old_view = m.load().await.unwrap();
    assert_eq!(old_view.seq, 2);
    let n = 2 * CHECKPOINT_EVERY as i64;
    for i in 1..n {
        add(&mut w, i * 10, 10).await.unwrap();
    }
    let covered = m.checkpointed().await.unwrap().unwrap();
    assert_eq!(covered, 2 * CHECKPOINT_EVERY);
    // The fence (seq 1) stays, as the sweep keeps fences: the hole is inside the log.
    for seq in 2..=covered {
        store.delete(&m.paths.log(seq)).await.unwrap();
    }
    // An older hint, as a slow writer could leave it.
    put_hint(&m, CHECKPOINT_EVERY).await;
    let state = m.load().await.unwrap();
    assert_eq!(state, *w.state());
    let mut view = old_view;
    m.catch_up(&mut view).await.unwrap();
    assert_eq!(view, *w.state());
    // From nothing: the fence applies, then the hole sends the reader to the checkpoint.
    let mut fresh = ManifestState::new("events", 3);
    m.catch_up(&mut fresh).await.unwrap();
    assert_eq!(fresh, *w.state());
    assert_eq!(m.segments(&view).await.unwrap().len() as i64, n);
}

/// A partition whose manifest has the JSON deltas of format 1 is refused with a clear error,
/// not read as empty.
#[tokio::test]
async fn a_format_1_manifest_is_refused() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let legacy = m.paths.object("manifest/deltas/00000000000000000001.json");
    store.put(&legacy, PutPayload::from("{}")).await.unwrap();
    let err = ManifestWriter::open(m, 1, retry()).await.unwrap_err();
    assert!(err.to_string().contains("format 1"), "{err}");
}

/// Checkpoints do not pile up: after each, only the newest few stay, and a reader sent to one
/// that was deleted (by a hint that lags) finds the newest by listing.
#[tokio::test]
async fn old_checkpoints_are_pruned() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    let n = 10 * CHECKPOINT_EVERY as i64;
    for i in 0..n {
        add(&mut w, i * 10, 10).await.unwrap();
    }
    // Pruning runs in the background, off the commit path.
    let mut seqs = m.checkpoint_seqs().await.unwrap();
    for _ in 0..500 {
        if seqs.len() <= CHECKPOINTS_KEPT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        seqs = m.checkpoint_seqs().await.unwrap();
    }
    let newest = m.checkpointed().await.unwrap().unwrap();
    assert_eq!(newest, 10 * CHECKPOINT_EVERY);
    let kept: Vec<u64> = (0..CHECKPOINTS_KEPT as u64)
        .rev()
        .map(|k| newest - k * CHECKPOINT_EVERY)
        .collect();
    assert_eq!(seqs, kept, "only the newest {CHECKPOINTS_KEPT} stay");
    // A hint naming a deleted checkpoint, as a slow writer could leave it.
    put_hint(&m, CHECKPOINT_EVERY).await;
    assert_eq!(m.load().await.unwrap(), *w.state());
    // Pruning again deletes nothing: it never goes below the newest few.
    assert_eq!(m.prune_checkpoints().await.unwrap(), 0);
    assert_eq!(m.checkpoint_seqs().await.unwrap(), kept);
}

/// A segment commit publishes its state (and so answers its waiters) as soon as its object
/// lands, before the checkpoint it makes due; and again when a retried commit finds the
/// segment already committed, so those waiters are answered too.
#[tokio::test]
async fn a_commit_publishes_before_its_checkpoint() {
    let dec = Arc::new(Decorated::new(Arc::new(InMemory::new())));
    let m = manifest(dec.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    // The fence was commit 1; fill up to the commit before a checkpoint falls due.
    for k in 1..CHECKPOINT_EVERY as i64 - 1 {
        add(&mut w, (k - 1) * 10, 10).await.unwrap();
    }
    assert_eq!(w.state().seq, CHECKPOINT_EVERY - 1);
    let base = (CHECKPOINT_EVERY as i64 - 2) * 10;
    let commit = segment_commit(&w, base, 10).unwrap();
    let puts = dec.stats.puts();
    let mut seen = None;
    w.commit_segment(commit.clone(), |s| {
        seen = Some((s.seq, s.next_offset, dec.stats.puts() - puts))
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        Some((CHECKPOINT_EVERY, base + 10, 1)),
        "published after the log object, before the checkpoint and hint"
    );
    assert_eq!(dec.stats.puts() - puts, 3, "then the checkpoint and hint");
    assert_eq!(m.checkpointed().await.unwrap(), Some(CHECKPOINT_EVERY));
    // A retry of a commit that landed: nothing written, the state published again.
    let puts = dec.stats.puts();
    let mut again = None;
    w.commit_segment(commit, |s| again = Some(s.next_offset))
        .await
        .unwrap();
    assert_eq!(again, Some(base + 10));
    assert_eq!(dec.stats.puts(), puts);
}

/// The merged entry replacing `segs` (adjacent), as a merge makes it.
fn merged_entry(segs: &[SegmentEntry], epoch: u64) -> SegmentEntry {
    let (first, last) = (&segs[0], &segs[segs.len() - 1]);
    SegmentEntry {
        path: format!(
            "merged/{:020}-{:020}-x.parquet",
            first.base_offset, last.last_offset
        ),
        base_offset: first.base_offset,
        last_offset: last.last_offset,
        min_timestamp: first.min_timestamp,
        max_timestamp: last.max_timestamp,
        records: segs.iter().map(|s| s.records).sum(),
        size: segs.iter().map(|s| s.size).sum(),
        raw_bytes: segs.iter().map(|s| s.raw_bytes).sum(),
        row_groups: 1,
        epoch,
        producers: Default::default(),
        footer_crc32c: None,
        leader_epochs: Vec::new(),
    }
}

/// The op that replaces segments `from..to` (indexes into the committed list) with one.
async fn replace_op(m: &Manifest, state: &ManifestState, from: usize, to: usize) -> Op {
    let all = m.segments(state).await.unwrap();
    let segs = &all[from..to];
    Op::Replace {
        base_offset: segs[0].base_offset,
        last_offset: segs[segs.len() - 1].last_offset,
        replaced: segs.iter().map(|s| s.path.clone()).collect(),
        segments: vec![merged_entry(segs, state.epoch)],
        compaction: None,
    }
}

/// Replacements anywhere in a long history (the newest level, across a chunk boundary, deep
/// inside old chunks, and several levels at once) read back the same whether the state is kept
/// by the writer, replayed from the log, or loaded from a checkpoint written after them; the
/// history stays dense and lookups land in the merged entries.
#[tokio::test]
async fn replacements_split_chunks_and_read_back_from_log_and_checkpoint() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 2, retry()).await.unwrap();
    let n = 3 * FANOUT + 50;
    for i in 0..n as i64 {
        add(&mut w, i * 10, 10).await.unwrap();
    }
    assert!(w.state().levels.len() >= 2, "old entries are in chunks");
    let mut expect = n;
    // Newest entries, across a chunk boundary, deep inside the first chunk, and a range that
    // spans chunks and the newest level.
    let ranges: [fn(usize) -> (usize, usize); 4] = [
        |len| (len - 20, len - 5),
        |_| (FANOUT - 10, FANOUT + 10),
        |_| (3, 40),
        |len| (2 * FANOUT - 60, len - 30),
    ];
    for range in ranges {
        let (from, to) = range(expect);
        let op = replace_op(&m, w.state(), from, to).await;
        w.commit(op).await.unwrap();
        expect -= to - from - 1;
        let live = m.segments(w.state()).await.unwrap();
        assert_eq!(live.len(), expect);
        assert!(
            live.windows(2)
                .all(|p| p[0].last_offset + 1 == p[1].base_offset)
        );
        assert_eq!(
            (live[0].base_offset, live[live.len() - 1].last_offset),
            (0, n as i64 * 10 - 1)
        );
        let replayed = manifest(store.clone()).load().await.unwrap();
        assert_eq!(
            m.segments(&replayed).await.unwrap(),
            live,
            "replayed from the log"
        );
    }
    let merged = m.find_offset(w.state(), 35).await.unwrap().unwrap();
    assert!(merged.path.starts_with("merged/"), "{merged:?}");
    assert_eq!((merged.base_offset, merged.records), (30, 370));
    let s = m.find_timestamp(w.state(), 355).await.unwrap().unwrap();
    assert_eq!(s.base_offset, 30, "by time too");
    w.checkpoint().await.unwrap();
    let loaded = manifest(store.clone()).load().await.unwrap();
    assert_eq!(
        m.segments(&loaded).await.unwrap(),
        m.segments(w.state()).await.unwrap(),
        "from the checkpoint"
    );
    for level in &loaded.levels {
        assert!(
            level.len() < FANOUT,
            "the checkpoint packed the split levels again"
        );
    }
}

/// A replacement that does not match the committed segments (wrong count, a range that cuts a
/// segment, one below the start or past the end, segments that do not cover it) is refused
/// before anything is written.
#[tokio::test]
async fn replacements_that_do_not_fit_are_refused_unwritten() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let mut w = ManifestWriter::open(m.clone(), 1, retry()).await.unwrap();
    for i in 0..20 {
        add(&mut w, i * 10, 10).await.unwrap();
    }
    w.commit(Op::Truncate { start_offset: 30 }).await.unwrap();
    let all = m.segments(w.state()).await.unwrap();
    let seq = w.state().seq;
    let good = |from: usize, to: usize| {
        let segs = &all[from..to];
        (
            segs[0].base_offset,
            segs[segs.len() - 1].last_offset,
            segs.iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
            merged_entry(segs, 1),
        )
    };
    let (b, l, names, e) = good(2, 6);
    let mut bad_ops = vec![Op::Replace {
        base_offset: b,
        last_offset: l,
        replaced: names[..3].to_vec(),
        segments: vec![e.clone()],
        compaction: None,
    }];
    let mut cut = e.clone();
    cut.base_offset += 5;
    bad_ops.push(Op::Replace {
        base_offset: b + 5,
        last_offset: l,
        replaced: names.clone(),
        segments: vec![cut],
        compaction: None,
    });
    let mut short = e.clone();
    short.last_offset -= 1;
    bad_ops.push(Op::Replace {
        base_offset: b,
        last_offset: l,
        replaced: names.clone(),
        segments: vec![short],
        compaction: None,
    });
    let (_, _, _, below) = good(0, 2);
    let mut below = below;
    below.base_offset = 0;
    bad_ops.push(Op::Replace {
        base_offset: 0,
        last_offset: below.last_offset,
        replaced: vec!["log/x".into(); 5],
        segments: vec![below],
        compaction: None,
    });
    let mut past = e.clone();
    past.last_offset = 10_000;
    bad_ops.push(Op::Replace {
        base_offset: b,
        last_offset: 10_000,
        replaced: names.clone(),
        segments: vec![past],
        compaction: None,
    });
    for op in bad_ops {
        let err = w.commit(op.clone()).await.unwrap_err();
        assert!(
            err.is_corruption() || matches!(err, Error::Invalid(_)),
            "{op:?}: {err}"
        );
        assert_eq!(w.state().seq, seq, "nothing committed for {op:?}");
    }
    assert_eq!(
        manifest(store).load().await.unwrap().seq,
        seq,
        "nothing written"
    );
    let (b, l, names, e) = good(2, 6);
    w.commit(Op::Replace {
        base_offset: b,
        last_offset: l,
        replaced: names,
        segments: vec![e],
        compaction: None,
    })
    .await
    .unwrap();
}

/// Objects of manifest format 2 (before replacements) are read as they are; a newer format
/// than this build knows is refused by name.
#[test]
fn format_2_objects_are_read_and_newer_ones_refused() {
    let body = r#"{"seq":7}"#;
    let env = |v: u32| {
        format!(
            "{{\"format\":\"tierlog.hint\",\"version\":{v},\"crc32c\":{},\"body\":{body}}}\n",
            crc32c::crc32c(body.as_bytes())
        )
    };
    let p = Path::from("x");
    assert_eq!(
        decode::<Hint>("hint", &p, env(2).as_bytes()).unwrap().seq,
        7
    );
    for v in [3, 4] {
        assert_eq!(
            decode::<Hint>("hint", &p, env(v).as_bytes()).unwrap().seq,
            7
        );
    }
    let e = decode::<Hint>("hint", &p, env(5).as_bytes()).unwrap_err();
    assert!(e.to_string().contains("unsupported version 5"), "{e}");
}

#[tokio::test]
async fn the_state_keeps_the_leader_epoch_history_and_retention_trims_it() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let m = manifest(store.clone());
    let run = |epoch, start| EpochRun { epoch, start };
    for (epoch, bases) in [(1, vec![0, 10]), (3, vec![20]), (5, vec![30, 40])] {
        let mut w = ManifestWriter::open(m.clone(), epoch, retry())
            .await
            .unwrap();
        for base in bases {
            add(&mut w, base, 10).await.unwrap();
        }
    }
    // Segments from before runs were recorded count as one run of their writer's epoch.
    let state = m.load().await.unwrap();
    assert_eq!(state.leader_epochs, [run(1, 0), run(3, 20), run(5, 30)]);
    // Runs recorded by the uploader are folded in as they are.
    let mut w = ManifestWriter::open(m.clone(), 7, retry()).await.unwrap();
    let mut c = seg(50, 10, 7);
    c.leader_epochs = vec![run(5, 50), run(6, 52), run(7, 55)];
    let (delta, kv) = segment_footer(7, c).unwrap();
    let id = crate::PartitionId::new("events", 3);
    let bytes = crate::cold::parquet::encode_empty(&id, vec![kv]).unwrap();
    w.commit_segment(SegmentCommit { bytes, delta }, |_| {})
        .await
        .unwrap();
    let want = [run(1, 0), run(3, 20), run(5, 30), run(6, 52), run(7, 55)];
    assert_eq!(m.load().await.unwrap().leader_epochs, want);
    // Retention keeps the run that holds the new start.
    w.commit(Op::Truncate { start_offset: 25 }).await.unwrap();
    assert_eq!(m.load().await.unwrap().leader_epochs, want[1..]);
    w.commit(Op::Truncate { start_offset: 52 }).await.unwrap();
    assert_eq!(m.load().await.unwrap().leader_epochs, want[3..]);
}
