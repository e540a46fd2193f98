//! `tierlog`: the single binary. `tierlog serve` runs a node; with no flags it is a complete
//! single node on local disk (hot tier, object store on the file system, embedded metadata).

mod bench;
mod commands;
mod groups;
mod settings;
mod sql;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ingest::server::Service;
use ingest::{Broker, BrokerConfig};
use settings::{Overrides, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "tierlog",
    version,
    about = "An event log that keeps every event, on object storage, queryable"
)]
struct Cli {
    /// The server to talk to (client commands).
    #[arg(
        long,
        global = true,
        env = "TIERLOG_SERVER",
        default_value = "127.0.0.1:7070"
    )]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. With no flags: a single node on local disk under ./tierlog-data.
    Serve(ServeArgs),
    /// Create, list, describe or delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Produce one record per line of stdin (or --file).
    Produce {
        topic: String,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Split each line at the first occurrence: key before, value after.
        #[arg(long)]
        key_separator: Option<String>,
        /// Send every record to this partition (default: by key, Kafka's partitioner).
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long, value_enum, default_value = "leader")]
        acks: AcksArg,
    },
    /// Print records of a topic, one per line.
    Consume {
        topic: String,
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long)]
        from_beginning: bool,
        #[arg(long, conflicts_with_all = ["from_beginning", "from_time"])]
        offset: Option<i64>,
        /// Start at the first record at or after this time (Unix milliseconds).
        #[arg(long, conflicts_with = "from_beginning")]
        from_time: Option<i64>,
        /// Read as a member of this consumer group: the group shares the topic's partitions
        /// among its members; each starts at the group's committed offset (else at the end, or
        /// the beginning with --from-beginning) and commits what it printed. With --partition,
        /// read that partition outside the group's membership (allowed while it has none).
        #[arg(long)]
        group: Option<String>,
        /// The group's assignment strategy: range, roundrobin or cooperative-sticky.
        #[arg(long, requires = "group")]
        assignor: Option<String>,
        /// A static member id (Kafka's group.instance.id): a restart keeps the partitions.
        #[arg(long, requires = "group")]
        instance_id: Option<String>,
        /// The member is dropped from the group after this long without a heartbeat.
        #[arg(long, requires = "group", default_value_t = 10_000)]
        session_timeout_ms: u64,
        #[arg(long)]
        max_messages: Option<u64>,
        /// One JSON object per record (partition, offset, timestamp, key, value).
        #[arg(long)]
        json: bool,
        /// Exit after this many milliseconds without new records (default: wait forever).
        #[arg(long)]
        idle_exit_ms: Option<u64>,
    },
    /// Measure throughput and latency through a node, next to baselines from the same run.
    Bench(bench::BenchArgs),
    /// Run SQL over topics (every topic is a table; see docs/sql.md).
    Sql {
        /// The query, e.g. "SELECT partition, COUNT(*) FROM events GROUP BY 1".
        sql: String,
        #[arg(long, value_enum, default_value = "table")]
        format: sql::Format,
        /// Write the rows to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// List, describe, reset or delete consumer groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Cold-tier maintenance now instead of on the schedule, at each partition's leader.
    #[command(subcommand)]
    Storage(StorageCommand),
}

