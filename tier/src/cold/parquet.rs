//! Cold segments as Parquet: one row per record.
//!
//! Columns: `partition` i32, `offset` i64, `timestamp` timestamp(ms, UTC), `key` binary?, `value`
//! binary?, `headers` list<struct<key utf8, value binary?>>, `producer_id` i64?, `producer_epoch`
//! i16?, `sequence` i32?, `transactional` bool. Producer fields are null when the batch had none
//! (producer id -1). zstd; `offset` and `timestamp` are delta-encoded with page-level statistics so
//! readers prune row groups and pages; payload columns carry no statistics. File key-value metadata
//! names the topic, partition and offset range, so a file explains itself without the manifest.
//!
//! Invariant: rows are in offset order, dense from the first to the last offset of the segment.

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, BinaryArray, Int64Array, ListArray, RecordBatch as ArrowBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::PartitionId;
use crate::batch::{Header, Record, RecordBatch};
use crate::error::{Error, Result};

/// The Parquet format version written in file metadata (`tierlog.format`).
pub const FORMAT_VERSION: &str = "1";

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new(
            "headers",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(header_fields()),
                false,
            ))),
            false,
        ),
        Field::new("producer_id", DataType::Int64, true),
        Field::new("producer_epoch", DataType::Int16, true),
        Field::new("sequence", DataType::Int32, true),
        Field::new("transactional", DataType::Boolean, false),
    ]))
});

/// The Arrow schema of cold segments (and of topic tables).
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Footer key-value metadata key holding the manifest delta a log object commits (see
/// `cold::manifest`).
pub const DELTA_KEY: &str = "tierlog.delta";
/// Footer key holding a CRC-32C of each row group's bytes (its column chunks, from the first
/// page to the end of the last), comma-separated in row-group order. Parquet's own page CRCs are
/// not written by the writer we use; this is what makes damage inside a segment's data a clear
/// error instead of other values. Objects written before it have none and are read unchecked.
pub const ROW_GROUP_CRC_KEY: &str = "tierlog.row_group_crc32c";

/// Footer key: a CRC-32C of each column chunk's bytes, the chunks of a row group
/// comma-separated in column order, row groups separated by `;`. A reader that needs only some
/// columns (a SQL scan) checks just the chunks it reads.
pub const CHUNK_CRC_KEY: &str = "tierlog.column_chunk_crc32c";

/// The byte range of one column chunk (its dictionary page, if any, and its data pages).
/// `Err` when the footer's offsets make no sense (damage).
pub fn chunk_range(
    c: &parquet::file::metadata::ColumnChunkMetaData,
) -> std::result::Result<std::ops::Range<u64>, String> {
    // As Parquet's `byte_range`, without its assertion.
    let col_start = match c.dictionary_page_offset() {
        Some(d) if d > 0 => d,
        _ => c.data_page_offset(),
    };
    let (Ok(s), Ok(len)) = (u64::try_from(col_start), u64::try_from(c.compressed_size())) else {
        return Err(format!(
            "column chunk at {col_start} of {} bytes",
            c.compressed_size()
        ));
    };
    Ok(s..s.saturating_add(len))
}

/// The byte range of row group `rg` in its file: from the first page of its first column chunk
/// to the end of its last. `Err` when the footer's offsets make no sense (damage).
pub fn row_group_range(
    rg: &parquet::file::metadata::RowGroupMetaData,
) -> std::result::Result<std::ops::Range<u64>, String> {
    let mut start = u64::MAX;
    let mut end = 0u64;
    for c in rg.columns() {
        let r = chunk_range(c)?;
        start = start.min(r.start);
        end = end.max(r.end);
    }
    Ok(start.min(end)..end)
}

/// The value of footer key `key`.
fn footer_value<'a>(kv: Option<&'a Vec<KeyValue>>, key: &str) -> Option<&'a str> {
    Some(
        kv?.iter()
            .find(|kv| kv.key == key)?
            .value
            .as_deref()
            .unwrap_or_default(),
    )
}

