//! The crate's one error type, [`Error`], and its classification, [`ErrorClass`].
//!
//! Every variant is classified exactly once in [`Error::class`]; callers decide what to do
//! (retry, report to the client, step down, stop) from the class, not from the variant.
//! Causes are kept as `#[source]`, never flattened into strings.

use crate::kv::LeaseId;
use crate::{LeaderEpoch, NodeId};

/// A boxed cause from a backend (e.g. an etcd client error) or a decoder.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the metadata layer, for every backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend could not be reached or refused service for now (etcd down, no quorum,
    /// overloaded, a watch cut off). `backend` names it, e.g. `etcd at http://10.0.0.1:2379`.
    #[error("metadata store unavailable ({backend})")]
    Unavailable {
        backend: String,
        #[source]
        source: BoxError,
    },

    /// The operation did not complete in time; it may or may not have been applied.
    #[error("metadata operation `{operation}` timed out")]
    Timeout { operation: &'static str },

    /// An optimistic compare-and-swap loop lost too many races in a row.
    #[error("gave up on `{what}` after {attempts} conflicting attempts")]
    Contention { what: String, attempts: u32 },

    /// The caller passed something malformed (a bad name, a zero TTL, a duplicate key in a txn).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("topic `{topic}` does not exist")]
    TopicNotFound { topic: String },

    #[error("topic `{topic}` already exists")]
    TopicExists { topic: String },

    /// The lease was never granted, has expired or was revoked.
    #[error("lease {lease} not found (expired, revoked or never granted)")]
    LeaseNotFound { lease: LeaseId },

    /// Watch history at `requested` is gone; everything up to and including `compacted` is
    /// unavailable. Re-read a snapshot and watch from its revision + 1.
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted { requested: i64, compacted: i64 },

    /// Another node holds the partition's leadership.
    #[error("partition {topic}/{partition} is led by node {holder} at epoch {epoch}")]
    LeaderExists {
        topic: String,
        partition: u32,
        holder: NodeId,
        epoch: LeaderEpoch,
    },

    /// The caller's leader epoch is no longer the partition's current epoch.
    #[error("epoch {epoch} of partition {topic}/{partition} is fenced by epoch {current}")]
    Fenced {
        topic: String,
        partition: u32,
        epoch: LeaderEpoch,
        current: LeaderEpoch,
    },

    /// A group coordinator's claim (create revision `revision`) is no longer the group's: another
    /// node coordinates it now, or nobody does. Nothing was written.
    #[error("the claim on group {group:?} at revision {revision} is no longer held")]
    GroupFenced { group: String, revision: i64 },

    /// A stored value could not be decoded (bad checksum, bad JSON, unknown format).
    #[error("corrupt metadata: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: BoxError,
    },

    /// The backend refused the request for a reason retrying won't fix (permission denied, an
    /// unsupported API, an internal error of the backend): it needs an operator.
    #[error("metadata store failed ({backend})")]
    Backend {
        backend: String,
        #[source]
        source: BoxError,
    },

    /// The embedded store's local database failed.
    #[error("local metadata storage failed")]
    Storage {
        #[source]
        source: Box<redb::Error>,
    },

    /// The backend was closed; this handle can no longer be used.
    #[error("metadata backend is closed")]
    Closed,
}

/// What a caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry with backoff.
    Retryable,
    /// The request was wrong (or refers to something absent); retrying it unchanged won't help.
    Caller,
    /// Someone else leads now; stop acting as leader.
    Fenced,
    /// Stored data cannot be trusted; needs an operator.
    Corruption,
    /// The local store or handle is unusable; the process should shut down.
    Fatal,
}

impl Error {
    /// The one place where errors are classified.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Contention { .. } => {
                ErrorClass::Retryable
            }
            Error::InvalidArgument(_)
            | Error::TopicNotFound { .. }
            | Error::TopicExists { .. }
            | Error::LeaseNotFound { .. }
            | Error::Compacted { .. } => ErrorClass::Caller,
            Error::LeaderExists { .. } | Error::Fenced { .. } | Error::GroupFenced { .. } => {
                ErrorClass::Fenced
            }
            Error::Corrupt { .. } => ErrorClass::Corruption,
            Error::Backend { .. } | Error::Storage { .. } | Error::Closed => ErrorClass::Fatal,
        }
    }

    /// Transient failure: the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }

    /// Leadership was lost or is held by someone else.
    pub fn is_fenced(&self) -> bool {
        self.class() == ErrorClass::Fenced
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn corrupt(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Corrupt {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn storage(source: impl Into<redb::Error>) -> Self {
        Error::Storage {
            source: Box::new(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let unavailable = Error::Unavailable {
            backend: "etcd at http://127.0.0.1:1".into(),
            source: "connection refused".into(),
        };
        assert!(unavailable.is_retryable());
        assert!(unavailable.to_string().contains("http://127.0.0.1:1"));
        assert!(Error::Timeout { operation: "put" }.is_retryable());
        assert_eq!(Error::invalid("x").class(), ErrorClass::Caller);
        assert!(
            Error::Fenced {
                topic: "t".into(),
                partition: 0,
                epoch: 1,
                current: 2
            }
            .is_fenced()
        );
        let corrupt = Error::corrupt("key k", "bad checksum");
        assert_eq!(corrupt.class(), ErrorClass::Corruption);
        assert!(std::error::Error::source(&corrupt).is_some());
        assert_eq!(Error::Closed.class(), ErrorClass::Fatal);
        let denied = Error::Backend {
            backend: "etcd at http://127.0.0.1:1".into(),
            source: "permission denied".into(),
        };
        assert_eq!(denied.class(), ErrorClass::Fatal);
    }
}
