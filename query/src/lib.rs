//! `query`: SQL over topics. Every topic is a table (columns `partition`, `offset`, `timestamp`,
//! `key`, `value`, `headers`, `producer_id`, `producer_epoch`, `sequence`, `transactional`)
//! over its committed Parquet segments in the object store and, on a node, the hot tail after
//! them. DataFusion plans and runs the queries.
//!
//! - [`catalog`]: where topics, committed segments and hot tails come from;
//! - [`table`]: the table provider and its pruning (manifest, then Parquet statistics);
//! - [`functions`]: JSON and text functions over payloads;
//! - `verify`: the scan's Parquet reader, which checks footers and row groups as cold reads do;
//! - [`QueryEngine`]: sessions, guard rails (memory, time, cancellation, read-only), streaming.
//!
//! Invariant: a query reads a consistent prefix of each partition: the segments of one manifest
//! state, then exactly the records after it.

mod cancel;
pub mod catalog;
mod engine;
pub mod error;
pub mod functions;
mod memory;
pub mod table;
mod verify;

pub use catalog::{BucketCatalog, Catalog, ColdView, HotTail, PartitionSnapshot, TopicInfo};
pub use engine::{CATALOG, COMMITTED_SCHEMA, LIVE_SCHEMA, QueryConfig, QueryEngine, QueryStream};
pub use error::{Error, Result};
pub use table::ScanSummary;
