//! Shared between the wasm filter (built for `wasm32-wasip1`) and xds-server:
//! the control API messages, the filter's configuration schema and the names
//! both sides must agree on. Plain Rust with no host or runtime dependencies.

pub mod auth_config;
pub mod filter_config;
pub mod invalid_key;
pub mod model;
pub mod names;
pub mod quota_config;
pub mod ratelimit;

/// Messages of the `bedrock_gateway.v1` control API (`proto/bedrock_gateway/v1/control.proto`).
pub mod proto {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/bedrock_gateway.v1.rs"));
}
