//! Structured fuzzing of what a client controls: record batches whose CRCs are valid (so they get
//! past the check that random bytes never pass) and whose headers, varints, record layouts and
//! compressed bodies are adversarial; and a partition's cold objects, corrupted. Three targets:
//! - `batch`: the decoder (`RecordBatch::parse`, `validate`, `records`);
//! - `produce`: the broker's produce entry point (`Broker::produce_batch`) on an embedded node,
//!   then a read of what it stored;
//! - `cold`: a committed partition (manifest checkpoint, log objects that are Parquet segments
//!   with the commit in their footer) with one object damaged (bits flipped, cut short, bytes
//!   spliced in, the Parquet footer length or the envelope rewritten), loaded by the manifest
//!   reader and read back through the cold read path as another node would.
//!
//! Oracles: no panic; memory in use grows by at most [`ALLOCATION_BOUND`] while an input is
//! checked (under the driver, whose allocator enforces it); a batch the decoder accepts decodes to exactly its header's count of
//! records with dense offsets and re-encodes to the same records; what the broker acknowledges
//! reads back as the decoder said. An input that breaks an oracle is written to the corpus
//! directory; the corpus is replayed by every run (`tests/fuzz/corpus/<target>/`).
//!
//! Deterministic: a run is fully described by its target, seed and number of executions.

use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use tier::{BatchBuilder, Compression, Header, RecordBatch};

/// How much memory in use may grow while one input is checked (the decoder's own bounds are 64
/// MiB of decompressed body and 262,144 records). The driver's allocator enforces it: an
/// allocation past it fails and aborts the run, as it would abort a node.
pub const ALLOCATION_BOUND: usize = 128 << 20;

/// The fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Batch,
    Produce,
    Cold,
    /// Kafka request frames through the request decoder (header, version, body).
    Kafka,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Batch => "batch",
            Target::Produce => "produce",
            Target::Cold => "cold",
            Target::Kafka => "kafka",
        }
    }
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "batch" => Some(Target::Batch),
            "produce" => Some(Target::Produce),
            "cold" => Some(Target::Cold),
            "kafka" => Some(Target::Kafka),
            _ => None,
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    /// Inputs the decoder (or broker) accepted.
    pub accepted: u64,
    /// Corpus inputs replayed.
    pub replayed: u64,
    /// Inputs that broke an oracle, with why (each was saved to the corpus).
    pub findings: Vec<(PathBuf, String)>,
}

/// The corpus directory of `target` in this checkout.
pub fn corpus_dir(target: Target) -> PathBuf {
    crate::tests_dir().join("fuzz/corpus").join(target.name())
}

/// Replays the corpus, then runs `executions` generated inputs from `seed`. Findings are
/// written to the corpus directory (named by the hash of their bytes).
pub fn run(target: Target, seed: u64, executions: u64) -> Report {
    run_with(target, seed, executions, true, &|_| {})
}

