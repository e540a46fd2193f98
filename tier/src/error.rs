//! The one error type of the `tier` crate, classified once: retryable, the caller's fault, fenced,
//! or corruption.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (bad batch, bad argument). Not retryable.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// A feature the format allows but this build does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A record or batch exceeds the configured size limit.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },

    /// The partition is not open in this tier.
    #[error("unknown partition {topic}/{partition}")]
    UnknownPartition { topic: String, partition: u32 },

    /// The requested offset lies outside the log.
    #[error("offset {offset} is out of range [{start}, {end}) for {topic}/{partition}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: i64,
        start: i64,
        end: i64,
    },

    /// The local-disk budget of the hot tier is used up, because uploads lag. Retry later.
    #[error("hot tier is full ({used} of {budget} bytes used; waiting on uploads): retry later")]
    Backpressure { used: u64, budget: u64 },

    /// Local disk I/O failed (including a full disk). The path says where.
    #[error("I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Persisted bytes failed validation where a torn tail is impossible: a sealed segment, a
    /// manifest object or a cold segment. Never skipped silently.
    #[error("corrupt data in {location} at {position}: {reason}")]
    Corrupt {
        location: String,
        position: u64,
        reason: String,
    },

    /// Another writer with a higher epoch owns this partition's manifest now.
    #[error("fenced: {partition} manifest is owned by epoch {current}, ours is {ours}")]
    Fenced {
        partition: String,
        ours: u64,
        current: u64,
    },

    /// An idempotent producer's batch does not follow its previous one (a gap, or a producer
    /// this partition does not know starting past 0). Not retryable as is: the producer starts
    /// over under a new id.
    #[error("producer {producer_id}: sequence {got} is out of order; {expected} was expected")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },

    /// An idempotent producer's epoch is older than one this partition has seen.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },

    /// The object store failed.
    #[error("object store: {source}")]
    ObjectStore {
        #[source]
        source: object_store::Error,
    },

    /// Parquet encoding or decoding failed.
    #[error("parquet {context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// An error shared by several callers of one load (the cache runs one load per key).
    #[error("{0}")]
    Shared(std::sync::Arc<Error>),

    /// The tier is shutting down.
    #[error("the tier is shutting down")]
    Closed,
}

impl From<proto::batch::Error> for Error {
    fn from(e: proto::batch::Error) -> Self {
        match e {
            proto::batch::Error::Invalid(m) => Error::Invalid(m),
            proto::batch::Error::Unsupported(m) => Error::Unsupported(m),
        }
    }
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True when the same call may succeed later without any change by the caller.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backpressure { .. } => true,
            Error::Shared(e) => e.is_retryable(),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::StorageFull
                    | std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => self.store_error().is_some_and(is_transient_store_error),
        }
    }

    /// True when an object (or a Parquet read of one) was not found: for a reader, that its
    /// view of the manifest is older than a garbage collection.
    pub fn is_not_found(&self) -> bool {
        self.store_error()
            .is_some_and(|e| matches!(e, object_store::Error::NotFound { .. }))
    }

    /// The object-store error behind this one, directly or inside a Parquet read.
    fn store_error(&self) -> Option<&object_store::Error> {
        match self {
            Error::ObjectStore { source } => Some(source),
            Error::Shared(e) => e.store_error(),
            Error::Parquet {
                source: parquet::errors::ParquetError::External(inner),
                ..
            } => inner.downcast_ref::<object_store::Error>(),
            _ => None,
        }
    }

    /// True when the data read back does not match what was written.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. } => true,
            Error::Shared(e) => e.is_corruption(),
            _ => false,
        }
    }
}

/// Object-store errors worth retrying: everything but the ones that a retry cannot change.
pub(crate) fn is_transient_store_error(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

impl From<object_store::Error> for Error {
    fn from(source: object_store::Error) -> Self {
        Error::ObjectStore { source }
    }
}
