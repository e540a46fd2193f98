//! Kafka record batch v2: the unit the hot tier stores and the unit producers send.
//!
//! Layout (big-endian, as Kafka defines it):
//!
//! ```text
//! 0  base_offset            i64   assigned by the log on append (not covered by the batch CRC)
//! 8  batch_length           i32   bytes after this field
//! 12 partition_leader_epoch i32   set by the log on append (not covered by the batch CRC)
//! 16 magic                  i8    = 2
//! 17 crc                    u32   CRC-32C of bytes [21..]
//! 21 attributes             i16   bits 0-2 codec, 4 transactional, 5 control
//! 23 last_offset_delta      i32
//! 27 base_timestamp         i64
//! 35 max_timestamp          i64
//! 43 producer_id            i64   -1 when absent
//! 51 producer_epoch         i16   -1 when absent
//! 53 base_sequence          i32   -1 when absent
//! 57 record_count           i32
//! 61 records (compressed as a whole when the codec is not none)
//! ```
//!
//! Each record: varint length, i8 attributes, varlong timestamp delta, varint offset delta,
//! varint key length (-1 = null) and key, varint value length (-1 = null) and value, varint header
//! count, then per header a varint key length and UTF-8 key, a varint value length (-1 = null) and value.
//!
//! Invariants: a [`RecordBatch`] always holds a structurally valid v2 header whose CRC matched when
//! it was parsed; offsets within a batch are `base_offset + offset_delta` with deltas
//! `0..record_count` (batches tierlog builds from a compacted log skip some: increasing
//! deltas up to `last_offset_delta`).

use bytes::{BufMut, Bytes, BytesMut};

/// Why a batch was refused. `tier` and the front ends map these onto their own errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes are not a valid v2 batch (bad CRC, bad structure, bad deltas).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A feature the format allows but this build does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Size of the fixed v2 batch header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
const MAGIC: i8 = 2;
const CRC_START: usize = 21;
/// The largest decompressed batch body accepted (a bound against decompression bombs).
pub const MAX_DECOMPRESSED: usize = 64 << 20;
/// How many times its compressed size a batch body may expand to, past [`EXPANSION_FLOOR`]:
/// what a node holds for a request stays proportional to the bytes it received.
pub const MAX_EXPANSION: usize = 256;
/// A compressed body may always expand to this many bytes, whatever its ratio (a record over
/// the size limit but highly compressible still gets its own RECORD_TOO_LARGE).
pub const EXPANSION_FLOOR: usize = 8 << 20;