/// [`run`], replaying the corpus only when `replay`, and calling `limit(true)` before each
/// input is checked and `limit(false)` before the next is generated (the driver bounds memory
/// growth while an input is checked, not while the generator builds one).
pub fn run_with(
    target: Target,
    seed: u64,
    executions: u64,
    replay: bool,
    limit: &dyn Fn(bool),
) -> Report {
    let dir = corpus_dir(target);
    let mut report = Report::default();
    let mut harness = Harness::new(target);
    let mut corpus: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    corpus.retain(|p| replay && p.is_file());
    corpus.sort();
    for path in corpus {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        report.replayed += 1;
        limit(true);
        let checked = harness.check(Bytes::from(bytes));
        limit(false);
        if let Err(why) = checked {
            report.findings.push((path, why));
        }
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..executions {
        let input = match (&harness.cold, target) {
            (Some(cold), _) => cold.damage(&mut rng),
            (None, Target::Kafka) => kafka_frame(&mut rng),
            (None, _) => generate(&mut rng),
        };
        report.executions += 1;
        limit(true);
        let checked = harness.check(input.clone());
        limit(false);
        match checked {
            Ok(true) => report.accepted += 1,
            Ok(false) => {}
            Err(why) => {
                let path = save(&dir, &input);
                eprintln!("finding: {why} (saved as {})", path.display());
                report.findings.push((path, why));
            }
        }
    }
    report
}

fn save(dir: &Path, input: &[u8]) -> PathBuf {
    let path = dir.join(format!("{:016x}", fnv(input)));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("could not save the input as {}: {e}", path.display());
    }
    path
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs inputs against one target.
struct Harness {
    target: Target,
    node: Option<Node>,
    cold: Option<Cold>,
}

/// A committed partition's objects, built once; each input damages one of them.
struct Cold {
    rt: tokio::runtime::Runtime,
    objects: Vec<(object_store::path::Path, Bytes)>,
    records: Vec<tier::Record>,
}

impl Cold {
    fn build() -> Cold {
        use object_store::ObjectStoreExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let objects = rt.block_on(async {
            let dir = tempfile::tempdir().expect("temp dir");
            let (store, _) = tier::store::open_store("memory://", &[]).expect("memory store");
            let cfg = tier::TierConfig {
                data_dir: dir.path().join("hot"),
                row_group_bytes: 64 << 10,
                ..tier::TierConfig::default()
            };
            let t = tier::Tier::open(cfg, store.clone(), object_store::path::Path::from("c"))
                .await
                .expect("tier");
            t.open_partition("fz", 0, 1).await.expect("open");
            for b in 0..4 {
                let batch = crate::events_batch(0, b * 300, 300, Compression::Zstd);
                t.append("fz", 0, batch).await.expect("append");
                t.flush("fz", 0).await.expect("flush");
            }
            t.close(false).await.expect("close");
            let listed: Vec<_> = futures::TryStreamExt::try_collect(store.list(None))
                .await
                .expect("list");
            let mut objects = Vec::new();
            for meta in listed {
                let got = store.get(&meta.location).await.expect("get");
                objects.push((meta.location, got.bytes().await.expect("bytes")));
            }
            objects.sort_by(|a, b| a.0.cmp(&b.0));
            objects
        });
        let records = (0..1200).map(|i| crate::event(0, i)).collect();
        Cold {
            rt,
            objects,
            records,
        }
    }

    /// An input: which object (2 bytes), then its damaged bytes.
    fn damage(&self, rng: &mut fastrand::Rng) -> Bytes {
        let which = rng.usize(0..self.objects.len());
        let mut v = self.objects[which].1.to_vec();
        for _ in 0..rng.usize(1..4) {
            let n = v.len();
            match rng.u8(0..8) {
                0 if n > 0 => v.truncate(rng.usize(0..n)),
                1 if n > 8 => {
                    // The Parquet footer length.
                    let len = match rng.u8(0..3) {
                        0 => u32::MAX,
                        1 => rng.u32(..),
                        _ => rng.u32(0..n as u32 * 2),
                    };
                    v[n - 8..n - 4].copy_from_slice(&len.to_le_bytes());
                }
                2 if n > 0 => {
                    let at = rng.usize(0..n);
                    let junk: Vec<u8> = (0..rng.usize(1..64)).map(|_| rng.u8(..)).collect();
                    v.splice(at..at, junk);
                }
                3 if n > 0 => {
                    // A byte near the end: the footer and the commit in it.
                    let at = n - 1 - rng.usize(0..n.min(4096));
                    v[at] = rng.u8(..);
                }
                4 => {
                    // A digit in a JSON envelope (checkpoints, chunks) rewritten.
                    if let Some(at) = v.iter().position(|b| b.is_ascii_digit()) {
                        let at = at + rng.usize(0..(n - at).min(200));
                        if v[at].is_ascii_digit() {
                            v[at] = b'0' + rng.u8(0..10);
                        }
                    }
                }
                _ if n > 0 => {
                    let at = rng.usize(0..n);
                    v[at] ^= 1 << rng.u8(0..8);
                }
                _ => v.push(rng.u8(..)),
            }
        }
        let mut input = BytesMut::with_capacity(2 + v.len());
        input.put_u16(which as u16);
        input.put_slice(&v);
        input.freeze()
    }

    /// Loads the partition with the damaged object in place and reads every record back as a
    /// node that does not lead it would. Errors are fine; records at the wrong offset are a
    /// finding, and so are other records than were written without an error.
    fn check(&self, input: &Bytes) -> Result<bool, String> {
        use object_store::ObjectStoreExt;
        if input.len() < 2 {
            return Ok(false);
        }
        let which = usize::from(u16::from_be_bytes([input[0], input[1]])) % self.objects.len();
        let damaged = input.slice(2..);
        self.rt.block_on(async {
            let (store, _) = tier::store::open_store("memory://", &[]).expect("memory store");
            for (i, (path, bytes)) in self.objects.iter().enumerate() {
                let bytes = if i == which {
                    damaged.clone()
                } else {
                    bytes.clone()
                };
                store.put(path, bytes.into()).await.expect("put");
            }
            let dir = tempfile::tempdir().expect("temp dir");
            let cfg = tier::TierConfig {
                data_dir: dir.path().join("hot"),
                ..tier::TierConfig::default()
            };
            let t = tier::Tier::open(cfg, store, object_store::path::Path::from("c"))
                .await
                .map_err(|e| format!("tier: {e}"))?;
            let mut got = Vec::new();
            let mut next = 0;
            let outcome = loop {
                match t.read_committed("fz", 0, next, 1 << 20).await {
                    Ok(r) if r.records.is_empty() => break Ok(()),
                    Ok(r) => {
                        for rec in r.records {
                            if rec.offset != next {
                                t.abort().await;
                                return Err(format!(
                                    "read at {next} returned offset {}",
                                    rec.offset
                                ));
                            }
                            next += 1;
                            got.push(rec);
                        }
                    }
                    Err(e) => break Err(e),
                }
                if next > 10_000 {
                    t.abort().await;
                    return Err("more records than were written".into());
                }
            };
            t.abort().await;
            match outcome {
                Err(_) => Ok(false),
                // A shorter history (a commit no longer read) is fine if what is read is right.
                Ok(()) if got.len() <= self.records.len() && got == self.records[..got.len()] => {
                    Ok(true)
                }
                Ok(()) => Err(format!(
                    "silently different: object {} damaged, {} records read back other values",
                    self.objects[which].0,
                    got.len()
                )),
            }
        })
    }
}

/// An embedded node for the produce target: a broker over a memory object store.
struct Node {
    rt: tokio::runtime::Runtime,
    broker: ingest::Broker,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = rt.block_on(async {
            let (store, _) = tier::store::open_store("memory://", &[]).expect("memory store");
            let cfg = tier::TierConfig {
                data_dir: dir.path().join("hot"),
                ..tier::TierConfig::default()
            };
            let tier = tier::Tier::open(cfg, store, object_store::path::Path::from("c"))
                .await
                .expect("tier");
            let meta = meta::Meta::new(std::sync::Arc::new(meta::EmbeddedKv::memory()));
            let broker = ingest::Broker::start(tier, meta, ingest::BrokerConfig::default())
                .await
                .expect("broker");
            broker
                .create_topic("fuzz", meta::TopicConfig::new(1))
                .await
                .expect("topic");
            broker
        });
        Node {
            rt,
            broker,
            _dir: dir,
        }
    }
}

