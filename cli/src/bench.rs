//! `tierlog bench produce|consume|failover|kafka`: throughput and latency through a real node, printed
//! next to baselines measured in the same run (raw disk, loopback TCP, the storage core on its
//! own). `tierlog bench sql` lives in [`sql`].
//!
//! By default the bench starts a fresh node (this same binary, `tierlog serve`) on a temporary
//! data directory, so it can also report the node's resident memory; `--external` measures the
//! node at `--server` instead. Latencies are taken per record with an HDR histogram:
//! produce→ack from `send` to the acknowledgement, produce→consume from `send` to the moment a
//! follow-mode fetch stream delivers the record (the send time travels in the record's value).

mod groups;
mod kafka;
mod merge;
mod observe;
mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::{Client, Producer, ProducerConfig};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use proto::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchKind {
    /// Produce at full speed, then at fractions of the sustained rate (--load); acks and
    /// end-to-end latency.
    Produce,
    /// Replay a topic from offset 0, from the hot tier and then from the cold tier alone.
    Consume,
    /// Several nodes on --meta etcd://…: produce throughput with 1 node and with --nodes, then
    /// kill -9 a partition's leader and time until it is served again.
    Failover,
    /// SQL over the committed history (full scan, time range, JSON group-by) next to DuckDB
    /// reading the same Parquet files.
    Sql,
    /// Consumer-group rebalances: eager against cooperative for 1 → 2 → 3 → 2 members, and a
    /// large group's time to a stable assignment and etcd requests (with --meta etcd://…).
    Groups,
    /// The Kafka listener driven by librdkafka (--python with confluent-kafka): produce and
    /// replay next to the native gRPC path on the same node and loopback TCP.
    Kafka,
    /// Merging small cold objects: objects and bytes per partition after --commits small
    /// acks=all commits, unmerged and merged; SQL and cold replay over each; the CPU merging
    /// took while another partition took acks=all load.
    Merge,
    /// The cost of observing: produce throughput and send→ack latency on a node with metrics
    /// off (no HTTP port) against one with metrics on and scraped every second, alternated.
    Observe,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    pub kind: BenchKind,
    /// Measure the node at --server rather than starting a fresh local one.
    #[arg(long)]
    pub external: bool,
    /// Records in the full-speed phase (and in the replayed topic).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Value bytes per record (JSON-like text; keys add ~12 bytes).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// `merge`: small acks=all commits written (--records spread over them).
    #[arg(long, default_value_t = 36_000)]
    pub commits: u64,
    /// groups: members of the large group.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// groups: partitions of the large group's topic.
    #[arg(long, default_value_t = 1_000)]
    pub group_partitions: u32,
    #[arg(long, value_enum, default_value = "leader")]
    pub acks: crate::AcksArg,
    /// fsync policy of the started node and of the disk baseline: every_batch, never or ms.
    #[arg(long, default_value = "10")]
    pub fsync: String,
    /// The producer's linger (default: the producer's own default).
    #[arg(long, default_value_t = client::DEFAULT_LINGER.as_millis() as u64)]
    pub linger_ms: u64,
    /// Produce requests in flight per partition (the producer's `max_in_flight`).
    #[arg(long, default_value_t = client::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    #[arg(long, default_value_t = 512 << 10)]
    pub batch_bytes: usize,
    /// `produce`: the paced phases after the full-speed one, as fractions of the sustained
    /// rate (e.g. 0.1,0.25,0.5): latency against load.
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    pub load: Vec<f64>,
    /// Length of each paced phase.
    #[arg(long, default_value_t = 10)]
    pub load_secs: u64,
    /// `produce`: repeat the first paced phase while heavy SQL (a full scan and group-by over the
    /// topic, again and again) runs on the node, and compare the latencies.
    #[arg(long)]
    pub sql_load: bool,
    /// Log level of started nodes; their log then goes to this program's stderr (default: warn,
    /// into a file that goes away with the bench directory).
    #[arg(long)]
    pub node_log: Option<String>,
    /// Where the started node and the disk baseline write (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The started node's cold tier (default: the file system under --dir), e.g.
    /// s3://bucket/prefix; the bench then also measures the store's own PUT latency.
    #[arg(long)]
    pub object_store: Option<String>,
    /// Metadata store of the started nodes (`failover` needs etcd://host:port/namespace).
    #[arg(long)]
    pub meta: Option<String>,
    /// Nodes started by `failover`.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Lease TTL of the started nodes, ms (`failover`).
    #[arg(long, default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// Segment size of the history `sql` writes (smaller segments prune finer).
    #[arg(long, default_value_t = 16 << 20)]
    pub segment_bytes: u64,
    /// Timed runs of each `sql` query (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// The Python with `duckdb` that `sql` runs the DuckDB baseline with.
    #[arg(long, env = "TIERLOG_PYTHON", default_value = "python3")]
    pub python: String,
    /// Kills timed by `failover`.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// A settings file (as `tierlog serve --config` takes) for the started nodes; the bench's
    /// own flags (object store, fsync, flush interval) take precedence over it.
    #[arg(long, env = "TIERLOG_CONFIG")]
    pub node_config: Option<PathBuf>,
    /// `[tier] flush_interval_ms` of the started nodes: the least time between two cuts a
    /// partition commits for acks=all requests (default: --node-config's, else the node's).
    #[arg(long)]
    pub flush_interval_ms: Option<u64>,
    /// Options of that store, `key=value` (e.g. aws_endpoint=http://127.0.0.1:39000); the
    /// standard AWS_* variables apply as well.
    #[arg(long = "object-store-option", value_parser = parse_option)]
    pub object_store_options: Vec<(String, String)>,
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, not {s:?}"))
}

/// CPU time from /proc (Linux; `None` elsewhere): the whole machine's busy and total ticks, and
/// one process's. A phase's figures are read next to how busy the machine was meanwhile: on a
/// machine shared with the S3 server and the load generator, latency follows CPU saturation.
#[derive(Clone, Copy)]
struct CpuTicks {
    busy: u64,
    total: u64,
    process: Option<u64>,
}

