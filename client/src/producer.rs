//! The producer: one sender task per partition, fed through a bounded queue (back-pressure),
//! batching by size and linger, one request in flight per partition (order), retries with
//! exponential backoff for retriable errors.
//!
//! Each batch is encoded here as a Kafka v2 record batch (CRC-32C, optionally zstd) and sent as
//! one `record_batch`: the node checks it and stores it as sent, so the bytes on disk are the
//! bytes the producer checksummed. Records carry the producer's clock (Kafka's CreateTime).

use std::collections::HashMap;
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
    /// ... or once its first record has waited this long.
    pub linger: Duration,
    pub zstd: bool,
    /// Attempts per batch for retriable errors, with backoff doubling from `retry_backoff`.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Records queued per partition before `send` waits (back-pressure).
    pub queue_records: usize,
    /// A request without an answer by then counts as a retriable failure (a leader that hangs).
    pub request_timeout: Duration,
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
            linger: Duration::from_millis(5),
            zstd: false,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            queue_records: 10_000,
            request_timeout: Duration::from_secs(30),
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
    next: i32,
}

async fn sender(
    client: Client,
    cfg: Arc<ProducerConfig>,
    topic: String,
    partition: u32,
    mut rx: mpsc::Receiver<(Pending, Done)>,
) {
    let mut seq = Sequence::default();
    while let Some(first) = rx.recv().await {
        let mut bytes = first.0.size;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.linger;
        while bytes < cfg.batch_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    bytes += p.0.size;
                    batch.push(p);
                }
                Ok(None) | Err(_) => break,
            }
        }
        send_batch(&client, &cfg, &topic, partition, batch, &mut seq).await;
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

async fn send_batch(
    client: &Client,
    cfg: &ProducerConfig,
    topic: &str,
    partition: u32,
    batch: Vec<(Pending, Done)>,
    seq: &mut Sequence,
) {
    let idempotent = cfg.idempotent && cfg.acks != Acks::None;
    let records = batch.len();
    let (batch, dones): (Vec<Pending>, Vec<Done>) = batch.into_iter().unzip();
    let fail_all = |dones: Vec<Done>, e: Error| {
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
    };
    let mut delay = cfg.retry_backoff;
    let mut attempt = 0;
    // (producer identity, encoded batch) of the current attempt; re-encoded only when the
    // identity changes, so retries send the same bytes and the same sequence numbers.
    let mut encoded: Option<(Option<ProducerInfo>, Bytes)> = None;
    let result = loop {
        attempt += 1;
        if idempotent && seq.id.is_none() {
            match client.init_producer().await {
                Ok(id) => {
                    seq.id = Some(id);
                    seq.next = 0;
                }
                Err(e) if e.is_retriable() && attempt < cfg.retries => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        let producer = seq
            .id
            .filter(|_| idempotent)
            .map(|(id, epoch)| ProducerInfo {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: seq.next,
            });
        if encoded.as_ref().is_none_or(|(p, _)| *p != producer) {
            match encode(cfg, &batch, producer) {
                Ok(b) => encoded = Some((producer, b)),
                Err(message) => {
                    break Err(Error::Server {
                        code: ErrorCode::InvalidRequest,
                        message,
                        retriable: false,
                    });
                }
            }
        }
        let record_batch = encoded.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
        let req = pb::ProduceRequest {
            topic: topic.to_string(),
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
        let sent = match client.leader_rpc(topic, partition).await {
            Ok(mut rpc) => {
                match tokio::time::timeout(cfg.request_timeout, rpc.produce(req)).await {
                    Ok(r) => r,
                    Err(_) => Err(tonic::Status::unavailable(format!(
                        "no answer from the leader of {topic}/{partition} within {:?}",
                        cfg.request_timeout
                    ))),
                }
            }
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        match sent {
            Ok(r) => break Ok(r.into_inner()),
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
                break Err(e);
            }
        }
    };
    if let Ok(r) = &result
        && r.accepted as usize == records
    {
        seq.next = seq_add(seq.next, records);
    }
    match result {
        Ok(r) => {
            let refused: HashMap<u32, pb::ErrorDetail> = r
                .errors
                .into_iter()
                .filter_map(|e| e.error.map(|d| (e.index, d)))
                .collect();
            let mut next = r.base_offset;
            for (i, done) in dones.into_iter().enumerate() {
                let out = match refused.get(&(i as u32)) {
                    Some(d) => Err(Error::Server {
                        code: ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Internal),
                        message: d.message.clone(),
                        retriable: d.retriable,
                    }),
                    None => {
                        let offset = if r.base_offset < 0 { -1 } else { next };
                        next += 1;
                        Ok(RecordMetadata { partition, offset })
                    }
                };
                let _ = done.send(out);
            }
        }
        Err(e) => fail_all(dones, e),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
