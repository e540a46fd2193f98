//! The web console: a page served at `/` (its assets embedded in the binary, nothing fetched
//! from elsewhere) over a JSON API under `/api/v1/`. A thin front end: every figure comes from
//! the core ([`Broker`]) as the gRPC API and `/metrics` report it, and SQL runs on the node's
//! own engine.
//!
//! Invariants: read-only unless [`ConsoleSettings::admin`]; every answer is bounded (records
//! per page, bytes shown per key and value, SQL rows and time); an error is JSON
//! `{"error", "code"}` with an HTTP status from [`crate::Code::http_status`], never a hang.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::error::Error;

/// What the console may do and show.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Whether it may change things (create topics, delete groups).
    pub admin: bool,
    /// Rows a SQL query may return to the page, at most.
    pub sql_max_rows: usize,
    /// How long a SQL query from the page may run.
    pub sql_timeout: Duration,
    /// Bytes of a key or value shown; the rest is cut (the size is shown).
    pub value_max_bytes: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            admin: false,
            sql_max_rows: 1_000,
            sql_timeout: Duration::from_secs(30),
            value_max_bytes: 4_096,
        }
    }
}

/// Records per page of the record browser, at most.
const MAX_RECORDS: usize = 500;

#[derive(Clone)]
struct Console {
    broker: Broker,
    engine: Option<query::QueryEngine>,
    settings: ConsoleSettings,
}

/// The console's routes (the page and its API) over `broker`; SQL through `engine`.
pub fn router(
    broker: Broker,
    engine: Option<query::QueryEngine>,
    settings: ConsoleSettings,
) -> Router {
    let state = Console {
        broker,
        engine,
        settings,
    };
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/console.js",
            get(|| asset("text/javascript; charset=utf-8", CONSOLE_JS)),
        )
        .route(
            "/console.css",
            get(|| asset("text/css; charset=utf-8", CONSOLE_CSS)),
        )
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/topics", get(topics).post(create_topic))
        .route("/api/v1/topics/{name}", get(topic))
        .route("/api/v1/groups", get(groups))
        .route("/api/v1/groups/{group}", get(group).delete(delete_group))
        .route("/api/v1/records", get(records))
        .route("/api/v1/sql", axum::routing::post(sql))
        .route("/api/v1/stats", get(stats))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A JSON error with its status.
/// A JSON error: status, message, and the stable code name (`Code`'s, or the console's own).
struct ApiError(StatusCode, String, std::borrow::Cow<'static, str>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "code": self.2}))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        ApiError(
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.to_string(),
            format!("{code:?}").into(),
        )
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into(), "InvalidRequest".into())
}

type ApiResult = std::result::Result<Json<Value>, ApiError>;

/// The answer to a path nothing serves: JSON under `/api/`, text elsewhere.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError(
            StatusCode::NOT_FOUND,
            format!("no API at {}; see docs/console.md", uri.path()),
            "NotFound".into(),
        )
        .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        "not found: this node serves / (the console), /api/v1/..., /metrics, /healthz and /readyz\n",
    )
        .into_response()
}

fn refuse_unless_admin(c: &Console) -> std::result::Result<(), ApiError> {
    if c.settings.admin {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "the console is read-only: set [http] console_admin = true to allow changes".into(),
            "ReadOnly".into(),
        ))
    }
}

async fn overview(State(c): State<Console>) -> ApiResult {
    let view = c.broker.cluster_view().await?;
    let mut led: std::collections::BTreeMap<u64, usize> = Default::default();
    for l in view.leaders.values() {
        *led.entry(l.node_id).or_default() += 1;
    }
    let partitions: usize = view.topics.iter().map(|t| t.partitions() as usize).sum();
    Ok(Json(json!({
        "cluster_id": c.broker.cluster_id(),
        "node_id": c.broker.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "admin": c.settings.admin,
        "topics": view.topics.len(),
        "partitions": partitions,
        "nodes": view.nodes.iter().map(|n| json!({
            "node_id": n.node_id,
            "addr": n.addr,
            "kafka_addr": n.kafka_addr,
            "partitions_led": led.get(&n.node_id).copied().unwrap_or(0),
        })).collect::<Vec<_>>(),
    })))
}

