//! Settings of `tierlog serve`: defaults, then a TOML file, then `TIERLOG_*` environment
//! variables, then flags; validated with messages that name the setting. `tierlog.example.toml`
//! documents every field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tier::{FsyncPolicy, TierConfig};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where the node keeps its hot tier, embedded metadata and (by default) its object store.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub listen: String,
    /// Cold tier: `file:///dir`, `memory://` or `s3://bucket/prefix`. Default:
    /// `<data_dir>/objects` on the local file system.
    pub object_store: Option<String>,
    /// Options of the object store, e.g. `aws_endpoint`, `aws_region`, `aws_allow_http`,
    /// `aws_access_key_id`; the standard `AWS_*` environment variables apply as well.
    pub object_store_options: std::collections::BTreeMap<String, String>,
    /// Metadata store: `embedded` (under `<data_dir>/meta`) or
    /// `etcd://host:port[,host:port...][/namespace]`.
    pub meta: String,
    /// This node's id (unique in a cluster).
    pub node_id: u64,
    /// The address other nodes and clients reach this node at (`host:port`). Default: the
    /// address it listens on.
    pub advertise: Option<String>,
    /// Lease of the node's registration and partition leaderships, ms: a node that dies is
    /// replaced after about this long.
    pub lease_ttl_ms: u64,
    /// The largest record (key + value + headers) accepted, bytes.
    pub max_record_bytes: usize,
    /// `every_batch`, `never`, or a number of milliseconds (`10`): see docs/durability.md.
    pub fsync: String,
    /// The storage core's settings (segment size, retention, cache, ...).
    pub tier: TierSettings,
    /// The SQL engine's settings (Arrow Flight SQL on the node's port).
    pub sql: SqlSettings,
    /// What clients may make the node create or hold (docs/limits.md).
    pub limits: ingest::Limits,
    /// The consumer-group coordinator's settings (docs/groups.md).
    pub groups: ingest::GroupSettings,
    /// The Kafka protocol listener (docs/kafka.md).
    pub kafka: ingest::kafka::KafkaSettings,
    /// The HTTP listener: metrics, health, the console (docs/metrics.md, docs/console.md).
    pub http: HttpSettings,
    /// Spans exported over OTLP (docs/tracing.md).
    pub tracing: TracingSettings,
}

/// Where spans go: nowhere unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// An OTLP/gRPC collector, e.g. `http://127.0.0.1:4317` (plain HTTP/2); unset exports
    /// nothing.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` the spans carry.
    pub service_name: String,
    /// Share of requests traced, 0.0 to 1.0 (a request a client traces is traced if the
    /// client says so).
    pub sample_ratio: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: None,
            service_name: "tierlog".into(),
            sample_ratio: 1.0,
        }
    }
}

/// The node's HTTP port (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address; `off` serves none. The default binds to this host only.
    pub listen: String,
    /// Whether the web console may change things (create topics, delete groups, ...);
    /// read-only when false.
    pub console_admin: bool,
    /// Longest a query from the console runs before it is cancelled, ms.
    pub console_sql_timeout_ms: u64,
    /// Rows a query from the console returns, at most.
    pub console_sql_max_rows: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9644".into(),
            console_admin: false,
            console_sql_timeout_ms: 30_000,
            console_sql_max_rows: 1_000,
        }
    }
}

impl HttpSettings {
    pub fn enabled(&self) -> bool {
        self.listen != "off"
    }
}

/// Guard rails of SQL queries on a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSettings {
    /// Threads that run queries, at the lowest CPU priority (0 = one per core).
    pub threads: usize,
    /// Memory one query may use; beyond it, sorts and aggregations spill to disk, and a query
    /// that cannot spill fails.
    pub memory_limit_bytes: usize,
    /// Longest a query may run, ms.
    pub timeout_ms: u64,
    /// Where queries spill (default `<data_dir>/spill`).
    pub spill_dir: Option<PathBuf>,
    /// Check each segment's footer digest and row-group CRCs before decoding (a scan then reads
    /// whole row groups, not only the columns and pages it needs).
    pub verify_checksums: bool,
}

impl Default for SqlSettings {
    fn default() -> Self {
        let d = query::QueryConfig::default();
        SqlSettings {
            threads: 0,
            memory_limit_bytes: d.memory_limit,
            timeout_ms: d.timeout.as_millis() as u64,
            spill_dir: None,
            verify_checksums: d.verify_checksums,
        }
    }
}

