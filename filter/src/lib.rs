//! Bedrock gateway filter for Envoy (proxy-wasm, `wasm32-wasip1`).
//!
//! `core` is the whole request logic as plain Rust, tested on the host with `cargo test`;
//! `host` is the only module that talks to Envoy.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod core;
mod host;
