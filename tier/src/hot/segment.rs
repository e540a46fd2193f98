//! One hot-tier segment file: `<base_offset:020>.log`, a sequence of frames.
//!
//! Frame: `u32 length (BE) | u32 CRC-32C of the batch (BE) | Kafka v2 record batch`. The frame CRC
//! covers every byte of the batch, including the base offset and leader epoch that the Kafka CRC
//! leaves out.
//!
//! Invariants:
//! - batches in a segment are contiguous: each base offset is the previous batch's next offset;
//! - `size` only ever covers whole frames; readers never look past it;
//! - a sealed segment was fsynced before the next segment was created, so a torn tail can only
//!   be in the last segment of a partition. A bad frame in a sealed segment is corruption.
//!
//! The sparse index (batch base offset, file position, running max timestamp before the batch) is
//! kept in memory and rebuilt on open by walking frame headers; it is never persisted.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;

use crate::batch::{self, HEADER_LEN, RecordBatch};
use crate::epochs::{EpochRun, push_epoch_run};
use crate::error::{Error, Result};

pub(crate) const FRAME_HEADER: usize = 8;

/// An index entry: a batch starts at `position` with base `offset`; every batch before it in the
/// segment has a max timestamp below or equal to `max_ts_before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: i64,
    pub position: u64,
    pub max_ts_before: i64,
}

/// What scanning a segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    pub size: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// The highest leader epoch among the segment's batches (-1 when empty).
    pub max_epoch: i32,
    /// Where each leader epoch's batches begin.
    pub epoch_runs: Vec<EpochRun>,
    pub index: Vec<IndexEntry>,
    /// Where the scan stopped early and why (only for a torn or corrupt tail).
    pub stopped: Option<(u64, String)>,
}

pub(crate) fn segment_file_name(base: i64) -> String {
    format!("{base:020}.log")
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    file: File,
    size: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    max_epoch: std::sync::atomic::AtomicI32,
    epoch_runs: RwLock<Vec<EpochRun>>,
    sealed: AtomicBool,
    /// A failed write could not be cut back: the file's tail is unknown.
    broken: AtomicBool,
    index: RwLock<Vec<IndexEntry>>,
    index_interval: u64,
    /// Bytes written since the last index entry (writer only).
    since_index: AtomicU64,
    pub opened_at: Instant,
}

