//! `tier`: the storage core of tierlog: a partitioned, append-only log whose recent tail lives on
//! local disk (the hot tier) and whose whole history lives on object storage as Parquet (the cold
//! tier), readable from offset 0.
//!
//! What it owns:
//! - [`batch`]: Kafka v2 record batches, the unit appended and stored hot;
//! - `hot`: per-partition segment files (`<base offset>.log`) of CRC-framed batches, recovery;
//! - [`cold`]: Parquet encoding, the fenced manifest in the object store, the read cache, uploads;
//! - [`Tier`]: the engine tying them together; `retention`: background housekeeping;
//! - [`store`]: opening object stores by URL, retry, request counting and fault injection.
//!
//! Invariants:
//! - offsets are dense and monotonic per partition: each batch starts at the previous one's end;
//! - every persisted byte is covered by a CRC-32C (frames, manifest objects) or by Parquet's own
//!   page checksums and structure; corruption in sealed data is an error, never skipped;
//! - the object store is the source of truth for the cold tier: a segment exists once a manifest
//!   delta commits it, and only the holder of the highest epoch can commit;
//! - hot segments are deleted only after the manifest covers them.
//!
//! Errors: [`Error`], classified by [`Error::is_retryable`] and [`Error::is_corruption`].

/// The record batch codec lives in `proto` (producers build batches too); re-exported here.
pub use proto::batch;
pub mod cold;
pub mod config;
mod engine;
pub mod epochs;
pub mod error;
mod hot;
mod partition;
pub mod producers;
mod retention;
pub mod store;

use std::fmt;
use std::sync::Arc;

pub use batch::{BatchBuilder, Compression, Header, ProducerInfo, Record, RecordBatch};
pub use cold::compact::CompactReport;
pub use cold::gc::{Garbage, GcReport};
pub use config::{FsyncPolicy, TierConfig};
pub use engine::{PartitionOffsets, ReadResult, Source, Tier};
pub use error::{Error, Result};
pub use hot::AppendResult;
pub use partition::{ColdRetention, KeyCompaction, MergeStatus, UploadObserver};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl PartitionId {
    pub fn new(topic: &str, partition: u32) -> Self {
        PartitionId {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Moves the calling thread to background priority: on Linux the idle scheduling class (it runs
/// only when no normal thread wants the CPU), elsewhere the lowest priority. For work that must
/// never delay ingest: segment conversion and SQL queries. `what` names the thread in the log
/// when the OS refuses.
pub fn background_priority(what: &str) {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).is_ok() {
            return;
        }
    }
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!(error = ?e, "cannot lower the priority of {what}");
    }
}