/// The row groups' CRCs as the footer stores them; `None` when the file has none, `Err` when
/// they do not parse (damage).
pub fn row_group_crcs(kv: Option<&Vec<KeyValue>>) -> Option<std::result::Result<Vec<u32>, String>> {
    let text = footer_value(kv, ROW_GROUP_CRC_KEY)?;
    Some(
        text.split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<u32>()
                    .map_err(|e| format!("{ROW_GROUP_CRC_KEY} {t:?}: {e}"))
            })
            .collect(),
    )
}

/// A CRC-32C over what a reader takes from a segment's footer besides the manifest delta: the
/// schema (types, logical types, levels), every row group's size and every column chunk's
/// place, sizes, codec, encodings and statistics, and the row-group and column-chunk CRCs. The delta (itself a
/// checksummed envelope) carries it in the segment's manifest entry, so footer damage that
/// still parses (a statistic, a logical type, an offset) is an error, not other values.
/// Computed from the parsed metadata, the same way on both sides.
pub fn footer_digest(
    schema: &parquet::schema::types::SchemaDescriptor,
    row_groups: &[parquet::file::metadata::RowGroupMetaData],
    crcs: &str,
) -> u32 {
    use std::fmt::Write;
    let mut text = String::new();
    for c in schema.columns() {
        let _ = write!(
            text,
            "c {} {:?} {:?} {:?} {} {} {};",
            c.path().string(),
            c.physical_type(),
            c.logical_type_ref(),
            c.converted_type(),
            c.max_def_level(),
            c.max_rep_level(),
            c.type_length(),
        );
    }
    for rg in row_groups {
        let _ = write!(text, "rg {} {};", rg.num_rows(), rg.total_byte_size());
        for c in rg.columns() {
            let stats = c.statistics().map(|s| {
                (
                    s.min_bytes_opt().map(<[u8]>::to_vec),
                    s.max_bytes_opt().map(<[u8]>::to_vec),
                    s.null_count_opt(),
                )
            });
            let _ = write!(
                text,
                "k {} {:?} {:?} {} {} {} {} {:?} {:?};",
                c.column_path().string(),
                c.compression(),
                c.encodings().collect::<Vec<_>>(),
                c.num_values(),
                c.compressed_size(),
                c.uncompressed_size(),
                c.data_page_offset(),
                c.dictionary_page_offset(),
                stats,
            );
        }
    }
    text.push_str(crcs);
    crc32c::crc32c(text.as_bytes())
}

/// The digest of a read footer ([`footer_digest`]).
pub fn digest_of(md: &parquet::file::metadata::ParquetMetaData) -> u32 {
    let kv = md.file_metadata().key_value_metadata();
    let crcs = crc_text(
        footer_value(kv, ROW_GROUP_CRC_KEY).unwrap_or_default(),
        footer_value(kv, CHUNK_CRC_KEY).unwrap_or_default(),
    );
    footer_digest(md.file_metadata().schema_descr(), md.row_groups(), &crcs)
}

/// What [`footer_digest`] covers of the CRC entries.
fn crc_text(row_groups: &str, chunks: &str) -> String {
    format!("{row_groups}|{chunks}")
}

/// Checks a read footer against the digest its manifest entry holds (none: a segment written
/// before digests, read unchecked).
pub fn check_footer(
    md: &parquet::file::metadata::ParquetMetaData,
    digest: Option<u32>,
) -> std::result::Result<(), String> {
    match digest {
        Some(want) => {
            let got = digest_of(md);
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "footer checksum mismatch: the manifest has {want:08x}, the footer reads as \
                     {got:08x}"
                ))
            }
        }
        None => Ok(()),
    }
}

/// Where a segment's row groups lie and their CRCs, as its footer says: what every reader
/// (the cold read path, the SQL scan) checks a row group's bytes against before decoding them.
#[derive(Debug, Clone)]
pub struct RowGroupChecks {
    ranges: Vec<std::ops::Range<u64>>,
    crcs: Vec<u32>,
    /// Per row group, each column chunk's range and CRC (empty: the footer has none).
    chunks: Vec<Vec<(std::ops::Range<u64>, u32)>>,
}