impl Harness {
    fn new(target: Target) -> Harness {
        let node = (target == Target::Produce).then(Node::start);
        let cold = (target == Target::Cold).then(Cold::build);
        Harness { target, node, cold }
    }

    /// `Ok(accepted)`, or why an oracle broke.
    fn check(&mut self, input: Bytes) -> Result<bool, String> {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match self.target {
                Target::Batch => check_decoder(&input),
                Target::Produce => {
                    let node = self.node.as_ref().expect("started for the produce target");
                    check_produce(node, &input)
                }
                Target::Cold => self
                    .cold
                    .as_ref()
                    .expect("built for the cold target")
                    .check(&input),
                // The oracle is the harness's own: no panic, and memory growth bounded by the
                // driver; a frame that decodes counts as accepted.
                Target::Kafka => Ok(ingest::kafka::decode_frame(input.clone()).is_ok()),
            }));
        match outcome {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
}

/// The decoder's oracle: an accepted batch decodes to exactly its count of records, with dense
/// offsets, the header's max timestamp, and the same records after re-encoding.
fn check_decoder(input: &Bytes) -> Result<bool, String> {
    let Ok(batch) = RecordBatch::parse(input.clone()) else {
        return Ok(false);
    };
    let validated = batch.validate();
    let records = batch.records();
    let records = match (validated, records) {
        (Ok(()), Ok(r)) => r,
        // validate() is stricter (deltas, max timestamp): records() may decode what it refuses,
        // but never the other way round.
        (Err(_), _) => return Ok(false),
        (Ok(()), Err(e)) => return Err(format!("validated, yet records() fails: {e}")),
    };
    let h = batch.header();
    if records.len() != h.record_count as usize {
        return Err(format!(
            "{} records decoded, header says {}",
            records.len(),
            h.record_count
        ));
    }
    for (i, r) in records.iter().enumerate() {
        if r.offset != h.base_offset + i as i64 {
            return Err(format!("record {i} at offset {}", r.offset));
        }
    }
    let mut b = BatchBuilder::new(Compression::None);
    for r in &records {
        b.push(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        );
    }
    let again = b
        .build()
        .map_err(|e| format!("re-encoding accepted records fails: {e}"))?
        .with_assigned(h.base_offset, 0)
        .records()
        .map_err(|e| format!("re-encoded records do not decode: {e}"))?;
    if again != records {
        return Err("re-encoded records differ".into());
    }
    Ok(true)
}