impl Segment {
    /// Creates a new, empty segment file. Fails if it exists.
    pub fn create(dir: &Path, base: i64, index_interval: u64) -> Result<Segment> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Segment::new(
            path,
            file,
            base,
            index_interval,
            empty_scan(base),
        ))
    }

    /// Opens an existing segment. A sealed segment must be whole; the last (active) segment has a
    /// torn or corrupt tail truncated, and the log says which offsets went. Damage with valid
    /// batches after it is an error, unless every offset from the damage to the end of those
    /// batches is below `cold_next` (committed to the cold tier, which acks=all cuts do before
    /// the local sync): then the hot copy from the damage on is dropped like a torn tail.
    pub fn open(
        path: &Path,
        base: i64,
        index_interval: u64,
        is_last: bool,
        cold_next: i64,
    ) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let scan = scan(&file, base, index_interval, is_last)?;
        if let Some((pos, reason)) = &scan.stopped {
            let after = if is_last {
                valid_frames_after(&file, *pos).map_err(|e| Error::io(path, e))?
            } else {
                None
            };
            match after {
                Some(end) if end > cold_next => {
                    let extent = if end == i64::MAX {
                        "past further damage".to_string()
                    } else {
                        format!("up to offset {end}")
                    };
                    return Err(Error::Corrupt {
                        location: path.display().to_string(),
                        position: *pos,
                        reason: format!(
                            "{reason}; valid batches {extent} follow it, so this is damage, not \
                             a torn write (the cold tier holds offsets below {cold_next} only)"
                        ),
                    });
                }
                Some(end) => tracing::warn!(
                    file = %path.display(), position = pos, first_lost_offset = scan.next_offset,
                    valid_after_until = end, cold_next, %reason,
                    "damage in the active segment with valid batches after it, all of them \
                     committed to the cold tier: dropping the hot copy from the damage on"
                ),
                None => {}
            }
            if !is_last {
                return Err(Error::Corrupt {
                    location: path.display().to_string(),
                    position: *pos,
                    reason: reason.clone(),
                });
            }
            if after.is_none() {
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
                tracing::warn!(
                    file = %path.display(),
                    position = pos,
                    dropped_bytes = len - pos,
                    first_lost_offset = scan.next_offset,
                    %reason,
                    "truncating torn tail of the active segment; offsets from first_lost_offset on were never acknowledged durably"
                );
            }
            file.set_len(*pos).map_err(|e| Error::io(path, e))?;
            file.sync_all().map_err(|e| Error::io(path, e))?;
        }
        let seg = Segment::new(path.to_path_buf(), file, base, index_interval, scan);
        if !is_last {
            seg.sealed.store(true, Ordering::Release);
        }
        Ok(seg)
    }

    fn new(path: PathBuf, file: File, base: i64, index_interval: u64, scan: Scan) -> Segment {
        let since = scan
            .index
            .last()
            .map_or(0, |e| scan.size.saturating_sub(e.position));
        Segment {
            base_offset: base,
            path,
            file,
            size: AtomicU64::new(scan.size),
            next_offset: AtomicI64::new(scan.next_offset),
            max_timestamp: AtomicI64::new(scan.max_timestamp),
            max_epoch: std::sync::atomic::AtomicI32::new(scan.max_epoch),
            epoch_runs: RwLock::new(scan.epoch_runs),
            sealed: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            index: RwLock::new(scan.index),
            index_interval,
            since_index: AtomicU64::new(since),
            opened_at: Instant::now(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }
    /// The highest leader epoch among the segment's batches (-1 when empty).
    pub fn max_epoch(&self) -> i32 {
        self.max_epoch.load(Ordering::Acquire)
    }
    /// Where each leader epoch's batches begin in it.
    pub fn epoch_runs(&self) -> Vec<EpochRun> {
        self.epoch_runs
            .read()
            .expect("epoch runs lock poisoned")
            .clone()
    }
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Cuts the file back to `pos` after a failed write; marks the segment broken if it cannot.
    fn cut_back(&self, pos: u64) {
        if self.file.set_len(pos).is_err() {
            self.broken.store(true, Ordering::Release);
        }
    }

    /// Appends one batch at `base_offset` (which must equal `next_offset()`) with the leader
    /// epoch, writing the frame as `[len | crc | patched 16-byte batch prefix]` plus the untouched
    /// rest of the batch in one `writev`: the batch bytes are never copied. On a failed write the
    /// file is cut back, so no partial frame stays behind. Callers serialize appends.
    pub fn append(&self, batch: &RecordBatch, base_offset: i64, leader_epoch: i32) -> Result<()> {
        if self.is_sealed() {
            return Err(Error::invalid(format!(
                "segment {} is sealed",
                self.path.display()
            )));
        }
        debug_assert_eq!(base_offset, self.next_offset());
        let h = batch.header();
        let bytes = batch.as_bytes();
        let mut prefix = [0u8; FRAME_HEADER + 16];
        prefix[0..4].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
        prefix[8..16].copy_from_slice(&base_offset.to_be_bytes());
        prefix[16..20].copy_from_slice(&bytes[8..12]);
        prefix[20..24].copy_from_slice(&leader_epoch.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&prefix[8..24]), &bytes[16..]);
        prefix[4..8].copy_from_slice(&crc.to_be_bytes());
        let pos = self.size();
        let mut bufs = [IoSlice::new(&prefix), IoSlice::new(&bytes[16..])];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        while !slices.is_empty() {
            match (&self.file).write_vectored(slices) {
                Ok(0) => {
                    self.cut_back(pos);
                    return Err(Error::io(&self.path, std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Cut back whatever part of the frame reached the file; if even that fails,
                    // the log stops taking appends and recovery drops the torn tail on reopen.
                    self.cut_back(pos);
                    return Err(Error::io(&self.path, e));
                }
            }
        }
        let frame_len = (FRAME_HEADER + bytes.len()) as u64;
        let since = self.since_index.load(Ordering::Relaxed);
        if pos == 0 || since >= self.index_interval {
            let max_before = self.max_timestamp();
            self.index
                .write()
                .expect("index lock poisoned")
                .push(IndexEntry {
                    offset: base_offset,
                    position: pos,
                    max_ts_before: max_before,
                });
            self.since_index.store(frame_len, Ordering::Relaxed);
        } else {
            self.since_index.store(since + frame_len, Ordering::Relaxed);
        }
        self.max_timestamp
            .fetch_max(h.max_timestamp, Ordering::AcqRel);
        if leader_epoch > self.max_epoch.fetch_max(leader_epoch, Ordering::AcqRel) {
            let run = EpochRun {
                epoch: leader_epoch,
                start: base_offset,
            };
            let mut runs = self.epoch_runs.write().expect("epoch runs lock poisoned");
            push_epoch_run(&mut runs, run);
        }
        self.next_offset.store(
            base_offset + i64::from(h.last_offset_delta) + 1,
            Ordering::Release,
        );
        self.size.store(pos + frame_len, Ordering::Release);
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// Syncs and marks the segment sealed: no more appends.
    pub fn seal(&self) -> Result<()> {
        self.sync()?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }

    /// Position of the last indexed batch at or before `offset`.
    pub fn position_for_offset(&self, offset: i64) -> u64 {
        let idx = self.index.read().expect("index lock poisoned");
        let i = idx.partition_point(|e| e.offset <= offset);
        if i == 0 { 0 } else { idx[i - 1].position }
    }

    /// Exact position of the batch that starts at `offset` (the size when `offset` is the
    /// segment's next offset): from the index entry before it, frame headers are walked. An
    /// offset inside a batch or outside the segment is an error.
    pub fn position_of(&self, offset: i64) -> Result<u64> {
        let (end, next) = (self.size(), self.next_offset());
        if offset == next {
            return Ok(end);
        }
        let fail = |position: u64, reason: String| Error::Corrupt {
            location: self.path.display().to_string(),
            position,
            reason,
        };
        if offset < self.base_offset || offset > next {
            return Err(fail(
                0,
                format!(
                    "offset {offset} is outside the segment [{}, {next})",
                    self.base_offset
                ),
            ));
        }
        let mut pos = self.position_for_offset(offset);
        let mut head = [0u8; FRAME_HEADER + 8];
        while pos < end {
            self.file
                .read_exact_at(&mut head, pos)
                .map_err(|e| Error::io(&self.path, e))?;
            let len = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
            let base = i64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
            match base.cmp(&offset) {
                std::cmp::Ordering::Equal => return Ok(pos),
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => pos += FRAME_HEADER as u64 + len,
            }
        }
        Err(fail(pos, format!("no batch starts at offset {offset}")))
    }

    /// Position from which a scan finds the first batch whose max timestamp is ≥ `ts`.
    pub fn position_for_timestamp(&self, ts: i64) -> u64 {
        let idx = self.index.read().expect("index lock poisoned");
        let i = idx.partition_point(|e| e.max_ts_before < ts);
        if i == 0 { 0 } else { idx[i - 1].position }
    }

    /// Reads whole batches starting at `position`, stopping once `max_bytes` is reached (at least
    /// one batch is returned when any exists). One read and one buffer serve all the batches it
    /// covers; every frame is checked against its CRC.
    /// Batches ending at or before `from` are returned but not counted toward `max_bytes`.
    pub fn read_batches(
        &self,
        position: u64,
        max_bytes: usize,
        from: i64,
    ) -> Result<Vec<RecordBatch>> {
        self.read_batches_before(position, self.size(), max_bytes, from)
    }

    /// [`Segment::read_batches`] of the frames that end at or before the position `end`.
    fn read_batches_before(
        &self,
        position: u64,
        end: u64,
        max_bytes: usize,
        from: i64,
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        if position >= end {
            return Ok(out);
        }
        let want = (max_bytes as u64)
            .clamp(64 << 10, 16 << 20)
            .min(end - position);
        let mut buf = BytesMut::zeroed(want as usize);
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| Error::io(&self.path, e))?;
        let buf = buf.freeze();
        let mut at = 0usize;
        let mut total = 0usize;
        while position + (at as u64) < end && (out.is_empty() || total < max_bytes) {
            let frame_pos = position + at as u64;
            let whole = buf.len() >= at + FRAME_HEADER && {
                let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                buf.len() >= at + FRAME_HEADER + len
            };
            let (batch, len) = if whole {
                let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_be_bytes(buf[at + 4..at + 8].try_into().expect("4 bytes"));
                let body = buf.slice(at + FRAME_HEADER..at + FRAME_HEADER + len);
                (self.check_frame(frame_pos, crc, body)?, FRAME_HEADER + len)
            } else if out.is_empty() {
                // A first frame larger than the buffer: read it on its own.
                let (b, next) = self.read_frame(frame_pos, end)?;
                let n = (next - frame_pos) as usize;
                (b, n)
            } else {
                break;
            };
            if batch.header().next_offset() > from {
                total += batch.len();
            }
            out.push(batch);
            at += len;
        }
        Ok(out)
    }

    fn check_frame(&self, position: u64, crc: u32, body: bytes::Bytes) -> Result<RecordBatch> {
        let corrupt = |reason: String| Error::Corrupt {
            location: self.path.display().to_string(),
            position,
            reason,
        };
        if crc32c::crc32c(&body) != crc {
            return Err(corrupt("frame CRC mismatch".into()));
        }
        RecordBatch::parse(body).map_err(|e| corrupt(e.to_string()))
    }

    /// Reads every batch of the segment, to its end.
    #[cfg(test)]
    pub fn read_all(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for chunk in self.chunks(0..self.size(), 16 << 20) {
            out.extend(chunk?);
        }
        Ok(out)
    }

    /// The batches in the byte range `bytes` (which starts and ends at frame boundaries) front to
    /// back, about `chunk_bytes` at a time (for upload: memory stays bounded by one chunk, not
    /// the segment). Stops after the first error.
    pub fn chunks(
        &self,
        bytes: std::ops::Range<u64>,
        chunk_bytes: usize,
    ) -> impl Iterator<Item = Result<Vec<RecordBatch>>> + '_ {
        let std::ops::Range {
            start: mut pos,
            end,
        } = bytes;
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed || pos >= end {
                return None;
            }
            match self.read_batches_before(pos, end, chunk_bytes, i64::MIN) {
                Ok(b) if b.is_empty() => None,
                Ok(b) => {
                    pos += b.iter().map(|b| frame_len(b.len())).sum::<u64>();
                    Some(Ok(b))
                }
                Err(e) => {
                    failed = true;
                    Some(Err(e))
                }
            }
        })
    }

    fn read_frame(&self, position: u64, end: u64) -> Result<(RecordBatch, u64)> {
        let corrupt = |reason: String| Error::Corrupt {
            location: self.path.display().to_string(),
            position,
            reason,
        };
        let mut head = [0u8; FRAME_HEADER];
        self.file
            .read_exact_at(&mut head, position)
            .map_err(|e| Error::io(&self.path, e))?;
        let len = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        let next = position + FRAME_HEADER as u64 + len;
        if next > end {
            return Err(corrupt(format!(
                "frame of {len} bytes runs past the end ({end})"
            )));
        }
        let mut buf = BytesMut::zeroed(len as usize);
        self.file
            .read_exact_at(&mut buf, position + FRAME_HEADER as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok((self.check_frame(position, crc, buf.freeze())?, next))
    }
}

