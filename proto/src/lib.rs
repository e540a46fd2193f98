//! `proto`: the tierlog gRPC API, package `tierlog.v1`, generated from
//! `proto/tierlog/v1/tierlog.proto`, and [`batch`]: the Kafka v2 record batch, the unit producers
//! send and the hot tier stores, shared by the node and the client. Error codes ([`v1::ErrorCode`]) are stable and append-only.

pub mod batch;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tierlog.v1");
}
