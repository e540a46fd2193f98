use super::*;
use crate::batch::{BatchBuilder, Compression, Record};
use proptest::prelude::*;

fn cfg(dir: &Path, segment_bytes: u64) -> Arc<TierConfig> {
    Arc::new(TierConfig {
        data_dir: dir.to_path_buf(),
        segment_bytes,
        fsync: FsyncPolicy::Never,
        index_interval_bytes: 256,
        ..TierConfig::default()
    })
}

fn batch(first_ts: i64, n: usize, tag: u8) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        b.push(first_ts + i as i64, Some(&[tag]), Some(&[tag; 40]), &[]);
    }
    b.build().unwrap()
}

fn open(dir: &Path, segment_bytes: u64, cold_next: i64) -> Result<PartitionLog> {
    open_at(dir, segment_bytes, cold_next, 0)
}

fn open_at(
    dir: &Path,
    segment_bytes: u64,
    cold_next: i64,
    cold_epoch: u64,
) -> Result<PartitionLog> {
    open_with(dir, cfg(dir, segment_bytes), cold_next, cold_epoch)
}

fn open_with(
    dir: &Path,
    c: Arc<TierConfig>,
    cold_next: i64,
    cold_epoch: u64,
) -> Result<PartitionLog> {
    PartitionLog::open(
        dir,
        PartitionId::new("t", 0),
        c,
        cold_next,
        cold_epoch,
        Default::default(),
        Arc::default(),
    )
}

/// After a failover, a returning node's unuploaded tail (older epoch) is dropped: a newer leader
/// committed since, and the tail may diverge. Its own earlier epoch keeps it.
#[test]
fn a_hot_tail_from_an_older_epoch_is_dropped_after_a_newer_leader_committed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open_at(dir.path(), 4096, 0, 0).unwrap();
        for i in 0..100 {
            log.append(batch(i, 3, 1), 5).unwrap();
        }
        assert!(log.snapshot().len() > 3);
    }
    // The same leader's incarnation (manifest last written under epoch 5): everything stays.
    let log = open_at(dir.path(), 4096, 0, 5).unwrap();
    assert_eq!(log.next_offset(), 300);
    drop(log);
    // A newer leader (epoch 7) committed up to 60: the tail beyond 60 is dropped.
    let log = open_at(dir.path(), 4096, 60, 7).unwrap();
    assert_eq!(log.next_offset(), 60);
    assert_eq!(log.append(batch(0, 1, 2), 8).unwrap().base_offset, 60);
}

fn all_records(log: &PartitionLog, from: i64) -> Vec<Record> {
    let mut out = Vec::new();
    for b in log.read(from, usize::MAX).unwrap().unwrap() {
        b.decode_into(&mut out).unwrap();
    }
    out.retain(|r| r.offset >= from);
    out
}

#[test]
fn appends_get_dense_offsets_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4096, 0).unwrap();
    let mut expect = 0;
    for i in 0..100 {
        let r = log.append(batch(1000 + i * 10, 3, i as u8), 1).unwrap();
        assert_eq!(r.base_offset, expect);
        assert_eq!(r.last_offset, expect + 2);
        expect += 3;
    }
    assert!(log.snapshot().len() > 3, "segments rolled at 4 KiB");
    let recs = all_records(&log, 0);
    assert_eq!(recs.len(), 300);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
    }
    // Reads from the middle of a batch and of a segment start at that offset.
    for from in [1, 77, 150, 299] {
        assert_eq!(all_records(&log, from)[0].offset, from);
    }
    // max_bytes bounds a read but always returns at least one batch.
    let some = log.read(0, 1).unwrap().unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(log.offset_for_timestamp(1000 + 50 * 10).unwrap(), Some(150));
    assert_eq!(
        log.offset_for_timestamp(1000 + 50 * 10 + 1).unwrap(),
        Some(151)
    );
    assert_eq!(log.offset_for_timestamp(i64::MAX).unwrap(), None);
}

#[test]
fn reopen_continues_where_it_left_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), 4096, 0).unwrap();
        for i in 0..50 {
            log.append(batch(i, 2, 1), 1).unwrap();
        }
    }
    let log = open(dir.path(), 4096, 0).unwrap();
    assert_eq!(log.next_offset(), 100);
    assert_eq!(log.append(batch(0, 1, 1), 1).unwrap().base_offset, 100);
    assert_eq!(all_records(&log, 0).len(), 101);
}