impl RowGroupChecks {
    /// The checks of an object of `size` bytes with footer `md`; `None` when the footer holds
    /// no CRCs (a segment written before them). Damage that makes them unusable is `Err`.
    pub fn of(
        md: &parquet::file::metadata::ParquetMetaData,
        size: u64,
    ) -> std::result::Result<Option<Self>, String> {
        let crcs = match row_group_crcs(md.file_metadata().key_value_metadata()) {
            None => return Ok(None),
            Some(c) => c?,
        };
        if crcs.len() != md.num_row_groups() {
            return Err(format!(
                "{} row-group CRCs for {} row groups",
                crcs.len(),
                md.num_row_groups()
            ));
        }
        let mut ranges = Vec::with_capacity(crcs.len());
        for (i, rg) in md.row_groups().iter().enumerate() {
            let range = row_group_range(rg)?;
            if range.end > size {
                return Err(format!(
                    "row group {i} at {range:?} runs past the object's {size} bytes"
                ));
            }
            ranges.push(range);
        }
        let mut chunks = Vec::new();
        if let Some(text) = footer_value(md.file_metadata().key_value_metadata(), CHUNK_CRC_KEY) {
            let groups: Vec<&str> = text.split(';').collect();
            if groups.len() != md.num_row_groups() {
                return Err(format!(
                    "column-chunk CRCs for {} row groups, not {}",
                    groups.len(),
                    md.num_row_groups()
                ));
            }
            for (i, (g, rg)) in groups.iter().zip(md.row_groups()).enumerate() {
                let crcs: Vec<&str> = g.split(',').collect();
                if crcs.len() != rg.num_columns() {
                    return Err(format!(
                        "{} column-chunk CRCs for the {} columns of row group {i}",
                        crcs.len(),
                        rg.num_columns()
                    ));
                }
                let mut row = Vec::with_capacity(crcs.len());
                for (t, c) in crcs.iter().zip(rg.columns()) {
                    let crc = t
                        .parse::<u32>()
                        .map_err(|e| format!("{CHUNK_CRC_KEY} {t:?}: {e}"))?;
                    let range = chunk_range(c)?;
                    if range.end > size {
                        return Err(format!(
                            "a column chunk at {range:?} runs past the object's {size} bytes"
                        ));
                    }
                    row.push((range, crc));
                }
                chunks.push(row);
            }
        }
        Ok(Some(RowGroupChecks {
            ranges,
            crcs,
            chunks,
        }))
    }

    /// The (row group, column) of the column chunk whose bytes hold `range`, if the footer has
    /// column-chunk CRCs and one does.
    pub fn chunk_holding(&self, range: &std::ops::Range<u64>) -> Option<(usize, usize)> {
        self.chunks.iter().enumerate().find_map(|(rg, row)| {
            row.iter()
                .position(|(r, _)| r.start <= range.start && range.end <= r.end)
                .map(|c| (rg, c))
        })
    }

    /// The byte range of column chunk `col` of row group `rg`.
    pub fn chunk(&self, rg: usize, col: usize) -> Option<std::ops::Range<u64>> {
        Some(self.chunks.get(rg)?.get(col)?.0.clone())
    }

