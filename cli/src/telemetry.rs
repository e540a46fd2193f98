//! Logs and spans. Log lines go to stderr (text, or one JSON object per line with
//! `TIERLOG_LOG_FORMAT=json`), filtered by `TIERLOG_LOG` (default `info`). Spans (a request,
//! its append and its wait for the object store; an upload's cut, conversion and commit) are
//! exported over OTLP/gRPC when `[tracing] otlp_endpoint` is set, batched on a background
//! task: a collector that is slow or away costs dropped spans, never a slower request.
//!
//! Spans are at DEBUG level, so with no endpoint they are never created: the log filter alone
//! decides what is recorded, and the span sites cost a cached "disabled" check.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::TracingSettings;

/// What must be flushed before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: spans not all exported: {e}");
        }
    }
}

/// Installs the global subscriber. Call inside the Tokio runtime (the OTLP exporter's
/// connection runs on it).
pub fn init(tracing: Option<&TracingSettings>) -> anyhow::Result<Telemetry> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIERLOG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("TIERLOG_LOG_FORMAT").is_ok_and(|f| f == "json");
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    }
    .with_filter(filter);
    let (spans, provider) = match tracing.and_then(|t| Some((t, t.otlp_endpoint.as_ref()?))) {
        Some((t, endpoint)) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(std::time::Duration::from_secs(5))
                .build()
                .map_err(|e| anyhow::anyhow!("the OTLP exporter for {endpoint}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    t.sample_ratio,
                ))))
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(t.service_name.clone())
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("tierlog"))
                .with_filter(
                    Targets::new()
                        .with_default(LevelFilter::INFO)
                        .with_target("ingest", LevelFilter::DEBUG)
                        .with_target("tier", LevelFilter::DEBUG),
                );
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(Telemetry { provider })
}