impl CpuTicks {
    fn now(pid: Option<u32>) -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3)? + f.get(4).unwrap_or(&0);
        let process = pid.and_then(|pid| {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces): utime and stime are the
            // 12th and 13th.
            let rest = &s[s.rfind(')')? + 2..];
            let v: Vec<&str> = rest.split_whitespace().collect();
            Some(v.get(11)?.parse::<u64>().ok()? + v.get(12)?.parse::<u64>().ok()?)
        });
        Some(CpuTicks {
            busy: total - idle,
            total,
            process,
        })
    }

    /// How busy the machine was since `self`, and the node's share: (value, note) of a row.
    fn since(&self, pid: Option<u32>) -> Option<(String, String)> {
        let now = CpuTicks::now(pid)?;
        let total = now.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let busy = 100.0 * (now.busy - self.busy) as f64 / total;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let node = match (self.process, now.process) {
            (Some(a), Some(b)) => {
                format!("the node {:.0}% of it, ", 100.0 * (b - a) as f64 / total)
            }
            _ => String::new(),
        };
        Some((format!("{busy:.0}% busy"), format!("{node}{cores} cores")))
    }
}

/// The settings file given for started nodes (`--node-config`), or none.
fn node_settings(args: &BenchArgs) -> anyhow::Result<toml::Table> {
    let Some(path) = &args.node_config else {
        return Ok(toml::Table::new());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The flush interval started nodes run with: the flag, else the settings file's, else the
/// default.
fn flush_interval_ms(args: &BenchArgs) -> anyhow::Result<u64> {
    let from_file = node_settings(args)?
        .get("tier")
        .and_then(|t| t.get("flush_interval_ms"))
        .and_then(toml::Value::as_integer)
        .map(|v| v as u64);
    Ok(args
        .flush_interval_ms
        .or(from_file)
        .unwrap_or(tier::TierConfig::default().flush_interval_ms))
}

/// A node started for the bench; killed when dropped.
struct Node {
    child: tokio::process::Child,
    addr: String,
    /// The Kafka listener's address, when it was started with one.
    kafka: Option<String>,
    /// The HTTP listener's address (metrics), unless `--http-listen off` was given.
    http: Option<String>,
    pid: u32,
}

impl Node {
    async fn start(dir: &Path, args: &BenchArgs) -> anyhow::Result<Node> {
        Node::start_with(dir, args, &[]).await
    }

    /// A node with extra `serve` flags, its data under `dir/data`.
    async fn start_with(dir: &Path, args: &BenchArgs, extra: &[String]) -> anyhow::Result<Node> {
        Node::launch(dir, args, extra, false).await
    }

    /// A node that also listens for Kafka clients (on a port it picks).
    async fn start_kafka(dir: &Path, args: &BenchArgs) -> anyhow::Result<Node> {
        Node::launch(dir, args, &[], true).await
    }

    async fn launch(
        dir: &Path,
        args: &BenchArgs,
        extra: &[String],
        kafka: bool,
    ) -> anyhow::Result<Node> {
        let fsync = args.fsync.as_str();
        // Metrics on (an HTTP port it picks) unless the caller turns them off.
        let http = !extra.iter().any(|a| a == "--http-listen");
        let exe = std::env::current_exe().context("locating the tierlog binary")?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        // One settings file: --node-config, then what the bench sets itself.
        let mut cfg = node_settings(args)?;
        let mut store_args: Vec<String> = Vec::new();
        if let Some(url) = &args.object_store {
            let opts = cfg
                .entry("object_store_options")
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .context("object_store_options must be a table")?;
            for (k, v) in &args.object_store_options {
                opts.insert(k.clone(), v.clone().into());
            }
            store_args.extend(["--object-store".to_string(), url.clone()]);
        }
        if let Some(ms) = args.flush_interval_ms {
            cfg.entry("tier")
                .or_insert_with(|| toml::Table::new().into())
                .as_table_mut()
                .context("[tier] must be a table")?
                .insert("flush_interval_ms".into(), (ms as i64).into());
        }
        let cfg_path = dir.join("node.toml");
        std::fs::write(&cfg_path, toml::to_string(&cfg)?)?;
        store_args.extend(["--config".to_string(), cfg_path.display().to_string()]);
        let mut child = tokio::process::Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--kafka-listen",
                if kafka { "127.0.0.1:0" } else { "off" },
                "--fsync",
                fsync,
                "--data-dir",
            ])
            .arg(dir.join("data"))
            .args(&store_args)
            .args(if http {
                &["--http-listen", "127.0.0.1:0"][..]
            } else {
                &[][..]
            })
            .args(extra)
            .env("TIERLOG_LOG", args.node_log.as_deref().unwrap_or("warn"))
            .stdout(std::process::Stdio::piped())
            .stderr(match args.node_log {
                Some(_) => std::process::Stdio::inherit(),
                None => log.into(),
            })
            .kill_on_drop(true)
            .spawn()
            .context("starting `tierlog serve`")?;
        let pid = child.id().context("node pid")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let (addr, kafka, http) = tokio::time::timeout(Duration::from_secs(60), async {
            let (mut addr, mut kafka_addr, mut http_addr) = (None, None, None);
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("tierlog listening on ") {
                    addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("tierlog kafka listening on ") {
                    kafka_addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("tierlog http listening on ") {
                    http_addr = Some(a.to_string());
                }
                if let Some(a) = &addr
                    && (!kafka || kafka_addr.is_some())
                    && (!http || http_addr.is_some())
                {
                    return Ok((a.clone(), kafka_addr, http_addr));
                }
            }
            bail!("the node exited; see {}", dir.join("node.log").display())
        })
        .await
        .context("the node did not start within 60 s")??;
        Ok(Node {
            child,
            addr,
            kafka,
            http,
            pid,
        })
    }

    /// Peak and current resident memory (MiB) from /proc.
    fn memory(&self) -> Option<(f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }

    /// Graceful stop (SIGTERM: seal, upload, flush), waiting for the exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("could not signal the node");
        }
        let exit = tokio::time::timeout(Duration::from_secs(300), self.child.wait())
            .await
            .context("the node did not stop within 300 s")??;
        if !exit.success() {
            bail!("the node exited with {exit}");
        }
        Ok(())
    }
}