#[test]
fn empty_hot_tier_starts_at_the_cold_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4096, 12345).unwrap();
    assert_eq!(log.append(batch(0, 1, 1), 1).unwrap().base_offset, 12345);
}

#[test]
fn hot_tier_starting_after_the_cold_end_is_a_hard_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), 4096, 500).unwrap();
        log.append(batch(0, 1, 1), 1).unwrap();
    }
    let err = open(dir.path(), 4096, 100).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

fn last_segment(dir: &Path) -> PathBuf {
    let pdir = dir.join("t").join("0");
    let mut files: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.pop().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Cutting the active segment anywhere keeps exactly the whole batches before the cut.
    #[test]
    fn torn_tail_is_truncated_to_the_last_whole_batch(cut_frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let mut ends = vec![0u64];
        {
            let log = open(dir.path(), 1 << 20, 0).unwrap();
            for i in 0..20 {
                log.append(batch(i, 1 + (i as usize % 3), 2), 1).unwrap();
                ends.push(log.active().size());
            }
        }
        let path = last_segment(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = (len as f64 * cut_frac) as u64;
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let log = open(dir.path(), 1 << 20, 0).unwrap();
        let kept = ends.iter().rposition(|&e| e <= cut).unwrap();
        let size = log.active().size();
        prop_assert_eq!(size, ends[kept]);
        prop_assert_eq!(std::fs::metadata(&path).unwrap().len(), ends[kept]);
        let recs = all_records(&log, 0);
        prop_assert_eq!(recs.len() as i64, log.next_offset());
        // And the log keeps working after recovery.
        let r = log.append(batch(0, 1, 3), 1).unwrap();
        prop_assert_eq!(r.base_offset, recs.len() as i64);
    }

    /// A flipped bit in the active segment: in the last batch it is a torn write and that batch
    /// is dropped; in an earlier one (valid batches follow) the open fails, naming the file and
    /// position, rather than dropping acknowledged batches. Never anything else.
    #[test]
    fn bit_flip_in_active_segment_truncates_the_tail_or_fails_loudly(pos_frac in 0.0f64..1.0, bit in 0u8..8) {
        let dir = tempfile::tempdir().unwrap();
        let mut ends = vec![0u64];
        {
            let log = open(dir.path(), 1 << 20, 0).unwrap();
            for i in 0..10 {
                log.append(batch(i, 2, 4), 1).unwrap();
                ends.push(log.active().size());
            }
        }
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let pos = ((bytes.len() - 1) as f64 * pos_frac) as usize;
        bytes[pos] ^= 1 << bit;
        std::fs::write(&path, &bytes).unwrap();
        let hit = ends.iter().rposition(|&e| e <= pos as u64).unwrap();
        match open(dir.path(), 1 << 20, 0) {
            Ok(log) => {
                prop_assert_eq!(log.active().size(), ends[hit]);
                prop_assert_eq!(log.next_offset(), 2 * hit as i64);
            }
            Err(e) => {
                prop_assert!(e.is_corruption(), "{}", e);
                prop_assert!(hit < 9, "damage in the last batch is a torn write: {}", e);
                let msg = e.to_string();
                prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
            }
        }
    }
}

#[test]
fn corruption_in_a_sealed_segment_is_a_hard_error_naming_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), 4096, 0).unwrap();
        for i in 0..100 {
            log.append(batch(i, 3, 5), 1).unwrap();
        }
    }
    let pdir = dir.path().join("t").join("0");
    let mut files: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let sealed = files[0].clone();
    // A flipped payload bit: found when the batch is read, with file and position.
    let mut bytes = std::fs::read(&sealed).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&sealed, &bytes).unwrap();
    let log = open(dir.path(), 4096, 0).unwrap();
    let err = log.read(0, usize::MAX).unwrap_err();
    let msg = err.to_string();
    assert!(err.is_corruption(), "{msg}");
    assert!(msg.contains(&sealed.display().to_string()), "{msg}");
    assert!(msg.contains("CRC"), "{msg}");
    drop(log);
    // A broken frame header in a sealed segment fails the open itself.
    let mut bytes = std::fs::read(&sealed).unwrap();
    bytes[0] = 0xff;
    std::fs::write(&sealed, &bytes).unwrap();
    let err = open(dir.path(), 4096, 0).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(
        err.to_string().contains(&sealed.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("at 0"), "{err}");
}

