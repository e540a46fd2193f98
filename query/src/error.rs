//! The one error type of `query`, classified once for the front ends.

use std::sync::Arc;

use datafusion::error::DataFusionError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse, or names a column, function or type that does not exist.
    #[error("invalid query: {0}")]
    Invalid(String),
    /// The query names a table that is not a topic.
    #[error("unknown topic `{0}` (SHOW TABLES lists the topics)")]
    UnknownTopic(String),
    /// The statement is not a read (DDL, DML, SET, COPY …).
    #[error("only queries are allowed: {0}")]
    NotAllowed(String),
    /// The query needed more memory than its limit and could not spill.
    #[error("query exceeded its memory limit of {limit_mib} MiB: {detail}")]
    MemoryLimit { limit_mib: u64, detail: String },
    #[error("query timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("query cancelled")]
    Cancelled,
    /// Reading the log failed (object store, manifest, hot tier).
    #[error(transparent)]
    Storage(#[from] tier::Error),
    /// The catalog (the node's metadata) could not answer.
    #[error("{message}")]
    Catalog { message: String, retryable: bool },
    /// Anything else the engine reported while running the query.
    #[error("query failed: {0}")]
    Execution(#[source] DataFusionError),
}

impl Error {
    /// Worth retrying the same query later (storage unavailable, timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_retryable(),
            Error::Timeout(_) => true,
            Error::Catalog { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Sorts what DataFusion reported into our classes, unwrapping the context it adds.
    pub(crate) fn from_datafusion(e: DataFusionError, memory_limit: usize) -> Error {
        let limit_mib = (memory_limit >> 20) as u64;
        let mut e = e;
        loop {
            e = match e {
                DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
                    *inner
                }
                DataFusionError::Shared(arc) => match Arc::try_unwrap(arc) {
                    Ok(inner) => inner,
                    // Still held elsewhere: classify by reference.
                    Err(arc) => {
                        return match arc.find_root() {
                            DataFusionError::ResourcesExhausted(detail) => Error::MemoryLimit {
                                limit_mib,
                                detail: detail.clone(),
                            },
                            _ => Error::Execution(DataFusionError::Shared(arc)),
                        };
                    }
                },
                DataFusionError::Collection(mut v) if !v.is_empty() => v.swap_remove(0),
                DataFusionError::External(b) => match b.downcast::<Error>() {
                    Ok(ours) => return *ours,
                    Err(b) => match b.downcast::<tier::Error>() {
                        Ok(t) => return Error::Storage(*t),
                        Err(b) => match b.downcast::<DataFusionError>() {
                            Ok(inner) => *inner,
                            Err(b) => return Error::Execution(DataFusionError::External(b)),
                        },
                    },
                },
                DataFusionError::ParquetError(p) => match *p {
                    // A damaged segment, found by the scan's checks (`verify`).
                    datafusion::parquet::errors::ParquetError::External(b) => {
                        match b.downcast::<tier::Error>() {
                            Ok(t) => return Error::Storage(*t),
                            Err(b) => DataFusionError::External(b),
                        }
                    }
                    p => return Error::Execution(DataFusionError::ParquetError(Box::new(p))),
                },
                DataFusionError::ObjectStore(source) => {
                    return Error::Storage(tier::Error::ObjectStore { source: *source });
                }
                DataFusionError::SQL(p, _) => return Error::Invalid(p.to_string()),
                DataFusionError::Plan(m) => return Error::Invalid(m),
                DataFusionError::SchemaError(s, _) => return Error::Invalid(s.to_string()),
                DataFusionError::NotImplemented(m) => {
                    return Error::Invalid(format!("not supported: {m}"));
                }
                DataFusionError::ResourcesExhausted(detail) => {
                    return Error::MemoryLimit { limit_mib, detail };
                }
                other => return Error::Execution(other),
            }
        }
    }
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        match e {
            Error::Execution(e) => e,
            Error::Storage(t) => DataFusionError::External(Box::new(t)),
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
