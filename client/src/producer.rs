//! The producer: one sender task per partition, fed through a bounded queue (back-pressure),
//! batching by size and linger, up to [`MAX_IN_FLIGHT`] requests in flight per partition when
//! idempotent (one otherwise), retries with exponential backoff for retriable errors. Records
//! of a partition are appended in the order they were sent, also across retries. When answers
//! are slow (acks=all), batches that are not full are paced to one per (slowest recent
//! successful answer / half the window, at most a second), so the window rarely fills and
//! records keep reaching the leader in time for its next group commit.
//!
//! Each batch is encoded here as a Kafka v2 record batch (CRC-32C, optionally zstd) and sent as
//! one `record_batch`: the node checks it and stores it as sent, so the bytes on disk are the
//! bytes the producer checksummed. Records carry the producer's clock (Kafka's CreateTime).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proto::batch::{BatchBuilder, Compression, ProducerInfo};
use proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};

use crate::{Client, Error, ErrorCode, Header, Result, partition_for_key};

/// Acknowledgement level (see the README's durability notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    None,
    #[default]
    Leader,
    All,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// A batch is sent once it holds this many payload bytes...
    pub batch_bytes: usize,
    /// ... or once its first record has waited this long (default 2 ms: measured against 5 ms,
    /// the same sustained throughput and half the acknowledgement latency; docs/BENCHMARKS.md).
    pub linger: Duration,
    pub zstd: bool,
    /// Attempts per batch for retriable errors, with backoff doubling from `retry_backoff`.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Records queued per partition before `send` waits (back-pressure).
    pub queue_records: usize,
    /// A request without an answer by then counts as a retriable failure (a leader that hangs).
    pub request_timeout: Duration,
    /// Requests kept in flight per partition, at most [`MAX_IN_FLIGHT`]; only idempotent
    /// producers pipeline (order under retries rests on sequence numbers), others send one at a
    /// time.
    pub max_in_flight: usize,
    /// Idempotence: the producer takes an id from the cluster and numbers its records per
    /// partition, so the leader drops a retried batch it already has (also after a failover)
    /// instead of appending it twice. Ignored with `acks = None` (no answers to retry on).
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Leader,
            batch_bytes: 512 << 10,
            linger: DEFAULT_LINGER,
            zstd: false,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            queue_records: 10_000,
            request_timeout: Duration::from_secs(30),
            max_in_flight: MAX_IN_FLIGHT,
            idempotent: true,
        }
    }
}

/// Where a record landed (offset -1 with acks = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: i64,
}

struct Pending {
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<proto::batch::Header>,
    size: usize,
}

/// Where a record's outcome goes.
type Done = oneshot::Sender<Result<RecordMetadata>>;

/// Each partition's queue into its sender task.
type Queues = HashMap<(String, u32), mpsc::Sender<(Pending, Done)>>;

/// Batches and sends records. Cheap to clone; [`Producer::close`] flushes.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    cfg: Arc<ProducerConfig>,
    queues: Arc<Mutex<Queues>>,
    partitions: Arc<Mutex<HashMap<String, u32>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Producer {
    pub fn new(client: Client, cfg: ProducerConfig) -> Producer {
        Producer {
            client,
            cfg: Arc::new(cfg),
            queues: Arc::default(),
            partitions: Arc::default(),
            tasks: Arc::default(),
        }
    }

    async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.partitions.lock().expect("lock").get(topic) {
            return Ok(*n);
        }
        let d = self.client.describe_topic(topic).await?;
        let n = d.partitions.len() as u32;
        self.partitions
            .lock()
            .expect("lock")
            .insert(topic.to_string(), n);
        Ok(n)
    }

    /// Queues a record; the returned future resolves when its batch is acknowledged. Records
    /// go to `partition` when given, else to `partition_for_key` of the key, else of the value.
    /// Waits when the partition's queue is full.
    pub async fn send(
        &self,
        topic: &str,
        partition: Option<u32>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> Result<oneshot::Receiver<Result<RecordMetadata>>> {
        let n = self.partition_count(topic).await?;
        let p = match (partition, &key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, n),
            (None, None) => partition_for_key(value.as_deref().unwrap_or_default(), n),
        };
        let size = key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len) + 16;
        let (done, rx) = oneshot::channel();
        let pending = Pending {
            timestamp_ms: now_ms(),
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|h| proto::batch::Header {
                    key: h.key,
                    value: h.value,
                })
                .collect(),
            size,
        };
        let queue = self.queue(topic, p);
        queue
            .send((pending, done))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    fn queue(&self, topic: &str, p: u32) -> mpsc::Sender<(Pending, Done)> {
        let mut queues = self.queues.lock().expect("lock");
        if let Some(q) = queues.get(&(topic.to_string(), p)) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(self.cfg.queue_records);
        let task = tokio::spawn(sender(
            self.client.clone(),
            self.cfg.clone(),
            topic.to_string(),
            p,
            rx,
        ));
        self.tasks.lock().expect("lock").push(task);
        queues.insert((topic.to_string(), p), tx.clone());
        tx
    }

    /// Sends everything queued and waits for the answers.
    pub async fn close(self) {
        self.queues.lock().expect("lock").clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("lock"));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// An idempotent producer's identity and next sequence number on one partition.