#[test]
fn retention_deletes_only_uploaded_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4096, 0).unwrap();
    for i in 0..200 {
        log.append(batch(i, 3, 6), 1).unwrap();
    }
    let before = log.snapshot().len();
    assert!(before > 5);
    // Nothing uploaded: nothing may go, even over budget.
    assert_eq!(log.enforce_retention(true).unwrap(), 0);
    let pending = log.pending_uploads(0).unwrap();
    assert_eq!(pending.len(), before - 1);
    log.mark_uploaded(pending[2].next_offset);
    let freed = log.enforce_retention(true).unwrap();
    assert!(freed > 0);
    assert_eq!(log.snapshot().len(), before - 3);
    assert_eq!(log.start_offset(), pending[2].next_offset);
    assert!(
        log.read(0, 100).unwrap().is_none(),
        "offset 0 is no longer hot"
    );
    assert_eq!(
        log.bytes(),
        log.snapshot().iter().map(|s| s.size()).sum::<u64>()
    );
}

#[test]
fn oversized_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(TierConfig {
        data_dir: dir.path().to_path_buf(),
        max_batch_bytes: 1000,
        ..TierConfig::default()
    });
    let log = open_with(dir.path(), c, 0, 0).unwrap();
    let err = log.append(batch(0, 100, 1), 1).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 1000, .. }), "{err}");
    assert_eq!(log.next_offset(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the batch sizes, index interval and timestamps (not monotonic), a read from any
    /// offset starts exactly there and a timestamp seek finds the first record at or after it.
    #[test]
    fn index_lookups_match_a_linear_scan(
        sizes in prop::collection::vec(1usize..20, 1..60),
        interval in 1u64..3000,
        segment_kib in 2u64..64,
        jitter in prop::collection::vec(0i64..500, 60 * 20),
        probes in prop::collection::vec(0usize..1200, 10),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(TierConfig {
            data_dir: dir.path().to_path_buf(),
            segment_bytes: segment_kib << 10,
            max_batch_bytes: 1024,
            index_interval_bytes: interval,
            fsync: FsyncPolicy::Never,
            ..TierConfig::default()
        });
        let log = open_with(dir.path(), c, 0, 0).unwrap();
        let mut all = Vec::new();
        for n in &sizes {
            let mut b = BatchBuilder::new(Compression::None);
            for _ in 0..*n {
                let i = all.len();
                let ts = 10 * i as i64 + jitter[i % jitter.len()];
                b.push(ts, None, Some(&[1u8; 8]), &[]);
                all.push(ts);
            }
            log.append(b.build().unwrap(), 0).unwrap();
        }
        let n = all.len();
        for p in &probes {
            let off = (*p % n) as i64;
            let got = all_records(&log, off);
            prop_assert_eq!(got[0].offset, off);
            prop_assert_eq!(got.len(), n - off as usize);
            let ts = all[off as usize];
            let want = all.iter().position(|&t| t >= ts).map(|i| i as i64);
            prop_assert_eq!(log.offset_for_timestamp(ts).unwrap(), want);
            prop_assert_eq!(log.offset_for_timestamp(ts + 1).unwrap(), all.iter().position(|&t| t > ts).map(|i| i as i64));
        }
    }
}

#[test]
fn sequential_reads_of_compressed_batches_return_each_offset_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 128 << 10, 0).unwrap();
    for i in 0..400 {
        let mut b = BatchBuilder::new(Compression::Zstd);
        for j in 0..50 {
            let noise: String = (0..40)
                .map(|k| {
                    format!(
                        "{:x}",
                        ((i * 7919 + j * 104729 + k * 31) as u64).wrapping_mul(2654435761) % 4093
                    )
                })
                .collect();
            b.push(i * 50 + j, Some(b"k"), Some(noise.as_bytes()), &[]);
        }
        log.append(b.build().unwrap(), 1).unwrap();
    }
    assert!(log.snapshot().len() > 2, "several segments");
    let mut next = 0;
    while next < 20_000 {
        let got = all_records_limited(&log, next, 100 << 10);
        assert!(!got.is_empty());
        for r in got {
            assert_eq!(r.offset, next, "every offset exactly once, in order");
            next += 1;
        }
    }
}