/// The most a compressed body of `compressed` bytes may decompress to.
pub fn decompressed_limit(compressed: usize) -> usize {
    compressed
        .saturating_mul(MAX_EXPANSION)
        .clamp(EXPANSION_FLOOR, MAX_DECOMPRESSED)
}
/// The most records one batch may hold. Decoding a batch holds a record (about 100 bytes) per
/// record; this bounds that to a few tens of MiB whatever the body.
pub const MAX_BATCH_RECORDS: i32 = 1 << 18;
/// The fewest bytes one record takes in a batch body: its length, attributes, timestamp delta,
/// offset delta, key length, value length and header count, one byte each at least. A header's
/// record count is checked against the body's size with it before it sizes anything.
pub const MIN_RECORD_BYTES: usize = 7;

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Result<Self> {
        Ok(match attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(Error::invalid(format!("unknown compression codec {other}"))),
        })
    }

    fn bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// A record header: a UTF-8 key and an optional value. Keys may repeat, as in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record with its absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// Bytes of payload this record carries (key, value, headers), the figure size limits use.
    pub fn payload_len(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// Producer identity carried by a batch, for idempotence and transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerInfo {
    pub const NONE: ProducerInfo = ProducerInfo {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// The parsed fixed header of a v2 batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer: ProducerInfo,
    pub record_count: i32,
}

impl BatchHeader {
    pub fn compression(&self) -> Result<Compression> {
        Compression::from_attributes(self.attributes)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    /// Offset of the last record: `base_offset + last_offset_delta` (saturating: a sender's base
    /// offset is not trusted until the log assigns its own).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
    /// The offset the log assigns next after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("slice of 4"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("slice of 8"))
}

/// A structurally valid v2 record batch, kept as the bytes it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
    header: BatchHeader,
}

impl RecordBatch {
    /// Parses and validates a batch: length, magic, CRC, counts. The bytes must hold exactly one batch.
    pub fn parse(bytes: Bytes) -> Result<Self> {
        Self::parse_as(bytes, false)
    }

    /// [`RecordBatch::parse`] of a batch whose offsets may have gaps (offset deltas that skip
    /// some, as a compacted log's batches do): its last offset delta may exceed the record
    /// count. Only for batches tierlog builds to send (see [`batches_of`]).
    pub fn parse_sparse(bytes: Bytes) -> Result<Self> {
        Self::parse_as(bytes, true)
    }

    fn parse_as(bytes: Bytes, sparse: bool) -> Result<Self> {
        let header = check_header(&bytes, sparse)?;
        let total = 12 + header.batch_length as usize;
        if total != bytes.len() {
            return Err(Error::invalid(format!(
                "batch length field says {total} bytes, frame holds {}",
                bytes.len()
            )));
        }
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        if crc != header.crc {
            return Err(Error::invalid(format!(
                "batch CRC mismatch: stored {:08x}, computed {crc:08x}",
                header.crc
            )));
        }
        Ok(RecordBatch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Returns this batch with the base offset and leader epoch the log assigned. Neither field is
    /// covered by the batch CRC, so the CRC stays valid.
    pub fn with_assigned(self, base_offset: i64, leader_epoch: i32) -> RecordBatch {
        let mut b = BytesMut::from(self.bytes);
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        let mut header = self.header;
        header.base_offset = base_offset;
        header.partition_leader_epoch = leader_epoch;
        RecordBatch {
            bytes: b.freeze(),
            header,
        }
    }

    /// Checks every record, not just the header: the structure decodes (after decompression),
    /// offset deltas are exactly `0..record_count`, and the header's max timestamp is the largest
    /// record timestamp. The log appends only validated batches, so what it acknowledges can
    /// always be read back and converted.
    pub fn validate(&self) -> Result<()> {
        let mut records = Vec::new();
        self.decode_into(&mut records)?;
        let base = self.header.base_offset;
        let dense = self.header.last_offset_delta == self.header.record_count - 1;
        let mut max_ts = i64::MIN;
        let mut prev = -1;
        for (i, r) in records.iter().enumerate() {
            let delta = r.offset - base;
            let fits = if dense {
                delta == i as i64
            } else {
                delta > prev
            };
            if !fits {
                return Err(Error::invalid(format!(
                    "record {i} has offset delta {delta} after {prev}"
                )));
            }
            prev = delta;
            max_ts = max_ts.max(r.timestamp);
        }
        if prev != i64::from(self.header.last_offset_delta) {
            return Err(Error::invalid(format!(
                "the last record has offset delta {prev}, the header says {}",
                self.header.last_offset_delta
            )));
        }
        if max_ts != self.header.max_timestamp {
            return Err(Error::invalid(format!(
                "header max timestamp {} but the records' largest is {max_ts}",
                self.header.max_timestamp
            )));
        }
        Ok(())
    }

    /// Decodes every record, decompressing when needed.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.decode_into(&mut out)?;
        Ok(out)
    }

    /// Appends every record to `out`, decompressing when needed.
    pub fn decode_into(&self, out: &mut Vec<Record>) -> Result<()> {
        let body = self.bytes.slice(HEADER_LEN..);
        let body = match self.header.compression()? {
            Compression::None => body,
            Compression::Zstd => Bytes::from(zstd_decompress(&body)?),
            Compression::Gzip => Bytes::from(read_bounded(
                "gzip",
                body.len(),
                flate2::read::MultiGzDecoder::new(&body[..]),
            )?),
            Compression::Snappy => Bytes::from(snappy_decompress(&body)?),
            Compression::Lz4 => Bytes::from(read_bounded(
                "lz4",
                body.len(),
                lz4_flex::frame::FrameDecoder::new(&body[..]),
            )?),
        };
        // The header's count comes from the sender: it sizes nothing until the body can hold it.
        let count = usize::try_from(self.header.record_count).unwrap_or(0);
        if count > body.len() / MIN_RECORD_BYTES {
            return Err(Error::invalid(format!(
                "header claims {count} records, but a body of {} bytes holds at most {}",
                body.len(),
                body.len() / MIN_RECORD_BYTES
            )));
        }
        out.reserve(count);
        let mut r = Reader { buf: &body, pos: 0 };
        for i in 0..self.header.record_count {
            let rec = decode_record(&mut r, &body, &self.header)
                .map_err(|e| Error::invalid(format!("record {i}: {e}")))?;
            out.push(rec);
        }
        if r.pos != body.len() {
            return Err(Error::invalid(format!(
                "{} trailing bytes after {} records",
                body.len() - r.pos,
                self.header.record_count
            )));
        }
        Ok(())
    }
}

/// Decompresses a zstd batch body, allocating what its frame header declares (bounded by
/// `MAX_DECOMPRESSED`), or streaming with the same bound when the frame does not say.
fn zstd_decompress(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let bad = |e: String| Error::invalid(format!("zstd batch body: {e}"));
    let limit = decompressed_limit(body.len());
    let over = |n: u64| too_large("zstd", body.len(), n);
    match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) if n <= limit as u64 => {
            zstd::bulk::decompress(body, n as usize).map_err(|e| bad(e.to_string()))
        }
        Ok(Some(n)) => Err(over(n)),
        _ => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| bad(e.to_string()))?
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            if out.len() > limit {
                return Err(over(out.len() as u64));
            }
            Ok(out)
        }
    }
}