fn topic_json(t: &crate::broker::TopicInfo) -> Value {
    let cfg = &t.meta.config;
    let sum = |f: fn(&tier::PartitionOffsets) -> u64| -> u64 {
        t.partitions.iter().map(|p| f(&p.offsets)).sum()
    };
    json!({
        "name": t.meta.name,
        "id": t.meta.id,
        "partitions": t.partitions.len(),
        "retention_ms": cfg.retention_ms.map(|v| v.get()),
        "retention_bytes": cfg.retention_bytes.map(|v| v.get()),
        "cleanup_policy": cfg.extra.get("cleanup.policy").cloned().unwrap_or_else(|| "delete".into()),
        "config": cfg.extra,
        "records": t.partitions.iter().map(|p| (p.offsets.next - p.offsets.log_start).max(0)).sum::<i64>(),
        "hot_bytes": sum(|o| o.hot_bytes),
        "cold_bytes": sum(|o| o.cold_bytes),
        "cold_objects": sum(|o| o.cold_segments),
        "partition_details": t.partitions.iter().map(|p| json!({
            "partition": p.partition,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "log_start": p.offsets.log_start,
            "high_watermark": p.offsets.next,
            "committed": p.offsets.cold_next,
            "hot_start": p.offsets.hot_start,
            "hot_bytes": p.offsets.hot_bytes,
            "hot_segments": p.offsets.hot_segments,
            "cold_bytes": p.offsets.cold_bytes,
            "cold_objects": p.offsets.cold_segments,
            "upload_lag_seconds": p.offsets.upload_lag.as_secs_f64(),
            "upload_error": p.offsets.upload_error,
        })).collect::<Vec<_>>(),
    })
}

async fn topics(State(c): State<Console>) -> ApiResult {
    let mut out = Vec::new();
    for name in c.broker.list_topics().await? {
        match c.broker.describe_topic(&name).await {
            Ok(t) => {
                let mut v = topic_json(&t);
                v.as_object_mut()
                    .expect("an object")
                    .remove("partition_details");
                out.push(v);
            }
            // Deleted since it was listed.
            Err(Error::UnknownTopic(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(json!({ "topics": out })))
}

async fn topic(State(c): State<Console>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(topic_json(&c.broker.describe_topic(&name).await?)))
}

#[derive(Deserialize)]
struct NewTopic {
    name: String,
    #[serde(default = "one")]
    partitions: u32,
}

fn one() -> u32 {
    1
}

async fn create_topic(
    State(c): State<Console>,
    body: std::result::Result<Json<NewTopic>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    refuse_unless_admin(&c)?;
    let Json(t) = body.map_err(|e| bad(format!("a topic is {{\"name\", \"partitions\"}}: {e}")))?;
    let info = c
        .broker
        .create_topic(&t.name, meta::TopicConfig::new(t.partitions.max(1)))
        .await?;
    Ok(Json(topic_json(&info)))
}

async fn groups(State(c): State<Console>) -> ApiResult {
    let mut out = Vec::new();
    for g in c.broker.list_groups().await? {
        let lag = match c.broker.group_lag(&g.group).await {
            Ok(rows) => Some(rows.iter().filter_map(|r| r.lag()).sum::<i64>()),
            Err(e) => {
                tracing::debug!(group = %g.group, error = %e, "lag not read for the console");
                None
            }
        };
        out.push(json!({
            "group": g.group,
            "state": g.state,
            "members": g.members,
            "protocol_type": g.protocol_type,
            "lag": lag,
        }));
    }
    Ok(Json(json!({ "groups": out })))
}

async fn group(State(c): State<Console>, Path(group): Path<String>) -> ApiResult {
    let r = c.broker.group_report(&group).await?;
    let v = &r.view;
    Ok(Json(json!({
        "group": v.group,
        "state": v.state,
        "generation": v.generation,
        "assignor": v.assignor,
        "protocol_type": v.protocol_type,
        "classic": v.classic,
        "coordinator": r.coordinator,
        "members": v.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "instance_id": m.instance_id,
            "client_id": m.client_id,
            "host": m.host,
            "member_epoch": m.member_epoch,
            "assigned": m.owned.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": r.partitions.iter().map(|(l, owner)| json!({
            "topic": l.topic,
            "partition": l.partition,
            "committed": l.committed,
            "high_watermark": l.high_watermark,
            "lag": l.lag(),
            "lag_seconds": l.lag_ms.map(|ms| ms as f64 / 1000.0),
            "owner": owner,
        })).collect::<Vec<_>>(),
    })))
}