fn empty_scan(base: i64) -> Scan {
    Scan {
        size: 0,
        next_offset: base,
        max_timestamp: i64::MIN,
        max_epoch: -1,
        epoch_runs: Vec::new(),
        index: Vec::new(),
        stopped: None,
    }
}

/// Walks a segment's frames. With `verify` every frame's CRC and batch structure is checked (for
/// the active segment, which may have a torn tail); otherwise only frame and batch headers are read.
pub(crate) fn scan(file: &File, base: i64, index_interval: u64, verify: bool) -> Result<Scan> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("<segment>", e))?
        .len();
    let mut s = empty_scan(base);
    let mut since_index = u64::MAX;
    let mut pos = 0u64;
    let mut head = vec![0u8; FRAME_HEADER + HEADER_LEN];
    let mut body = Vec::new();
    while pos < len {
        let stop = |s: &mut Scan, why: String| {
            s.stopped = Some((pos, why));
        };
        if len - pos < (FRAME_HEADER + HEADER_LEN) as u64 {
            stop(
                &mut s,
                format!("{} trailing bytes, shorter than a frame", len - pos),
            );
            break;
        }
        file.read_exact_at(&mut head, pos)
            .map_err(|e| Error::io("<segment>", e))?;
        let flen = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
        let fcrc = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
        let next = pos + FRAME_HEADER as u64 + flen;
        if flen < HEADER_LEN as u64 || next > len {
            stop(
                &mut s,
                format!("frame length {flen} does not fit in the file"),
            );
            break;
        }
        if verify {
            body.resize(flen as usize, 0);
            file.read_exact_at(&mut body, pos + FRAME_HEADER as u64)
                .map_err(|e| Error::io("<segment>", e))?;
            if crc32c::crc32c(&body) != fcrc {
                stop(&mut s, "frame CRC mismatch".into());
                break;
            }
        }
        let h = match batch::parse_header(&head[FRAME_HEADER..]) {
            Ok(h) => h,
            Err(e) => {
                stop(&mut s, format!("bad batch header: {e}"));
                break;
            }
        };
        if 12 + h.batch_length as u64 != flen {
            stop(&mut s, "batch length disagrees with frame length".into());
            break;
        }
        if h.base_offset != s.next_offset {
            let why = format!(
                "batch base offset {} where {} was expected",
                h.base_offset, s.next_offset
            );
            stop(&mut s, why);
            break;
        }
        if since_index >= index_interval {
            s.index.push(IndexEntry {
                offset: h.base_offset,
                position: pos,
                max_ts_before: s.max_timestamp,
            });
            since_index = 0;
        }
        since_index += next - pos;
        s.max_timestamp = s.max_timestamp.max(h.max_timestamp);
        s.max_epoch = s.max_epoch.max(h.partition_leader_epoch);
        let run = EpochRun {
            epoch: h.partition_leader_epoch,
            start: h.base_offset,
        };
        push_epoch_run(&mut s.epoch_runs, run);
        s.next_offset = h.next_offset();
        pos = next;
        s.size = pos;
    }
    Ok(s)
}

