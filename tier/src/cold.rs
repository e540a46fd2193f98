//! The cold tier: the hot log's segments (whole, or cut for acks=all) as Parquet objects, the manifest that commits them, the read
//! cache, and the upload pipeline.

pub(crate) mod cache;
pub(crate) mod encoder;
pub mod manifest;
pub mod parquet;
pub(crate) mod plan;
pub(crate) mod upload;