    /// Checks the bytes of column chunk `col` of row group `rg` against its CRC.
    pub fn check_chunk(
        &self,
        rg: usize,
        col: usize,
        bytes: &[u8],
    ) -> std::result::Result<(), String> {
        let want = self
            .chunks
            .get(rg)
            .and_then(|row| row.get(col))
            .ok_or_else(|| format!("no column chunk {col} in row group {rg}"))?
            .1;
        let got = crc32c::crc32c(bytes);
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "row group {rg} column {col} checksum mismatch: stored {want:08x}, computed \
                 {got:08x}"
            ))
        }
    }

    /// The byte range of row group `rg`.
    pub fn range(&self, rg: usize) -> Option<std::ops::Range<u64>> {
        self.ranges.get(rg).cloned()
    }

    /// The row group whose bytes hold `range`, if one does.
    pub fn holding(&self, range: &std::ops::Range<u64>) -> Option<usize> {
        self.ranges
            .iter()
            .position(|r| r.start <= range.start && range.end <= r.end)
    }

    /// Checks the bytes of row group `rg` against its CRC.
    pub fn check(&self, rg: usize, bytes: &[u8]) -> std::result::Result<(), String> {
        let want = *self
            .crcs
            .get(rg)
            .ok_or_else(|| format!("no row group {rg} ({} in the footer)", self.crcs.len()))?;
        let got = crc32c::crc32c(bytes);
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "row group {rg} checksum mismatch: stored {want:08x}, computed {got:08x}"
            ))
        }
    }
}

/// What an encoded segment holds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub records: u64,
    pub row_groups: u32,
    /// Bytes of the hot-tier batches this was made from.
    pub raw_bytes: u64,
    /// [`footer_digest`] of the file's footer.
    pub footer_digest: u32,
}

struct Columns {
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMillisecondBuilder,
    key: BinaryBuilder,
    value: BinaryBuilder,
    headers: ListBuilder<StructBuilder>,
    producer_id: Int64Builder,
    producer_epoch: Int16Builder,
    sequence: Int32Builder,
    transactional: BooleanBuilder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        let item = Field::new("item", DataType::Struct(header_fields()), false);
        let hb = StructBuilder::from_fields(header_fields(), 0);
        Columns {
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            key: BinaryBuilder::new(),
            value: BinaryBuilder::new(),
            headers: ListBuilder::new(hb).with_field(Arc::new(item)),
            producer_id: Int64Builder::new(),
            producer_epoch: Int16Builder::new(),
            sequence: Int32Builder::new(),
            transactional: BooleanBuilder::new(),
            rows: 0,
        }
    }

    fn push(&mut self, partition: i32, r: &Record, b: &crate::batch::BatchHeader) {
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.timestamp.append_value(r.timestamp);
        self.key.append_option(r.key.as_deref());
        self.value.append_option(r.value.as_deref());
        let hs = self.headers.values();
        for h in &r.headers {
            hs.field_builder::<StringBuilder>(0)
                .expect("headers.key is utf8")
                .append_value(&h.key);
            hs.field_builder::<BinaryBuilder>(1)
                .expect("headers.value is binary")
                .append_option(h.value.as_deref());
            hs.append(true);
        }
        self.headers.append(true);
        let p = b.producer;
        if p.producer_id >= 0 {
            self.producer_id.append_value(p.producer_id);
            self.producer_epoch.append_value(p.producer_epoch);
            if p.base_sequence >= 0 {
                let delta = (r.offset - b.base_offset) as i32;
                self.sequence
                    .append_value(p.base_sequence.wrapping_add(delta));
            } else {
                self.sequence.append_null();
            }
        } else {
            self.producer_id.append_null();
            self.producer_epoch.append_null();
            self.sequence.append_null();
        }
        self.transactional.append_value(b.is_transactional());
        self.rows += 1;
    }

    fn finish(&mut self) -> Result<ArrowBatch> {
        self.rows = 0;
        ArrowBatch::try_new(
            schema(),
            vec![
                Arc::new(self.partition.finish()),
                Arc::new(self.offset.finish()),
                Arc::new(self.timestamp.finish()),
                Arc::new(self.key.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.headers.finish()),
                Arc::new(self.producer_id.finish()),
                Arc::new(self.producer_epoch.finish()),
                Arc::new(self.sequence.finish()),
                Arc::new(self.transactional.finish()),
            ],
        )
        .map_err(|e| Error::invalid(format!("building arrow batch: {e}")))
    }
}

