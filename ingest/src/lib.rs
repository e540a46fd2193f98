//! `ingest`: the tierlog ingest node. [`Broker`] is the one core; [`server`] is the gRPC front
//! end, a thin adapter that maps `tierlog.v1` messages to broker calls and errors to statuses
//! with stable codes ([`Code`]); [`flight`] is the Arrow Flight SQL front end over the node's
//! SQL engine.

pub mod broker;
pub mod console;
pub mod error;
pub mod flight;
pub mod group;
pub mod http;
pub mod kafka;
pub mod listen;
pub mod metrics;
pub mod server;

pub use broker::{
    Acks, Broker, BrokerConfig, ClusterView, FetchFence, FetchPermit, Fetched, GroupSettings,
    Limits, OffsetSpec, PartitionInfo, PartitionLag, ProduceRecord, ProduceResult, StartAt,
    TopicInfo,
};
pub use error::{Code, Error, Result};
