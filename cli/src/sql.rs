//! `tierlog sql`: runs a query on a node over Arrow Flight SQL and prints or exports the rows
//! (a table, CSV, JSON lines or Parquet). Rows stream: CSV, JSON and Parquet are written as they
//! arrive, so an export of the whole history does not need to fit in memory.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_flight::FlightDescriptor;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use prost::Message;

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table (collects the rows first).
    Table,
    Csv,
    /// One JSON object per row.
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

pub struct SqlArgs {
    pub sql: String,
    pub format: Format,
    pub output: Option<PathBuf>,
}

/// The message of a status, without tonic's wrapping.
fn explain(server: &str, e: FlightError) -> anyhow::Error {
    match e {
        FlightError::Tonic(s) => match s.code() {
            tonic::Code::Unavailable if s.message().contains("connect") => anyhow::anyhow!(
                "cannot reach a tierlog server at {server} ({}); is `tierlog serve` running?",
                s.message()
            ),
            tonic::Code::Unimplemented => anyhow::anyhow!(
                "the server at {server} does not serve SQL (an older tierlog?): {}",
                s.message()
            ),
            _ => anyhow::anyhow!("{}", s.message()),
        },
        e => anyhow::anyhow!("{e}"),
    }
}

fn status(server: &str, s: tonic::Status) -> anyhow::Error {
    explain(server, FlightError::Tonic(Box::new(s)))
}

/// Binary columns as text where they are UTF-8 (keys and values usually are), for the text
/// formats; anything else is left as it is.
fn readable(batch: &RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(fields.capacity());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let text = match c.data_type() {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                arrow_cast::cast::cast_with_options(
                    c,
                    &DataType::Utf8,
                    &arrow_cast::CastOptions {
                        safe: false,
                        ..Default::default()
                    },
                )
                .ok()
            }
            _ => None,
        };
        match text {
            Some(t) => {
                fields.push(Arc::new(Field::new(
                    f.name(),
                    DataType::Utf8,
                    f.is_nullable(),
                )));
                columns.push(t);
            }
            None => {
                fields.push(f.clone());
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap_or_else(|_| batch.clone())
}

/// Where rows go.
enum Sink {
    Table(Vec<RecordBatch>, Box<dyn Write>),
    Csv(arrow_csv::Writer<Box<dyn Write>>),
    Json(arrow_json::LineDelimitedWriter<Box<dyn Write>>),
    Parquet(parquet::arrow::ArrowWriter<std::fs::File>),
}

impl Sink {
    fn open(format: Format, output: Option<&PathBuf>, schema: &SchemaRef) -> anyhow::Result<Sink> {
        let out = || -> anyhow::Result<Box<dyn Write>> {
            Ok(match output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            })
        };
        Ok(match format {
            Format::Table => Sink::Table(Vec::new(), out()?),
            Format::Csv => Sink::Csv(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(out()?),
            ),
            Format::Json => Sink::Json(arrow_json::LineDelimitedWriter::new(out()?)),
            Format::Parquet => {
                let Some(p) = output else {
                    bail!("--format parquet writes a file: add --output FILE");
                };
                let file = std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build();
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(
                    file,
                    schema.clone(),
                    Some(props),
                )?)
            }
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        match self {
            Sink::Table(rows, _) => rows.push(readable(batch)),
            Sink::Csv(w) => w.write(&readable(batch))?,
            Sink::Json(w) => w.write(&readable(batch))?,
            Sink::Parquet(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Table(rows, mut out) => {
                writeln!(out, "{}", arrow_cast::pretty::pretty_format_batches(&rows)?)?;
                out.flush()?;
            }
            Sink::Csv(w) => w.into_inner().flush()?,
            Sink::Json(mut w) => {
                w.finish()?;
                w.into_inner().flush()?;
            }
            Sink::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(())
    }
}

/// Runs `a.sql` on the node at `server`.
/// The rows of a query running on a node, batch by batch.
pub struct Rows {
    pub schema: SchemaRef,
    server: String,
    flight: FlightServiceClient<tonic::transport::Channel>,
    tickets: std::collections::VecDeque<arrow_flight::Ticket>,
    current: Option<FlightRecordBatchStream>,
}

impl Rows {
    /// The next batch; `None` at the end.
    pub async fn next(&mut self) -> anyhow::Result<Option<RecordBatch>> {
        loop {
            if let Some(batches) = &mut self.current {
                match batches.next().await {
                    Some(b) => return b.map(Some).map_err(|e| explain(&self.server, e)),
                    None => self.current = None,
                }
            }
            let Some(ticket) = self.tickets.pop_front() else {
                return Ok(None);
            };
            let data = self
                .flight
                .do_get(ticket)
                .await
                .map_err(|s| status(&self.server, s))?
                .into_inner()
                .map_err(|s| FlightError::Tonic(Box::new(s)));
            self.current = Some(FlightRecordBatchStream::new_from_flight_data(data));
        }
    }
}

/// Starts `sql` on the node at `server` over Flight SQL.
pub async fn query(server: &str, sql: &str) -> anyhow::Result<Rows> {
    let channel = client::endpoint(server)
        .map_err(|e| anyhow::anyhow!("bad server address {server}: {e}"))?
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach a tierlog server at {server} ({e}); is `tierlog serve` running? (--server / TIERLOG_SERVER)"
            )
        })?;
    let mut flight = FlightServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let cmd = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await
        .map_err(|s| status(server, s))?
        .into_inner();
    let schema: SchemaRef = Arc::new(
        info.clone()
            .try_decode_schema()
            .context("the server sent a schema that does not decode")?,
    );
    Ok(Rows {
        schema,
        server: server.to_string(),
        flight,
        tickets: info.endpoint.into_iter().filter_map(|e| e.ticket).collect(),
        current: None,
    })
}

pub async fn run(server: &str, a: SqlArgs) -> anyhow::Result<()> {
    if a.format == Format::Parquet && a.output.is_none() {
        bail!("--format parquet writes a file: add --output FILE");
    }
    let mut rows = query(server, &a.sql).await?;
    let mut sink = Sink::open(a.format, a.output.as_ref(), &rows.schema)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} rows ({per_sec}) {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    while let Some(b) = rows.next().await? {
        bar.inc(b.num_rows() as u64);
        sink.write(&b)?;
    }
    bar.finish_and_clear();
    sink.finish()
}