/// File metadata every tierlog Parquet file carries: the format and the partition.
fn identity(id: &PartitionId) -> Vec<KeyValue> {
    vec![
        KeyValue::new("tierlog.format".into(), FORMAT_VERSION.to_string()),
        KeyValue::new("tierlog.topic".into(), id.topic.to_string()),
        KeyValue::new("tierlog.partition".into(), id.partition.to_string()),
    ]
}

fn writer_properties(
    id: &PartitionId,
    rows_per_group: usize,
    zstd_level: i32,
) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(zstd_level).map_err(|e| Error::Parquet {
        context: "zstd level".into(),
        source: e,
    })?;
    let meta = identity(id);
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(rows_per_group))
        .set_data_page_row_count_limit(8192)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_key_value_metadata(Some(meta));
    for col in ["offset", "timestamp"] {
        b = b
            .set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::Page)
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    for col in [
        vec!["key"],
        vec!["value"],
        vec!["headers", "list", "item", "key"],
        vec!["headers", "list", "item", "value"],
    ] {
        let path = ColumnPath::new(col.iter().map(|s| s.to_string()).collect());
        b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    b = b.set_column_dictionary_enabled(ColumnPath::from("value"), false);
    Ok(b.build())
}

/// What a sealed segment holds, known before its batches are read.
#[derive(Debug, Clone, Copy)]
pub struct SegmentShape {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Bytes of batches (sizes the row groups).
    pub raw_bytes: u64,
}

/// Writes one segment object: rows in offset order, row groups of a given row count, the
/// row-group and column-chunk CRCs and the footer digest. What the segment holds is checked by
/// its callers (dense for uploads; increasing for merged and compacted objects).
pub(crate) struct SegmentWriter {
    w: ArrowWriter<Vec<u8>>,
    rows_per_group: usize,
    base_offset: i64,
    last_offset: i64,
    min_ts: i64,
    max_ts: i64,
    records: u64,
}

fn pq(context: &str) -> impl FnOnce(parquet::errors::ParquetError) -> Error {
    let context = context.to_string();
    move |source| Error::Parquet { context, source }
}

impl SegmentWriter {
    /// A writer of the segment covering `base_offset..=last_offset` of `id`, whose records
    /// take about `raw_bytes / records` bytes each (sizes its row groups at `row_group_bytes`).
    pub fn new(
        id: &PartitionId,
        base_offset: i64,
        last_offset: i64,
        estimate: (u64, u64),
        row_group_bytes: usize,
        zstd_level: i32,
    ) -> Result<Self> {
        if last_offset < base_offset {
            return Err(Error::invalid("cannot encode an empty segment"));
        }
        let (raw_bytes, records) = estimate;
        let avg = (raw_bytes / records.max(1)).max(1) as usize;
        let rows_per_group = (row_group_bytes / avg).clamp(1024, 1 << 20);
        let props = writer_properties(id, rows_per_group, zstd_level)?;
        let out = Vec::with_capacity((raw_bytes / 4) as usize);
        Ok(SegmentWriter {
            w: ArrowWriter::try_new(out, schema(), Some(props)).map_err(pq("open writer"))?,
            rows_per_group,
            base_offset,
            last_offset,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            records: 0,
        })
    }

    /// Sets the last offset the segment covers, when it is known only once its rows are
    /// written (key compaction). Written in the footer.
    pub fn set_last_offset(&mut self, last_offset: i64) {
        self.last_offset = last_offset;
    }

    /// Appends rows in [`schema`] (the caller keeps them in offset order).
    pub fn write(&mut self, batch: &ArrowBatch) -> Result<()> {
        let ts = column::<TimestampMillisecondArray>(batch, "timestamp")?;
        for &t in ts.values().iter() {
            self.min_ts = self.min_ts.min(t);
            self.max_ts = self.max_ts.max(t);
        }
        self.records += batch.num_rows() as u64;
        self.w.write(batch).map_err(pq("write"))
    }

