//! Test harness: starts the real gateway (bedrock-emulator, xds-server, Envoy with the wasm
//! filter) on free loopback ports in a temporary directory and tears it down when dropped.
//! Used by the Rust end-to-end tests and, through the `gateway-stack` binary, by the Python
//! (boto3) tests.

pub mod idp;
mod paths;
pub mod process;
pub mod redis;
pub mod stack;

pub use idp::TestIdp;
pub use paths::Paths;
pub use stack::{Credentials, RecordedRequest, RecordedUsage, Stack, StackOptions};