/// The error for a body of `compressed` bytes that expands past its limit.
fn too_large(codec: &str, compressed: usize, n: u64) -> Error {
    let limit = decompressed_limit(compressed);
    Error::invalid(format!(
        "{codec} batch body: {compressed} compressed bytes expand to {n}, over the limit of {limit} ({MAX_EXPANSION} times, at least {EXPANSION_FLOOR}, at most {MAX_DECOMPRESSED})"
    ))
}

/// Reads a streaming decoder to its end, stopping one byte past the body's limit.
fn read_bounded(codec: &str, compressed: usize, decoder: impl std::io::Read) -> Result<Vec<u8>> {
    use std::io::Read;
    let limit = decompressed_limit(compressed);
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid(format!("{codec} batch body: {e}")))?;
    if out.len() > limit {
        return Err(too_large(codec, compressed, out.len() as u64));
    }
    Ok(out)
}

/// The framing Kafka's Java clients put around snappy blocks (xerial snappy-java).
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Decompresses a snappy body: raw snappy (librdkafka's), or xerial-framed blocks (the Java
/// client's), each block's declared length checked against the body's limit before it is
/// allocated.
fn snappy_decompress(body: &[u8]) -> Result<Vec<u8>> {
    let bad = |e: String| Error::invalid(format!("snappy batch body: {e}"));
    let limit = decompressed_limit(body.len());
    let block = |b: &[u8], room: usize| -> Result<Vec<u8>> {
        let n = snap::raw::decompress_len(b).map_err(|e| bad(e.to_string()))?;
        if n > room {
            return Err(too_large("snappy", body.len(), n as u64));
        }
        snap::raw::Decoder::new()
            .decompress_vec(b)
            .map_err(|e| bad(e.to_string()))
    };
    if !body.starts_with(XERIAL_MAGIC) {
        return block(body, limit);
    }
    // Magic, then a version and a compatible version (4 bytes each), then blocks.
    let mut rest = body
        .get(16..)
        .ok_or_else(|| bad("xerial header cut short".into()))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("xerial block length cut short".into()))?;
        let b = rest
            .get(4..4 + len)
            .ok_or_else(|| bad(format!("xerial block of {len} bytes cut short")))?;
        out.extend_from_slice(&block(b, limit - out.len())?);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Parses the fixed header and checks what can be checked without the body.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader> {
    check_header(b, false)
}

fn check_header(b: &[u8], sparse: bool) -> Result<BatchHeader> {
    if b.len() < HEADER_LEN {
        return Err(Error::invalid(format!(
            "batch of {} bytes is shorter than the {HEADER_LEN}-byte header",
            b.len()
        )));
    }
    let magic = b[16] as i8;
    if magic != MAGIC {
        return Err(Error::invalid(format!(
            "record batch magic {magic}, only v2 is supported"
        )));
    }
    let h = BatchHeader {
        base_offset: be_i64(b, 0),
        batch_length: be_i32(b, 8),
        partition_leader_epoch: be_i32(b, 12),
        crc: u32::from_be_bytes(b[17..21].try_into().expect("slice of 4")),
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer: ProducerInfo {
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
        },
        record_count: be_i32(b, 57),
    };
    if (h.batch_length as i64) < (HEADER_LEN as i64 - 12) {
        return Err(Error::invalid(format!(
            "batch length {} is too small",
            h.batch_length
        )));
    }
    if h.record_count <= 0 {
        return Err(Error::invalid("a batch must hold at least one record"));
    }
    if h.record_count > MAX_BATCH_RECORDS {
        return Err(Error::invalid(format!(
            "a batch holds at most {MAX_BATCH_RECORDS} records, this one claims {}",
            h.record_count
        )));
    }
    let deltas_fit = if sparse {
        h.last_offset_delta >= h.record_count - 1
    } else {
        h.last_offset_delta == h.record_count - 1
    };
    if !deltas_fit {
        return Err(Error::invalid(format!(
            "last offset delta {} does not match record count {}",
            h.last_offset_delta, h.record_count
        )));
    }
    if h.is_control() {
        return Err(Error::Unsupported("control batches".into()));
    }
    Compression::from_attributes(h.attributes)?;
    Ok(h)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varlong(&mut self) -> std::result::Result<i64, String> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("varint longer than 10 bytes".into());
            }
        }
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    fn varint(&mut self) -> std::result::Result<i32, String> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| format!("varint {v} out of i32 range"))
    }
    fn take(&mut self, n: usize) -> std::result::Result<std::ops::Range<usize>, String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end"))?;
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }
    fn nullable(&mut self, body: &Bytes) -> std::result::Result<Option<Bytes>, String> {
        let len = self.varint()?;
        match len {
            -1 => Ok(None),
            n if n < -1 => Err(format!("negative length {n}")),
            n => Ok(Some(body.slice(self.take(n as usize)?))),
        }
    }
}

