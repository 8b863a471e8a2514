//! xds-server: the Bedrock gateway's control service.
//!
//! It renders Envoy's listener, routes and clusters (with the Wasm filter and its JSON
//! configuration) from one YAML file ([`config`], [`snapshot`]), serves them over ADS
//! ([`xds`]), applies edits of the file ([`watch`]), hands the filter its AWS signing
//! credentials ([`credentials`]) and the keys that verify callers' tokens ([`identity`]) over
//! gRPC ([`control`]), enforces request and token quotas as Envoy's rate limit service and
//! keeps a usage ledger ([`quota`]), and reports on an HTTP admin port ([`admin`]).
#![forbid(unsafe_code)]

pub mod active;
pub mod admin;
pub mod answer;
pub mod config;
pub mod control;
pub mod control_api;
pub mod credentials;
pub mod csv;
pub mod filter_schema;
pub mod follow;
pub mod identity;
pub mod quota;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod usage_page;
pub mod util;
pub mod watch;
pub mod xds;

pub use active::ActiveConfig;
pub use server::{ServeError, ServeOptions, serve};
