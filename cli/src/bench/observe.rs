//! `tierlog bench observe`: what observing costs. The same produce workload (`--records` of
//! `--record-bytes` over `--partitions`, at full speed, tierlog's own client) runs on a fresh
//! node with metrics and tracing off (`--http-listen off`: nothing recorded, stores not
//! wrapped; no OTLP endpoint) and on one with metrics on, `/metrics` scraped every second as
//! Prometheus would, and every request traced (sample ratio 1) to an OTLP sink this command
//! runs: off, on, on, off in the same run, each from a clean and synced disk, so drift in the
//! machine falls on both. Scrapes are timed and sized, spans counted: with `--partitions 1000`
//! this is the scrape cost docs/metrics.md quotes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use client::Producer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BenchArgs, Node, histogram, lat, mbs, produce_phase, producer_config, row};

/// An OTLP trace collector that counts the spans it receives and keeps none.
#[derive(Debug, Clone, Default)]
struct SpanSink(Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for SpanSink
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Starts a [`SpanSink`] on a free loopback port: its endpoint URL and its count.
async fn span_sink() -> anyhow::Result<(String, Arc<std::sync::atomic::AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let sink = SpanSink::default();
    let count = sink.0.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(sink),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((format!("http://{addr}"), count))
}

/// One `GET /metrics`: (bytes of the answer, time to read it all).
async fn scrape(addr: &str) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!(
            "/metrics answered {:?}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    Ok((body.len(), started.elapsed()))
}

pub async fn run(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.external {
        bail!("bench observe starts its own nodes; --external is not taken");
    }
    let epoch = Instant::now();
    let (otlp, spans) = span_sink().await?;
    let mut results: Vec<(bool, f64, Duration)> = Vec::new();
    // Order alternates (off, on, on, off) and each run starts from a clean, synced disk, so
    // neither side pays for the other's writeback.
    for (round, on) in [(0, false), (0, true), (1, true), (1, false)] {
        {
            let _ = std::process::Command::new("sync").status();
            let name = format!("{}-{round}", if on { "on" } else { "off" });
            let sub = dir.join(&name);
            std::fs::create_dir_all(&sub)?;
            let extra: Vec<String> = if on {
                vec!["--otlp-endpoint".into(), otlp.clone()]
            } else {
                vec!["--http-listen".into(), "off".into()]
            };
            let spans_before = spans.load(Ordering::Relaxed);
            let node = Node::start_with(&sub, args, &extra).await?;
            let client = crate::commands::connect(&node.addr).await?;
            let topic = format!("bench-observe-{name}");
            client
                .create_topic(&topic, args.partitions)
                .await
                .map_err(crate::commands::explain)?;
            let stop = Arc::new(AtomicBool::new(false));
            let scraper = node.http.clone().map(|addr| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut h = histogram();
                    let mut bytes = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (n, took) = scrape(&addr).await?;
                        bytes = n;
                        h.record(took.as_micros().max(1) as u64)?;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Ok::<_, anyhow::Error>((h, bytes))
                })
            });
            let producer = Producer::new(client.clone(), producer_config(args));
            let p = produce_phase(&producer, &topic, args, args.records, None, epoch).await?;
            producer.close().await;
            stop.store(true, Ordering::Relaxed);
            let scrapes = match scraper {
                Some(t) => Some(t.await.context("the scraper")??),
                None => None,
            };
            let p99 = Duration::from_micros(p.acks.value_at_quantile(0.99));
            let rate = p.records as f64 / p.elapsed.as_secs_f64();
            row(
                &format!(
                    "produce, metrics {} (run {})",
                    if on {
                        "and tracing on, scraped 1/s"
                    } else {
                        "and tracing off"
                    },
                    round + 1
                ),
                format!("{:.0} MB/s", mbs(p.bytes, p.elapsed)),
                &format!("{rate:.0} records/s, send→ack {}", lat(&p.acks)),
            );
            if let Some((h, bytes)) = scrapes {
                row(
                    "  scrape of /metrics",
                    format!("{:.0} KiB", bytes as f64 / 1024.0),
                    &format!("{} scrapes, {}", h.len(), lat(&h)),
                );
            }
            results.push((on, rate, p99));
            node.stop().await?;
            if on {
                // Stopping the node flushed its last spans.
                let n = spans.load(Ordering::Relaxed) - spans_before;
                row(
                    "  spans exported over OTLP",
                    format!("{n}"),
                    &format!(
                        "{:.2} per 1,000 records",
                        n as f64 * 1000.0 / p.records.max(1) as f64
                    ),
                );
            }
            std::fs::remove_dir_all(&sub)?;
        }
    }
    let mean = |on: bool| {
        let rs: Vec<&(bool, f64, Duration)> = results.iter().filter(|r| r.0 == on).collect();
        let rate = rs.iter().map(|r| r.1).sum::<f64>() / rs.len() as f64;
        let p99 = rs.iter().map(|r| r.2).sum::<Duration>() / rs.len() as u32;
        (rate, p99)
    };
    let ((off_rate, off_p99), (on_rate, on_p99)) = (mean(false), mean(true));
    row(
        "mean throughput, on against off",
        format!("{:+.1} %", (on_rate / off_rate - 1.0) * 100.0),
        &format!("{off_rate:.0} → {on_rate:.0} records/s"),
    );
    row(
        "mean send→ack p99, on against off",
        format!(
            "{:+.1} %",
            (on_p99.as_secs_f64() / off_p99.as_secs_f64() - 1.0) * 100.0
        ),
        &format!(
            "{:.2} → {:.2} ms",
            off_p99.as_secs_f64() * 1e3,
            on_p99.as_secs_f64() * 1e3
        ),
    );
    Ok(())
}