/// The produce entry point's oracle: whatever it acknowledges reads back as the decoder
/// decodes the batch, at the acknowledged offsets; what it refuses changes nothing.
fn check_produce(node: &Node, input: &Bytes) -> Result<bool, String> {
    node.rt.block_on(async {
        let b = &node.broker;
        let log_end = || async {
            Ok::<_, String>(
                b.describe_topic("fuzz")
                    .await
                    .map_err(|e| format!("describe: {e}"))?
                    .partitions[0]
                    .offsets
                    .next,
            )
        };
        let before = log_end().await?;
        let r = b
            .produce_batch("fuzz", 0, input.clone(), ingest::Acks::Leader)
            .await;
        let after = log_end().await?;
        let r = match r {
            Ok(r) if r.accepted > 0 && !r.duplicate => r,
            Ok(r) if r.accepted == 0 => {
                return if after == before {
                    Ok(false)
                } else {
                    Err(format!(
                        "nothing accepted, yet the log grew {before} → {after}"
                    ))
                };
            }
            Ok(_) => return Ok(false),
            Err(_) => {
                return if after == before {
                    Ok(false)
                } else {
                    Err(format!("refused, yet the log grew {before} → {after}"))
                };
            }
        };
        if r.base_offset != before || after != before + r.accepted as i64 {
            return Err(format!(
                "acknowledged {} records at {}, log went {before} → {after}",
                r.accepted, r.base_offset
            ));
        }
        let sent = RecordBatch::parse(input.clone())
            .and_then(|b| b.records())
            .map_err(|e| format!("the broker accepted a batch the decoder refuses: {e}"))?;
        let refused: Vec<usize> = r.errors.iter().map(|(i, _)| *i).collect();
        let want: Vec<_> = sent
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !refused.contains(i))
            .map(|(_, r)| r)
            .collect();
        let mut got = Vec::new();
        while (got.len() as i64) < r.accepted as i64 {
            let at = r.base_offset + got.len() as i64;
            let read = b
                .read("fuzz", 0, at, 16 << 20, None)
                .await
                .map_err(|e| format!("reading back at {at}: {e}"))?;
            if read.records.is_empty() {
                return Err(format!("nothing to read back at {at}"));
            }
            got.extend(read.records.into_iter().filter(|x| x.offset < after));
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if (g.offset, &g.key, &g.value, &g.headers, g.timestamp)
                != (
                    r.base_offset + i as i64,
                    &w.key,
                    &w.value,
                    &w.headers,
                    w.timestamp,
                )
            {
                return Err(format!("record {i} reads back differently: {g:?} vs {w:?}"));
            }
        }
        Ok(true)
    })
}

// ---- generators ----

/// One generated input: mostly structurally plausible batches with valid CRCs, mutated where
/// a hostile client would.
pub fn generate(rng: &mut fastrand::Rng) -> Bytes {
    match rng.u8(0..12) {
        // Valid batches too: the accepting paths (and what the broker stores) need exercise.
        0..=1 => built(rng),
        2..=5 => {
            let b = built(rng);
            mutate_header(rng, b)
        }
        6..=8 => crafted(rng),
        9..=10 => compressed_body(rng),
        _ => {
            // A valid batch with a few bytes flipped anywhere, the CRC fixed or not.
            let b = built(rng);
            let mut v = BytesMut::from(&b[..]);
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(0..v.len());
                v[at] ^= 1 << rng.u8(0..8);
            }
            if rng.bool() {
                fix_crc(&mut v);
            }
            v.freeze()
        }
    }
}