pub async fn run(server: &str, args: BenchArgs) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("tierlog-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a bench directory in {}", base.display()))?;
    println!(
        "tierlog bench {:?}: {} records of {} B, {} partitions, acks={:?}, fsync={}, linger={} ms, in flight={}, flush interval={} ms{}, dir={}",
        args.kind,
        args.records,
        args.record_bytes,
        args.partitions,
        args.acks,
        args.fsync,
        args.linger_ms,
        args.max_in_flight,
        flush_interval_ms(&args)?,
        args.node_config.as_ref().map_or(String::new(), |p| format!(
            ", node settings {}",
            p.display()
        )),
        dir.path().display()
    );
    match args.kind {
        BenchKind::Produce => produce(server, &args, dir.path()).await,
        BenchKind::Consume => consume(server, &args, dir.path()).await,
        BenchKind::Failover => failover(&args, dir.path()).await,
        BenchKind::Sql => sql::run(&args, dir.path()).await,
        BenchKind::Groups => groups::run(&args, dir.path()).await,
        BenchKind::Kafka => kafka::run(&args, dir.path()).await,
        BenchKind::Observe => observe::run(&args, dir.path()).await,
        BenchKind::Merge => merge::run(&args, dir.path()).await,
    }
}

fn row(what: &str, value: String, note: &str) {
    println!("  {what:<44} {value:>22}  {note}");
}

fn mbs(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn lat(h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.2} / p99 {:.2} / p999 {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999)
    )
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Text that compresses about as event payloads do: words drawn at random from a vocabulary,
/// 16 MiB of it so that values cut from it rarely repeat within a compression window.
fn corpus() -> &'static [u8] {
    static CORPUS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut rng = fastrand::Rng::with_seed(7);
        let words: Vec<String> = (0..4096)
            .map(|_| {
                let n = rng.usize(3..10);
                (0..n).map(|_| rng.alphanumeric()).collect()
            })
            .collect();
        let mut out = Vec::with_capacity(16 << 20);
        while out.len() < 16 << 20 {
            out.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
            out.push(b' ');
        }
        out
    })
}

/// A value of `len` bytes: 8 bytes of send time (ns since the bench's epoch), then a JSON-like
/// event whose text is cut from [`corpus`].
fn value(i: u64, len: usize, sent_ns: u64) -> Vec<u8> {
    let len = len.max(8);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&sent_ns.to_le_bytes());
    let body = format!(
        r#"{{"seq":{i},"user":"user-{}","kind":"click","page":"/products/{}","text":""#,
        i % 10_007,
        i % 97
    );
    v.extend_from_slice(body.as_bytes());
    let c = corpus();
    let need = len.saturating_sub(v.len() + 2);
    let start =
        (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (c.len() - need.min(c.len())) as u64) as usize;
    v.extend_from_slice(&c[start..start + need.min(c.len())]);
    v.extend_from_slice(b"\"}");
    v.truncate(len);
    v
}

async fn setup(
    server: &str,
    args: &BenchArgs,
    dir: &Path,
) -> anyhow::Result<(Option<Node>, Client, String)> {
    let node = if args.external {
        None
    } else {
        Some(Node::start(dir, args).await?)
    };
    let addr = node.as_ref().map_or(server.to_string(), |n| n.addr.clone());
    let client = crate::commands::connect(&addr).await?;
    let topic = format!("bench-{}", std::process::id());
    client
        .create_topic(&topic, args.partitions)
        .await
        .map_err(crate::commands::explain)?;
    Ok((node, client, topic))
}

fn producer_config(args: &BenchArgs) -> ProducerConfig {
    ProducerConfig {
        acks: args.acks.into(),
        batch_bytes: args.batch_bytes,
        linger: Duration::from_millis(args.linger_ms),
        max_in_flight: args.max_in_flight,
        ..Default::default()
    }
}

struct Phase {
    records: u64,
    bytes: u64,
    elapsed: Duration,
    acks: Histogram<u64>,
}

/// Sends `records` records (at `rate` records/s, or as fast as the node takes them when `None`)
/// round-robin over the partitions with keys, and measures send→ack per record.
async fn produce_phase(
    producer: &Producer,
    topic: &str,
    args: &BenchArgs,
    records: u64,
    rate: Option<f64>,
    epoch: Instant,
) -> anyhow::Result<Phase> {
    let (tx, mut rx) = mpsc::channel::<(Instant, tokio::sync::oneshot::Receiver<_>)>(65_536);
    let collector = tokio::spawn(async move {
        let mut h = histogram();
        let mut pending = FuturesUnordered::new();
        let mut first_error = None;
        let mut open = true;
        loop {
            tokio::select! {
                next = rx.recv(), if open => match next {
                    Some((sent, done)) => pending.push(async move {
                        let r: Result<Result<client::RecordMetadata, client::Error>, _> = done.await;
                        (sent.elapsed(), r)
                    }),
                    None => open = false,
                },
                Some((took, r)) = pending.next(), if !pending.is_empty() => {
                    match r {
                        Ok(Ok(_)) => { h.saturating_record(took.as_micros().max(1) as u64); }
                        Ok(Err(e)) => { first_error.get_or_insert(e.to_string()); }
                        Err(_) => { first_error.get_or_insert("the producer dropped a record".into()); }
                    }
                }
                else => break,
            }
        }
        (h, first_error)
    });
    let start = Instant::now();
    let mut bytes = 0u64;
    for i in 0..records {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let sent = Instant::now();
        let v = value(i, args.record_bytes, (sent - epoch).as_nanos() as u64);
        let key = format!("user-{}", i % 10_007).into_bytes();
        bytes += (v.len() + key.len()) as u64;
        let p = (i % u64::from(args.partitions)) as u32;
        let done = producer
            .send(topic, Some(p), Some(key), Some(v), Vec::new())
            .await
            .map_err(crate::commands::explain)?;
        if tx.send((sent, done)).await.is_err() {
            bail!("the latency collector stopped");
        }
    }
    drop(tx);
    let (acks, err) = collector.await?;
    let elapsed = start.elapsed();
    if let Some(e) = err {
        bail!("a record was not acknowledged: {e}");
    }
    Ok(Phase {
        records,
        bytes,
        elapsed,
        acks,
    })
}

/// Runs `sql` (a group-by with a count `n`) on the node again and again until `stop`; returns
/// the queries finished and the rows they counted, each at least `min_rows`.
async fn sql_loop(
    addr: String,
    sql: String,
    min_rows: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, u64)> {
    let (mut queries, mut scanned) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let mut rows = crate::sql::query(&addr, &sql).await?;
        let mut n = 0i64;
        while let Some(b) = rows.next().await? {
            let counts = b
                .column_by_name("n")
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::Int64Array>())
                .context("the group-by answered without its counts")?;
            n += counts.iter().flatten().sum::<i64>();
        }
        if (n as u64) < min_rows {
            bail!("the group-by counted {n} records; {min_rows} were acknowledged before it");
        }
        queries += 1;
        scanned += n as u64;
    }
    Ok((queries, scanned))
}