/// The subset of the storage core's settings a user tunes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierSettings {
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub max_batch_bytes: usize,
    pub hot_retention_bytes: u64,
    pub hot_retention_ms: u64,
    pub hot_budget_bytes: u64,
    pub cache_bytes: u64,
    pub read_ahead_row_groups: usize,
    /// Segment → Parquet conversions at once (0 = half the cores, at least 4).
    pub encode_concurrency: usize,
    /// Segments of one partition converted and written at once (commits stay in order).
    pub uploads_in_flight: usize,
    /// The grace period of garbage collection, ms: objects the manifest stopped naming (merged
    /// away, retired, left by a crash) are deleted this long after.
    pub orphan_grace_ms: u64,
    /// How often each partition's garbage is collected, ms.
    pub gc_interval_ms: u64,
    /// Merge runs of small cold objects into large ones (in the background, on each leader).
    pub merge_enabled: bool,
    /// The size merged objects aim for, bytes; objects under a quarter of it are merged.
    pub merge_target_bytes: u64,
    /// A run of adjacent small objects is merged once it holds this many.
    pub merge_min_segments: usize,
    /// Objects holding records younger than this are not merged yet, ms.
    pub merge_min_age_ms: u64,
    /// How often each partition looks for a merge, ms.
    pub merge_interval_ms: u64,
    /// The most bytes a second merging (and key compaction) reads and writes (0: unpaced).
    pub merge_bytes_per_sec: u64,
    /// Memory one key compaction pass may use for its key map, bytes (more keys: more passes).
    pub compaction_key_map_bytes: u64,
    /// Compact a `cleanup.policy=compact` partition once this share of its cold bytes is not
    /// compacted yet (Kafka's `min.cleanable.dirty.ratio`).
    pub compaction_min_dirty_ratio: f64,
    /// Least time between two cuts a partition commits for acks=all requests, ms (0: as soon
    /// as the uploader is free).
    pub flush_interval_ms: u64,
    /// Longest a record stays only on the leader's disk before its upload starts, whatever the
    /// acks, ms: what a leader's death loses at acks=leader is about this plus one upload.
    pub upload_interval_ms: u64,
    /// zstd level of cold segments (1 fastest, 22 smallest).
    pub zstd_level: i32,
}

impl Default for TierSettings {
    fn default() -> Self {
        let d = TierConfig::default();
        TierSettings {
            segment_bytes: d.segment_bytes,
            segment_ms: d.segment_ms,
            max_batch_bytes: d.max_batch_bytes,
            hot_retention_bytes: d.hot_retention_bytes,
            hot_retention_ms: d.hot_retention_ms,
            hot_budget_bytes: d.hot_budget_bytes,
            cache_bytes: d.cache_bytes,
            read_ahead_row_groups: d.read_ahead_row_groups,
            encode_concurrency: 0,
            uploads_in_flight: d.uploads_in_flight,
            orphan_grace_ms: d.orphan_grace_ms,
            gc_interval_ms: d.gc_interval_ms,
            merge_enabled: d.merge_enabled,
            merge_target_bytes: d.merge_target_bytes,
            merge_min_segments: d.merge_min_segments,
            merge_min_age_ms: d.merge_min_age_ms,
            merge_interval_ms: d.merge_interval_ms,
            merge_bytes_per_sec: d.merge_bytes_per_sec,
            compaction_key_map_bytes: d.compaction_key_map_bytes,
            compaction_min_dirty_ratio: d.compaction_min_dirty_ratio,
            flush_interval_ms: d.flush_interval_ms,
            upload_interval_ms: d.upload_interval_ms,
            zstd_level: d.zstd_level,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("tierlog-data"),
            listen: "127.0.0.1:7070".into(),
            object_store: None,
            object_store_options: Default::default(),
            meta: "embedded".into(),
            node_id: 1,
            advertise: None,
            lease_ttl_ms: 10_000,
            max_record_bytes: 1 << 20,
            fsync: "10".into(),
            tier: TierSettings::default(),
            sql: SqlSettings::default(),
            limits: ingest::Limits::default(),
            groups: ingest::GroupSettings::default(),
            kafka: ingest::kafka::KafkaSettings::default(),
            http: HttpSettings::default(),
            tracing: TracingSettings::default(),
        }
    }
}

/// Overrides from flags (already merged with the `TIERLOG_*` environment by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub object_store: Option<String>,
    pub meta: Option<String>,
    pub node_id: Option<u64>,
    pub advertise: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    pub fsync: Option<String>,
    pub kafka_listen: Option<String>,
    pub kafka_advertise: Option<String>,
    pub http_listen: Option<String>,
    pub otlp_endpoint: Option<String>,
}

/// Where the node keeps its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaBackend {
    Embedded,
    Etcd {
        endpoints: Vec<String>,
        namespace: String,
    },
}