fn all_records_limited(log: &PartitionLog, from: i64, max: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for b in log.read(from, max).unwrap().unwrap() {
        b.decode_into(&mut out).unwrap();
    }
    out.retain(|r| r.offset >= from);
    out
}

/// Upload reads whole segments, however large (reads are buffered in pieces).
#[test]
fn read_all_returns_a_large_segment_whole() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(TierConfig {
        data_dir: dir.path().to_path_buf(),
        segment_bytes: 64 << 20,
        fsync: FsyncPolicy::Never,
        ..TierConfig::default()
    });
    let log = open_with(dir.path(), c, 0, 0).unwrap();
    let value = vec![7u8; 100 << 10];
    for i in 0..400 {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(i, None, Some(&value), &[]);
        log.append(b.build().unwrap(), 0).unwrap();
    }
    assert!(log.bytes() > 32 << 20);
    let seg = log.active();
    let all = seg.read_all().unwrap();
    assert_eq!(all.len(), 400);
    assert_eq!(
        all.last().unwrap().header().next_offset(),
        seg.next_offset()
    );
}

/// `try_append` appends on the caller's thread only when nothing can block but a page-cache
/// write; a batch that needs a seal, a held writer lock or a per-batch fsync comes back
/// unappended, and an oversized batch gets its error at once.
#[test]
fn try_append_hands_back_what_could_block() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 4096, 0).unwrap();
    let r = log
        .try_append(batch(0, 3, 1), 1)
        .expect("appended inline")
        .unwrap();
    assert_eq!((r.base_offset, r.last_offset, r.rolled), (0, 2, false));

    // The writer lock is held (a seal in progress): handed back, nothing appended.
    {
        let _w = log.writer.lock().unwrap();
        assert!(log.try_append(batch(0, 3, 1), 1).is_err());
    }
    assert_eq!(log.next_offset(), 3);

    // Fill the active segment until the next batch needs a seal: handed back, then appended
    // (with the seal) by `append`.
    let segments = log.snapshot().len();
    let back = loop {
        match log.try_append(batch(0, 3, 1), 1) {
            Ok(r) => assert!(!r.unwrap().rolled),
            Err(b) => break b,
        }
    };
    assert_eq!(log.snapshot().len(), segments);
    let before = log.next_offset();
    let r = log.append(back, 1).unwrap();
    assert!(r.rolled);
    assert_eq!(r.base_offset, before);
    assert_eq!(log.snapshot().len(), segments + 1);

    // A batch over the limit is refused, not handed back.
    let big = {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(0, None, Some(&vec![0u8; log.cfg.max_batch_bytes + 1]), &[]);
        b.build().unwrap()
    };
    assert!(matches!(
        log.try_append(big, 1),
        Ok(Err(Error::TooLarge { .. }))
    ));

    // Under fsync-every-batch every append goes to a thread that may block.
    let dir2 = tempfile::tempdir().unwrap();
    let c = Arc::new(TierConfig {
        fsync: FsyncPolicy::EveryBatch,
        ..(*cfg(dir2.path(), 4096)).clone()
    });
    let log = open_with(dir2.path(), c, 0, 0).unwrap();
    let back = log.try_append(batch(0, 3, 1), 1).expect_err("handed back");
    assert_eq!(log.append(back, 1).unwrap().base_offset, 0);
    assert_eq!(log.durable_next(), 3);
}

/// The records of a span, read the way an upload reads them.
fn span_records(span: &Span) -> Vec<Record> {
    let mut out = Vec::new();
    for chunk in span.chunks(1024) {
        for b in chunk.unwrap() {
            b.decode_into(&mut out).unwrap();
        }
    }
    out
}