#[derive(Debug, Default)]
struct Sequence {
    /// (producer id, epoch), once obtained.
    id: Option<(i64, i16)>,
    /// The first sequence of the next batch.
    next: i32,
}

/// How long a batch waits for more records by default.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(2);

/// The most requests a producer keeps in flight per partition: what a leader remembers of a
/// producer to answer retries (the tier's `RECENT_BATCHES`). Kafka's clients stop at 5; an
/// `acks=all` request here waits for an object store upload and commit (tens of ms), and with
/// only 5 on the wire the records behind them queue in the producer for a whole upload cycle
/// (measured: 16 in flight gave 15-30% more acks=all throughput and a lower p99). 64: pacing
/// puts (slowest answer / 32) between batches, about 3 ms at a 100 ms flush interval, where 16
/// put 14 ms (measured: acks=all p99 3-5 ms lower at 10% load, 2-5 ms at 25% and 50%).
pub const MAX_IN_FLIGHT: usize = 64;

/// The longest pacing puts between two batches that are not full.
const MAX_PACE: Duration = Duration::from_secs(1);

/// A batch on its way: its records, who waits for them, and the bytes of its current attempt.
struct Flight {
    records: Vec<Pending>,
    dones: Vec<Done>,
    /// The identity and first sequence `bytes` carry (`None`: not idempotent).
    producer: Option<ProducerInfo>,
    /// Empty until encoded.
    bytes: Bytes,
}

/// A leader's answer to one produce request.
type Answer = std::result::Result<pb::ProduceResponse, tonic::Status>;