fn decode_record(
    r: &mut Reader<'_>,
    body: &Bytes,
    h: &BatchHeader,
) -> std::result::Result<Record, String> {
    let len = r.varint()?;
    if len < 0 {
        return Err(format!("negative record length {len}"));
    }
    let start = r.pos;
    let end = start.saturating_add(len as usize);
    if end > r.buf.len() {
        return Err("record runs past the end of the batch".into());
    }
    r.pos += 1; // record attributes, unused in v2
    let ts_delta = r.varlong()?;
    let offset_delta = r.varint()?;
    let key = r.nullable(body)?;
    let value = r.nullable(body)?;
    let n_headers = r.varint()?;
    if n_headers < 0 {
        return Err(format!("negative header count {n_headers}"));
    }
    let mut headers = Vec::with_capacity(n_headers.min(64) as usize);
    for _ in 0..n_headers {
        let klen = r.varint()?;
        if klen < 0 {
            return Err("null header key".into());
        }
        let kr = r.take(klen as usize)?;
        let key = std::str::from_utf8(&r.buf[kr])
            .map_err(|_| "header key is not UTF-8".to_string())?
            .to_owned();
        let value = r.nullable(body)?;
        headers.push(Header { key, value });
    }
    if r.pos != end {
        return Err(format!(
            "record length says {len} bytes, fields used {}",
            r.pos - start
        ));
    }
    let offset = h
        .base_offset
        .checked_add(i64::from(offset_delta))
        .ok_or_else(|| format!("offset delta {offset_delta} overflows the base offset"))?;
    let timestamp = h
        .base_timestamp
        .checked_add(ts_delta)
        .ok_or_else(|| format!("timestamp delta {ts_delta} overflows the base timestamp"))?;
    Ok(Record {
        offset,
        timestamp,
        key,
        value,
        headers,
    })
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - z.leading_zeros() as usize).max(1).div_ceil(7)
}

