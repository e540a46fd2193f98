//! `proto`: the tierlog gRPC API, package `tierlog.v1`, generated from
//! `proto/tierlog/v1/tierlog.proto`. Error codes ([`v1::ErrorCode`]) are stable and append-only.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tierlog.v1");
}
