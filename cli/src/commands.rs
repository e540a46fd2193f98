//! The client commands of `tierlog`: topics, produce, consume. Thin over the `client`
//! crate; errors are turned into sentences a person can act on.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use client::{
    Acks, Client, ConsumedRecord, Consumer, ConsumerConfig, ErrorCode, Producer, ProducerConfig,
    SeekTo,
};

/// Connects, turning "connection refused" into advice.
pub async fn connect(server: &str) -> anyhow::Result<Client> {
    Client::connect(server).await.map_err(|e| {
        anyhow::anyhow!("cannot reach a tierlog server at {server} ({e}); is `tierlog serve` running? (--server / TIERLOG_SERVER)")
    })
}

/// Rewords the errors people hit most.
pub fn explain(e: client::Error) -> anyhow::Error {
    match e.code() {
        Some(ErrorCode::UnknownTopic) => anyhow::anyhow!("{e} (see `tierlog topic list`)"),
        Some(ErrorCode::Unavailable) => anyhow::anyhow!("the server is unavailable: {e}"),
        _ => anyhow::anyhow!("{e}"),
    }
}

/// `key=value` settings as the command line gives them.
fn settings(config: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    config
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--config {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

pub async fn topic_create(
    c: &Client,
    name: &str,
    partitions: u32,
    config: &[String],
) -> anyhow::Result<()> {
    let t = c
        .create_topic_with(name, partitions, &settings(config)?)
        .await
        .map_err(explain)?;
    println!(
        "created topic {} with {} partitions",
        t.name,
        t.partitions.len()
    );
    Ok(())
}

pub async fn topic_alter(
    c: &Client,
    name: &str,
    config: &[String],
    delete: &[String],
) -> anyhow::Result<()> {
    let mut changes: Vec<(String, Option<String>)> = settings(config)?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    changes.extend(delete.iter().map(|k| (k.clone(), None)));
    if changes.is_empty() {
        anyhow::bail!("nothing to change: give --config KEY=VALUE or --delete-config KEY");
    }
    let t = c.alter_topic(name, &changes).await.map_err(explain)?;
    let now = t.config.unwrap_or_default().settings;
    for (k, _) in &changes {
        println!("{k} = {}", now.get(k).map_or("(default)", String::as_str));
    }
    Ok(())
}

pub async fn topic_add_partitions(c: &Client, name: &str, count: u32) -> anyhow::Result<()> {
    let t = c.add_partitions(name, count).await.map_err(explain)?;
    println!("topic {} has {} partitions", t.name, t.partitions.len());
    Ok(())
}

pub async fn topic_list(c: &Client) -> anyhow::Result<()> {
    for name in c.list_topics().await.map_err(explain)? {
        println!("{name}");
    }
    Ok(())
}

pub async fn topic_delete(c: &Client, name: &str) -> anyhow::Result<()> {
    c.delete_topic(name).await.map_err(explain)?;
    println!("deleted topic {name}");
    Ok(())
}

pub async fn topic_describe(c: &Client, name: &str) -> anyhow::Result<()> {
    let t = c.describe_topic(name).await.map_err(explain)?;
    let cfg = t.config.unwrap_or_default();
    println!(
        "topic {} (id {}), {} partitions",
        t.name,
        t.id,
        t.partitions.len()
    );
    // Absent (and -1, from a peer that still sends it) is unlimited.
    let limit = |v: Option<i64>, unit: &str| match v.filter(|v| *v > 0) {
        None => "unlimited".to_string(),
        Some(v) => format!("{v} {unit}"),
    };
    let keep = |ms: Option<i64>, b: Option<i64>| match (ms.filter(|v| *v > 0), b.filter(|v| *v > 0))
    {
        (None, None) => "forever".to_string(),
        _ => format!("{} / {}", limit(ms, "ms"), limit(b, "bytes")),
    };
    println!("retention: {}", keep(cfg.retention_ms, cfg.retention_bytes));
    println!(
        "{:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>14} {:>10} {:>14}  leader",
        "partition",
        "low",
        "high",
        "cold below",
        "hot from",
        "objects",
        "cold bytes",
        "to merge",
        "hot bytes"
    );
    for p in t.partitions {
        println!(
            "{:>9} {:>12} {:>12} {:>12} {:>12} {:>10} {:>14} {:>10} {:>14}  {} (epoch {})",
            p.partition,
            p.log_start_offset,
            p.high_watermark,
            p.cold_next,
            p.hot_start,
            p.cold_segments,
            p.cold_bytes,
            p.merge_waiting_segments,
            p.hot_bytes,
            p.leader,
            p.leader_epoch
        );
    }
    let shown: Vec<String> = cfg
        .settings
        .iter()
        .filter(|(k, _)| !k.starts_with("retention."))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !shown.is_empty() {
        println!("settings: {}", shown.join(" "));
    }
    Ok(())
}

/// `tierlog storage gc`: what was (or, dry run, would be) deleted, per partition.
pub async fn storage_gc(
    c: &Client,
    topic: Option<&str>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<()> {
    let parts = c
        .maintain(topic, proto::v1::MaintainAction::MaintainGc, dry_run)
        .await
        .map_err(explain)?;
    if json {
        return maintenance_json(&parts);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    for p in &parts {
        if !p.error.is_empty() {
            println!("{}/{}: failed: {}", p.topic, p.partition, p.error);
            continue;
        }
        let bytes: u64 = p.garbage.iter().map(|g| g.bytes).sum();
        println!(
            "{}/{}: {verb} {} objects ({bytes} bytes); {} wait for the grace period; {} objects live",
            p.topic,
            p.partition,
            p.garbage.len(),
            p.pending,
            p.cold_segments
        );
        if dry_run {
            for g in &p.garbage {
                println!("  {}  {} bytes  ({})", g.path, g.bytes, g.why);
            }
        }
    }
    maintenance_failed(&parts)
}

/// `tierlog storage compact`: records compacted away (compacted topics) and merges done, per
/// partition.
pub async fn storage_compact(c: &Client, topic: Option<&str>, json: bool) -> anyhow::Result<()> {
    let parts = c
        .maintain(topic, proto::v1::MaintainAction::MaintainCompact, false)
        .await
        .map_err(explain)?;
    if json {
        return maintenance_json(&parts);
    }
    for p in &parts {
        if p.error.is_empty() {
            let keys = if p.compacted_below > 0 || p.compacted_away > 0 {
                format!(
                    "{} records compacted away, one per key below offset {}; ",
                    p.compacted_away, p.compacted_below
                )
            } else {
                String::new()
            };
            println!(
                "{}/{}: {keys}{} merges; {} objects, {} bytes",
                p.topic, p.partition, p.merges, p.cold_segments, p.cold_bytes
            );
        } else {
            println!("{}/{}: failed: {}", p.topic, p.partition, p.error);
        }
    }
    maintenance_failed(&parts)
}

/// Prints what maintenance did per partition as JSON, and fails as [`maintenance_failed`].
fn maintenance_json(parts: &[proto::v1::PartitionMaintenance]) -> anyhow::Result<()> {
    let v: Vec<_> = parts
        .iter()
        .map(|p| {
            serde_json::json!({
                "topic": p.topic, "partition": p.partition, "leader": p.leader,
                "error": (!p.error.is_empty()).then_some(&p.error),
                "merges": p.merges, "pending": p.pending,
                "compacted_away": p.compacted_away, "compacted_below": p.compacted_below,
                "cold_objects": p.cold_segments, "cold_bytes": p.cold_bytes,
                "garbage": p.garbage.iter().map(|g| serde_json::json!({
                    "path": g.path, "bytes": g.bytes, "why": g.why,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&v)?);
    maintenance_failed(parts)
}

/// Fails when maintenance failed on any partition (each said why above).
fn maintenance_failed(parts: &[proto::v1::PartitionMaintenance]) -> anyhow::Result<()> {
    let failed = parts.iter().filter(|p| !p.error.is_empty()).count();
    if failed > 0 {
        bail!("maintenance failed on {failed} partitions");
    }
    Ok(())
}

fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_message(what.to_string());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {pos} records ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar
}

pub struct ProduceArgs {
    pub topic: String,
    pub file: Option<std::path::PathBuf>,
    pub key_separator: Option<String>,
    pub partition: Option<u32>,
    pub acks: Acks,
}

/// Produces one record per input line (stdin or a file); with a key separator, the text before
/// its first occurrence is the key.
pub async fn produce(c: &Client, a: ProduceArgs) -> anyhow::Result<()> {
    c.describe_topic(&a.topic).await.map_err(explain)?;
    let input: Box<dyn BufRead> = match &a.file {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let producer = Producer::new(
        c.clone(),
        ProducerConfig {
            acks: a.acks,
            ..ProducerConfig::default()
        },
    );
    let bar = progress(None, "produced");
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    for line in input.lines() {
        let line = line.context("reading input")?;
        let (key, value) = match &a.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.as_bytes().to_vec()), v.as_bytes().to_vec()),
                None => (None, line.into_bytes()),
            },
            None => (None, line.into_bytes()),
        };
        let rx = producer
            .send(&a.topic, a.partition, key, Some(value), vec![])
            .await
            .map_err(explain)?;
        pending.push_back(rx);
        sent += 1;
        // Keep answers flowing without holding every receiver of a long input.
        while pending.len() > 50_000 {
            if let Some(rx) = pending.pop_front()
                && let Err(e) = rx.await.map_err(|_| client::Error::Closed).and_then(|r| r)
            {
                failed += 1;
                first_error.get_or_insert(e);
            }
            bar.set_position(sent);
        }
        if sent.is_multiple_of(1000) {
            bar.set_position(sent);
        }
    }
    for rx in pending {
        if let Err(e) = rx.await.map_err(|_| client::Error::Closed).and_then(|r| r) {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    producer.close().await;
    bar.finish_and_clear();
    if let Some(e) = first_error {
        bail!(
            "{failed} of {sent} records were not produced; first error: {}",
            explain(e)
        );
    }
    eprintln!("produced {sent} records to {}", a.topic);
    Ok(())
}

pub struct ConsumeArgs {
    pub topic: String,
    pub partition: Option<u32>,
    pub from_beginning: bool,
    pub offset: Option<i64>,
    pub from_time: Option<i64>,
    pub group: Option<String>,
    pub max_messages: Option<u64>,
    pub json: bool,
    pub idle_exit: Option<Duration>,
}

pub(crate) fn print_record(
    out: &mut impl Write,
    r: &ConsumedRecord,
    json: bool,
) -> std::io::Result<()> {
    let text =
        |b: &Option<bytes::Bytes>| b.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
    if json {
        let line = format!(
            "{{\"partition\":{},\"offset\":{},\"timestamp\":{},\"key\":{},\"value\":{}}}",
            r.partition,
            r.offset,
            r.timestamp_ms,
            text(&r.key).map_or("null".into(), |k| json_string(&k)),
            text(&r.value).map_or("null".into(), |v| json_string(&v)),
        );
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", text(&r.value).unwrap_or_default())
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What `consume` reads from: a consumer that assigns itself partitions, or a group member.
pub(crate) trait Source {
    async fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> client::Result<Vec<ConsumedRecord>>;
}

impl Source for Consumer {
    async fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> client::Result<Vec<ConsumedRecord>> {
        Consumer::poll_at_most(self, timeout, max).await
    }
}

impl Source for client::GroupConsumer {
    async fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> client::Result<Vec<ConsumedRecord>> {
        client::GroupConsumer::poll_at_most(self, timeout, max).await
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints what `source` hands out until `max_messages`, idle for `idle_exit`, or Ctrl-C /
/// SIGTERM; never takes more than is left to print, so a commit afterwards covers exactly
/// what was printed.
pub(crate) async fn print_records(source: &mut impl Source, a: &ConsumeArgs) -> anyhow::Result<()> {
    let bar = progress(a.max_messages, "consumed");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n = 0u64;
    let mut idle_since = tokio::time::Instant::now();
    let stop = stop_signal();
    tokio::pin!(stop);
    while a.max_messages.is_none_or(|m| n < m) {
        let left = a.max_messages.map_or(usize::MAX, |m| (m - n) as usize);
        let records = tokio::select! {
            r = source.poll_at_most(Duration::from_millis(200), left.min(500)) => r.map_err(explain)?,
            _ = &mut stop => break,
        };
        if records.is_empty() {
            if a.idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            continue;
        }
        idle_since = tokio::time::Instant::now();
        for r in &records {
            print_record(&mut out, r, a.json)?;
            n += 1;
        }
        bar.set_position(n);
        out.flush()?;
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// Prints records from the chosen position until `max_messages`, or until idle for
/// `idle_exit`, or forever.
pub async fn consume(c: &Client, a: ConsumeArgs) -> anyhow::Result<()> {
    let parts: Vec<u32> = a.partition.into_iter().collect();
    let cfg = ConsumerConfig {
        group: a.group.clone(),
        auto_commit: a.group.as_ref().map(|_| Duration::from_secs(1)),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::assign(c.clone(), cfg, &a.topic, &parts)
        .await
        .map_err(explain)?;
    if let Some(o) = a.offset {
        consumer
            .seek(None, SeekTo::Offset(o))
            .await
            .map_err(explain)?;
    } else if let Some(ts) = a.from_time {
        consumer
            .seek(None, SeekTo::Timestamp(ts))
            .await
            .map_err(explain)?;
    } else if a.from_beginning {
        consumer
            .seek(None, SeekTo::Beginning)
            .await
            .map_err(explain)?;
    } else if a.group.is_none() {
        consumer.seek(None, SeekTo::End).await.map_err(explain)?;
    }
    print_records(&mut consumer, &a).await?;
    // Commit exactly what was printed: the position after the last record shown.
    consumer.commit().await.map_err(explain)?;
    Ok(())
}
