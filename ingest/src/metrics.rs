//! The node's metrics, in the core: front ends report requests here, the core counts records
//! in and out, and a scrape adds what is read from the node's state at that moment (partitions
//! led, offsets, upload lag, group lag, the process). Names follow Prometheus conventions (base
//! units in the name, `_total` on counters); the text is the OpenMetrics exposition that
//! `prometheus-client` encodes.
//!
//! Invariants: recording never blocks and never fails (atomics behind a family's lock, taken
//! for a label set's first use only); series per partition are bounded by
//! `[limits] metrics_partition_series` ([`Snapshot::max_partition_series`]), past which only the per-topic roll-ups are
//! exported; group lag is exported only by the group's coordinator, so a cluster exports each
//! group once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Label pairs of a series.
type Labels = Vec<(&'static str, String)>;

/// Latency buckets: 100 µs .. ~52 s, doubling.
const LATENCY_BUCKETS: usize = 20;
const LATENCY_FIRST: f64 = 0.000_1;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_FIRST,
        2.0,
        LATENCY_BUCKETS as u16,
    ))
}

/// Node-wide running totals, for the console's live charts (the page takes differences).
#[derive(Debug, Default)]
struct Totals {
    produced_records: AtomicU64,
    produced_bytes: AtomicU64,
    fetched_records: AtomicU64,
    fetched_bytes: AtomicU64,
    /// Produce requests (both front ends) per latency bucket; the last is +Inf.
    produce_latency: [AtomicU64; LATENCY_BUCKETS + 1],
}

/// [`Metrics::totals`]: what the node counted since it started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TotalsSnapshot {
    pub produced_records: u64,
    pub produced_bytes: u64,
    pub fetched_records: u64,
    pub fetched_bytes: u64,
    /// (upper bound in seconds, produce requests answered within it and above the bound
    /// before); the last bound is infinite (shown as `null`).
    pub produce_latency: Vec<(Option<f64>, u64)>,
}

