//! The Arrow Flight SQL front end: ADBC, JDBC and other Flight SQL clients run SQL over topics.
//! A thin adapter over the node's [`QueryEngine`]: a statement's ticket is its SQL text, so any
//! node can serve any ticket and nothing is kept between `GetFlightInfo` and `DoGet`.
//!
//! Supported: statements and prepared statements without parameters (queries only), catalog,
//! schema, table and table-type listings, and `GetSqlInfo`. Writes (`DoPut`, updates,
//! transactions) are refused: topics are written through the produce API.

use std::pin::Pin;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::Schema;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use prost::Message;
use query::{CATALOG, QueryEngine};
use tonic::{Request, Response, Status};

/// The Flight SQL service of a node.
#[derive(Clone)]
pub struct FlightSql {
    engine: QueryEngine,
    info: std::sync::Arc<SqlInfoData>,
}

impl std::fmt::Debug for FlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSql").finish_non_exhaustive()
    }
}

/// Maps a query error to a gRPC status (the message is the error's own text).
pub fn status(e: query::Error) -> Status {
    use query::Error as E;
    let message = e.to_string();
    match e {
        E::Invalid(_) => Status::invalid_argument(message),
        E::UnknownTopic(_) => Status::not_found(message),
        E::NotAllowed(_) => Status::permission_denied(message),
        E::MemoryLimit { .. } => Status::resource_exhausted(message),
        E::Timeout(_) => Status::deadline_exceeded(message),
        E::Cancelled => Status::cancelled(message),
        e if e.is_retryable() => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

type DataStream =
    Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow_schema::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

fn sql_text(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL text"))
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket` (any node can serve it).
fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// A `FlightInfo` whose ticket is the command itself (the metadata listings and prepared
/// statements: `DoGet` receives it back and answers it).
fn command_info(
    schema: &Schema,
    cmd: &impl ProstMessageExt,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    info(schema, cmd.as_any().encode_to_vec(), request.into_inner())
}

/// One batch as a Flight data stream.
fn one_batch(
    schema: std::sync::Arc<Schema>,
    batch: Result<arrow_array::RecordBatch, FlightError>,
) -> DataStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Box::pin(stream)
}

impl FlightSql {
    pub fn new(engine: QueryEngine) -> Self {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "tierlog");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        let info = std::sync::Arc::new(b.build().expect("static SQL info builds"));
        FlightSql { engine, info }
    }

    pub fn into_server(self) -> FlightServiceServer<FlightSql> {
        FlightServiceServer::new(self)
    }

    async fn execute(&self, sql: &str) -> Result<DataStream, Status> {
        let rows = self.engine.execute(sql).await.map_err(status)?;
        let schema = rows.schema.clone();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(rows.map_err(|e| FlightError::Tonic(Box::new(status(e)))))
            .map_err(Status::from);
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.engine.schema(&query.query).await.map_err(status)?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.into_bytes()),
        };
        info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = sql_text(&ticket.statement_handle)?;
        Ok(Response::new(self.execute(&sql).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.engine.schema(&query.query).await.map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::from(query.query.into_bytes()),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&Schema::empty())?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = sql_text(&cmd.prepared_statement_handle)?;
        let schema = self.engine.schema(&sql).await.map_err(status)?;
        command_info(&schema, &cmd, request)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let sql = sql_text(&cmd.prepared_statement_handle)?;
        Ok(Response::new(self.execute(&sql).await?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(
            &query.clone().into_builder(&self.info).schema(),
            &query,
            request,
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let builder = query.into_builder(&self.info);
        Ok(Response::new(one_batch(builder.schema(), builder.build())))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for s in [query::LIVE_SCHEMA, query::COMMITTED_SCHEMA] {
            b.append(CATALOG, s);
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.clone().into_builder().schema(), &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let tables = self.engine.tables().await.map_err(status)?;
        let columns = QueryEngine::topic_schema();
        let mut b = query.into_builder();
        for (schema, table) in tables {
            b.append(CATALOG, schema, table, "TABLE", &columns)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        command_info(&query.into_builder().schema(), &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("TABLE");
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "tierlog does not serve {} tickets",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_errors_map_to_statuses() {
        assert_eq!(
            status(query::Error::UnknownTopic("x".into())).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            status(query::Error::Invalid("bad".into())).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            status(query::Error::NotAllowed("no".into())).code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            status(query::Error::Timeout(std::time::Duration::from_secs(1))).code(),
            tonic::Code::DeadlineExceeded
        );
        let s = status(query::Error::MemoryLimit {
            limit_mib: 5,
            detail: "sort".into(),
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(s.message().contains("5 MiB"));
    }
}