fn put_nullable(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

fn nullable_len(v: Option<&[u8]>) -> usize {
    match v {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// Builds a v2 batch from records. Offsets are relative (0..n); the log assigns the base offset.
#[derive(Debug)]
pub struct BatchBuilder {
    compression: Compression,
    producer: ProducerInfo,
    transactional: bool,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    count: i32,
    /// The offset delta of the last record pushed (-1: none).
    last_delta: i64,
    records: BytesMut,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            producer: ProducerInfo::NONE,
            transactional: false,
            base_timestamp: None,
            max_timestamp: i64::MIN,
            count: 0,
            last_delta: -1,
            records: BytesMut::new(),
        }
    }

    pub fn producer(mut self, producer: ProducerInfo, transactional: bool) -> Self {
        self.producer = producer;
        self.transactional = transactional;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Encoded size of the records so far (before compression), plus the header.
    pub fn estimated_size(&self) -> usize {
        HEADER_LEN + self.records.len()
    }

    /// Appends a record with the given timestamp (ms), at the offset after the last one.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        let delta = self.last_delta + 1;
        self.push_at(delta, timestamp, key, value, headers);
    }

    /// The offset delta of the last record pushed (-1: none).
    pub fn last_delta(&self) -> i64 {
        self.last_delta
    }

    /// Appends a record at `offset_delta` from the batch's base offset, past the last one
    /// pushed (a gap makes a batch of a compacted log, sent with [`RecordBatch::parse_sparse`]).
    pub fn push_at(
        &mut self,
        offset_delta: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        assert!(
            offset_delta > self.last_delta && offset_delta <= i64::from(i32::MAX),
            "offset delta {offset_delta} after {}",
            self.last_delta
        );
        self.last_delta = offset_delta;
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp - base;
        let body_len = 1
            + varlong_len(ts_delta)
            + varlong_len(offset_delta)
            + nullable_len(key)
            + nullable_len(value)
            + varlong_len(headers.len() as i64)
            + headers
                .iter()
                .map(|h| nullable_len(Some(h.key.as_bytes())) + nullable_len(h.value.as_deref()))
                .sum::<usize>();
        let buf = &mut self.records;
        buf.reserve(body_len + 5);
        put_varlong(buf, body_len as i64);
        buf.put_i8(0);
        put_varlong(buf, ts_delta);
        put_varlong(buf, offset_delta);
        put_nullable(buf, key);
        put_nullable(buf, value);
        put_varlong(buf, headers.len() as i64);
        for h in headers {
            put_nullable(buf, Some(h.key.as_bytes()));
            put_nullable(buf, h.value.as_deref());
        }
        self.count += 1;
    }

    /// Encodes the batch (base offset 0). Fails on an empty builder or an unsupported codec.
    pub fn build(self) -> Result<RecordBatch> {
        if self.count == 0 {
            return Err(Error::invalid("a batch must hold at least one record"));
        }
        let body: Bytes = match self.compression {
            Compression::None => self.records.freeze(),
            Compression::Zstd => Bytes::from(
                zstd::bulk::compress(&self.records, 3)
                    .map_err(|e| Error::invalid(format!("zstd: {e}")))?,
            ),
            Compression::Gzip => {
                use std::io::Write;
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&self.records)
                    .and_then(|()| e.finish())
                    .map(Bytes::from)
                    .map_err(|e| Error::invalid(format!("gzip: {e}")))?
            }
            Compression::Snappy => Bytes::from(
                snap::raw::Encoder::new()
                    .compress_vec(&self.records)
                    .map_err(|e| Error::invalid(format!("snappy: {e}")))?,
            ),
            Compression::Lz4 => {
                use std::io::Write;
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(&self.records)
                    .map_err(|e| Error::invalid(format!("lz4: {e}")))?;
                Bytes::from(
                    e.finish()
                        .map_err(|e| Error::invalid(format!("lz4: {e}")))?,
                )
            }
        };
        let mut attributes = self.compression.bits();
        if self.transactional {
            attributes |= 0x10;
        }
        let base_ts = self.base_timestamp.unwrap_or(0);
        let mut b = BytesMut::with_capacity(HEADER_LEN + body.len());
        b.put_i64(0);
        b.put_i32((HEADER_LEN - 12 + body.len()) as i32);
        b.put_i32(-1);
        b.put_i8(MAGIC);
        b.put_u32(0); // crc, patched below
        b.put_i16(attributes);
        b.put_i32(self.last_delta as i32);
        b.put_i64(base_ts);
        b.put_i64(self.max_timestamp);
        b.put_i64(self.producer.producer_id);
        b.put_i16(self.producer.producer_epoch);
        b.put_i32(self.producer.base_sequence);
        b.put_i32(self.count);
        b.put_slice(&body);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        RecordBatch::parse_as(b.freeze(), self.last_delta != i64::from(self.count) - 1)
    }
}

/// The most record bytes [`batches_of`] puts in one batch.
pub const REENCODED_BATCH_BYTES: usize = 1 << 20;

/// Encodes records read back (decoded, from the cold tier) as v2 batches that carry their own
/// offsets and timestamps: batches of at most [`REENCODED_BATCH_BYTES`], uncompressed, stamped
/// with `leader_epoch`. Offsets may have gaps (a compacted log): a batch's offset deltas skip
/// them, as Kafka's compacted batches do. Records must be in offset order.
pub fn batches_of(records: &[Record], leader_epoch: i32) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut run: Option<(i64, BatchBuilder)> = None;
    for r in records {
        if let Some((base, b)) = &run
            && (r.offset - base > i64::from(i32::MAX)
                || r.offset - base <= b.last_delta()
                || b.estimated_size() + r.payload_len() > REENCODED_BATCH_BYTES
                || b.len() >= MAX_BATCH_RECORDS as usize)
        {
            let (base, b) = run.take().expect("checked above");
            out.push(b.build()?.with_assigned(base, leader_epoch));
        }
        let (base, b) = run.get_or_insert_with(|| (r.offset, BatchBuilder::new(Compression::None)));
        b.push_at(
            r.offset - *base,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    if let Some((base, b)) = run {
        out.push(b.build()?.with_assigned(base, leader_epoch));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