/// acks=all commits prefixes of the active segment without sealing it: each cut starts where
/// the one before ended, holds whole batches, and the segment's remainder goes up once sealed.
#[test]
fn cuts_span_the_active_segment_from_where_uploads_stand() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, 0).unwrap();
    for i in 0..10 {
        log.append(batch(i * 10, 3, 1), 1).unwrap();
    }
    assert!(log.pending_uploads(0).unwrap().is_empty(), "nothing sealed");
    let first = log.cut(0).unwrap().expect("records to cut");
    assert_eq!(
        (first.base_offset, first.next_offset, first.start),
        (0, 30, 0)
    );
    assert_eq!(first.end, log.active().size());
    assert_eq!(span_records(&first), all_records(&log, 0));
    log.mark_uploaded(first.next_offset);
    assert!(log.cut(30).unwrap().is_none(), "nothing new to cut");
    for i in 10..15 {
        log.append(batch(i * 10, 3, 2), 1).unwrap();
    }
    let second = log.cut(30).unwrap().expect("records to cut");
    assert_eq!((second.base_offset, second.next_offset), (30, 45));
    assert_eq!(
        second.start, first.end,
        "the second cut starts where the first ended"
    );
    let got = span_records(&second);
    assert_eq!(got.first().map(|r| r.offset), Some(30));
    assert_eq!(got, all_records(&log, 30));
    let err = log.cut(31).unwrap_err();
    assert!(
        err.to_string().contains("no batch starts at offset 31"),
        "{err}"
    );
    // The same segment still takes appends; once sealed, what the cuts did not commit is pending.
    log.mark_uploaded(second.next_offset);
    log.append(batch(150, 4, 3), 1).unwrap();
    assert!(log.seal_active(true).unwrap());
    let rest = log.pending_uploads(0).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].base_offset, rest[0].next_offset), (45, 49));
    assert_eq!(rest[0].start, second.end);
    assert_eq!(span_records(&rest[0]), all_records(&log, 45));
    assert!(
        log.cut(49).unwrap().is_none(),
        "the new active segment is empty"
    );
}

/// A cut commits records the local disk may not have synced. If they are lost here, recovery
/// finds the hot copy behind the cold tier and continues from the cold end.
#[test]
fn a_hot_tier_that_lost_a_committed_cut_continues_from_the_cold_end() {
    let dir = tempfile::tempdir().unwrap();
    let committed = {
        let log = open(dir.path(), 1 << 20, 0).unwrap();
        for i in 0..20 {
            log.append(batch(i * 10, 3, 1), 1).unwrap();
        }
        let span = log.cut(0).unwrap().unwrap();
        log.mark_uploaded(span.next_offset);
        span
    };
    // The unsynced half of the segment never reached the disk.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    f.set_len(committed.end / 2 + 3).unwrap();
    let log = open(dir.path(), 1 << 20, committed.next_offset).unwrap();
    assert_eq!(log.next_offset(), committed.next_offset);
    assert_eq!(log.start_offset(), committed.next_offset);
    let r = log.append(batch(999, 2, 9), 1).unwrap();
    assert_eq!(r.base_offset, committed.next_offset);
}

/// `position_of` finds exactly the batch starts a linear walk finds, and nothing else.
#[test]
fn positions_of_batches_match_a_linear_walk() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, 0).unwrap();
    for i in 0..60 {
        log.append(batch(i, 1 + (i as usize % 4), 1), 1).unwrap();
    }
    let seg = log.active();
    let mut pos = 0u64;
    for b in seg.read_all().unwrap() {
        let base = b.header().base_offset;
        assert_eq!(seg.position_of(base).unwrap(), pos, "offset {base}");
        if b.header().last_offset_delta > 0 {
            assert!(seg.position_of(base + 1).is_err(), "inside batch {base}");
        }
        pos += segment::frame_len(b.len());
    }
    assert_eq!(seg.position_of(seg.next_offset()).unwrap(), seg.size());
    assert!(seg.position_of(seg.next_offset() + 1).is_err());
}

/// Near the hot budget, an active segment holding committed records is sealed, so that once the
/// rest is committed retention can delete it; a segment with nothing committed is left alone.
#[test]
fn a_partly_committed_active_segment_is_sealed_for_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20, 0).unwrap();
    for i in 0..10 {
        log.append(batch(i, 3, 1), 1).unwrap();
    }
    assert!(!log.seal_committed().unwrap(), "nothing committed yet");
    let cut = log.cut(0).unwrap().unwrap();
    log.mark_uploaded(cut.next_offset);
    log.append(batch(100, 3, 2), 1).unwrap();
    assert!(log.seal_committed().unwrap());
    log.append(batch(200, 3, 3), 1).unwrap();
    assert!(
        !log.seal_committed().unwrap(),
        "the new active segment has nothing committed"
    );
    let rest = log.pending_uploads(cut.next_offset).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!((rest[0].base_offset, rest[0].next_offset), (30, 33));
    assert_eq!(
        log.enforce_retention(true).unwrap(),
        0,
        "its rest is not committed"
    );
    log.mark_uploaded(rest[0].next_offset);
    assert!(log.enforce_retention(true).unwrap() > 0);
    assert_eq!(log.start_offset(), 33);
}