    /// Closes the file: `footer` gives extra file metadata from its summary (`raw_bytes`: the
    /// hot-tier bytes it was made from), returned with the bytes and a value of its own.
    pub fn finish<T>(
        mut self,
        raw_bytes: u64,
        footer: impl FnOnce(&Summary) -> Result<(Vec<KeyValue>, T)>,
    ) -> Result<(Bytes, T)> {
        let w = &mut self.w;
        w.flush().map_err(pq("flush"))?;
        // Every row group is in the buffer once the writer's buffer is flushed through.
        w.sync()
            .map_err(|e| Error::invalid(format!("flushing the Parquet writer: {e}")))?;
        let crc_of = |r: std::ops::Range<u64>| {
            w.inner()
                .get(r.start as usize..r.end as usize)
                .map(|bytes| crc32c::crc32c(bytes).to_string())
                .ok_or_else(|| Error::invalid(format!("byte range {r:?} past the file")))
        };
        let (mut rg_crcs, mut chunk_crcs) = (Vec::new(), Vec::new());
        for rg in w.flushed_row_groups() {
            rg_crcs.push(crc_of(row_group_range(rg).map_err(Error::invalid)?)?);
            let chunks = rg
                .columns()
                .iter()
                .map(|c| crc_of(chunk_range(c).map_err(Error::invalid)?))
                .collect::<Result<Vec<_>>>()?;
            chunk_crcs.push(chunks.join(","));
        }
        let (rg_crcs, chunk_crcs) = (rg_crcs.join(","), chunk_crcs.join(";"));
        let schema_descr = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&schema())
            .map_err(pq("schema"))?;
        let summary = Summary {
            base_offset: self.base_offset,
            last_offset: self.last_offset,
            min_timestamp: self.min_ts,
            max_timestamp: self.max_ts,
            records: self.records,
            row_groups: w.flushed_row_groups().len() as u32,
            raw_bytes,
            footer_digest: footer_digest(
                &schema_descr,
                w.flushed_row_groups(),
                &crc_text(&rg_crcs, &chunk_crcs),
            ),
        };
        let (meta, value) = footer(&summary)?;
        w.append_key_value_metadata(KeyValue::new(
            "tierlog.base_offset".into(),
            self.base_offset.to_string(),
        ));
        w.append_key_value_metadata(KeyValue::new(
            "tierlog.last_offset".into(),
            self.last_offset.to_string(),
        ));
        for kv in meta {
            w.append_key_value_metadata(kv);
        }
        w.append_key_value_metadata(KeyValue::new(ROW_GROUP_CRC_KEY.into(), rg_crcs));
        w.append_key_value_metadata(KeyValue::new(CHUNK_CRC_KEY.into(), chunk_crcs));
        let out = self.w.into_inner().map_err(pq("close"))?;
        Ok((Bytes::from(out), value))
    }
}

/// Encodes the batches of one sealed segment as a Parquet file. The batches arrive in chunks
/// (`chunks`), so memory is bounded by a chunk and a row group, not the segment; they must hold
/// exactly the offsets `shape.base_offset..=shape.last_offset`, densely. `footer` gives extra
/// file metadata from what the file holds (written last, in the footer), and a value returned
/// with the bytes.
pub fn encode_segment<T>(
    id: &PartitionId,
    shape: SegmentShape,
    chunks: impl IntoIterator<Item = Result<Vec<RecordBatch>>>,
    row_group_bytes: usize,
    zstd_level: i32,
    footer: impl FnOnce(&Summary) -> Result<(Vec<KeyValue>, T)>,
) -> Result<(Bytes, T)> {
    let SegmentShape {
        base_offset,
        last_offset,
        raw_bytes,
    } = shape;
    let records = (last_offset - base_offset + 1).max(0) as u64;
    let mut w = SegmentWriter::new(
        id,
        base_offset,
        last_offset,
        (raw_bytes, records),
        row_group_bytes,
        zstd_level,
    )?;
    let rows_per_group = w.rows_per_group;
    let mut cols = Columns::new();
    let mut scratch = Vec::new();
    let mut expect = base_offset;
    let partition = id.partition as i32;
    for chunk in chunks {
        for b in &chunk? {
            scratch.clear();
            b.decode_into(&mut scratch)?;
            for r in &scratch {
                if r.offset != expect {
                    return Err(Error::invalid(format!(
                        "segment offsets not dense: found {} where {expect} was expected",
                        r.offset
                    )));
                }
                expect += 1;
                cols.push(partition, r, b.header());
                if cols.rows == rows_per_group {
                    w.write(&cols.finish()?)?;
                }
            }
        }
    }
    if expect != last_offset + 1 {
        return Err(Error::invalid(format!(
            "segment ends at offset {} but should end at {last_offset}",
            expect - 1
        )));
    }
    if cols.rows > 0 {
        w.write(&cols.finish()?)?;
    }
    w.finish(raw_bytes, footer)
}

