//! End-to-end tests: real Envoy with the wasm filter, real xds-server, the Bedrock emulator,
//! driven by the AWS SDK for Rust and plain HTTP. Each test starts its own stack on free
//! loopback ports. Build everything first (scripts/test.sh does).

mod common;
mod config_reload;
mod credentials;
mod envoy_configs;
mod forwarding;
mod hardening;
mod identity;
mod operations;
mod quota;