impl Settings {
    /// Defaults, then `file` (if given), then overrides.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<Settings> {
        let mut s = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", f.display()))?;
                toml::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("config file {}: {e}", f.display()))?
            }
            None => Settings::default(),
        };
        if let Some(v) = o.data_dir {
            s.data_dir = v;
        }
        if let Some(v) = o.listen {
            s.listen = v;
        }
        if let Some(v) = o.object_store {
            s.object_store = Some(v);
        }
        if let Some(v) = o.meta {
            s.meta = v;
        }
        if let Some(v) = o.node_id {
            s.node_id = v;
        }
        if let Some(v) = o.fsync {
            s.fsync = v;
        }
        if let Some(v) = o.advertise {
            s.advertise = Some(v);
        }
        if let Some(v) = o.lease_ttl_ms {
            s.lease_ttl_ms = v;
        }
        if let Some(v) = o.kafka_listen {
            s.kafka.listen = v;
        }
        if let Some(v) = o.kafka_advertise {
            s.kafka.advertise = Some(v);
        }
        if let Some(v) = o.http_listen {
            s.http.listen = v;
        }
        if let Some(v) = o.otlp_endpoint {
            s.tracing.otlp_endpoint = Some(v).filter(|v| !v.is_empty() && v != "off");
        }
        s.validate()?;
        Ok(s)
    }

    pub fn fsync_policy(&self) -> anyhow::Result<FsyncPolicy> {
        parse_fsync(&self.fsync)
    }

    pub fn object_store_url(&self) -> String {
        self.object_store.clone().unwrap_or_else(|| {
            let dir = self.data_dir.join("objects");
            let abs = std::path::absolute(&dir).unwrap_or(dir);
            format!("file://{}", abs.display())
        })
    }

    pub fn tier_config(&self) -> anyhow::Result<TierConfig> {
        let t = &self.tier;
        Ok(TierConfig {
            data_dir: self.data_dir.join("hot"),
            fsync: self.fsync_policy()?,
            segment_bytes: t.segment_bytes,
            segment_ms: t.segment_ms,
            max_batch_bytes: t.max_batch_bytes,
            hot_retention_bytes: t.hot_retention_bytes,
            hot_retention_ms: t.hot_retention_ms,
            hot_budget_bytes: t.hot_budget_bytes,
            cache_bytes: t.cache_bytes,
            read_ahead_row_groups: t.read_ahead_row_groups,
            encode_concurrency: match t.encode_concurrency {
                0 => TierConfig::default().encode_concurrency,
                n => n,
            },
            uploads_in_flight: t.uploads_in_flight,
            orphan_grace_ms: t.orphan_grace_ms,
            gc_interval_ms: t.gc_interval_ms,
            merge_enabled: t.merge_enabled,
            merge_target_bytes: t.merge_target_bytes,
            merge_min_segments: t.merge_min_segments,
            merge_min_age_ms: t.merge_min_age_ms,
            merge_interval_ms: t.merge_interval_ms,
            merge_bytes_per_sec: t.merge_bytes_per_sec,
            compaction_key_map_bytes: t.compaction_key_map_bytes,
            compaction_min_dirty_ratio: t.compaction_min_dirty_ratio,
            flush_interval_ms: t.flush_interval_ms,
            upload_interval_ms: t.upload_interval_ms,
            zstd_level: t.zstd_level,
            ..TierConfig::default()
        })
    }

    pub fn query_config(&self) -> query::QueryConfig {
        let q = &self.sql;
        let d = query::QueryConfig::default();
        query::QueryConfig {
            threads: match q.threads {
                0 => d.threads,
                n => n,
            },
            memory_limit: q.memory_limit_bytes,
            timeout: std::time::Duration::from_millis(q.timeout_ms),
            verify_checksums: q.verify_checksums,
            spill_dir: Some(
                q.spill_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("spill")),
            ),
            ..d
        }
    }

    /// The parsed `meta` setting.
    pub fn meta_backend(&self) -> anyhow::Result<MetaBackend> {
        if self.meta == "embedded" {
            return Ok(MetaBackend::Embedded);
        }
        let Some(rest) = self.meta.strip_prefix("etcd://") else {
            anyhow::bail!(
                "meta must be \"embedded\" or etcd://host:port[,host:port...][/namespace], not {:?}",
                self.meta
            );
        };
        let (hosts, namespace) = rest.split_once('/').unwrap_or((rest, ""));
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            anyhow::bail!("meta {:?} names no etcd endpoint", self.meta);
        }
        let namespace = namespace.trim_matches('/');
        Ok(MetaBackend::Etcd {
            endpoints,
            namespace: if namespace.is_empty() {
                String::new()
            } else {
                format!("{namespace}/")
            },
        })
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.meta_backend()?;
        self.kafka.validate().map_err(anyhow::Error::msg)?;
        if self.http.enabled() && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            anyhow::bail!(
                "http.listen must be an address like 127.0.0.1:9644 or off, not {:?}",
                self.http.listen
            );
        }
        if self.http.console_sql_timeout_ms == 0 || self.http.console_sql_max_rows == 0 {
            anyhow::bail!(
                "http.console_sql_timeout_ms and http.console_sql_max_rows must be positive"
            );
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            anyhow::bail!(
                "tracing.sample_ratio must be between 0 and 1, not {}",
                self.tracing.sample_ratio
            );
        }
        if let Some(e) = &self.tracing.otlp_endpoint
            && !e.starts_with("http://")
        {
            anyhow::bail!(
                "tracing.otlp_endpoint must be an http:// URL (a collector on a trusted network; TLS to the collector is not built in), not {e:?}"
            );
        }
        if self.groups.offsets_retention_ms < 1_000 {
            anyhow::bail!(
                "groups.offsets_retention_ms must be at least 1000, not {}",
                self.groups.offsets_retention_ms
            );
        }
        if self.groups.initial_rebalance_delay_ms > 300_000 {
            anyhow::bail!(
                "groups.initial_rebalance_delay_ms must be at most 300000, not {}",
                self.groups.initial_rebalance_delay_ms
            );
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            anyhow::bail!(
                "listen must be an address like 127.0.0.1:7070, not {:?}",
                self.listen
            );
        }
        if !(1_000..=300_000).contains(&self.lease_ttl_ms) {
            anyhow::bail!(
                "lease_ttl_ms must be between 1000 and 300000, not {}",
                self.lease_ttl_ms
            );
        }
        if let Some(a) = &self.advertise
            && (a.is_empty() || !a.contains(':') || a.contains("://"))
        {
            anyhow::bail!("advertise must be host:port, not {a:?}");
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > self.tier.max_batch_bytes {
            anyhow::bail!(
                "max_record_bytes ({}) must be positive and at most tier.max_batch_bytes ({})",
                self.max_record_bytes,
                self.tier.max_batch_bytes
            );
        }
        if self.sql.memory_limit_bytes < (16 << 20) {
            anyhow::bail!(
                "sql.memory_limit_bytes must be at least 16 MiB, not {}",
                self.sql.memory_limit_bytes
            );
        }
        if self.sql.timeout_ms == 0 {
            anyhow::bail!("sql.timeout_ms must be positive");
        }
        self.tier_config()?
            .validate()
            .map_err(|e| anyhow::anyhow!("tier settings: {e}"))?;
        self.limits
            .validate()
            .map_err(|e| anyhow::anyhow!("limits: {e}"))?;
        Ok(())
    }
}