async fn delete_group(State(c): State<Console>, Path(group): Path<String>) -> ApiResult {
    refuse_unless_admin(&c)?;
    c.broker.delete_group(&group).await?;
    Ok(Json(json!({ "deleted": group })))
}

#[derive(Deserialize)]
struct RecordsQuery {
    topic: Option<String>,
    partition: Option<String>,
    offset: Option<String>,
    timestamp: Option<String>,
    limit: Option<String>,
}

fn number<T: std::str::FromStr>(
    name: &str,
    v: Option<&String>,
) -> std::result::Result<Option<T>, ApiError> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| bad(format!("{name} must be a number, not {s:?}")))
        })
        .transpose()
}

/// A key or value as the page shows it: its size, and its first bytes (base64).
fn shown(b: Option<&[u8]>, max: usize) -> Value {
    match b {
        None => Value::Null,
        Some(b) => json!({
            "size": b.len(),
            "truncated": b.len() > max,
            "base64": base64::engine::general_purpose::STANDARD.encode(&b[..b.len().min(max)]),
        }),
    }
}

async fn records(State(c): State<Console>, Query(q): Query<RecordsQuery>) -> ApiResult {
    let topic = q
        .topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("say which topic: ?topic=NAME&partition=N&offset=N"))?;
    let partition: u32 = number("partition", q.partition.as_ref())?.unwrap_or(0);
    let limit: usize = number("limit", q.limit.as_ref())?.unwrap_or(20);
    if limit == 0 || limit > MAX_RECORDS {
        return Err(bad(format!("limit must be 1 to {MAX_RECORDS}")));
    }
    let offset: Option<i64> = number("offset", q.offset.as_ref())?;
    let timestamp: Option<i64> = number("timestamp", q.timestamp.as_ref())?;
    let start = match (offset, timestamp) {
        (Some(_), Some(_)) => return Err(bad("give an offset or a timestamp, not both")),
        (Some(o), None) if o < 0 => return Err(bad("offset must be 0 or more")),
        (Some(o), None) => o,
        (None, Some(ts)) => match c.broker.offset_for_timestamp(&topic, partition, ts).await? {
            Some(o) => o,
            // No record at or after it: the end of the log.
            None => c
                .broker
                .describe_topic(&topic)
                .await?
                .partitions
                .get(partition as usize)
                .map_or(0, |p| p.offsets.next),
        },
        (None, None) => 0,
    };
    let max = c.settings.value_max_bytes;
    let mut out = Vec::new();
    let mut at = start;
    let (mut source, mut high, mut log_start) = ("", -1, -1);
    // Records may span several reads; each read is at least one batch.
    while out.len() < limit {
        let b = c
            .broker
            .browse(
                &topic,
                partition,
                at,
                (limit - out.len()).max(1) * (max + 256),
            )
            .await?;
        if source.is_empty() {
            source = b.source;
        }
        (high, log_start) = (b.high_watermark, b.log_start);
        let Some(last) = b.records.last().map(|r| r.offset) else {
            break;
        };
        for r in b
            .records
            .iter()
            .filter(|r| r.offset >= at)
            .take(limit - out.len())
        {
            out.push(json!({
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": shown(r.key.as_deref(), max),
                "value": shown(r.value.as_deref(), max),
                "headers": r.headers.iter().map(|h| json!({
                    "key": h.key,
                    "value": shown(h.value.as_deref(), max),
                })).collect::<Vec<_>>(),
            }));
        }
        at = last + 1;
    }
    Ok(Json(json!({
        "topic": topic,
        "partition": partition,
        "start": start,
        "source": source,
        "high_watermark": high,
        "log_start": log_start,
        "records": out,
    })))
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
    max_rows: Option<usize>,
}

