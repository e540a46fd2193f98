//! `tierlog bench kafka`: the Kafka listener as Kafka users meet it, driven by librdkafka
//! (confluent-kafka, run with `--python`), next to the native gRPC path on the same node and
//! loopback TCP, all in the same run.
//!
//! A fresh node with a Kafka listener gets two topics of `--partitions` partitions: `--records`
//! records of `--record-bytes` go into one through tierlog's own producer at full speed and are
//! replayed from offset 0 through its fetch stream; the same workload goes into the other
//! through librdkafka (same acks, linger and batch size, no compression), replayed by a
//! librdkafka consumer. Send→ack latencies are per record on both paths. Then the node stops,
//! its hot tier is deleted and it starts again: librdkafka replays the Kafka topic from offset
//! 0 out of the cold tier alone, next to a plain read of the same Parquet files.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::Producer;

use super::{
    BenchArgs, Node, lat, loopback, mbs, produce_phase, producer_config, read_tree, replay, row,
};

pub async fn run(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.external {
        bail!("bench kafka starts its own node (with a Kafka listener); --external is not taken");
    }
    let epoch = Instant::now();
    println!("baselines (same run):");
    let payload = args.records * args.record_bytes as u64;
    let (lo_mbs, lo_rtt) = loopback(payload.min(1 << 30)).await?;
    row(
        "loopback TCP",
        format!("{lo_mbs:.0} MB/s"),
        &format!("64 B round trip {}", lat(&lo_rtt)),
    );
    let node = Node::start_kafka(dir, args).await?;
    let kafka_addr = node
        .kafka
        .clone()
        .context("the node named no Kafka listener")?;
    let client = crate::commands::connect(&node.addr).await?;
    let native = format!("bench-native-{}", std::process::id());
    let viakafka = format!("bench-kafka-{}", std::process::id());
    for t in [&native, &viakafka] {
        client
            .create_topic(t, args.partitions)
            .await
            .map_err(crate::commands::explain)?;
    }

    println!("tierlog's own client (gRPC), same node:");
    let producer = Producer::new(client.clone(), producer_config(args));
    let p = produce_phase(&producer, &native, args, args.records, None, epoch).await?;
    producer.close().await;
    row(
        "produce, full speed",
        format!("{:.0} MB/s", mbs(p.bytes, p.elapsed)),
        &format!(
            "{:.0} records/s",
            p.records as f64 / p.elapsed.as_secs_f64()
        ),
    );
    row("  send→ack", lat(&p.acks), "");
    let (n, b, d) = replay(&client, &native, args.partitions).await?;
    row(
        "replay from offset 0",
        format!("{:.0} MB/s", mbs(b, d)),
        &format!("{:.0} records/s", n as f64 / d.as_secs_f64()),
    );

    println!("librdkafka through the Kafka listener, same node:");
    let spec = dir.join("kafka-spec.json");
    let script = dir.join("bench_kafka.py");
    std::fs::write(&script, include_str!("../bench_kafka.py"))?;
    let acks = match args.acks {
        crate::AcksArg::None => "0",
        crate::AcksArg::Leader => "1",
        crate::AcksArg::All => "all",
    };
    let mut spec_json = serde_json::json!({
        "bootstrap": kafka_addr,
        "topic": viakafka,
        "partitions": args.partitions,
        "records": args.records,
        "record_bytes": args.record_bytes,
        "acks": acks,
        "linger_ms": args.linger_ms,
        "batch_bytes": args.batch_bytes,
    });
    std::fs::write(&spec, serde_json::to_vec(&spec_json)?)?;
    let r = librdkafka(args, &script, &spec, false).await?;
    let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let produce_s = Duration::from_secs_f64(num("produce_s"));
    let bytes = num("bytes") as u64;
    row(
        "produce, full speed",
        format!("{:.0} MB/s", mbs(bytes, produce_s)),
        &format!(
            "{:.0} records/s; {:.0}% of the gRPC path",
            num("records") / produce_s.as_secs_f64(),
            100.0 * mbs(bytes, produce_s) / mbs(p.bytes, p.elapsed)
        ),
    );
    let q = |k: &str| r["ack_ms"][k].as_f64().unwrap_or(f64::NAN);
    row(
        "  send→ack",
        format!(
            "p50 {:.2} / p99 {:.2} / p999 {:.2} ms",
            q("p50"),
            q("p99"),
            q("p999")
        ),
        "",
    );
    let consume_s = Duration::from_secs_f64(num("consume_s"));
    let consumed_bytes = num("consumed_bytes") as u64;
    row(
        "replay from offset 0",
        format!("{:.0} MB/s", mbs(consumed_bytes, consume_s)),
        &format!(
            "{:.0} records/s; {:.0}% of the gRPC path",
            num("consumed") / consume_s.as_secs_f64(),
            100.0 * mbs(consumed_bytes, consume_s) / mbs(b, d)
        ),
    );
    if let Some((peak_mib, _)) = node.memory() {
        row(
            "node resident memory, peak",
            format!("{peak_mib:.0} MiB"),
            "",
        );
    }

    // Seal and upload everything, drop the hot tier, and replay over Kafka from the cold tier.
    node.stop().await?;
    std::fs::remove_dir_all(dir.join("data").join("hot"))?;
    let node = Node::start_kafka(dir, args).await?;
    let kafka_addr = node
        .kafka
        .clone()
        .context("the node named no Kafka listener")?;
    spec_json["bootstrap"] = kafka_addr.into();
    std::fs::write(&spec, serde_json::to_vec(&spec_json)?)?;
    println!("librdkafka, cold tier only (the node restarted without its hot tier):");
    let (b0, d0) = read_tree(&dir.join("data").join("objects"))?;
    row(
        "plain read of the cold Parquet files",
        format!("{:.0} MB/s", mbs(b0, d0)),
        &format!(
            "{:.0} MB on disk, both topics (the same records twice)",
            b0 as f64 / 1e6
        ),
    );
    let r = librdkafka(args, &script, &spec, true).await?;
    let num = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let consume_s = Duration::from_secs_f64(num("consume_s"));
    row(
        "replay from offset 0, cold tier only",
        format!("{:.0} MB/s", mbs(num("consumed_bytes") as u64, consume_s)),
        &format!(
            "{:.0} records/s (record bytes; the Parquet files hold them compressed)",
            num("consumed") / consume_s.as_secs_f64()
        ),
    );
    if let Some((peak_mib, _)) = node.memory() {
        row(
            "node resident memory, peak (cold replay)",
            format!("{peak_mib:.0} MiB"),
            "",
        );
    }
    node.stop().await
}

/// Runs the librdkafka side (`bench_kafka.py`) on `spec`: produce then replay, or with
/// `replay_only` the replay alone; returns the figures it printed.
async fn librdkafka(
    args: &BenchArgs,
    script: &Path,
    spec: &Path,
    replay_only: bool,
) -> anyhow::Result<serde_json::Value> {
    let mut cmd = tokio::process::Command::new(&args.python);
    cmd.arg(script).arg(spec);
    if replay_only {
        cmd.arg("--replay-only");
    }
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {} with confluent-kafka", args.python))?;
    if !out.status.success() {
        bail!(
            "the librdkafka side failed ({}): {}",
            args.python,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the librdkafka side's figures")
}