/// Follows every partition from `from[p]` until `until` records arrived; per-record latency
/// from the send time carried in the value.
async fn follow(
    client: &Client,
    topic: &str,
    from: Vec<i64>,
    until: u64,
    epoch: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u64>>(1024);
    let mut tasks = Vec::new();
    for (p, start) in from.into_iter().enumerate() {
        let mut rpc = client.rpc();
        let (topic, tx) = (topic.to_string(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let mut stream = rpc
                .fetch(pb::FetchRequest {
                    topic,
                    partition: p as u32,
                    start: Some(pb::fetch_request::Start::Offset(start)),
                    max_bytes: 1 << 20,
                    follow: true,
                    max_records: 0,
                    member: None,
                })
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                let now = (Instant::now() - epoch).as_nanos() as u64;
                let lat: Vec<u64> = msg
                    .records
                    .iter()
                    .filter_map(|r| r.value.as_deref()?.get(..8))
                    .map(|b| {
                        let sent = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                        now.saturating_sub(sent) / 1000
                    })
                    .collect();
                if tx.send(lat).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(tx);
    let mut h = histogram();
    let mut seen = 0u64;
    while seen < until {
        match rx.recv().await {
            Some(lat) => {
                seen += lat.len() as u64;
                for l in lat {
                    h.saturating_record(l.max(1));
                }
            }
            None => break,
        }
    }
    for t in &tasks {
        t.abort();
    }
    if seen < until {
        bail!("the consumer saw {seen} of {until} records");
    }
    Ok(h)
}

/// Sends one record to every partition with acks=all and waits for the acknowledgements:
/// everything appended before is then committed to the object store.
async fn committed_marker(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: client::Acks::All,
            linger: Duration::ZERO,
            ..Default::default()
        },
    );
    let mut acks = Vec::new();
    for p in 0..partitions {
        let marker = producer
            .send(topic, Some(p), None, Some(vec![0; 8]), Vec::new())
            .await
            .map_err(crate::commands::explain)?;
        acks.push(marker);
    }
    for a in acks {
        a.await
            .context("the producer dropped the marker")?
            .map_err(crate::commands::explain)?;
    }
    producer.close().await;
    Ok(())
}

async fn end_offsets(client: &Client, topic: &str) -> anyhow::Result<Vec<i64>> {
    let d = client
        .describe_topic(topic)
        .await
        .map_err(crate::commands::explain)?;
    let mut parts = d.partitions;
    parts.sort_by_key(|p| p.partition);
    Ok(parts.iter().map(|p| p.high_watermark).collect())
}

async fn produce(server: &str, args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.load.is_empty() || args.load.iter().any(|&f| !(f > 0.0 && f <= 1.0)) {
        bail!(
            "--load takes fractions of the sustained rate in (0, 1], got {:?}",
            args.load
        );
    }
    let epoch = Instant::now();
    println!("baselines (same run):");
    let disk_bytes = (args.records * args.record_bytes as u64).min(1 << 30);
    let disk = disk_write(dir, disk_bytes, crate::settings::parse_fsync(&args.fsync)?).await?;
    row(
        "raw disk write, same fsync policy",
        format!("{:.0} MB/s", mbs(disk_bytes, disk)),
        "256 KiB writes",
    );
    let core = core_append(dir, args).await?;
    row(
        "storage core append (no network)",
        format!("{:.0} MB/s", core),
        "the same records, batched as the producer does",
    );
    let (lo_mbs, lo_rtt) = loopback(disk_bytes).await?;
    row(
        "loopback TCP",
        format!("{lo_mbs:.0} MB/s"),
        &format!("64 B round trip {}", lat(&lo_rtt)),
    );
    // The S3 server's own PUT latency at sizes around those of the objects the node writes
    // (each acks=all phase below also measures it at its own objects' mean size).
    if let Some(url) = &args.object_store {
        for size in [64 << 10, 256 << 10, 1 << 20] {
            let puts = store_puts(url, &args.object_store_options, size, 100).await?;
            row(
                &format!("object store PUT, {} KiB", size >> 10),
                lat(&puts),
                "100 sequential PUTs to the same store",
            );
        }
    }

    let (node, client, topic) = setup(server, args, dir).await?;
    let producer = Producer::new(client.clone(), producer_config(args));
    println!("through the node:");
    let pid = node.as_ref().map(|n| n.pid);
    let cpu = CpuTicks::now(pid);
    let peak = produce_phase(&producer, &topic, args, args.records, None, epoch).await?;
    let peak_cpu = cpu.and_then(|c| c.since(pid));
    let peak_rps = peak.records as f64 / peak.elapsed.as_secs_f64();
    row(
        "produce, full speed",
        format!("{:.0} MB/s", mbs(peak.bytes, peak.elapsed)),
        &format!(
            "{:.0} records/s; {:.0}% of the storage core",
            peak_rps,
            100.0 * mbs(peak.bytes, peak.elapsed) / core
        ),
    );
    row("  send→ack at full speed", lat(&peak.acks), "");
    if let Some((busy, note)) = peak_cpu {
        row("  machine CPU meanwhile", busy, &note);
    }
    // The full-speed phase outruns Parquet conversion (it runs at idle priority), so the node
    // is still converting and uploading when it ends. What it can sustain is the rate at which
    // records become committed in the object store: until an acks=all record sent after the
    // phase is acknowledged on every partition (uploads go in offset order).
    let drain = Instant::now();
    committed_marker(&client, &topic, args.partitions).await?;
    let drain = drain.elapsed();
    let sustained = peak.elapsed + drain;
    let sustained_rps = peak.records as f64 / sustained.as_secs_f64();
    row(
        "produce, sustained (until committed)",
        format!("{:.0} MB/s", mbs(peak.bytes, sustained)),
        &format!(
            "{sustained_rps:.0} records/s; the last {:.1} s converted and uploaded the backlog",
            drain.as_secs_f64()
        ),
    );

    // Paced phases at fractions of what the node sustains (the burst rate above is not a rate
    // it can keep up), each with a consumer following along. They start with the conversion
    // backlog gone.
    let interval = flush_interval_ms(args)?;
    // acks=all against an object store: the bound is set by the server's PUT of objects the
    // size of those the phase committed, measured right after it.
    let store_url = args
        .object_store
        .as_ref()
        .filter(|_| matches!(args.acks, crate::AcksArg::All));
    let addr = node
        .as_ref()
        .map_or(server, |n| n.addr.as_str())
        .to_string();
    // How much the full-speed phase's records shrank in the store (for the PUT probe's size).
    let compression = match store_url {
        Some(url) => {
            let stored: u64 = commit_objects(url, &args.object_store_options, &topic)
                .await?
                .values()
                .sum();
            (stored as f64 / peak.bytes.max(1) as f64).clamp(0.01, 1.0)
        }
        None => 1.0,
    };
    for &fraction in &args.load {
        let rate = sustained_rps * fraction;
        let n = ((rate * args.load_secs as f64) as u64).max(1);
        let from = end_offsets(&client, &topic).await?;
        let consumer = {
            // A consumer of its own, on its own connection, as a separate application would be.
            let client = crate::commands::connect(&addr).await?;
            let topic = topic.clone();
            tokio::spawn(async move { follow(&client, &topic, from, n, epoch).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = match store_url {
            Some(url) => Some(commit_objects(url, &args.object_store_options, &topic).await?),
            None => None,
        };
        // The server's PUT latency while it serves the phase: one PUT of about the size of the
        // objects the phase commits, every interval (a busy partition's commit rate).
        let probe = match store_url {
            Some(url) => {
                let size = expected_object_bytes(compression, rate, args, interval);
                let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
                let task = tokio::spawn(put_probe(
                    url.clone(),
                    args.object_store_options.clone(),
                    size,
                    Duration::from_millis(interval.max(10)),
                    stop.0.clone(),
                ));
                Some((size, stop, task))
            }
            None => None,
        };
        // The local disk's own sync latency meanwhile (rolls sync the segment they seal; acks=all
        // cuts do not wait for the disk).
        // Both probes stop when the phase ends, or fails (a blocking thread left running would
        // hold the runtime's shutdown).
        let disk_stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let disk_probe = tokio::task::spawn_blocking({
            let (path, stop) = (dir.join("sync-probe"), disk_stop.0.clone());
            move || sync_probe(&path, Duration::from_millis(20), &stop)
        });
        let cpu = CpuTicks::now(pid);
        let phase = produce_phase(&producer, &topic, args, n, Some(rate), epoch).await?;
        let phase_cpu = cpu.and_then(|c| c.since(pid));
        drop(disk_stop);
        let syncs = disk_probe.await??;
        let probe = match probe {
            Some((size, stop, task)) => {
                drop(stop);
                Some((size, task.await??))
            }
            None => None,
        };
        let e2e = consumer.await??;
        let mut target = match args.acks {
            crate::AcksArg::Leader => "target: p99 < 10 ms".to_string(),
            _ => String::new(),
        };
        let mut put_row = None;
        if let (Some(url), Some(before)) = (store_url, before) {
            let sizes: Vec<u64> = commit_objects(url, &args.object_store_options, &topic)
                .await?
                .into_iter()
                .filter(|(path, _)| !before.contains_key(path))
                .map(|(_, size)| size)
                .collect();
            if !sizes.is_empty() {
                let mean = (sizes.iter().sum::<u64>() / sizes.len() as u64).max(1) as usize;
                let puts = store_puts(url, &args.object_store_options, mean, 100).await?;
                let put = puts.value_at_quantile(0.99) as f64 / 1000.0;
                target = format!(
                    "bound: flush interval + 2 × PUT p99 = {} + {:.1} = {:.1} ms",
                    interval,
                    2.0 * put,
                    interval as f64 + 2.0 * put
                );
                if let Some((_, during)) = &probe {
                    let put = during.value_at_quantile(0.99) as f64 / 1000.0;
                    target.push_str(&format!(
                        "; with the PUT p99 during the phase: {:.1} ms",
                        interval as f64 + 2.0 * put
                    ));
                }
                put_row = Some((
                    format!(
                        "  its {} objects' mean size ({} KiB), PUT",
                        sizes.len(),
                        mean >> 10
                    ),
                    lat(&puts),
                ));
            }
        }
        row(
            &format!("produce at {:.0}% of sustained speed", fraction * 100.0),
            format!("{:.0} MB/s", mbs(phase.bytes, phase.elapsed)),
            &format!(
                "{:.0} records/s",
                phase.records as f64 / phase.elapsed.as_secs_f64()
            ),
        );
        row("  send→ack", lat(&phase.acks), &target);
        if let Some((what, put)) = put_row {
            row(&what, put, "100 sequential PUTs, right after the phase");
        }
        if let Some((size, during)) = &probe {
            row(
                &format!("  PUT of {} KiB during the phase", size >> 10),
                lat(during),
                &format!("{} PUTs, one per flush interval", during.len()),
            );
        }
        row(
            "  disk: 4 KiB append + fdatasync meanwhile",
            lat(&syncs),
            &format!(
                "{} syncs, one per 20 ms; slowest {:.0} ms",
                syncs.len(),
                syncs.max() as f64 / 1000.0
            ),
        );
        row("  send→consumed (follow fetch)", lat(&e2e), "");
        if let Some((busy, note)) = phase_cpu {
            row("  machine CPU meanwhile", busy, &note);
        }
    }
    if args.sql_load {
        let fraction = args.load[0];
        let rate = sustained_rps * fraction;
        let n = (rate * args.load_secs as f64) as u64;
        let sql = format!(
            "SELECT key, COUNT(*) AS n, SUM(CAST(value > key AS BIGINT)) AS above, \
             MAX(timestamp) AS last FROM \"{topic}\" GROUP BY key"
        );
        let stop = Arc::new(AtomicBool::new(false));
        // Every query must count at least what was acknowledged before this phase.
        let before = end_offsets(&client, &topic).await?.iter().sum::<i64>() as u64;
        let load = tokio::spawn(sql_loop(addr, sql, before, stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with = produce_phase(&producer, &topic, args, n, Some(rate), epoch).await;
        stop.store(true, Ordering::Relaxed);
        let (queries, scanned) = load.await??;
        let with = with?;
        row(
            &format!(
                "produce at {:.0}% of sustained, heavy SQL running",
                fraction * 100.0
            ),
            format!("{:.0} MB/s", mbs(with.bytes, with.elapsed)),
            &format!(
                "{queries} group-bys over the whole topic finished meanwhile ({:.0} M rows scanned)",
                scanned as f64 / 1e6
            ),
        );
        row(
            "  send→ack",
            lat(&with.acks),
            "next to the same phase without SQL",
        );
    }
    producer.close().await;
    if let Some(node) = node {
        if let Some((peak_mib, now_mib)) = node.memory() {
            row(
                "node resident memory, peak / now",
                format!("{peak_mib:.0} / {now_mib:.0} MiB"),
                "bound: cache (512 MiB default) + 256 MiB",
            );
        }
        node.stop().await?;
    }
    Ok(())
}

async fn consume(server: &str, args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let (node, client, topic) = setup(server, args, dir).await?;
    let producer = Producer::new(client.clone(), producer_config(args));
    let loaded = produce_phase(&producer, &topic, args, args.records, None, epoch).await?;
    producer.close().await;
    println!(
        "loaded {} records ({:.0} MB) in {:.1} s",
        loaded.records,
        loaded.bytes as f64 / 1e6,
        loaded.elapsed.as_secs_f64()
    );
    println!("baselines (same run):");
    let (lo_mbs, _) = loopback(loaded.bytes.min(1 << 30)).await?;
    row("loopback TCP", format!("{lo_mbs:.0} MB/s"), "");
    if node.is_some() {
        let (b, d) = read_tree(&dir.join("data").join("hot"))?;
        row(
            "plain read of the hot segment files",
            format!("{:.0} MB/s", mbs(b, d)),
            "page cache warm",
        );
    }
    println!("through the node:");
    let (n, b, d) = replay(&client, &topic, args.partitions).await?;
    row(
        "replay from offset 0, hot tier",
        format!("{:.0} MB/s", mbs(b, d)),
        &format!("{:.0} records/s", n as f64 / d.as_secs_f64()),
    );
    if let Some(node) = node {
        if let Some((peak_mib, _)) = node.memory() {
            row(
                "node resident memory, peak",
                format!("{peak_mib:.0} MiB"),
                "",
            );
        }
        // Seal and upload everything, drop the hot tier, and replay from the cold tier alone.
        node.stop().await?;
        std::fs::remove_dir_all(dir.join("data").join("hot"))?;
        let node = Node::start(dir, args).await?;
        let client = crate::commands::connect(&node.addr).await?;
        let (b0, d0) = read_tree(&dir.join("data").join("objects"))?;
        row(
            "plain read of the cold Parquet files",
            format!("{:.0} MB/s", mbs(b0, d0)),
            &format!("{:.0} MB on disk", b0 as f64 / 1e6),
        );
        let (n, b, d) = replay(&client, &topic, args.partitions).await?;
        row(
            "replay from offset 0, cold tier only",
            format!("{:.0} MB/s", mbs(b, d)),
            &format!("{:.0} records/s", n as f64 / d.as_secs_f64()),
        );
        if let Some((peak_mib, _)) = node.memory() {
            row(
                "node resident memory, peak (cold replay)",
                format!("{peak_mib:.0} MiB"),
                "bound: cache (512 MiB default) + 256 MiB",
            );
        }
        node.stop().await?;
    }
    Ok(())
}

/// Reads every partition from offset 0 to its end, all partitions at once.
async fn replay(
    client: &Client,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<(u64, u64, Duration)> {
    let ends = end_offsets(client, topic).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..partitions {
        let mut rpc = client.rpc();
        let (topic, end) = (topic.to_string(), ends[p as usize]);
        tasks.push(tokio::spawn(async move {
            let (mut n, mut bytes) = (0u64, 0u64);
            let mut stream = rpc
                .fetch(pb::FetchRequest {
                    topic,
                    partition: p,
                    start: Some(pb::fetch_request::Start::Offset(0)),
                    max_bytes: 1 << 20,
                    follow: false,
                    max_records: end as u64,
                    member: None,
                })
                .await?
                .into_inner();
            while let Some(msg) = stream.message().await? {
                for r in &msg.records {
                    if r.offset != n as i64 {
                        bail!("partition {p}: offset {} where {n} was due", r.offset);
                    }
                    n += 1;
                    bytes += (r.key.as_ref().map_or(0, |k| k.len())
                        + r.value.as_ref().map_or(0, |v| v.len()))
                        as u64;
                }
            }
            if n as i64 != end {
                bail!("partition {p}: replayed {n} of {end} records");
            }
            anyhow::Ok((n, bytes))
        }));
    }
    let (mut n, mut bytes) = (0, 0);
    for t in tasks {
        let (a, b) = t.await??;
        n += a;
        bytes += b;
    }
    Ok((n, bytes, start.elapsed()))
}

/// Writes `bytes` to a file in 256 KiB writes, syncing as the node's fsync policy would.
async fn disk_write(dir: &Path, bytes: u64, fsync: tier::FsyncPolicy) -> anyhow::Result<Duration> {
    let path = dir.join("raw-disk-baseline");
    let took = tokio::task::spawn_blocking(move || -> anyhow::Result<Duration> {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        let buf = vec![7u8; 256 << 10];
        let start = Instant::now();
        let mut last_sync = start;
        let mut written = 0u64;
        while written < bytes {
            f.write_all(&buf)?;
            written += buf.len() as u64;
            match fsync {
                tier::FsyncPolicy::EveryBatch => f.sync_data()?,
                tier::FsyncPolicy::Interval { ms }
                    if last_sync.elapsed() >= Duration::from_millis(ms) =>
                {
                    f.sync_data()?;
                    last_sync = Instant::now();
                }
                _ => {}
            }
        }
        if fsync != tier::FsyncPolicy::Never {
            f.sync_data()?;
        }
        let took = start.elapsed();
        drop(f);
        std::fs::remove_file(&path)?;
        Ok(took)
    })
    .await??;
    Ok(took)
}

/// Raises its flag when dropped: a probe's stop signal.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Appends 4 KiB to the file at `path` and fdatasyncs it every `every` until `stop`; returns
/// how long each sync took (µs). The file is removed afterwards.
fn sync_probe(path: &Path, every: Duration, stop: &AtomicBool) -> anyhow::Result<Histogram<u64>> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let buf = [7u8; 4096];
    let mut h = histogram();
    while !stop.load(Ordering::Acquire) {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        std::thread::sleep(every);
    }
    drop(f);
    std::fs::remove_file(path).ok();
    Ok(h)
}

/// The storage core's own append speed on the same records: a `Tier` in-process, one appender
/// per partition, batches of `batch_bytes`. Returns MB/s of key+value bytes.
async fn core_append(dir: &Path, args: &BenchArgs) -> anyhow::Result<f64> {
    let hot = dir.join("core-baseline");
    let fsync = match args.fsync.as_str() {
        "every_batch" => tier::FsyncPolicy::EveryBatch,
        "never" => tier::FsyncPolicy::Never,
        ms => tier::FsyncPolicy::Interval {
            ms: ms
                .parse()
                .context("--fsync: every_batch, never or milliseconds")?,
        },
    };
    let cfg = tier::TierConfig {
        data_dir: hot.join("hot"),
        fsync,
        ..Default::default()
    };
    let (store, root) = tier::store::open_store("memory://", &[])?;
    let t = Arc::new(tier::Tier::open(cfg, store, root).await?);
    let per_partition = (args.records / u64::from(args.partitions)).min(250_000);
    let mut batches = Vec::new();
    let mut payload = 0u64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for p in 0..args.partitions {
        t.open_partition("core", p, 1).await?;
        let mut list = Vec::new();
        let mut bb = tier::BatchBuilder::new(tier::Compression::None);
        for i in 0..per_partition {
            let v = value(i, args.record_bytes, 0);
            let k = format!("user-{}", i % 10_007).into_bytes();
            payload += (v.len() + k.len()) as u64;
            bb.push(now_ms, Some(&k[..]), Some(&v[..]), &[]);
            if bb.estimated_size() >= args.batch_bytes {
                list.push(
                    std::mem::replace(&mut bb, tier::BatchBuilder::new(tier::Compression::None))
                        .build()?,
                );
            }
        }
        if !bb.is_empty() {
            list.push(bb.build()?);
        }
        batches.push(list);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (p, list) in batches.into_iter().enumerate() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            for b in list {
                t.append("core", p as u32, b).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    t.sync_all().await?;
    let took = start.elapsed();
    t.abort().await;
    let _ = std::fs::remove_dir_all(&hot);
    Ok(mbs(payload, took))
}

/// Loopback TCP: one-way throughput for `bytes`, and 64-byte round trips.
async fn loopback(bytes: u64) -> anyhow::Result<(f64, Histogram<u64>)> {
    const CHUNK: u64 = 256 << 10;
    let bytes = bytes.div_ceil(CHUNK) * CHUNK;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0u64;
        while got < bytes {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        s.write_all(b"k").await?;
        // Then echo 64-byte pings until the peer closes.
        let mut ping = [0u8; 64];
        while s.read_exact(&mut ping).await.is_ok() {
            s.write_all(&ping).await?;
        }
        anyhow::Ok(())
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let buf = vec![1u8; CHUNK as usize];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        c.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    let mut ok = [0u8; 1];
    c.read_exact(&mut ok).await?;
    let took = start.elapsed();
    let mut h = histogram();
    let mut ping = [3u8; 64];
    for _ in 0..10_000 {
        let t = Instant::now();
        c.write_all(&ping).await?;
        c.read_exact(&mut ping).await?;
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    drop(c);
    sink.await??;
    Ok((mbs(sent, took), h))
}

/// Reads every file under `dir` once; bytes and time.
fn read_tree(dir: &Path) -> anyhow::Result<(u64, Duration)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        use std::io::Read;
        let mut f = std::fs::File::open(f)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok((bytes, start.elapsed()))
}

/// The commit objects (`*.parquet`) of `topic` in the store at `url`, with their sizes (not
/// those of earlier runs into the same bucket). The node stores a topic as `<name>.<id>`.
async fn commit_objects(
    url: &str,
    options: &[(String, String)],
    topic: &str,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let (store, root) =
        tier::store::open_store(url, options).context("opening the object store")?;
    let mut found = std::collections::HashMap::new();
    let topics = tier::cold::manifest::PartitionPaths::topics(&root);
    let dirs = store
        .list_with_delimiter(Some(&topics))
        .await
        .context("listing the object store")?
        .common_prefixes;
    let ours = |dir: &object_store::path::Path| {
        dir.filename()
            .is_some_and(|name| query::catalog::split_storage_name(name).0 == topic)
    };
    for dir in dirs.iter().filter(|d| ours(d)) {
        let mut list = store.list(Some(dir));
        while let Some(meta) = list.next().await {
            let meta = meta.context("listing the object store")?;
            if meta.location.as_ref().ends_with(".parquet") {
                found.insert(meta.location.to_string(), meta.size);
            }
        }
    }
    Ok(found)
}

/// The size of the objects a paced phase at `rate` records/s will commit, about: a partition's
/// bytes per flush interval, shrunk by `ratio` (stored bytes over raw bytes so far).
fn expected_object_bytes(ratio: f64, rate: f64, args: &BenchArgs, interval_ms: u64) -> usize {
    let per_interval = rate * args.record_bytes as f64 * interval_ms.max(10) as f64
        / 1000.0
        / f64::from(args.partitions.max(1));
    ((per_interval * ratio) as usize).max(1024)
}

/// PUTs `size` bytes to one key of the store at `url` every `every` (sequentially: a PUT that
/// takes longer delays the next) until `stop`, and returns their latency. The key is deleted
/// afterwards.
async fn put_probe(
    url: String,
    options: Vec<(String, String)>,
    size: usize,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Histogram<u64>> {
    use object_store::ObjectStoreExt;
    let (store, root) =
        tier::store::open_store(&url, &options).context("opening the object store")?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let path = root
        .join(format!("bench-probe-{}", std::process::id()).as_str())
        .join("object");
    let mut h = histogram();
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        timed_put(store.as_ref(), &path, &payload, &mut h).await?;
        next += every;
        tokio::time::sleep_until(next.max(Instant::now()).into()).await;
    }
    store.delete(&path).await.ok();
    Ok(h)
}

/// Latency of `n` sequential PUTs of `size` bytes to the store at `url` (deleted afterwards).
async fn store_puts(
    url: &str,
    options: &[(String, String)],
    size: usize,
    n: usize,
) -> anyhow::Result<Histogram<u64>> {
    use object_store::ObjectStoreExt;
    let (store, root) =
        tier::store::open_store(url, options).context("opening the object store")?;
    let payload = bytes::Bytes::from(vec![7u8; size]);
    let mut h = histogram();
    let prefix = format!("bench-put-{}", std::process::id());
    for i in 0..n {
        let path = root
            .clone()
            .join(prefix.as_str())
            .join(i.to_string().as_str());
        timed_put(store.as_ref(), &path, &payload, &mut h).await?;
        store.delete(&path).await.ok();
    }
    Ok(h)
}

/// PUTs `payload` at `path` and records how long it took in `h` (µs).
async fn timed_put(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    payload: &bytes::Bytes,
    h: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    let t = Instant::now();
    store
        .put(path, payload.clone().into())
        .await
        .with_context(|| format!("PUT {path}"))?;
    h.saturating_record(t.elapsed().as_micros() as u64);
    Ok(())
}

/// Starts node `id` of a cluster under `dir/node-<id>` on the shared metadata and object store.
async fn cluster_node(dir: &Path, args: &BenchArgs, meta: &str, id: u64) -> anyhow::Result<Node> {
    let d = dir.join(format!("node-{id}"));
    std::fs::create_dir_all(&d)?;
    let extra = [
        "--meta".to_string(),
        meta.to_string(),
        "--node-id".to_string(),
        id.to_string(),
        "--lease-ttl-ms".to_string(),
        args.lease_ttl_ms.to_string(),
    ];
    Node::start_with(&d, args, &extra).await
}

/// Full-speed produce through a cluster of `n` fresh nodes (own namespace); returns MB/s.
async fn cluster_throughput(
    args: &BenchArgs,
    dir: &Path,
    meta: &str,
    n: u64,
    epoch: Instant,
) -> anyhow::Result<(f64, f64)> {
    let ns = format!("{meta}-{n}nodes-{}", std::process::id());
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(cluster_node(&dir.join(format!("tp{n}")), args, &ns, id).await?);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let client = crate::commands::connect(&addrs.join(",")).await?;
    let topic = "throughput";
    client
        .create_topic(topic, args.partitions)
        .await
        .map_err(crate::commands::explain)?;
    let producer = Producer::new(client.clone(), producer_config(args));
    let phase = produce_phase(&producer, topic, args, args.records, None, epoch).await?;
    producer.close().await;
    for node in nodes {
        node.stop().await?;
    }
    Ok((
        mbs(phase.bytes, phase.elapsed),
        phase.records as f64 / phase.elapsed.as_secs_f64(),
    ))
}

async fn failover(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    let meta = args.meta.clone().context(
        "failover needs --meta etcd://host:port/namespace (bash localstack/etcd.sh start)",
    )?;
    if !meta.starts_with("etcd://") {
        bail!("failover needs etcd metadata (--meta etcd://host:port/namespace), not {meta:?}");
    }
    let meta = if meta["etcd://".len()..].contains('/') {
        meta
    } else {
        format!("{meta}/bench")
    };
    // The nodes must share one object store: a file store under the bench directory unless
    // --object-store names another.
    let mut args = args.clone();
    if args.object_store.is_none() {
        let shared = dir.join("objects");
        std::fs::create_dir_all(&shared)?;
        args.object_store = Some(format!("file://{}", shared.display()));
    }
    let args = &args;
    let epoch = Instant::now();
    println!("throughput (full speed, {} records):", args.records);
    let (one, one_rps) = cluster_throughput(args, dir, &meta, 1, epoch).await?;
    row(
        "1 node",
        format!("{one:.0} MB/s"),
        &format!("{one_rps:.0} records/s"),
    );
    let (many, many_rps) = cluster_throughput(args, dir, &meta, args.nodes, epoch).await?;
    row(
        &format!("{} nodes", args.nodes),
        format!("{many:.0} MB/s"),
        &format!("{many_rps:.0} records/s; all nodes and the client share this machine"),
    );

    println!("failover (lease TTL {} ms):", args.lease_ttl_ms);
    let ns = format!("{meta}-failover-{}", std::process::id());
    let fdir = dir.join("failover");
    let mut nodes = std::collections::BTreeMap::new();
    for id in 1..=args.nodes {
        nodes.insert(id, cluster_node(&fdir, args, &ns, id).await?);
    }
    let addrs: Vec<String> = nodes.values().map(|n| n.addr.clone()).collect();
    let client = crate::commands::connect(&addrs.join(",")).await?;
    let topic = "failover";
    client
        .create_topic(topic, args.partitions)
        .await
        .map_err(crate::commands::explain)?;
    let mut served_again = Vec::new();
    for kill in 0..args.kills {
        // Let the cluster settle (a restarted node takes its share back).
        tokio::time::sleep(Duration::from_millis(args.lease_ttl_ms.min(5_000))).await;
        let d = client
            .describe_topic(topic)
            .await
            .map_err(crate::commands::explain)?;
        let leader = d.partitions[0].leader.clone();
        let (&victim, _) = nodes
            .iter()
            .find(|(_, n)| n.addr == leader)
            .context("the leader of partition 0 is not one of the started nodes")?;
        let mut node = nodes.remove(&victim).context("victim")?;
        let killed = Instant::now();
        node.child.start_kill()?;
        node.child.wait().await?;
        // Every 20 ms, one record to partition 0 at whoever the client thinks leads it (the
        // client's own retry backoff would blur the figure).
        let req = proto::v1::ProduceRequest {
            topic: topic.to_string(),
            partition: 0,
            records: vec![proto::v1::Record {
                value: Some(b"after the kill".to_vec().into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        loop {
            if killed.elapsed() > Duration::from_secs(120) {
                bail!("partition 0 was not served again within 120 s");
            }
            if let Ok(mut rpc) = client.leader_rpc(topic, 0).await {
                match tokio::time::timeout(Duration::from_secs(1), rpc.produce(req.clone())).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(s)) => {
                        client.reroute(topic, 0, &s);
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        served_again.push(took);
        row(
            &format!("kill {}: node {victim}, leader of partition 0", kill + 1),
            format!("{:.2} s", took.as_secs_f64()),
            "kill -9 → first record acknowledged on partition 0 again",
        );
        nodes.insert(victim, cluster_node(&fdir, args, &ns, victim).await?);
    }
    served_again.sort();
    if let (Some(best), Some(worst)) = (served_again.first(), served_again.last()) {
        row(
            "partition served again after a kill",
            format!("{:.2}–{:.2} s", best.as_secs_f64(), worst.as_secs_f64()),
            &format!(
                "target: within the lease TTL + 2 s = {:.1} s",
                args.lease_ttl_ms as f64 / 1000.0 + 2.0
            ),
        );
    }
    for (_, node) in nodes {
        node.stop().await?;
    }
    Ok(())
}