async fn sql(
    State(c): State<Console>,
    body: std::result::Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(req) = body.map_err(|e| bad(format!("a query is {{\"sql\": \"...\"}}: {e}")))?;
    let engine = c.engine.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_IMPLEMENTED,
            "this node runs no SQL engine".into(),
            "Unsupported".into(),
        )
    })?;
    let max_rows = req
        .max_rows
        .unwrap_or(c.settings.sql_max_rows)
        .clamp(1, c.settings.sql_max_rows);
    let started = std::time::Instant::now();
    let sql_error = |e: query::Error| {
        let status = if e.is_retryable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError(status, e.to_string(), "SqlError".into())
    };
    let timeout = c.settings.sql_timeout;
    let run = async {
        let mut stream = engine.execute(&req.sql).await.map_err(sql_error)?;
        let columns: Vec<String> = stream
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut truncated = false;
        let opts = arrow_cast::display::FormatOptions::default().with_null("");
        'batches: while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let batch = batch.map_err(sql_error)?;
            let formatters = batch
                .columns()
                .iter()
                .map(|a| arrow_cast::display::ArrayFormatter::try_new(a.as_ref(), &opts))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("a column cannot be shown: {e}")))?;
            for i in 0..batch.num_rows() {
                if rows.len() >= max_rows {
                    truncated = true;
                    break 'batches;
                }
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .zip(&formatters)
                        .map(|(a, f)| {
                            if a.is_null(i) {
                                Value::Null
                            } else {
                                Value::String(f.value(i).to_string())
                            }
                        })
                        .collect(),
                );
            }
        }
        Ok::<_, ApiError>((columns, rows, truncated))
    };
    // Dropping the stream on a timeout cancels the query.
    let (columns, rows, truncated) = tokio::time::timeout(timeout, run).await.map_err(|_| {
        ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the query ran longer than {timeout:?} and was cancelled"),
            "Timeout".into(),
        )
    })??;
    Ok(Json(json!({
        "columns": columns,
        "rows": rows,
        "truncated": truncated,
        "max_rows": max_rows,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    })))
}

/// Running totals and lags for the live charts: the page polls it and plots differences.
async fn stats(State(c): State<Console>) -> ApiResult {
    let snapshot = c.broker.metrics_snapshot().await;
    let mut groups: std::collections::BTreeMap<&str, (i64, f64)> = Default::default();
    for l in &snapshot.lag {
        let g = groups.entry(l.group.as_str()).or_default();
        g.0 += l.records;
        g.1 = g.1.max(l.seconds.unwrap_or(0.0));
    }
    Ok(Json(json!({
        "now_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "totals": c.broker.metrics().totals(),
        "upload_lag_records": snapshot.partitions.iter().map(|p| (p.log_end - p.committed).max(0)).sum::<i64>(),
        "upload_lag_seconds": snapshot.partitions.iter().map(|p| p.upload_lag_seconds).fold(0.0, f64::max),
        "partitions_led": snapshot.partitions.len(),
        "hot_bytes": snapshot.hot_bytes,
        "groups": groups.iter().map(|(g, (records, secs))| json!({
            "group": g, "lag": records, "lag_seconds": secs,
        })).collect::<Vec<_>>(),
    })))
}