/// Sends one partition's records: batches by size and linger, keeps up to `max_in_flight`
/// requests on the wire when idempotent (one otherwise), and answers every record in order.
///
/// Order: an idempotent leader refuses a batch whose sequence does not follow the last one it
/// appended, so a pipelined batch can never overtake an earlier one that failed. When any
/// answer is not a plain success the sender stops sending, collects every outstanding answer
/// and settles the batches one at a time, oldest first ([`recover`]).
async fn sender(
    client: Client,
    cfg: Arc<ProducerConfig>,
    topic: String,
    partition: u32,
    mut rx: mpsc::Receiver<(Pending, Done)>,
) {
    let idempotent = cfg.idempotent && cfg.acks != Acks::None;
    let window = if idempotent {
        cfg.max_in_flight.clamp(1, MAX_IN_FLIGHT)
    } else {
        1
    };
    let mut seq = Sequence::default();
    let mut flights: VecDeque<(Flight, tokio::task::JoinHandle<Answer>)> = VecDeque::new();
    let mut forming: Vec<(Pending, Done)> = Vec::new();
    let mut forming_bytes = 0;
    let mut deadline = tokio::time::Instant::now();
    let mut open = true;
    // Pacing: when answers are slow (acks=all waits for an upload), batches go out no faster
    // than one per (slowest recent answer / half the window), so the window does not fill.
    // A full window lets records pile up in the producer and reach the leader just after the
    // group commit that answered the window, a whole commit interval late.
    let mut answer_time = Duration::ZERO;
    let mut sent_at: VecDeque<tokio::time::Instant> = VecDeque::new();
    let mut last_send = tokio::time::Instant::now();
    loop {
        if !open && forming.is_empty() && flights.is_empty() {
            return;
        }
        let full = forming_bytes >= cfg.batch_bytes;
        let room = flights.len() < window;
        // With a window of one the answer itself paces the sender.
        let pace = match window {
            1 => Duration::ZERO,
            w => (answer_time * 2 / w as u32).min(MAX_PACE),
        };
        let due = deadline.max(last_send + pace);
        if room && !forming.is_empty() && (full || !open || tokio::time::Instant::now() >= due) {
            forming_bytes = 0;
            let (records, dones) = std::mem::take(&mut forming).into_iter().unzip();
            let mut f = Flight {
                records,
                dones,
                producer: None,
                bytes: Bytes::new(),
            };
            match prepare(&client, &cfg, &mut seq, idempotent, &mut f).await {
                Ok(()) => {
                    if let Some(p) = f.producer {
                        seq.next = seq_add(p.base_sequence, f.records.len());
                    }
                    let call = tokio::spawn(call(
                        client.clone(),
                        cfg.clone(),
                        topic.clone(),
                        partition,
                        f.bytes.clone(),
                    ));
                    flights.push_back((f, call));
                    last_send = tokio::time::Instant::now();
                    sent_at.push_back(last_send);
                }
                Err(_) => {
                    // No identity yet (or no encoding): settle everything in order, this
                    // batch after the ones already sent.
                    let mut queue = drain(&mut flights, None).await;
                    sent_at.clear();
                    answer_time = Duration::ZERO;
                    queue.push((f, None));
                    recover(
                        &client, &cfg, &topic, partition, &mut seq, idempotent, queue,
                    )
                    .await;
                }
            }
            continue;
        }
        tokio::select! {
            biased;
            answer = async { (&mut flights.front_mut().expect("checked").1).await },
                if !flights.is_empty() =>
            {
                let (f, _) = flights.pop_front().expect("checked");
                let sent = sent_at.pop_front();
                match joined(answer) {
                    Ok(r) if !refused_whole(&r, idempotent) => {
                        if let Some(t) = sent {
                            // Follows a slower answer at once, a faster one gradually.
                            let took = t.elapsed();
                            answer_time = took.max((answer_time * 7 + took) / 8);
                        }
                        deliver(partition, f, r)
                    }
                    answer => {
                        let queue = drain(&mut flights, Some((f, Some(answer)))).await;
                        // Failed and retried answers say nothing of the steady state.
                        sent_at.clear();
                        answer_time = Duration::ZERO;
                        recover(&client, &cfg, &topic, partition, &mut seq, idempotent, queue)
                            .await;
                    }
                }
            }
            _ = tokio::time::sleep_until(due), if room && !forming.is_empty() => {}
            next = rx.recv(), if open && !full => match next {
                Some(p) => {
                    if forming.is_empty() {
                        deadline = tokio::time::Instant::now() + cfg.linger;
                    }
                    forming_bytes += p.0.size;
                    forming.push(p);
                }
                None => open = false,
            },
        }
    }
}

/// `first` (when given), then every flight still outstanding with its answer, oldest first.
async fn drain(
    flights: &mut VecDeque<(Flight, tokio::task::JoinHandle<Answer>)>,
    first: Option<(Flight, Option<Answer>)>,
) -> Vec<(Flight, Option<Answer>)> {
    let mut queue: Vec<_> = first.into_iter().collect();
    while let Some((f, call)) = flights.pop_front() {
        queue.push((f, Some(joined(call.await))));
    }
    queue
}

/// The answer of a finished request task.
fn joined(r: std::result::Result<Answer, tokio::task::JoinError>) -> Answer {
    r.unwrap_or_else(|e| {
        Err(tonic::Status::internal(format!(
            "the request task failed: {e}"
        )))
    })
}

/// A record's own error as the leader reported it.
fn refusal(d: &pb::ErrorDetail) -> Error {
    Error::Server {
        code: ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Internal),
        message: d.message.clone(),
        retriable: d.retriable,
    }
}

/// An idempotent batch the leader refused whole because some of its records are over the size
/// limit (nothing of it was appended).
fn refused_whole(r: &pb::ProduceResponse, idempotent: bool) -> bool {
    idempotent && r.accepted == 0 && !r.errors.is_empty()
}