/// A log's bytes count in the tier's total until it is released or dropped, whichever comes
/// first (an open given up half-way counts nothing); a released log changes nothing on disk (a
/// reopened partition owns the directory).
#[test]
fn a_log_counts_in_the_tier_total_until_released_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let global = Arc::new(AtomicU64::new(0));
    let open_shared = |p: u32| {
        PartitionLog::open(
            dir.path(),
            PartitionId::new("t", p),
            cfg(dir.path(), 4096),
            0,
            0,
            Default::default(),
            global.clone(),
        )
        .unwrap()
    };
    let (a, b) = (open_shared(0), open_shared(1));
    for i in 0..50 {
        a.append(batch(i, 3, 1), 1).unwrap();
        b.append(batch(i, 2, 2), 1).unwrap();
    }
    assert!(a.bytes() > 0 && b.bytes() > 0);
    assert_eq!(global.load(Ordering::Acquire), a.bytes() + b.bytes());
    a.mark_uploaded(a.next_offset());
    a.release();
    let files = || {
        std::fs::read_dir(dir.path().join("t").join("0"))
            .unwrap()
            .count()
    };
    let before = files();
    assert!(matches!(a.append(batch(99, 3, 1), 1), Err(Error::Closed)));
    assert!(!a.seal_active(true).unwrap());
    assert!(!a.seal_committed().unwrap());
    assert_eq!(a.enforce_retention(true).unwrap(), 0);
    assert_eq!(files(), before, "a released log leaves its files alone");
    a.release();
    assert_eq!(
        global.load(Ordering::Acquire),
        b.bytes(),
        "a no longer counts"
    );
    drop(a);
    assert_eq!(global.load(Ordering::Acquire), b.bytes());
    drop(b);
    assert_eq!(
        global.load(Ordering::Acquire),
        0,
        "dropping gives back the rest"
    );
}

/// Ten batches of two records in one active segment, with a bit flipped in the middle of each
/// batch numbered in `damaged` (from 0); the segment's path and bytes.
fn ten_batches_damaged_at(dir: &Path, damaged: &[usize]) -> (PathBuf, Vec<u8>) {
    let mut ends = vec![0u64];
    {
        let log = open(dir, 1 << 20, 0).unwrap();
        for i in 0..10 {
            log.append(batch(i, 2, 4), 1).unwrap();
            ends.push(log.active().size());
        }
    }
    let path = last_segment(dir);
    let mut bytes = std::fs::read(&path).unwrap();
    for &k in damaged {
        bytes[(ends[k] + ends[k + 1]) as usize / 2] ^= 0x10;
    }
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// Damage in the middle of the active segment (valid batches after it) is an error, unless the
/// cold tier holds every offset from the damage to the end of those batches (acks=all cuts
/// commit before the local sync): then the hot copy is dropped and the log continues from the
/// cold end.
#[test]
fn damage_the_cold_tier_covers_drops_the_hot_copy_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    // Inside the fourth batch (offsets 6 and 7); six valid batches follow, up to offset 20.
    let (path, bytes) = ten_batches_damaged_at(dir.path(), &[3]);
    let err = open(dir.path(), 1 << 20, 19).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("up to offset 20"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a refused open changes nothing"
    );
    let log = open(dir.path(), 1 << 20, 20).unwrap();
    assert_eq!((log.start_offset(), log.next_offset()), (20, 20));
    assert_eq!(log.append(batch(99, 1, 1), 1).unwrap().base_offset, 20);
}

/// Two damaged batches with valid ones between and after: the valid run after the first ends
/// inside the cold tier, but more valid batches follow the second damage, so their extent is
/// unknown and the open is refused.
#[test]
fn damage_past_further_damage_is_not_taken_as_covered() {
    let dir = tempfile::tempdir().unwrap();
    // Inside the fourth batch (offsets 6, 7) and the seventh (12, 13); the cold tier ends at 12.
    ten_batches_damaged_at(dir.path(), &[3, 6]);
    let err = open(dir.path(), 1 << 20, 12).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains("past further damage"), "{err}");
}
