//! The hot log of one partition: an ordered run of segment files in one directory.
//!
//! Invariants:
//! - segments are contiguous: each segment's base offset is the previous one's next offset;
//! - only the last segment is active (appendable); all others are sealed and were fsynced first;
//! - offsets below `uploaded_next` are committed to the cold manifest; only segments wholly below
//!   it may be deleted. It may lie inside the active segment, ahead of what is fsynced here
//!   (acks=all commits a prefix of the active segment: [`PartitionLog::cut`]); recovery drops
//!   a hot copy that ends behind the cold tier;
//! - appends are serialized by the writer lock; readers take a snapshot of the segment list and
//!   read only whole frames.

use crate::producers::{ProducerBatch, ProducerStates};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use crate::PartitionId;
use crate::batch::RecordBatch;
use crate::config::{FsyncPolicy, TierConfig};
use crate::epochs::{EpochRun, push_epoch_run};
use crate::error::{Error, Result};
use crate::hot::segment::{self, Segment};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: i64,
    pub last_offset: i64,
    /// True when the batch sealed the active segment (a new one was started after it).
    pub rolled: bool,
    /// True when the batch was a retry of one an idempotent producer already appended: nothing
    /// was written and the offsets are the original ones.
    pub duplicate: bool,
}

/// Whole batches of one segment to upload: offsets `[base_offset, next_offset)`, at bytes
/// `[start, end)` of the segment's file.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    pub seg: Arc<Segment>,
    pub base_offset: i64,
    pub next_offset: i64,
    pub start: u64,
    pub end: u64,
}

impl Span {
    /// The segment's batches from `from` (a batch boundary) to what it holds now. The caller
    /// holds the writer lock or the segment is sealed, so its size and next offset agree.
    fn of(seg: Arc<Segment>, from: i64) -> Result<Span> {
        let from = from.max(seg.base_offset);
        Ok(Span {
            start: seg.position_of(from)?,
            end: seg.size(),
            base_offset: from,
            next_offset: seg.next_offset(),
            seg,
        })
    }

    /// Raw bytes of the span's frames.
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }

    /// The span's batches, about `chunk_bytes` at a time.
    pub fn chunks(
        &self,
        chunk_bytes: usize,
    ) -> impl Iterator<Item = Result<Vec<RecordBatch>>> + '_ {
        self.seg.chunks(self.start..self.end, chunk_bytes)
    }
}

/// Serializes appends, seals and rolls.
#[derive(Debug)]
struct Writer;

#[derive(Debug)]
pub(crate) struct PartitionLog {
    pub id: PartitionId,
    dir: PathBuf,
    cfg: Arc<TierConfig>,
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    next_offset: AtomicI64,
    durable_next: AtomicI64,
    uploaded_next: AtomicI64,
    dirty: AtomicBool,
    /// Set when an fsync failed: the page cache may have dropped the written bytes, so nothing
    /// more is appended until the log is reopened and recovered from what is on disk.
    failed: AtomicBool,
    /// Bytes on disk in this partition's segments.
    bytes: AtomicU64,
    /// Bytes on disk over all partitions of the tier (shared). This log's bytes count in it
    /// until [`PartitionLog::release`] or drop (so an open that is given up counts nothing).
    global: Arc<AtomicU64>,
    /// Set once this log's bytes no longer count in `global` (changed under the writer lock).
    released: AtomicBool,
    /// Idempotent producers as of `next_offset` (changed under the writer lock).
    producers: Mutex<ProducerStates>,
    /// When the oldest record of the active segment that no cut or seal covers yet was
    /// appended ([`mono_ms`] + 1; 0 when there is none). Changed under the writer lock; the
    /// uploader cuts once it is `upload_interval_ms` old ([`PartitionLog::tail_due_at`]).
    tail_since: AtomicU64,
    /// When records arrived, sampled: `(offset, mono_ms)` pairs in offset order, one per
    /// [`ARRIVAL_SAMPLE_MS`] at most and [`ARRIVALS_MAX`] in all (halved when full), pruned as
    /// uploads commit. Gives the age of the oldest record not yet in the object store.
    arrivals: Mutex<std::collections::VecDeque<(i64, u64)>>,
}