/// Gets the producer an identity when it needs one, and encodes `f` for the next sequence
/// unless its bytes already carry exactly that.
async fn prepare(
    client: &Client,
    cfg: &ProducerConfig,
    seq: &mut Sequence,
    idempotent: bool,
    f: &mut Flight,
) -> Result<()> {
    if idempotent && seq.id.is_none() {
        seq.id = Some(client.init_producer().await?);
        seq.next = 0;
    }
    let want = seq
        .id
        .filter(|_| idempotent)
        .map(|(id, epoch)| ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq.next,
        });
    if f.bytes.is_empty() || f.producer != want {
        f.bytes = encode(cfg, &f.records, want).map_err(|message| Error::Server {
            code: ErrorCode::InvalidRequest,
            message,
            retriable: false,
        })?;
        f.producer = want;
    }
    Ok(())
}

/// One produce request to the partition's leader.
async fn call(
    client: Client,
    cfg: Arc<ProducerConfig>,
    topic: String,
    partition: u32,
    record_batch: Bytes,
) -> Answer {
    let req = pb::ProduceRequest {
        topic: topic.clone(),
        partition,
        records: Vec::new(),
        acks: match cfg.acks {
            Acks::None => pb::Acks::None,
            Acks::Leader => pb::Acks::Leader,
            Acks::All => pb::Acks::All,
        } as i32,
        compression: pb::Compression::None as i32,
        producer: None,
        record_batch,
    };
    // Partition requests go to its leader; errors teach the client where that is now.
    let mut rpc = client
        .leader_rpc(&topic, partition)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    match tokio::time::timeout(cfg.request_timeout, rpc.produce(req)).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::unavailable(format!(
            "no answer from the leader of {topic}/{partition} within {:?}",
            cfg.request_timeout
        ))),
    }
}

