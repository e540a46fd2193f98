//! The cold tier: the hot log's segments (whole, or cut for acks=all) as Parquet objects, the
//! manifest that commits them, the read cache, the upload pipeline, merging of small objects and
//! garbage collection.

pub(crate) mod cache;
pub(crate) mod compact;
pub(crate) mod encoder;
pub(crate) mod gc;
pub mod manifest;
pub(crate) mod merge;
pub mod parquet;
pub(crate) mod plan;
pub(crate) mod upload;
