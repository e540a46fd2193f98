//! The hot tier: recent batches of each partition on local disk, in segment files.

pub(crate) mod log;
pub(crate) mod segment;

pub use log::AppendResult;