/// A Kafka request frame without its size: a header for an API this node serves (now and then
/// a version it does not), then a body of the primitives Kafka messages are made of (counts,
/// lengths, strings, varints, uuids), small and hostile values mixed, in random order. Some
/// frames decode whole; most stop somewhere inside, which is where decoders break.
pub fn kafka_frame(rng: &mut fastrand::Rng) -> Bytes {
    let (key, lo, hi) = ingest::kafka::SUPPORTED[rng.usize(..ingest::kafka::SUPPORTED.len())];
    let version = if rng.u8(..16) == 0 {
        hi.saturating_add(1)
    } else {
        rng.i16(lo..=hi)
    };
    let mut b = BytesMut::new();
    b.put_i16(key as i16);
    b.put_i16(version);
    b.put_i32(rng.i32(..));
    let client_id = small_text(rng);
    b.put_i16(client_id.len() as i16);
    b.put_slice(&client_id);
    if key.request_header_version(version) >= 2 {
        b.put_u8(0); // no tagged fields
    }
    if rng.u8(..4) == 0 {
        // Zeros: empty arrays, empty or null strings, no tagged fields; many messages decode
        // whole from these, so the accepting paths are exercised too.
        b.put_bytes(0, rng.usize(0..96));
        return b.freeze();
    }
    for _ in 0..rng.usize(0..48) {
        match rng.u8(..12) {
            0 => b.put_i8(rng.i8(-1..=1)),
            1 => b.put_i16(interesting_i32(rng, 3) as i16),
            2 | 3 => {
                let near = rng.i32(0..4);
                b.put_i32(interesting_i32(rng, near));
            }
            4 => b.put_i64(rng.i64(-2..1_000)),
            5 | 6 => {
                let near = rng.i64(0..4);
                hostile_varint(rng, &mut b, near);
            }
            7 => {
                // A string, or a compact one (its length plus one as a varint).
                let t = small_text(rng);
                if rng.bool() {
                    b.put_i16(t.len() as i16);
                } else {
                    hostile_varint(rng, &mut b, t.len() as i64 + 1);
                }
                b.put_slice(&t);
            }
            8 => b.put_u128(rng.u128(..)),
            9 => b.put_i32(-1),
            10 => b.put_u8(0),
            _ => {
                let n = rng.usize(0..64);
                b.extend((0..n).map(|_| rng.u8(..)));
            }
        }
    }
    b.freeze()
}

fn small_text(rng: &mut fastrand::Rng) -> Vec<u8> {
    let n = rng.usize(0..12);
    (0..n).map(|_| rng.u8(b'a'..=b'z')).collect()
}

fn small_bytes(rng: &mut fastrand::Rng) -> Option<Vec<u8>> {
    match rng.u8(0..8) {
        0 => None,
        1 => Some(Vec::new()),
        2 => Some(vec![rng.u8(..); rng.usize(0..3000)]),
        _ => Some((0..rng.usize(0..40)).map(|_| rng.u8(..)).collect()),
    }
}

fn timestamp(rng: &mut fastrand::Rng) -> i64 {
    match rng.u8(0..6) {
        0 => 0,
        1 => i64::MAX - rng.i64(0..3),
        2 => i64::MIN + rng.i64(0..3),
        3 => -rng.i64(0..1000),
        _ => 1_767_225_600_000 + rng.i64(-1_000_000..1_000_000),
    }
}