/// Counters and histograms updated as the node works.
#[derive(Debug)]
pub struct Metrics {
    /// `false`: nothing is recorded (the node serves no HTTP port to read it from).
    enabled: bool,
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    records_in: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    records_out: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    leadership_changes: Counter,
    rebalances: Family<Labels, Counter>,
    store_requests: Family<Labels, Counter>,
    store_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    meta_requests: Family<Labels, Counter>,
    meta_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    kafka_errors: Family<Labels, Counter>,
    kafka_fetches: Family<Labels, Counter>,
    totals: Totals,
    convert_seconds: Histogram,
    upload_commit_seconds: Histogram,
    uploaded_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_requests",
            "Requests answered, by protocol (grpc, kafka), API and result code",
            requests.clone(),
        );
        let request_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "tierlog_request_duration",
            "Time to answer a request, by protocol and API",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let records_in = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_produced_records",
            "Records appended, by topic",
            records_in.clone(),
        );
        let bytes_in = Family::<Labels, Counter>::default();
        registry.register_with_unit(
            "tierlog_produced",
            "Record batch bytes appended, by topic",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let records_out = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_fetched_records",
            "Records handed to consumers, by topic",
            records_out.clone(),
        );
        let bytes_out = Family::<Labels, Counter>::default();
        registry.register_with_unit(
            "tierlog_fetched",
            "Record batch bytes handed to consumers, by topic",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let kafka_errors = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_kafka_errors",
            "Error codes in Kafka answers, one per partition, group or resource they name, by API and Kafka error name",
            kafka_errors.clone(),
        );
        let kafka_fetches = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_kafka_fetches",
            "Kafka Fetch requests by fetch session (KIP-227): none, full (opens one), incremental, refused (an unknown session or a wrong epoch)",
            kafka_fetches.clone(),
        );
        let leadership_changes = Counter::default();
        registry.register(
            "tierlog_leadership_changes",
            "Partitions this node started or stopped leading",
            leadership_changes.clone(),
        );
        let rebalances = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_group_rebalances",
            "Generations started by groups this node coordinates, by group",
            rebalances.clone(),
        );
        let store_requests = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_object_store_requests",
            "Object store requests, by operation and outcome (ok, not_found, conflict, error)",
            store_requests.clone(),
        );
        let store_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "tierlog_object_store_request_duration",
            "Time of an object store request, by operation",
            Unit::Seconds,
            store_seconds.clone(),
        );
        let meta_requests = Family::<Labels, Counter>::default();
        registry.register(
            "tierlog_meta_requests",
            "Metadata store (etcd or embedded) requests, by operation and outcome (ok, error)",
            meta_requests.clone(),
        );
        let meta_seconds = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "tierlog_meta_request_duration",
            "Time of a metadata store request, by operation",
            Unit::Seconds,
            meta_seconds.clone(),
        );
        let convert_seconds = latency_histogram();
        registry.register_with_unit(
            "tierlog_upload_convert_duration",
            "Time to convert an upload's records to Parquet",
            Unit::Seconds,
            convert_seconds.clone(),
        );
        let upload_commit_seconds = latency_histogram();
        registry.register_with_unit(
            "tierlog_upload_commit_duration",
            "Time from an upload's conversion to its commit answering acks=all waiters (the commit before it, the object and manifest PUTs)",
            Unit::Seconds,
            upload_commit_seconds.clone(),
        );
        let uploaded_bytes = Counter::default();
        registry.register_with_unit(
            "tierlog_uploaded",
            "Bytes of Parquet objects committed to the object store",
            Unit::Bytes,
            uploaded_bytes.clone(),
        );
        Metrics {
            enabled: true,
            convert_seconds,
            upload_commit_seconds,
            uploaded_bytes,
            store_requests,
            store_seconds,
            meta_requests,
            meta_seconds,
            registry,
            requests,
            request_seconds,
            records_in,
            bytes_in,
            records_out,
            bytes_out,
            leadership_changes,
            kafka_errors,
            kafka_fetches,
            totals: Totals::default(),
            rebalances,
        }
    }

    /// Metrics that record nothing, for a node that serves no HTTP port (and to measure what
    /// recording costs).
    pub fn disabled() -> Metrics {
        Metrics {
            enabled: false,
            ..Metrics::new()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A request answered by a front end: `code` is the result (`ok`, or the error's name).
    pub fn request(&self, protocol: &'static str, api: &str, code: &str, took: Duration) {
        if !self.enabled {
            return;
        }
        self.requests
            .get_or_create(&vec![
                ("protocol", protocol.to_string()),
                ("api", api.to_string()),
                ("code", code.to_string()),
            ])
            .inc();
        self.request_seconds
            .get_or_create(&vec![
                ("protocol", protocol.to_string()),
                ("api", api.to_string()),
            ])
            .observe(took.as_secs_f64());
        if api == "Produce" {
            let secs = took.as_secs_f64();
            let mut bound = LATENCY_FIRST;
            let mut i = 0;
            while i < LATENCY_BUCKETS && secs > bound {
                bound *= 2.0;
                i += 1;
            }
            self.totals.produce_latency[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the node counted since it started (zeros when metrics are off).
    pub fn totals(&self) -> TotalsSnapshot {
        let t = &self.totals;
        let mut bound = LATENCY_FIRST;
        let produce_latency = t
            .produce_latency
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let b = (i < LATENCY_BUCKETS).then_some(bound);
                bound *= 2.0;
                (b, n.load(Ordering::Relaxed))
            })
            .collect();
        TotalsSnapshot {
            produced_records: t.produced_records.load(Ordering::Relaxed),
            produced_bytes: t.produced_bytes.load(Ordering::Relaxed),
            fetched_records: t.fetched_records.load(Ordering::Relaxed),
            fetched_bytes: t.fetched_bytes.load(Ordering::Relaxed),
            produce_latency,
        }
    }

    /// A Kafka answer to `api` carried `error` (Kafka's name of the code) once.
    pub fn kafka_error(&self, api: &str, error: &str) {
        if !self.enabled {
            return;
        }
        self.kafka_errors
            .get_or_create(&vec![
                ("api", api.to_string()),
                ("error", error.to_string()),
            ])
            .inc();
    }

    /// A Kafka Fetch of this fetch session kind.
    pub fn kafka_fetch(&self, session: &'static str) {
        if !self.enabled {
            return;
        }
        self.kafka_fetches
            .get_or_create(&vec![("session", session.to_string())])
            .inc();
    }

    pub fn produced(&self, topic: &str, records: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let l = vec![("topic", topic.to_string())];
        self.records_in.get_or_create(&l).inc_by(records);
        self.bytes_in.get_or_create(&l).inc_by(bytes);
        self.totals
            .produced_records
            .fetch_add(records, Ordering::Relaxed);
        self.totals
            .produced_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn fetched(&self, topic: &str, records: u64, bytes: u64) {
        if records == 0 || !self.enabled {
            return;
        }
        let l = vec![("topic", topic.to_string())];
        self.records_out.get_or_create(&l).inc_by(records);
        self.bytes_out.get_or_create(&l).inc_by(bytes);
        self.totals
            .fetched_records
            .fetch_add(records, Ordering::Relaxed);
        self.totals
            .fetched_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn leadership_changed(&self) {
        if !self.enabled {
            return;
        }
        self.leadership_changes.inc();
    }

    pub fn rebalanced(&self, group: &str) {
        if !self.enabled {
            return;
        }
        self.rebalances
            .get_or_create(&vec![("group", group.to_string())])
            .inc();
    }

    /// The exposition: what was counted, then `snapshot`, read from the node's state now.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        let now = scrape_registry(snapshot);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &now);
        let _ = encode_eof(&mut out);
        out
    }
}

impl tier::store::StoreObserver for Metrics {
    fn observed(&self, op: &'static str, outcome: &'static str, took: Duration) {
        if !self.enabled {
            return;
        }
        self.store_requests
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.store_seconds
            .get_or_create(&vec![("op", op.to_string())])
            .observe(took.as_secs_f64());
    }
}

impl tier::UploadObserver for Metrics {
    fn uploaded(&self, convert: Duration, commit: Duration, bytes: u64) {
        if !self.enabled {
            return;
        }
        self.convert_seconds.observe(convert.as_secs_f64());
        self.upload_commit_seconds.observe(commit.as_secs_f64());
        self.uploaded_bytes.inc_by(bytes);
    }
}

impl meta::KvObserver for Metrics {
    fn observed(&self, op: &'static str, ok: bool, took: Duration) {
        if !self.enabled {
            return;
        }
        let outcome = if ok { "ok" } else { "error" };
        self.meta_requests
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.meta_seconds
            .get_or_create(&vec![("op", op.to_string())])
            .observe(took.as_secs_f64());
    }
}

/// One partition this node leads, as a scrape reads it.
#[derive(Debug, Clone)]
pub struct PartitionStat {
    pub topic: String,
    pub partition: u32,
    pub log_start: i64,
    /// The next offset to be assigned (the log end).
    pub log_end: i64,
    /// Offsets below this are committed to the object store.
    pub committed: i64,
    /// Age of the oldest record not yet committed to the object store, seconds.
    pub upload_lag_seconds: f64,
    pub hot_bytes: u64,
    pub hot_segments: u64,
    pub cold_bytes: u64,
    pub cold_objects: u64,
}

/// One partition's lag in a group this node coordinates.
#[derive(Debug, Clone)]
pub struct GroupLag {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// Records between the committed offset and the log end.
    pub records: i64,
    /// Now minus the timestamp of the first record not consumed, when it could be read.
    pub seconds: Option<f64>,
}

/// A group this node coordinates.
#[derive(Debug, Clone)]
pub struct GroupStat {
    pub group: String,
    pub members: u64,
    /// Known when the group's state is loaded in memory.
    pub generation: Option<i64>,
}

/// The process, as Linux reports it (zeros elsewhere).
#[derive(Debug, Clone, Default)]
pub struct ProcessStat {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

impl ProcessStat {
    /// Reads `/proc/self`.
    pub fn read() -> ProcessStat {
        let mut p = ProcessStat::default();
        // utime and stime are fields 14 and 15 of stat, after the parenthesised name.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // Fields from the state (3rd) on: utime is the 14th, so index 11 here.
            p.cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let pages: u64 = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            p.resident_bytes = pages * 4096;
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            p.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        p
    }
}

/// What a scrape reads from the node's state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Partitions (and group-lag partitions) exported one series each; past it, per-topic
    /// sums only.
    pub max_partition_series: usize,
    /// Seconds until the node's lease with the metadata store lapses by its own clock
    /// (zero or less: lapsed).
    pub lease_valid_seconds: f64,
    /// Cold row-group reads from the cache, and loads from the object store.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub partitions: Vec<PartitionStat>,
    pub groups: Vec<GroupStat>,
    pub lag: Vec<GroupLag>,
    pub hot_budget_bytes: u64,
    /// Bytes on local disk over all partitions (led or not yet released).
    pub hot_bytes: u64,
    pub cache_bytes: u64,
    pub process: ProcessStat,
}

type IntGauges = Family<Labels, Gauge>;
type FloatGauges = Family<Labels, Gauge<f64, AtomicU64>>;

fn gauge(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>) -> IntGauges {
    let f = IntGauges::default();
    match unit {
        Some(u) => r.register_with_unit(name, help, u, f.clone()),
        None => r.register(name, help, f.clone()),
    }
    f
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The families read at scrape time.
fn scrape_registry(s: &Snapshot) -> Registry {
    let mut r = Registry::default();
    let led = gauge(
        &mut r,
        "tierlog_partitions_led",
        "Partitions this node leads",
        None,
    );
    led.get_or_create(&vec![])
        .set(to_i64(s.partitions.len() as u64));

    // Per partition, up to the limit; per topic always.
    let per_partition = s.partitions.len() <= s.max_partition_series;
    let pl = |p: &PartitionStat| {
        vec![
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
        ]
    };
    if per_partition {
        let start = gauge(
            &mut r,
            "tierlog_partition_log_start_offset",
            "First offset in the partition's log",
            None,
        );
        let end = gauge(
            &mut r,
            "tierlog_partition_log_end_offset",
            "Next offset the partition will assign",
            None,
        );
        let committed = gauge(
            &mut r,
            "tierlog_partition_committed_offset",
            "Offsets below this are committed to the object store",
            None,
        );
        let lag = gauge(
            &mut r,
            "tierlog_partition_upload_lag_records",
            "Records appended but not yet committed to the object store",
            None,
        );
        let lag_s = FloatGauges::default();
        r.register_with_unit(
            "tierlog_partition_upload_lag",
            "Age of the oldest record not yet committed to the object store",
            Unit::Seconds,
            lag_s.clone(),
        );
        for p in &s.partitions {
            let l = pl(p);
            start.get_or_create(&l).set(p.log_start);
            end.get_or_create(&l).set(p.log_end);
            committed.get_or_create(&l).set(p.committed);
            lag.get_or_create(&l).set((p.log_end - p.committed).max(0));
            lag_s.get_or_create(&l).set(p.upload_lag_seconds);
        }
    }
    let hot = gauge(
        &mut r,
        "tierlog_topic_hot",
        "Bytes on this node's local disk (hot tier), by topic",
        Some(Unit::Bytes),
    );
    let segments = gauge(
        &mut r,
        "tierlog_topic_hot_segments",
        "Segment files on this node's local disk (hot tier), by topic",
        None,
    );
    let cold = gauge(
        &mut r,
        "tierlog_topic_cold",
        "Bytes committed to the object store by partitions this node leads, by topic",
        Some(Unit::Bytes),
    );
    let objects = gauge(
        &mut r,
        "tierlog_topic_cold_objects",
        "Segments committed to the object store by partitions this node leads, by topic",
        None,
    );
    let topic_lag = gauge(
        &mut r,
        "tierlog_topic_upload_lag_records",
        "Records not yet committed to the object store, by topic",
        None,
    );
    for p in &s.partitions {
        let l = vec![("topic", p.topic.clone())];
        hot.get_or_create(&l).inc_by(to_i64(p.hot_bytes));
        segments.get_or_create(&l).inc_by(to_i64(p.hot_segments));
        cold.get_or_create(&l).inc_by(to_i64(p.cold_bytes));
        objects.get_or_create(&l).inc_by(to_i64(p.cold_objects));
        topic_lag
            .get_or_create(&l)
            .inc_by((p.log_end - p.committed).max(0));
    }
    let budget = gauge(
        &mut r,
        "tierlog_hot_tier_budget",
        "Local disk the hot tier may use",
        Some(Unit::Bytes),
    );
    budget
        .get_or_create(&vec![])
        .set(to_i64(s.hot_budget_bytes));
    let hot_total = gauge(
        &mut r,
        "tierlog_hot_tier",
        "Bytes on this node's local disk (hot tier), all partitions",
        Some(Unit::Bytes),
    );
    hot_total.get_or_create(&vec![]).set(to_i64(s.hot_bytes));
    let lease = FloatGauges::default();
    r.register_with_unit(
        "tierlog_meta_lease_valid",
        "Time until the node's lease with the metadata store lapses by its own clock (0 or less: lapsed)",
        Unit::Seconds,
        lease.clone(),
    );
    lease.get_or_create(&vec![]).set(s.lease_valid_seconds);
    let reads = Family::<Labels, Counter>::default();
    r.register(
        "tierlog_read_cache_reads",
        "Cold row-group reads, by result: hit (from memory) or miss (loaded from the object store)",
        reads.clone(),
    );
    reads
        .get_or_create(&vec![("result", "hit".to_string())])
        .inc_by(s.cache_hits);
    reads
        .get_or_create(&vec![("result", "miss".to_string())])
        .inc_by(s.cache_misses);
    let cache = gauge(
        &mut r,
        "tierlog_read_cache",
        "Bytes of decoded cold-tier row groups held in memory",
        Some(Unit::Bytes),
    );
    cache.get_or_create(&vec![]).set(to_i64(s.cache_bytes));

    let members = gauge(
        &mut r,
        "tierlog_group_members",
        "Members of a group this node coordinates",
        None,
    );
    let generation = gauge(
        &mut r,
        "tierlog_group_generation",
        "Generation of a group this node coordinates",
        None,
    );
    for g in &s.groups {
        let l = vec![("group", g.group.clone())];
        members.get_or_create(&l).set(to_i64(g.members));
        if let Some(n) = g.generation {
            generation.get_or_create(&l).set(n);
        }
    }
    // Group lag per partition up to the same limit; per group and topic always.
    if s.lag.len() <= s.max_partition_series {
        let lag = gauge(
            &mut r,
            "tierlog_group_lag_records",
            "Records between a group's committed offset and the partition's log end (groups this node coordinates)",
            None,
        );
        let seconds = FloatGauges::default();
        r.register_with_unit(
            "tierlog_group_lag",
            "Age of the first record a group has not consumed, 0 when caught up (groups this node coordinates)",
            Unit::Seconds,
            seconds.clone(),
        );
        for g in &s.lag {
            let l = vec![
                ("group", g.group.clone()),
                ("topic", g.topic.clone()),
                ("partition", g.partition.to_string()),
            ];
            lag.get_or_create(&l).set(g.records);
            if let Some(secs) = g.seconds {
                seconds.get_or_create(&l).set(secs);
            }
        }
    }
    let topic_seconds = FloatGauges::default();
    r.register_with_unit(
        "tierlog_group_topic_lag",
        "Age of the oldest record a group has not consumed on a topic, the most over its partitions (groups this node coordinates)",
        Unit::Seconds,
        topic_seconds.clone(),
    );
    let mut oldest: std::collections::BTreeMap<(&str, &str), f64> = Default::default();
    for g in &s.lag {
        if let Some(secs) = g.seconds {
            let o = oldest.entry((&g.group, &g.topic)).or_insert(0.0);
            *o = o.max(secs);
        }
    }
    for ((group, topic), secs) in oldest {
        topic_seconds
            .get_or_create(&vec![
                ("group", group.to_string()),
                ("topic", topic.to_string()),
            ])
            .set(secs);
    }
    let topic_lag = gauge(
        &mut r,
        "tierlog_group_topic_lag_records",
        "Records a group is behind on a topic, summed over its partitions (groups this node coordinates)",
        None,
    );
    for g in &s.lag {
        topic_lag
            .get_or_create(&vec![
                ("group", g.group.clone()),
                ("topic", g.topic.clone()),
            ])
            .inc_by(g.records);
    }

    let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
    r.register_with_unit(
        "process_cpu",
        "User and system CPU time of the process",
        Unit::Seconds,
        cpu.clone(),
    );
    cpu.get_or_create(&vec![]).inc_by(s.process.cpu_seconds);
    let rss = gauge(
        &mut r,
        "process_resident_memory",
        "Resident memory of the process",
        Some(Unit::Bytes),
    );
    rss.get_or_create(&vec![])
        .set(to_i64(s.process.resident_bytes));
    let fds = gauge(&mut r, "process_open_fds", "Open file descriptors", None);
    fds.get_or_create(&vec![]).set(to_i64(s.process.open_fds));
    let max_fds = gauge(
        &mut r,
        "process_max_fds",
        "Limit on open file descriptors",
        None,
    );
    max_fds
        .get_or_create(&vec![])
        .set(to_i64(s.process.max_fds));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_past_the_limit_roll_up_per_topic() {
        let m = Metrics::new();
        m.request("grpc", "Produce", "ok", Duration::from_millis(3));
        m.produced("t", 10, 1000);
        let p = |partition| PartitionStat {
            topic: "t".into(),
            partition,
            log_start: 0,
            log_end: 10,
            committed: 4,
            upload_lag_seconds: 0.5,
            hot_bytes: 100,
            hot_segments: 1,
            cold_bytes: 50,
            cold_objects: 1,
        };
        let two = m.encode(&Snapshot {
            max_partition_series: 2,
            partitions: vec![p(0), p(1)],
            ..Snapshot::default()
        });
        assert!(two.contains(r#"tierlog_partition_log_end_offset{topic="t",partition="1"} 10"#));
        assert!(two.contains(r#"tierlog_topic_upload_lag_records{topic="t"} 12"#));
        assert!(
            two.contains(r#"tierlog_requests_total{protocol="grpc",api="Produce",code="ok"} 1"#)
        );
        assert!(two.contains(r#"tierlog_produced_bytes_total{topic="t"} 1000"#));
        assert!(two.ends_with("# EOF\n"));
        let three = m.encode(&Snapshot {
            max_partition_series: 2,
            partitions: vec![p(0), p(1), p(2)],
            ..Snapshot::default()
        });
        assert!(!three.contains("tierlog_partition_log_end_offset{"));
        assert!(three.contains(r#"tierlog_topic_hot_bytes{topic="t"} 300"#));
        assert_eq!(three.matches("# EOF").count(), 1);
    }

    /// docs/metrics.md promises a scrape of a node leading 1,000 partitions, with a group
    /// committed on each, stays under 1 MiB; past the limit only roll-ups are exported.
    #[test]
    fn a_scrape_of_a_thousand_partitions_stays_under_a_mebibyte() {
        let m = Metrics::new();
        for api in ["Produce", "Fetch", "Metadata", "CommitOffsets", "Heartbeat"] {
            m.request("grpc", api, "Ok", Duration::from_millis(1));
            m.request("kafka", api, "answered", Duration::from_millis(1));
        }
        let snapshot = |n: u32| Snapshot {
            max_partition_series: 2_000,
            partitions: (0..n)
                .map(|i| PartitionStat {
                    topic: format!("topic-{}", i / 100),
                    partition: i % 100,
                    log_start: 0,
                    log_end: 1_000_000_000,
                    committed: 999_999_000,
                    upload_lag_seconds: 0.25,
                    hot_bytes: 1 << 30,
                    hot_segments: 8,
                    cold_bytes: 1 << 40,
                    cold_objects: 100_000,
                })
                .collect(),
            lag: (0..n)
                .map(|i| GroupLag {
                    group: "billing-service".into(),
                    topic: format!("topic-{}", i / 100),
                    partition: i % 100,
                    records: 12_345,
                    seconds: Some(42.5),
                })
                .collect(),
            ..Snapshot::default()
        };
        for p in 0..1_000 {
            m.produced(&format!("topic-{}", p / 100), 1, 100);
        }
        let text = m.encode(&snapshot(1_000));
        eprintln!("1,000 partitions: {} bytes", text.len());
        assert!(text.len() < 1 << 20, "{} bytes", text.len());
        assert_eq!(text.matches("tierlog_group_lag_records{").count(), 1_000);
        let over = m.encode(&snapshot(5_000));
        assert!(!over.contains("tierlog_group_lag_records{"));
        assert!(!over.contains("tierlog_partition_log_end_offset{"));
        assert!(over.len() < text.len(), "roll-ups only past the limit");
        assert!(over.contains(
            r#"tierlog_group_topic_lag_records{group="billing-service",topic="topic-49"} 1234500"#
        ));
        assert_eq!(text.matches("tierlog_group_lag_seconds{").count(), 1_000);
        assert!(over.contains(
            r#"tierlog_group_topic_lag_seconds{group="billing-service",topic="topic-49"} 42.5"#
        ));
    }
}