/// Whether whole, CRC-valid frames start where the (bad) frame at `pos` claims to end, and if
/// so the next offset after the run of them (`i64::MAX` when that run ends in another bad frame
/// that valid frames follow too: how far they go is unknown). A torn write leaves nothing valid
/// after it; damage in the middle of a file does.
fn valid_frames_after(file: &File, pos: u64) -> std::io::Result<Option<i64>> {
    let len = file.metadata()?.len();
    let Some(mut at) = claimed_end(file, pos, len)? else {
        return Ok(None);
    };
    let mut end = None;
    while let Some((next, next_offset)) = frame_at(file, at, len)? {
        end = Some(next_offset);
        at = next;
    }
    if end.is_some()
        && at < len
        && let Some(after) = claimed_end(file, at, len)?
        && frame_at(file, after, len)?.is_some()
    {
        return Ok(Some(i64::MAX));
    }
    Ok(end)
}

/// Where the frame at `pos` claims to end, if its header is in the file.
fn claimed_end(file: &File, pos: u64, len: u64) -> std::io::Result<Option<u64>> {
    let mut head = [0u8; FRAME_HEADER];
    if pos + FRAME_HEADER as u64 > len {
        return Ok(None);
    }
    file.read_exact_at(&mut head, pos)?;
    let flen = u64::from(u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")));
    Ok(Some(pos + FRAME_HEADER as u64 + flen))
}

/// The end and next offset of a whole, CRC-valid frame at `pos`, if there is one.
fn frame_at(file: &File, pos: u64, len: u64) -> std::io::Result<Option<(u64, i64)>> {
    let mut head = [0u8; FRAME_HEADER];
    if pos + (FRAME_HEADER + HEADER_LEN) as u64 > len {
        return Ok(None);
    }
    file.read_exact_at(&mut head, pos)?;
    let flen = u64::from(u32::from_be_bytes(head[0..4].try_into().expect("4 bytes")));
    if flen < HEADER_LEN as u64 || pos + FRAME_HEADER as u64 + flen > len {
        return Ok(None);
    }
    let mut body = vec![0u8; flen as usize];
    file.read_exact_at(&mut body, pos + FRAME_HEADER as u64)?;
    let crc = u32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
    Ok(match batch::parse_header(&body) {
        Ok(h) if crc32c::crc32c(&body) == crc => {
            Some((pos + FRAME_HEADER as u64 + flen, h.next_offset()))
        }
        _ => None,
    })
}

/// Bytes of a frame for a batch of `batch_len` bytes.
pub(crate) fn frame_len(batch_len: usize) -> u64 {
    (FRAME_HEADER + batch_len) as u64
}