/// Reads a whole segment object (`bytes`) as Arrow batches in [`schema`], after checking its
/// footer against `digest` (the manifest entry's) and every row group against its CRC. Damage
/// is [`Error::Corrupt`] naming `location`; a panic of the Parquet decoder on damaged data
/// too.
pub fn decode_checked(
    bytes: Bytes,
    location: &str,
    digest: Option<u32>,
) -> Result<Vec<ArrowBatch>> {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    let corrupt = |reason: String| Error::Corrupt {
        location: location.to_string(),
        position: 0,
        reason,
    };
    let run = || -> Result<Vec<ArrowBatch>> {
        let size = bytes.len() as u64;
        let md = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .map_err(|e| corrupt(format!("reading footer: {e}")))?;
        check_footer(&md, digest).map_err(corrupt)?;
        match RowGroupChecks::of(&md, size).map_err(corrupt)? {
            Some(checks) => {
                for rg in 0..md.num_row_groups() {
                    let r = checks
                        .range(rg)
                        .ok_or_else(|| corrupt(format!("no row group {rg}")))?;
                    checks
                        .check(rg, &bytes[r.start as usize..r.end as usize])
                        .map_err(|reason| Error::Corrupt {
                            location: location.to_string(),
                            position: rg as u64,
                            reason,
                        })?;
                }
            }
            None if digest.is_some() => {
                return Err(corrupt("no row-group CRCs in a checked footer".into()));
            }
            None => {}
        }
        let opts = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(bytes.clone(), opts)
            .map_err(|e| corrupt(format!("opening: {e}")))?
            .with_batch_size(8192)
            .build()
            .map_err(|e| corrupt(format!("opening: {e}")))?;
        let mut out = Vec::new();
        for b in reader {
            let b = b.map_err(|e| corrupt(format!("decoding: {e}")))?;
            out.push(
                ArrowBatch::try_new(schema(), b.columns().to_vec())
                    .map_err(|e| corrupt(format!("not the segment schema: {e}")))?,
            );
        }
        Ok(out)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(_) => Err(corrupt("the Parquet decoder failed on damaged data".into())),
    }
}

/// A Parquet file of the segment schema with no rows, carrying `meta` (and the partition) in
/// its footer: the log objects of commits that add no segment.
pub fn encode_empty(id: &PartitionId, meta: Vec<KeyValue>) -> Result<Bytes> {
    let mut kv = identity(id);
    kv.extend(meta);
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(kv))
        .build();
    let mut out = Vec::new();
    let pq = |context: &'static str| {
        move |source| Error::Parquet {
            context: context.into(),
            source,
        }
    };
    let w = ArrowWriter::try_new(&mut out, schema(), Some(props)).map_err(pq("open writer"))?;
    w.close().map_err(pq("close"))?;
    Ok(Bytes::from(out))
}

/// Parquet's trailer: footer length (4 bytes) and magic (4 bytes).
const TRAILER: usize = 8;

