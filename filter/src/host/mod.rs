//! The only module that talks to Envoy. It reads what happens into plain values, hands them
//! to `core` (a request's way is `core::flow`), and performs what the core asks for. Every
//! host call's failure becomes an explicit reply or a counted failure: the filter never
//! panics.
//!
//! - `root`: the root context (one per Envoy worker): configuration, the tick, the calls it
//!   makes for everyone (credentials, keys, usage reports) and the decision stream's answers;
//! - `control`: asking the control service for credentials and keys, one lookup per kind at a
//!   time (`lookups`), and storing what it answers;
//! - `request`: one request's callbacks, driving its `core::flow::RequestFlow`;
//! - `decisions`: the worker's rate limit decision stream, and `checks` its signature check
//!   stream (both `tagged` streams);
//! - `shared`: what a worker's contexts share, and the metrics they count;
//! - `grpc`: gRPC calls and stream opens (held back after one failed within Envoy), and the
//!   clock.

mod checks;
mod control;
mod decisions;
mod grpc;
mod lookups;
mod request;
mod root;
mod shared;
mod tagged;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

use root::Root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}