#[derive(Debug, Subcommand)]
enum StorageCommand {
    /// Deletes objects the manifests no longer name (replaced by merges, retired by
    /// retention, left by crashed writers) once older than the grace period.
    Gc {
        /// Only this topic's partitions (default: every topic).
        topic: Option<String>,
        /// List what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compacts topics with cleanup.policy=compact by key (each key's newest record stays),
    /// then merges runs of small cold objects into large ones, now.
    Compact {
        /// Only this topic's partitions (default: every topic).
        topic: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// Every group with members or committed offsets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A group's state, members and their partitions, and committed offset, high watermark
    /// and lag per partition.
    Describe {
        group: String,
        #[arg(long)]
        json: bool,
    },
    /// Moves a group's committed offsets (the group must have no members). Prints the plan;
    /// changes nothing without --execute.
    ResetOffsets {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (repeat the flag); default: all of the topic.
        #[arg(long)]
        partition: Vec<u32>,
        #[arg(long, group = "to")]
        to_earliest: bool,
        #[arg(long, group = "to")]
        to_latest: bool,
        /// The first record at or after this time (Unix milliseconds).
        #[arg(long, group = "to")]
        to_time: Option<i64>,
        #[arg(long, group = "to")]
        to_offset: Option<i64>,
        /// Move the committed offsets by this many (negative: back).
        #[arg(long, group = "to", allow_negative_numbers = true)]
        shift_by: Option<i64>,
        #[arg(long)]
        execute: bool,
        #[arg(long)]
        json: bool,
    },
    /// Deletes a group's committed offsets (the group must have no members).
    Delete { group: String },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// A setting by Kafka's name, `key=value` (e.g. cleanup.policy=compact); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// Changes settings by Kafka's names: `--config key=value` sets one, `--delete-config key`
    /// puts its default back.
    Alter {
        name: String,
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_config: Vec<String>,
    },
    /// Grows a topic to COUNT partitions (never fewer).
    AddPartitions {
        name: String,
        count: u32,
    },
    List,
    Describe {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AcksArg {
    None,
    Leader,
    All,
}

impl From<AcksArg> for client::Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::None => client::Acks::None,
            AcksArg::Leader => client::Acks::Leader,
            AcksArg::All => client::Acks::All,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML settings file (see tierlog.example.toml).
    #[arg(long, env = "TIERLOG_CONFIG")]
    config: Option<PathBuf>,
    /// Where the hot tier, embedded metadata and default object store live.
    #[arg(long, env = "TIERLOG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address, e.g. 127.0.0.1:7070 (port 0 picks a free one).
    #[arg(long, env = "TIERLOG_LISTEN")]
    listen: Option<String>,
    /// Cold tier URL: file:///dir, memory:// or s3://bucket/prefix.
    #[arg(long, env = "TIERLOG_OBJECT_STORE")]
    object_store: Option<String>,
    /// Metadata: `embedded` or etcd://host:port[,host:port...][/namespace].
    #[arg(long, env = "TIERLOG_META")]
    meta: Option<String>,
    #[arg(long, env = "TIERLOG_NODE_ID")]
    node_id: Option<u64>,
    /// host:port other nodes and clients reach this node at (default: the listen address).
    #[arg(long, env = "TIERLOG_ADVERTISE")]
    advertise: Option<String>,
    /// Lease TTL in ms: how soon a dead node's partitions move to others.
    #[arg(long, env = "TIERLOG_LEASE_TTL_MS")]
    lease_ttl_ms: Option<u64>,
    /// every_batch, never, or an interval in milliseconds.
    #[arg(long, env = "TIERLOG_FSYNC")]
    fsync: Option<String>,
    /// Kafka protocol listen address (default 127.0.0.1:9092; `off` to serve none).
    #[arg(long, env = "TIERLOG_KAFKA_LISTEN")]
    kafka_listen: Option<String>,
    /// host:port Kafka clients reach this node at (default: the Kafka listen address).
    #[arg(long, env = "TIERLOG_KAFKA_ADVERTISE")]
    kafka_advertise: Option<String>,
    /// HTTP listen address for /metrics, /healthz and /readyz (default 127.0.0.1:9644; `off`
    /// to serve none).
    #[arg(long, env = "TIERLOG_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// An OTLP/gRPC collector to export spans to, e.g. http://127.0.0.1:4317 (default: none).
    #[arg(long, env = "TIERLOG_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // `serve` reads its settings first: they say where spans go.
    let (command, settings) = match cli.command {
        Command::Serve(args) => match serve_settings(args) {
            Ok(s) => (None, Some(s)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        other => (Some(other), None),
    };
    let telemetry = {
        let _in_runtime = runtime.enter();
        match telemetry::init(settings.as_ref().map(|s| &s.tracing)) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(async {
        let server = cli.server;
        let Some(command) = command else {
            return serve(settings.expect("serve has settings")).await;
        };
        match command {
            Command::Serve(_) => unreachable!("served above"),
            Command::Topic(t) => {
                let c = commands::connect(&server).await?;
                match t {
                    TopicCommand::Create {
                        name,
                        partitions,
                        config,
                    } => commands::topic_create(&c, &name, partitions, &config).await,
                    TopicCommand::Alter {
                        name,
                        config,
                        delete_config,
                    } => commands::topic_alter(&c, &name, &config, &delete_config).await,
                    TopicCommand::AddPartitions { name, count } => {
                        commands::topic_add_partitions(&c, &name, count).await
                    }
                    TopicCommand::List => commands::topic_list(&c).await,
                    TopicCommand::Describe { name } => commands::topic_describe(&c, &name).await,
                    TopicCommand::Delete { name } => commands::topic_delete(&c, &name).await,
                }
            }
            Command::Sql {
                sql,
                format,
                output,
            } => {
                sql::run(
                    &server,
                    sql::SqlArgs {
                        sql,
                        format,
                        output,
                    },
                )
                .await
            }
            Command::Produce {
                topic,
                file,
                key_separator,
                partition,
                acks,
            } => {
                let c = commands::connect(&server).await?;
                let acks = acks.into();
                commands::produce(
                    &c,
                    commands::ProduceArgs {
                        topic,
                        file,
                        key_separator,
                        partition,
                        acks,
                    },
                )
                .await
            }
            Command::Consume {
                topic,
                partition,
                from_beginning,
                offset,
                from_time,
                group,
                assignor,
                instance_id,
                session_timeout_ms,
                max_messages,
                json,
                idle_exit_ms,
            } => {
                let c = commands::connect(&server).await?;
                let member = group.is_some() && partition.is_none();
                if member && (offset.is_some() || from_time.is_some()) {
                    anyhow::bail!(
                        "--offset and --from-time choose a position in one partition: add \
                         --partition, or move the group's offsets with `tierlog groups \
                         reset-offsets`"
                    );
                }
                let args = commands::ConsumeArgs {
                    topic,
                    partition,
                    from_beginning,
                    offset,
                    from_time,
                    group,
                    max_messages,
                    json,
                    idle_exit: idle_exit_ms.map(Duration::from_millis),
                };
                if member {
                    groups::consume_as_member(
                        &c,
                        args,
                        groups::MemberArgs {
                            assignor,
                            instance_id,
                            session_timeout: Duration::from_millis(session_timeout_ms),
                        },
                    )
                    .await
                } else {
                    commands::consume(&c, args).await
                }
            }
            Command::Bench(args) => bench::run(&server, args).await,
            Command::Storage(cmd) => {
                let c = commands::connect(&server).await?;
                match cmd {
                    StorageCommand::Gc {
                        topic,
                        dry_run,
                        json,
                    } => commands::storage_gc(&c, topic.as_deref(), dry_run, json).await,
                    StorageCommand::Compact { topic, json } => {
                        commands::storage_compact(&c, topic.as_deref(), json).await
                    }
                }
            }
            Command::Groups(cmd) => {
                let c = commands::connect(&server).await?;
                match cmd {
                    GroupsCommand::List { json } => groups::list_groups(&c, json).await,
                    GroupsCommand::Describe { group, json } => {
                        groups::describe_group(&c, &group, json).await
                    }
                    GroupsCommand::ResetOffsets {
                        group,
                        topic,
                        partition,
                        to_earliest,
                        to_latest,
                        to_time,
                        to_offset,
                        shift_by,
                        execute,
                        json,
                    } => {
                        let to = if to_earliest {
                            groups::ResetArg::Earliest
                        } else if to_latest {
                            groups::ResetArg::Latest
                        } else if let Some(t) = to_time {
                            groups::ResetArg::Time(t)
                        } else if let Some(o) = to_offset {
                            groups::ResetArg::Offset(o)
                        } else if let Some(n) = shift_by {
                            groups::ResetArg::Shift(n)
                        } else {
                            anyhow::bail!(
                                "say where to: --to-earliest, --to-latest, --to-time MS, \
                                 --to-offset N or --shift-by N"
                            );
                        };
                        groups::reset_offsets(&c, &group, &topic, partition, to, execute, json)
                            .await
                    }
                    GroupsCommand::Delete { group } => groups::delete_group(&c, &group).await,
                }
            }
        }
    });
    {
        let _in_runtime = runtime.enter();
        telemetry.shutdown();
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The node's settings: defaults, the file, then flags and the environment.
fn serve_settings(args: ServeArgs) -> anyhow::Result<Settings> {
    Settings::load(
        args.config.as_deref(),
        Overrides {
            data_dir: args.data_dir,
            listen: args.listen,
            object_store: args.object_store,
            meta: args.meta,
            node_id: args.node_id,
            advertise: args.advertise,
            lease_ttl_ms: args.lease_ttl_ms,
            fsync: args.fsync,
            kafka_listen: args.kafka_listen,
            kafka_advertise: args.kafka_advertise,
            http_listen: args.http_listen,
            otlp_endpoint: args.otlp_endpoint,
        },
    )
}

async fn serve(s: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data_dir)
        .with_context(|| format!("creating the data directory {}", s.data_dir.display()))?;
    if s.object_store.is_none() && s.meta_backend()? != settings::MetaBackend::Embedded {
        tracing::warn!(
            "metadata is shared (etcd) but the object store is this node's own directory: other nodes cannot read what it commits; set object_store to a store all nodes share"
        );
    }
    let url = s.object_store_url();
    let options: Vec<(String, String)> = s
        .object_store_options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (store, root) =
        tier::store::open_store(&url, &options).context("opening the object store")?;
    // Every request to either store is counted and timed for /metrics; with no HTTP port
    // nothing is recorded.
    let metrics = Arc::new(if s.http.enabled() {
        ingest::metrics::Metrics::new()
    } else {
        ingest::metrics::Metrics::disabled()
    });
    let store: Arc<dyn object_store::ObjectStore> = if metrics.enabled() {
        Arc::new(tier::store::Observed::new(store, metrics.clone()))
    } else {
        store
    };
    let tier = tier::Tier::open(s.tier_config()?, store, root)
        .await
        .context("opening the storage core")?;
    let kv: Arc<dyn meta::KvBackend> = match s.meta_backend()? {
        settings::MetaBackend::Embedded => Arc::new(
            meta::EmbeddedKv::open(s.data_dir.join("meta"))
                .await
                .context("opening the embedded metadata store")?,
        ),
        settings::MetaBackend::Etcd {
            endpoints,
            namespace,
        } => Arc::new(
            meta::EtcdKv::connect(
                meta::EtcdOptions::new(endpoints.clone()).with_namespace(namespace.into_bytes()),
            )
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?,
        ),
    };
    let kv: Arc<dyn meta::KvBackend> = if metrics.enabled() {
        Arc::new(meta::ObservedKv::new(kv, metrics.clone()))
    } else {
        kv
    };
    let meta = meta::Meta::new(kv);
    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .with_context(|| format!("listening on {}", s.listen))?;
    let addr = listener.local_addr()?;
    let advertised = match &s.advertise {
        Some(a) => a.clone(),
        None if addr.ip().is_unspecified()
            && s.meta_backend()? != settings::MetaBackend::Embedded =>
        {
            anyhow::bail!(
                "listening on {addr} (all interfaces): set advertise to the host:port other nodes and clients reach this node at"
            )
        }
        None => addr.to_string(),
    };
    let kafka_listener = if s.kafka.enabled() {
        Some(
            tokio::net::TcpListener::bind(&s.kafka.listen)
                .await
                .with_context(|| format!("listening for Kafka clients on {}", s.kafka.listen))?,
        )
    } else {
        None
    };
    let http_listener = if s.http.enabled() {
        Some(
            tokio::net::TcpListener::bind(&s.http.listen)
                .await
                .with_context(|| format!("listening for HTTP on {}", s.http.listen))?,
        )
    } else {
        None
    };
    let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let kafka_addr = kafka_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let kafka_advertised = match (&s.kafka.advertise, kafka_addr) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(a))
            if a.ip().is_unspecified() && s.meta_backend()? != settings::MetaBackend::Embedded =>
        {
            anyhow::bail!(
                "listening for Kafka clients on {a} (all interfaces): set kafka.advertise to the host:port they reach this node at"
            )
        }
        (None, a) => a.map(|a| a.to_string()),
    };
    let broker = Broker::start(
        tier,
        meta,
        BrokerConfig {
            node_id: s.node_id,
            kafka_advertised_addr: kafka_advertised,
            advertised_addr: advertised,
            lease_ttl: Duration::from_millis(s.lease_ttl_ms),
            max_record_bytes: s.max_record_bytes,
            limits: s.limits.clone(),
            groups: s.groups.clone(),
            metrics,
            ..BrokerConfig::default()
        },
    )
    .await
    .context("starting the node")?;
    let sql_cfg = s.query_config();
    if let Some(dir) = &sql_cfg.spill_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the spill directory {}", dir.display()))?;
    }
    let engine = broker
        .query_engine(sql_cfg)
        .context("starting the SQL engine")?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<proto::v1::tierlog_server::TierlogServer<Service>>()
        .await;
    // The gRPC health service says what /readyz says.
    tokio::spawn({
        let (broker, health) = (broker.clone(), health.clone());
        async move {
            let mut serving = true;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let ready = broker.ready().await;
                if ready.is_ok() != serving {
                    serving = ready.is_ok();
                    match ready {
                        Ok(()) => {
                            health
                                .set_serving::<proto::v1::tierlog_server::TierlogServer<Service>>()
                                .await
                        }
                        Err(why) => {
                            tracing::warn!(why, "not ready");
                            health
                                .set_not_serving::<proto::v1::tierlog_server::TierlogServer<Service>>()
                                .await
                        }
                    }
                }
            }
        }
    });
    // Listen for SIGTERM before saying the node is up: a stop sent right after the line below
    // must reach the graceful path, not the default action (which kills the process).
    let stop = shutdown_signal();
    tracing::info!(%addr, data_dir = %s.data_dir.display(), object_store = %url, "tierlog node serving");
    let fronts_stop = tokio_util::sync::CancellationToken::new();
    if let Some(listener) = http_listener {
        tokio::spawn(ingest::http::serve(
            broker.clone(),
            Some(engine.clone()),
            ingest::console::ConsoleSettings {
                admin: s.http.console_admin,
                sql_timeout: Duration::from_millis(s.http.console_sql_timeout_ms),
                sql_max_rows: s.http.console_sql_max_rows,
                ..Default::default()
            },
            listener,
            fronts_stop.clone(),
        ));
    }
    if let Some(listener) = kafka_listener {
        tokio::spawn(ingest::kafka::serve(
            broker.clone(),
            listener,
            s.kafka.clone(),
            s.limits.clone(),
            fronts_stop.clone(),
        ));
    }
    // For scripts and tests, where the node listens: the first line the gRPC address, then
    // the Kafka address when it serves Kafka clients, then the HTTP address when it serves
    // HTTP. One write, so a reader that stops after
    // the first line never makes a later write fail.
    {
        use std::io::Write;
        let mut lines = format!("tierlog listening on {addr}\n");
        if let Some(k) = kafka_addr {
            lines.push_str(&format!("tierlog kafka listening on {k}\n"));
        }
        if let Some(h) = http_addr {
            lines.push_str(&format!("tierlog http listening on {h}\n"));
        }
        let mut out = std::io::stdout().lock();
        out.write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the listen lines")?;
    }
    let limits = &s.limits;
    ingest::server::transport(limits, broker.metrics().clone())
        .add_service(health_service)
        .add_service(Service::new(broker.clone()).into_server())
        .add_service(ingest::flight::FlightSql::new(engine).into_server())
        .serve_with_incoming_shutdown(
            ingest::listen::accept_limited(listener, limits.max_connections),
            {
                let broker = broker.clone();
                async move {
                    stop.await;
                    // End follow-mode fetch streams, or the server would wait for them forever.
                    broker.drain();
                    fronts_stop.cancel();
                }
            },
        )
        .await
        .context("serving gRPC")?;
    tracing::info!("shutting down: sealing and uploading");
    broker.shutdown().await.context("graceful shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. Both handlers are installed when this is called,
/// not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (int, term) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (int, term) => {
                let e = int.err().or(term.err()).expect("one failed");
                tracing::warn!(error = %e, "cannot listen for SIGINT/SIGTERM; only ctrl-c stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