/// Spacing of arrival samples: the upload lag in seconds is exact to this (an overestimate).
const ARRIVAL_SAMPLE_MS: u64 = 100;
/// Samples kept per partition; past it every other one is dropped (coarser, never younger).
const ARRIVALS_MAX: usize = 1024;

/// Milliseconds on a monotonic clock that starts with the process.
fn mono_ms() -> u64 {
    u64::try_from(mono_base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn mono_base() -> std::time::Instant {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

impl PartitionLog {
    /// Opens (or creates) the partition's directory. `cold_next` is the next offset after what the
    /// cold manifest holds: the log continues from there when the hot tier is empty.
    pub fn open(
        root: &Path,
        id: PartitionId,
        cfg: Arc<TierConfig>,
        cold_next: i64,
        cold_epoch: u64,
        cold_producers: ProducerStates,
        global: Arc<AtomicU64>,
    ) -> Result<Self> {
        let dir = root.join(&*id.topic).join(id.partition.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if let Some(base) = name.to_str().and_then(segment::parse_segment_file_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut segs: Vec<Arc<Segment>> = Vec::with_capacity(bases.len());
        for (i, base) in bases.iter().enumerate() {
            let path = dir.join(segment::segment_file_name(*base));
            let is_last = i + 1 == bases.len();
            let seg = Segment::open(&path, *base, cfg.index_interval_bytes, is_last, cold_next)?;
            if let Some(prev) = segs.last().filter(|p| p.next_offset() != seg.base_offset) {
                return Err(Error::Corrupt {
                    location: path.display().to_string(),
                    position: 0,
                    reason: format!(
                        "segment starts at offset {} but the previous one ends before {}",
                        seg.base_offset,
                        prev.next_offset()
                    ),
                });
            }
            segs.push(Arc::new(seg));
        }
        // A leader with a higher epoch than the one our unuploaded tail was written under has
        // committed since: that tail may diverge from the log as others continued it. Drop it
        // (Kafka's leader-epoch truncation); what it held was never committed.
        let tail_epoch = segs
            .iter()
            .filter(|s| s.next_offset() > cold_next)
            .map(|s| s.max_epoch())
            .max();
        if let Some(tail_epoch) = tail_epoch.filter(|&e| e >= 0 && (e as u64) < cold_epoch) {
            let hot_next = segs.last().map_or(cold_next, |s| s.next_offset());
            tracing::warn!(
                topic = %id.topic, partition = id.partition, cold_next, hot_next, tail_epoch, cold_epoch,
                "discarding the hot tail written under an older leader epoch; a newer leader committed since"
            );
            while let Some(s) = segs.pop_if(|s| s.next_offset() > cold_next) {
                std::fs::remove_file(&s.path).map_err(|e| Error::io(&s.path, e))?;
            }
        }
        // Reconcile with the cold tier.
        if let Some(first) = segs.first() {
            if first.base_offset > cold_next {
                return Err(Error::Corrupt {
                    location: dir.display().to_string(),
                    position: 0,
                    reason: format!(
                        "hot tier starts at offset {} but the cold tier ends before {cold_next}: offsets in between are missing",
                        first.base_offset
                    ),
                });
            }
            let last_next = segs.last().map_or(cold_next, |s| s.next_offset());
            if last_next < cold_next {
                tracing::warn!(
                    topic = %id.topic, partition = id.partition, hot_next = last_next, cold_next,
                    "hot tier is behind the cold tier; discarding the hot copy (it is all uploaded)"
                );
                for s in segs.drain(..) {
                    std::fs::remove_file(&s.path).map_err(|e| Error::io(&s.path, e))?;
                }
            }
        }
        if segs.is_empty() {
            segs.push(Arc::new(Segment::create(
                &dir,
                cold_next,
                cfg.index_interval_bytes,
            )?));
        } else if segs.last().is_some_and(|s| s.is_sealed()) {
            // Only reachable if the last file was opened as sealed; keep one active segment.
            let next = segs.last().map_or(cold_next, |s| s.next_offset());
            segs.push(Arc::new(Segment::create(
                &dir,
                next,
                cfg.index_interval_bytes,
            )?));
        }
        let next = segs.last().map_or(cold_next, |s| s.next_offset());
        if let Some(active) = segs.last() {
            active.sync()?;
        }
        sync_dir(&dir)?;
        // Idempotent producers: the committed state, then what the unuploaded tail adds.
        let mut producers = cold_producers;
        for s in segs.iter().filter(|s| s.next_offset() > cold_next) {
            for chunk in s.chunks(0..s.size(), 4 << 20) {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        // Reads and the upload of this segment report the damage loudly; the
                        // producers' state just ends where the readable part does.
                        tracing::warn!(segment = %s.path.display(), error = %e,
                            "cannot read idempotent-producer batches past this point");
                        break;
                    }
                };
                for b in chunk {
                    let h = b.header();
                    if h.base_offset >= cold_next
                        && let Some((id, pb)) = ProducerBatch::of(h, h.base_offset)
                    {
                        producers.record(id, pb);
                    }
                }
            }
        }
        let bytes = segs.iter().map(|s| s.size()).sum();
        global.fetch_add(bytes, Ordering::AcqRel);
        // A recovered tail that is not uploaded counts as appended now.
        let tail_since = if next > cold_next { mono_ms() + 1 } else { 0 };
        Ok(PartitionLog {
            id,
            dir,
            cfg,
            segments: RwLock::new(segs),
            writer: Mutex::new(Writer),
            next_offset: AtomicI64::new(next),
            durable_next: AtomicI64::new(next),
            uploaded_next: AtomicI64::new(cold_next),
            dirty: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            released: AtomicBool::new(false),
            bytes: AtomicU64::new(bytes),
            global,
            producers: Mutex::new(producers),
            tail_since: AtomicU64::new(tail_since),
            arrivals: Mutex::new(if next > cold_next {
                std::collections::VecDeque::from([(cold_next, mono_ms())])
            } else {
                std::collections::VecDeque::new()
            }),
        })
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }
    pub fn durable_next(&self) -> i64 {
        self.durable_next.load(Ordering::Acquire)
    }
    pub fn uploaded_next(&self) -> i64 {
        self.uploaded_next.load(Ordering::Acquire)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
    /// Segment files on local disk (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.read().expect("segments lock poisoned").len()
    }
    /// First offset still on local disk.
    pub fn start_offset(&self) -> i64 {
        self.snapshot()
            .first()
            .map_or(self.next_offset(), |s| s.base_offset)
    }

    fn snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .expect("segments lock poisoned")
            .clone()
    }

    fn active(&self) -> Arc<Segment> {
        self.segments
            .read()
            .expect("segments lock poisoned")
            .last()
            .cloned()
            .expect("a partition log always has an active segment")
    }

    /// Appends a validated batch, assigning its offsets. Returns once the batch is written and,
    /// under [`FsyncPolicy::EveryBatch`], synced.
    pub fn append(&self, batch: RecordBatch, leader_epoch: i32) -> Result<AppendResult> {
        Self::check(&batch, &self.cfg)?;
        let w = self.writer.lock().expect("writer lock poisoned");
        self.append_locked(&w, batch, leader_epoch)
    }

    /// Appends like [`PartitionLog::append`] when that cannot block on more than a write to the
    /// page cache: the writer lock is free, the batch fits in the active segment (no seal, which
    /// fsyncs) and the policy does not fsync every batch. Otherwise hands the batch back for
    /// [`PartitionLog::append`] on a thread that may block.
    pub fn try_append(
        &self,
        batch: RecordBatch,
        leader_epoch: i32,
    ) -> std::result::Result<Result<AppendResult>, RecordBatch> {
        if let Err(e) = Self::check_size(&batch, &self.cfg) {
            return Ok(Err(e));
        }
        if self.cfg.fsync == FsyncPolicy::EveryBatch {
            return Err(batch);
        }
        let Ok(w) = self.writer.try_lock() else {
            return Err(batch);
        };
        let active = self.active();
        if !active.is_empty()
            && active.size() + segment::frame_len(batch.len()) > self.cfg.segment_bytes
        {
            return Err(batch);
        }
        Ok(batch
            .validate()
            .map_err(Error::from)
            .and_then(|()| self.append_locked(&w, batch, leader_epoch)))
    }

    fn check(batch: &RecordBatch, cfg: &TierConfig) -> Result<()> {
        Self::check_size(batch, cfg)?;
        batch.validate()?;
        Ok(())
    }

    fn check_size(batch: &RecordBatch, cfg: &TierConfig) -> Result<()> {
        if batch.len() > cfg.max_batch_bytes {
            return Err(Error::TooLarge {
                size: batch.len(),
                limit: cfg.max_batch_bytes,
            });
        }
        Ok(())
    }

    /// The append itself; `_writer` proves the caller holds the writer lock.
    fn append_locked(
        &self,
        _writer: &std::sync::MutexGuard<'_, Writer>,
        batch: RecordBatch,
        leader_epoch: i32,
    ) -> Result<AppendResult> {
        if self.is_released() {
            return Err(Error::Closed);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::io(
                &self.dir,
                std::io::Error::other("an earlier fsync failed; the partition must be reopened"),
            ));
        }
        let mut producers = self.producers.lock().expect("producers lock poisoned");
        if let Some((base_offset, last_offset)) = producers.check(batch.header())? {
            return Ok(AppendResult {
                base_offset,
                last_offset,
                rolled: false,
                duplicate: true,
            });
        }
        let mut active = self.active();
        let frame = segment::frame_len(batch.len());
        let mut rolled = false;
        if !active.is_empty() && active.size() + frame > self.cfg.segment_bytes {
            active = self.roll_locked(&active)?;
            rolled = true;
        }
        let base = self.next_offset();
        let last = base + i64::from(batch.header().last_offset_delta);
        if let Err(e) = active.append(&batch, base, leader_epoch) {
            if active.is_broken() {
                self.failed.store(true, Ordering::Release);
            }
            return Err(e);
        }
        self.bytes.fetch_add(frame, Ordering::AcqRel);
        // Not released: checked above, and release takes the writer lock.
        self.global.fetch_add(frame, Ordering::AcqRel);
        self.next_offset.store(last + 1, Ordering::Release);
        if self.tail_since.load(Ordering::Acquire) == 0 {
            self.tail_since.store(mono_ms() + 1, Ordering::Release);
        }
        self.sample_arrival(base);
        if let Some((id, b)) = ProducerBatch::of(batch.header(), base) {
            producers.record(id, b);
        }
        drop(producers);
        match self.cfg.fsync {
            FsyncPolicy::EveryBatch => {
                if let Err(e) = active.sync() {
                    self.failed.store(true, Ordering::Release);
                    return Err(e);
                }
                self.durable_next.store(last + 1, Ordering::Release);
            }
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => {
                self.dirty.store(true, Ordering::Release);
            }
        }
        Ok(AppendResult {
            base_offset: base,
            last_offset: last,
            rolled,
            duplicate: false,
        })
    }

    /// Starts a new segment and seals `active`. Caller holds the writer lock. The new file is
    /// created first, so a failure leaves `active` appendable; a failed seal (fsync) fails the log.
    fn roll_locked(&self, active: &Arc<Segment>) -> Result<Arc<Segment>> {
        let next = Arc::new(Segment::create(
            &self.dir,
            active.next_offset(),
            self.cfg.index_interval_bytes,
        )?);
        if let Err(e) = active.seal().and_then(|()| sync_dir(&self.dir)) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.durable_next
            .store(active.next_offset(), Ordering::Release);
        // Sealed: the records go up as a sealed segment now, not as a cut.
        self.tail_since.store(0, Ordering::Release);
        self.segments
            .write()
            .expect("segments lock poisoned")
            .push(next.clone());
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
            sealed_base = active.base_offset, next_base = next.base_offset, "segment sealed");
        Ok(next)
    }

    /// Seals the active segment if it holds data and is older than `segment_ms`, or always when
    /// `force`. Returns true when a segment was sealed.
    pub fn seal_active(&self, force: bool) -> Result<bool> {
        let _w = self.writer.lock().expect("writer lock poisoned");
        let active = self.active();
        if active.is_empty() || self.is_released() {
            return Ok(false);
        }
        let old = active.opened_at.elapsed() >= Duration::from_millis(self.cfg.segment_ms);
        if force || old {
            self.roll_locked(&active)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Takes this log's bytes out of the tier's total (when the partition closes). From then on
    /// the log changes nothing on disk (a reopened partition owns the directory): appends fail
    /// with `Closed`, seals and retention do nothing.
    pub fn release(&self) {
        let _w = self.writer.lock().expect("writer lock poisoned");
        if !self.released.swap(true, Ordering::AcqRel) {
            self.global.fetch_sub(self.bytes(), Ordering::AcqRel);
        }
    }

    /// Whether an fsync failed: the log takes no appends until it is reopened.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Fails the log as a failed fsync would (tests of what follows one).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn fail_for_test(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Whether [`PartitionLog::release`] was called.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Seals the active segment if some of its records are committed already (by cuts), so that
    /// retention can delete it once the rest is committed too. Returns true when it sealed.
    pub fn seal_committed(&self) -> Result<bool> {
        let _w = self.writer.lock().expect("writer lock poisoned");
        let active = self.active();
        if active.is_empty() || self.is_released() || self.uploaded_next() <= active.base_offset {
            return Ok(false);
        }
        self.roll_locked(&active)?;
        Ok(true)
    }

    /// fsyncs the active segment if anything was appended since the last sync.
    pub fn flush(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // No writer lock: appends go on during the sync. Reading `next` before the active segment
        // makes `durable_next` safe even if the segment rolls meanwhile (rolling syncs it).
        let next = self.next_offset();
        if let Err(e) = self.active().sync() {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        self.durable_next.fetch_max(next, Ordering::AcqRel);
        Ok(())
    }

    /// What sealed segments hold from offset `from` on (at least what is committed to the cold
    /// manifest), oldest first: the first span starts mid-segment when a prefix of that segment
    /// was committed by [`PartitionLog::cut`]. None after a failed fsync: what is on disk is
    /// unknown until the log is reopened and recovered.
    pub fn pending_uploads(&self, from: i64) -> Result<Vec<Span>> {
        if self.is_failed() {
            return Ok(Vec::new());
        }
        let from = from.max(self.uploaded_next());
        self.snapshot()
            .into_iter()
            .filter(|s| s.is_sealed() && s.next_offset() > from)
            .map(|s| Span::of(s, from))
            .collect()
    }

    /// The active segment's records from `from` on, as they are now, for an upload that commits
    /// them without sealing the segment (and so without waiting for the local disk: see
    /// `docs/durability.md`). None when there are none, when `from` is not in the active
    /// segment (sealed segments come first), or after a failed fsync.
    pub fn cut(&self, from: i64) -> Result<Option<Span>> {
        let _w = self.writer.lock().expect("writer lock poisoned");
        if self.is_failed() {
            return Ok(None);
        }
        let active = self.active();
        if from < active.base_offset.max(self.uploaded_next()) || from >= active.next_offset() {
            return Ok(None);
        }
        let span = Span::of(active, from)?;
        self.tail_since.store(0, Ordering::Release);
        Ok(Some(span))
    }

    /// When the active segment's records that no cut covers yet have waited `interval`: the
    /// moment the uploader cuts them whatever the acks (this bounds what a takeover without
    /// hand-off can lose). `None` when there are none.
    pub fn tail_due_at(&self, interval: Duration) -> Option<tokio::time::Instant> {
        match self.tail_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                tokio::time::Instant::from_std(mono_base())
                    + Duration::from_millis(since - 1)
                    + interval,
            ),
        }
    }

    /// Records that everything below `next` is committed to the cold manifest.
    pub fn mark_uploaded(&self, next: i64) {
        self.uploaded_next.fetch_max(next, Ordering::AcqRel);
        let mut a = self.arrivals.lock().expect("arrivals lock poisoned");
        // Keep the last sample at or below the first record still to upload.
        while a.len() >= 2 && a[1].0 <= next {
            a.pop_front();
        }
        if a.len() == 1 && next >= self.next_offset() {
            a.clear();
        }
    }

    /// Notes that record `offset` arrived now (called under the writer lock).
    fn sample_arrival(&self, offset: i64) {
        let now = mono_ms();
        let mut a = self.arrivals.lock().expect("arrivals lock poisoned");
        if a.back().is_some_and(|&(_, t)| now < t + ARRIVAL_SAMPLE_MS) {
            return;
        }
        if a.len() >= ARRIVALS_MAX {
            // Keep the first (it dates what is waiting now), drop every other one after it.
            let kept: std::collections::VecDeque<_> = a
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, s)| *s)
                .collect();
            *a = kept;
        }
        a.push_back((offset, now));
    }

    /// How long the oldest record not yet committed to the cold manifest has waited (zero
    /// when there is none). An overestimate by at most [`ARRIVAL_SAMPLE_MS`], or by the gap
    /// between kept samples after many were dropped.
    pub fn upload_lag(&self) -> Duration {
        let up = self.uploaded_next();
        if up >= self.next_offset() {
            return Duration::ZERO;
        }
        let a = self.arrivals.lock().expect("arrivals lock poisoned");
        a.front().map_or(Duration::ZERO, |&(_, t)| {
            Duration::from_millis(mono_ms().saturating_sub(t))
        })
    }

    /// Deletes uploaded segments beyond the hot retention limits, or (when `over_budget`) every
    /// uploaded segment. Returns the bytes freed.
    pub fn enforce_retention(&self, over_budget: bool) -> Result<u64> {
        if self.is_released() {
            return Ok(0);
        }
        let up = self.uploaded_next();
        let max_age = Duration::from_millis(self.cfg.hot_retention_ms);
        let mut freed = 0u64;
        loop {
            let victim = {
                let segs = self.segments.read().expect("segments lock poisoned");
                let total: u64 = segs.iter().map(|s| s.size()).sum();
                match segs.first() {
                    Some(s) if segs.len() > 1 && s.is_sealed() && s.next_offset() <= up => {
                        let aged = file_age(&s.path).is_some_and(|a| a >= max_age);
                        if over_budget || aged || total > self.cfg.hot_retention_bytes {
                            Some(s.clone())
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            };
            let Some(victim) = victim else { break };
            std::fs::remove_file(&victim.path).map_err(|e| Error::io(&victim.path, e))?;
            self.segments
                .write()
                .expect("segments lock poisoned")
                .retain(|s| !Arc::ptr_eq(s, &victim));
            {
                let _w = self.writer.lock().expect("writer lock poisoned");
                self.bytes.fetch_sub(victim.size(), Ordering::AcqRel);
                if !self.released.load(Ordering::Acquire) {
                    self.global.fetch_sub(victim.size(), Ordering::AcqRel);
                }
            }
            freed += victim.size();
            tracing::debug!(topic = %self.id.topic, partition = self.id.partition,
                base = victim.base_offset, "deleted uploaded hot segment");
        }
        Ok(freed)
    }

    /// Whole batches from `offset` on, up to about `max_bytes` (at least one batch when any
    /// exists). `None` when `offset` is below what the hot tier still holds.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Option<Vec<RecordBatch>>> {
        let segs = self.snapshot();
        let Some(first) = segs.first() else {
            return Ok(Some(Vec::new()));
        };
        if offset < first.base_offset {
            return Ok(None);
        }
        let mut i = segs.partition_point(|s| s.base_offset <= offset) - 1;
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut pos = segs[i].position_for_offset(offset);
        loop {
            let seg = &segs[i];
            let batches = seg.read_batches(pos, max_bytes.saturating_sub(total).max(1), offset)?;
            // A read may stop before the segment's end (its buffer ran out); only a read that
            // reached the end may continue into the next segment, or offsets would be skipped.
            let reached_end = batches
                .last()
                .is_none_or(|b| b.header().next_offset() >= seg.next_offset());
            for b in batches {
                if b.header().next_offset() <= offset {
                    continue;
                }
                total += b.len();
                out.push(b);
            }
            i += 1;
            if !reached_end || i == segs.len() || (!out.is_empty() && total >= max_bytes) {
                break;
            }
            pos = 0;
        }
        Ok(Some(out))
    }

    /// Where each leader epoch's batches begin in the hot tier, oldest first.
    pub fn epoch_runs(&self) -> Vec<EpochRun> {
        let mut runs = Vec::new();
        for seg in self.snapshot() {
            for run in seg.epoch_runs() {
                push_epoch_run(&mut runs, run);
            }
        }
        runs
    }

    /// The record with the highest timestamp below offset `below` (the lowest offset among
    /// equal timestamps), as `(offset, timestamp)`, if it [`beats`] `best` (found elsewhere,
    /// say in the cold tier). Segments and batches whose maximum cannot beat it are skipped
    /// unread.
    pub fn max_timestamp_record(
        &self,
        below: i64,
        mut best: Option<(i64, i64)>,
    ) -> Result<Option<(i64, i64)>> {
        for seg in self.snapshot() {
            if best.is_some_and(|(_, t)| seg.max_timestamp() < t) {
                continue;
            }
            let past_below = each_batch(&seg, 0, |b| {
                let h = b.header();
                if h.base_offset >= below {
                    return Ok(ControlFlow::Break(()));
                }
                if beats(best, h.base_offset, h.max_timestamp) {
                    for r in b.records()? {
                        if r.offset < below && beats(best, r.offset, r.timestamp) {
                            best = Some((r.offset, r.timestamp));
                        }
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if past_below.is_some() {
                break;
            }
        }
        Ok(best)
    }

    /// First offset whose record timestamp is ≥ `ts` among the hot segments, if any.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<i64>> {
        for seg in self.snapshot() {
            if seg.max_timestamp() < ts {
                continue;
            }
            let hit = each_batch(&seg, seg.position_for_timestamp(ts), |b| {
                if b.header().max_timestamp >= ts
                    && let Some(r) = b.records()?.into_iter().find(|r| r.timestamp >= ts)
                {
                    return Ok(ControlFlow::Break(r.offset));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if hit.is_some() {
                return Ok(hit);
            }
        }
        Ok(None)
    }
}

/// Whether a record at `offset` stamped `ts` (or a batch or object whose first offset and
/// highest timestamp these are) can beat `best` as the answer to "the record with the highest
/// timestamp": a higher timestamp, or the same one at a lower offset.
pub(crate) fn beats(best: Option<(i64, i64)>, offset: i64, ts: i64) -> bool {
    best.is_none_or(|(o, t)| ts > t || (ts == t && offset < o))
}

/// Calls `visit` on each of `seg`'s batches from byte position `pos` on, in order, until it
/// breaks with a value (`None`: it never did).
fn each_batch<T>(
    seg: &Segment,
    mut pos: u64,
    mut visit: impl FnMut(&RecordBatch) -> Result<ControlFlow<T>>,
) -> Result<Option<T>> {
    loop {
        let batches = seg.read_batches(pos, 1 << 20, i64::MIN)?;
        if batches.is_empty() {
            return Ok(None);
        }
        for b in &batches {
            pos += segment::frame_len(b.len());
            if let ControlFlow::Break(v) = visit(b)? {
                return Ok(Some(v));
            }
        }
    }
}

/// fsyncs a directory, so that files created, truncated or removed in it stay so.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

fn file_age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        if !*self.released.get_mut() {
            self.global
                .fetch_sub(*self.bytes.get_mut(), Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests;