/// Settles `queue` one batch at a time, oldest first, retrying with backoff. Nothing before
/// the first of them is unanswered, so sequences continue from its own.
///
/// An answer from the pipelined attempt is kept only when it is an append (a fact); a failure
/// may just mean an earlier batch failed, so that batch is sent again. A batch that ends in an
/// error gives the producer a new identity if its outcome is unknown, so a later batch can
/// never be taken for a retry of it.
async fn recover(
    client: &Client,
    cfg: &Arc<ProducerConfig>,
    topic: &str,
    partition: u32,
    seq: &mut Sequence,
    idempotent: bool,
    queue: Vec<(Flight, Option<Answer>)>,
) {
    if let Some(p) = queue.first().and_then(|(f, _)| f.producer) {
        seq.next = p.base_sequence;
    }
    for (mut f, first) in queue {
        let mut answer = match first {
            Some(Ok(r)) => Some(Ok(r)),
            Some(Err(s)) => {
                client.reroute(topic, partition, &s);
                None
            }
            None => None,
        };
        let mut attempt = 1;
        let mut delay = cfg.retry_backoff;
        loop {
            let a = match answer.take() {
                Some(a) => a,
                None => {
                    attempt += 1;
                    match prepare(client, cfg, seq, idempotent, &mut f).await {
                        Ok(()) => {
                            call(
                                client.clone(),
                                cfg.clone(),
                                topic.to_string(),
                                partition,
                                f.bytes.clone(),
                            )
                            .await
                        }
                        Err(e) if e.is_retriable() && attempt < cfg.retries => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        Err(e) => {
                            fail_all(f.dones, e);
                            break;
                        }
                    }
                }
            };
            match a {
                Ok(r) if refused_whole(&r, idempotent) => {
                    // Records over the size limit get their own errors; the others go again
                    // on their own (nothing was appended, so under the same sequence).
                    let Some(rest) = split_too_large(partition, f, r) else {
                        break;
                    };
                    f = rest;
                }
                Ok(r) => {
                    if let (Some(p), Some((id, epoch))) = (f.producer, seq.id)
                        && (p.producer_id, p.producer_epoch) == (id, epoch)
                        && r.accepted as usize == f.records.len()
                    {
                        seq.next = seq_add(p.base_sequence, f.records.len());
                    }
                    deliver(partition, f, r);
                    break;
                }
                Err(s) => {
                    let moved = client.reroute(topic, partition, &s);
                    let e = Error::from(s);
                    if e.code() == Some(ErrorCode::OutOfOrderSequence) && attempt < cfg.retries {
                        // The leader does not know what this producer sent before (records lost
                        // with a failed leader's disk, or forgotten): start over under a new id.
                        // Nothing of this batch was appended, so sending it again is safe.
                        seq.id = None;
                        continue;
                    }
                    if e.is_retriable() && attempt < cfg.retries {
                        if !moved {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                        continue;
                    }
                    if e.is_retriable() {
                        // It may have been appended after all: never reuse its sequences.
                        seq.id = None;
                    }
                    fail_all(f.dones, e);
                    break;
                }
            }
        }
    }
}

/// Answers the records of a batch refused for its oversized records with their errors, and
/// returns the rest (to be encoded again), if any.
fn split_too_large(partition: u32, f: Flight, r: pb::ProduceResponse) -> Option<Flight> {
    let mut too_large: HashMap<u32, Error> = r
        .errors
        .iter()
        .filter_map(|e| e.error.as_ref().map(|d| (e.index, d)))
        .filter(|(_, d)| d.code == ErrorCode::RecordTooLarge as i32)
        .map(|(i, d)| (i, refusal(d)))
        .collect();
    if too_large.is_empty() {
        // Refused for some other reason: every record has its error.
        deliver(partition, f, r);
        return None;
    }
    let mut rest = Flight {
        records: Vec::new(),
        dones: Vec::new(),
        producer: None,
        bytes: Bytes::new(),
    };
    for (i, (p, done)) in f.records.into_iter().zip(f.dones).enumerate() {
        match too_large.remove(&(i as u32)) {
            Some(e) => {
                let _ = done.send(Err(e));
            }
            None => {
                rest.records.push(p);
                rest.dones.push(done);
            }
        }
    }
    (!rest.records.is_empty()).then_some(rest)
}

/// Answers every record of a batch with `e`.
fn fail_all(dones: Vec<Done>, e: Error) {
    let (code, message, retriable) = match &e {
        Error::Server {
            code,
            message,
            retriable,
        } => (*code, message.clone(), *retriable),
        other => (ErrorCode::Unavailable, other.to_string(), true),
    };
    for done in dones {
        let _ = done.send(Err(Error::Server {
            code,
            message: message.clone(),
            retriable,
        }));
    }
}

/// Answers each record of an appended batch: its offset, or its own error.
fn deliver(partition: u32, f: Flight, r: pb::ProduceResponse) {
    let refused: HashMap<u32, pb::ErrorDetail> = r
        .errors
        .into_iter()
        .filter_map(|e| e.error.map(|d| (e.index, d)))
        .collect();
    let mut next = r.base_offset;
    for (i, done) in f.dones.into_iter().enumerate() {
        let out = match refused.get(&(i as u32)) {
            Some(d) => Err(refusal(d)),
            None => {
                let offset = if r.base_offset < 0 { -1 } else { next };
                next += 1;
                Ok(RecordMetadata { partition, offset })
            }
        };
        let _ = done.send(out);
    }
}

/// Encodes `batch` as one record batch, under `producer` when given.
fn encode(
    cfg: &ProducerConfig,
    batch: &[Pending],
    producer: Option<ProducerInfo>,
) -> std::result::Result<Bytes, String> {
    let mut builder = BatchBuilder::new(if cfg.zstd {
        Compression::Zstd
    } else {
        Compression::None
    });
    if let Some(p) = producer {
        builder = builder.producer(p, false);
    }
    for p in batch {
        builder.push(
            p.timestamp_ms,
            p.key.as_deref(),
            p.value.as_deref(),
            &p.headers,
        );
    }
    builder
        .build()
        .map(|b| b.into_bytes())
        .map_err(|e| format!("cannot encode the batch: {e}"))
}

/// `seq + n` with Kafka's wrap-around from `i32::MAX` to 0.
fn seq_add(seq: i32, n: usize) -> i32 {
    ((i64::from(seq) + n as i64) % (i64::from(i32::MAX) + 1)) as i32
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