/// Reads the file key-value metadata from the last bytes of a Parquet file (`tail`). `Ok(Err(n))`:
/// the footer needs the last `n` bytes, more than `tail` holds.
pub fn footer_metadata(tail: &[u8]) -> Result<std::result::Result<Vec<KeyValue>, usize>> {
    let corrupt = |reason: String| Error::invalid(format!("not a Parquet file: {reason}"));
    let Some(trailer) = tail.last_chunk::<TRAILER>() else {
        return Err(corrupt(format!("{} bytes", tail.len())));
    };
    let ft = parquet::file::metadata::FooterTail::try_new(trailer)
        .map_err(|e| corrupt(e.to_string()))?;
    let need = ft.metadata_length() + TRAILER;
    if need > tail.len() {
        return Ok(Err(need));
    }
    let footer = &tail[tail.len() - need..tail.len() - TRAILER];
    let meta = parquet::file::metadata::ParquetMetaDataReader::decode_metadata(footer)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Ok(meta
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()))
}

/// Records of `batches` with offsets in `range`, as Arrow batches in [`schema`] of at most
/// `rows_per_batch` rows: how the hot tail joins the cold segments in a query.
pub fn batches_to_arrow(
    partition: u32,
    batches: &[RecordBatch],
    range: std::ops::Range<i64>,
    rows_per_batch: usize,
) -> Result<Vec<ArrowBatch>> {
    let mut cols = Columns::new();
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for b in batches {
        scratch.clear();
        b.decode_into(&mut scratch)?;
        for r in scratch.iter().filter(|r| range.contains(&r.offset)) {
            cols.push(partition as i32, r, b.header());
            if cols.rows >= rows_per_batch.max(1) {
                out.push(cols.finish()?);
            }
        }
    }
    if cols.rows > 0 {
        out.push(cols.finish()?);
    }
    Ok(out)
}

fn column<'a, T: 'static>(b: &'a ArrowBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::invalid(format!("cold segment lacks a well-typed `{name}` column")))
}

/// Lets a `Bytes` share an Arrow buffer without copying it.
struct ArrowOwner(arrow_buffer::Buffer);

impl AsRef<[u8]> for ArrowOwner {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A binary column's values buffer as `Bytes` (zero-copy), so each field is a cheap slice of it.
fn shared_values(a: &BinaryArray) -> Bytes {
    Bytes::from_owner(ArrowOwner(a.values().clone()))
}

fn nullable_slice(a: &BinaryArray, shared: &Bytes, i: usize) -> Option<Bytes> {
    if a.is_null(i) {
        return None;
    }
    let offsets = a.value_offsets();
    Some(shared.slice(offsets[i] as usize..offsets[i + 1] as usize))
}

/// Converts decoded Arrow rows of a cold segment back to records.
pub fn to_records(b: &ArrowBatch, out: &mut Vec<Record>) -> Result<()> {
    let offset = column::<Int64Array>(b, "offset")?;
    let ts = column::<TimestampMillisecondArray>(b, "timestamp")?;
    let key = column::<BinaryArray>(b, "key")?;
    let value = column::<BinaryArray>(b, "value")?;
    let headers = column::<ListArray>(b, "headers")?;
    let hvals = headers
        .values()
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| Error::invalid("headers are not a list of structs"))?;
    let hkey = hvals
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::invalid("header keys are not utf8"))?;
    let hval = hvals
        .column(1)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| Error::invalid("header values are not binary"))?;
    let (kshared, vshared, hshared) = (
        shared_values(key),
        shared_values(value),
        shared_values(hval),
    );
    let hoff = headers.value_offsets();
    out.reserve(b.num_rows());
    for i in 0..b.num_rows() {
        let hs = (hoff[i] as usize..hoff[i + 1] as usize)
            .map(|j| Header {
                key: hkey.value(j).to_owned(),
                value: nullable_slice(hval, &hshared, j),
            })
            .collect();
        out.push(Record {
            offset: offset.value(i),
            timestamp: ts.value(i),
            key: nullable_slice(key, &kshared, i),
            value: nullable_slice(value, &vshared, i),
            headers: hs,
        });
    }
    Ok(())
}