/// `every_batch`, `never`, or a number of milliseconds.
pub fn parse_fsync(fsync: &str) -> anyhow::Result<FsyncPolicy> {
    Ok(match fsync {
        "every_batch" => FsyncPolicy::EveryBatch,
        "never" => FsyncPolicy::Never,
        ms => FsyncPolicy::Interval {
            ms: ms.parse().map_err(|_| {
                anyhow::anyhow!(
                    "fsync must be every_batch, never or a number of milliseconds, not {ms:?}"
                )
            })?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_embedded_or_a_list_of_etcd_endpoints() {
        let with = |m: &str| Settings {
            meta: m.into(),
            ..Settings::default()
        };
        assert_eq!(
            with("embedded").meta_backend().unwrap(),
            MetaBackend::Embedded
        );
        assert_eq!(
            with("etcd://10.0.0.1:2379,10.0.0.2:2379/prod")
                .meta_backend()
                .unwrap(),
            MetaBackend::Etcd {
                endpoints: vec!["http://10.0.0.1:2379".into(), "http://10.0.0.2:2379".into()],
                namespace: "prod/".into(),
            }
        );
        assert_eq!(
            with("etcd://127.0.0.1:2379").meta_backend().unwrap(),
            MetaBackend::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                namespace: String::new(),
            }
        );
        for bad in ["zookeeper://x", "etcd://", "etcd:///ns", ""] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("meta"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_example_config_is_the_defaults_and_parses() {
        let text = include_str!("../../tierlog.example.toml");
        let s: Settings = toml::from_str(text).unwrap();
        s.validate().unwrap();
        assert_eq!(s.listen, Settings::default().listen);
        assert_eq!(s.tier.segment_bytes, TierSettings::default().segment_bytes);
        assert_eq!(
            s.sql.memory_limit_bytes,
            SqlSettings::default().memory_limit_bytes
        );
        assert_eq!(s.sql.timeout_ms, SqlSettings::default().timeout_ms);
    }

    #[test]
    fn bad_settings_name_themselves() {
        let e = toml::from_str::<Settings>("lisen = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let s = Settings {
            listen: "nowhere".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("listen"));
        let s = Settings {
            fsync: "sometimes".into(),
            ..Settings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("fsync"));
    }
}