/// A valid batch from the builder: random records, none or zstd.
fn built(rng: &mut fastrand::Rng) -> Bytes {
    let compression = if rng.bool() {
        Compression::Zstd
    } else {
        Compression::None
    };
    let mut b = BatchBuilder::new(compression);
    let base = 1_767_225_600_000 + rng.i64(0..1_000_000);
    for _ in 0..rng.usize(1..20) {
        let headers: Vec<Header> = (0..rng.usize(0..3))
            .map(|_| Header {
                key: format!("h{}", rng.u8(..)),
                value: small_bytes(rng).map(Bytes::from),
            })
            .collect();
        b.push(
            base + rng.i64(-1000..1000),
            small_bytes(rng).as_deref(),
            small_bytes(rng).as_deref(),
            &headers,
        );
    }
    if rng.u8(0..3) == 0 {
        b = b.producer(
            tier::ProducerInfo {
                producer_id: rng.i64(-2..5),
                producer_epoch: rng.i16(-2..3),
                base_sequence: rng.i32(-2..100),
            },
            rng.bool(),
        );
    }
    b.build().expect("generated records encode").into_bytes()
}

fn fix_crc(v: &mut [u8]) {
    if v.len() >= 21 {
        let crc = crc32c::crc32c(&v[21..]);
        v[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

fn interesting_i32(rng: &mut fastrand::Rng, near: i32) -> i32 {
    match rng.u8(0..8) {
        0 => 0,
        1 => -1,
        2 => i32::MAX,
        3 => i32::MIN,
        4 => near.saturating_add(rng.i32(-2..3)),
        5 => tier::batch::MAX_BATCH_RECORDS + rng.i32(-1..2),
        6 => 1 << rng.u32(0..31),
        _ => rng.i32(..),
    }
}

/// A valid batch whose header fields are set to hostile values, with the CRC fixed (it covers
/// everything from the attributes on).
fn mutate_header(rng: &mut fastrand::Rng, batch: Bytes) -> Bytes {
    let mut v = BytesMut::from(&batch[..]);
    let count = i32::from_be_bytes(v[57..61].try_into().expect("4 bytes"));
    for _ in 0..rng.usize(1..4) {
        match rng.u8(0..9) {
            0 => {
                let n = interesting_i32(rng, count);
                v[57..61].copy_from_slice(&n.to_be_bytes());
                if rng.bool() {
                    v[23..27].copy_from_slice(&n.wrapping_sub(1).to_be_bytes());
                }
            }
            1 => {
                let n = interesting_i32(rng, count - 1);
                v[23..27].copy_from_slice(&n.to_be_bytes());
            }
            2 => {
                let a = rng.i16(..);
                v[21..23].copy_from_slice(&a.to_be_bytes());
            }
            3 => {
                let t = timestamp(rng);
                v[27..35].copy_from_slice(&t.to_be_bytes());
            }
            4 => {
                let t = timestamp(rng);
                v[35..43].copy_from_slice(&t.to_be_bytes());
            }
            5 => {
                let len = interesting_i32(rng, (v.len() - 12) as i32);
                v[8..12].copy_from_slice(&len.to_be_bytes());
            }
            6 => {
                let o = match rng.u8(0..3) {
                    0 => i64::MAX,
                    1 => i64::MIN,
                    _ => rng.i64(..),
                };
                v[0..8].copy_from_slice(&o.to_be_bytes());
            }
            7 => v[16] = rng.u8(..),
            _ => {
                v[43..51].copy_from_slice(&rng.i64(-3..3).to_be_bytes());
                v[51..53].copy_from_slice(&rng.i16(..).to_be_bytes());
                v[53..57].copy_from_slice(&rng.i32(..).to_be_bytes());
            }
        }
    }
    fix_crc(&mut v);
    v.freeze()
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// A hostile varint: huge, negative, over-long, or truncated.
fn hostile_varint(rng: &mut fastrand::Rng, buf: &mut BytesMut, plausible: i64) {
    match rng.u8(0..10) {
        0 => put_varlong(buf, i64::from(i32::MAX)),
        1 => put_varlong(buf, -2 - rng.i64(0..1000)),
        2 => put_varlong(buf, i64::MAX),
        3 => buf.put_slice(&[0xff; 11]),
        4 => buf.put_slice(&[0x80; 10]),
        5 => buf.put_u8(0x80),
        6 => put_varlong(buf, plausible + rng.i64(-3..4)),
        _ => put_varlong(buf, plausible),
    }
}

/// Records laid out by hand with hostile lengths, counts and varints, wrapped in a valid header
/// (count as generated or as claimed), optionally compressed, CRC fixed.
fn crafted(rng: &mut fastrand::Rng) -> Bytes {
    let n = rng.usize(1..8);
    let mut body = BytesMut::new();
    for i in 0..n {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        let ts_delta = rng.i64(-5..5);
        hostile_varint(rng, &mut rec, ts_delta);
        hostile_varint(rng, &mut rec, i as i64);
        let key = small_bytes(rng);
        hostile_varint(rng, &mut rec, key.as_ref().map_or(-1, |k| k.len() as i64));
        rec.put_slice(key.as_deref().unwrap_or_default());
        let value = small_bytes(rng);
        hostile_varint(rng, &mut rec, value.as_ref().map_or(-1, |v| v.len() as i64));
        rec.put_slice(value.as_deref().unwrap_or_default());
        let headers = rng.usize(0..3);
        hostile_varint(rng, &mut rec, headers as i64);
        for _ in 0..headers {
            let k = b"hk";
            hostile_varint(rng, &mut rec, k.len() as i64);
            rec.put_slice(k);
            let v = small_bytes(rng);
            hostile_varint(rng, &mut rec, v.as_ref().map_or(-1, |v| v.len() as i64));
            rec.put_slice(v.as_deref().unwrap_or_default());
        }
        hostile_varint(rng, &mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let count = if rng.u8(0..4) == 0 {
        interesting_i32(rng, n as i32)
    } else {
        n as i32
    };
    let zstd = rng.bool();
    let body = if zstd {
        Bytes::from(zstd::bulk::compress(&body, 1).expect("zstd"))
    } else {
        body.freeze()
    };
    wrap(rng, body, count, if zstd { 4 } else { 0 })
}

/// A header around `body`, with `count` records and codec bits `codec`, CRC fixed.
fn wrap(rng: &mut fastrand::Rng, body: Bytes, count: i32, codec: i16) -> Bytes {
    let mut b = BytesMut::with_capacity(61 + body.len());
    let base_ts = timestamp(rng);
    b.put_i64(0);
    b.put_i32((49 + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(codec);
    b.put_i32(count.wrapping_sub(1));
    b.put_i64(base_ts);
    b.put_i64(if rng.bool() { base_ts } else { timestamp(rng) });
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(count);
    b.put_slice(&body);
    fix_crc(&mut b);
    b.freeze()
}

/// Hostile compressed bodies: random bytes, truncated frames, frames that declare (or
/// decompress to) more than any limit, concatenated frames.
fn compressed_body(rng: &mut fastrand::Rng) -> Bytes {
    // Now and then large: past every limit (and slow to make).
    let large = rng.u16(0..1000) == 0;
    let plain: Vec<u8> = match rng.u8(0..3) {
        0 => vec![0u8; rng.usize(1..if large { 80 << 20 } else { 64 << 10 })],
        1 => (0..rng.usize(1..4096)).map(|_| rng.u8(..)).collect(),
        _ => {
            // Seven-byte records, as many as the body can hold: the densest legal layout.
            let mut v = Vec::new();
            for i in 0..rng.usize(1..if large { 400_000 } else { 2_000 }) {
                v.extend_from_slice(&[12, 0, 0]);
                let mut d = BytesMut::new();
                put_varlong(&mut d, (i % 64) as i64);
                v.extend_from_slice(&d);
                v.extend_from_slice(&[1, 1, 0]);
            }
            v
        }
    };
    let frame = zstd::bulk::compress(&plain, 1).expect("zstd");
    let body = match rng.u8(0..5) {
        0 => Bytes::from(frame[..rng.usize(0..frame.len())].to_vec()),
        1 => {
            let mut f = frame.clone();
            f.extend_from_slice(&frame);
            Bytes::from(f)
        }
        2 => Bytes::from(
            (0..rng.usize(0..64))
                .map(|_| rng.u8(..))
                .collect::<Vec<_>>(),
        ),
        _ => Bytes::from(frame),
    };
    let count = interesting_i32(rng, (plain.len() / 7).min(i32::MAX as usize) as i32);
    let codec = if rng.u8(0..6) == 0 { rng.i16(0..8) } else { 4 };
    wrap(rng, body, count, codec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generation is deterministic: the same seed makes the same inputs.
    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let mut a = fastrand::Rng::with_seed(7);
        let mut b = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            assert_eq!(generate(&mut a), generate(&mut b));
        }
    }
}
