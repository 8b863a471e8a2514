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
//! - `decisions`: the worker's rate limit decision stream;
//! - `grpc`: gRPC calls and the clock.

mod control;
mod decisions;
mod grpc;
mod lookups;
mod request;
mod root;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use gateway_common::quota_config::{QuotaConfig, QuotaTransport};
use log::debug;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::RootContext;
use proxy_wasm::types::{LogLevel, MetricType};

use crate::core::Gateway;
use crate::core::auth::Authenticator;
use crate::core::credentials::CredentialCache;
use crate::core::flow::{Env, Step};
use crate::core::quota::reports::Reports;
use crate::core::schedule::Schedule;
use decisions::Decisions;
use lookups::Lookups;
use request::Handle;
use root::Root;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root::new(context_id))
    });
}}

/// Counters in Envoy's stats (`wasmcustom.bedrock_gateway.*`).
#[derive(Default, Clone, Copy)]
struct Metrics {
    quota_failures_open: Option<u32>,
    quota_failures_closed: Option<u32>,
    reports_dropped: Option<u32>,
    reports_failed: Option<u32>,
    quota_streams_opened: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Self {
            quota_failures_open: counter("bedrock_gateway.quota_failures_open"),
            quota_failures_closed: counter("bedrock_gateway.quota_failures_closed"),
            reports_dropped: counter("bedrock_gateway.usage_reports_dropped"),
            reports_failed: counter("bedrock_gateway.usage_report_calls_failed"),
            quota_streams_opened: counter("bedrock_gateway.quota_streams_opened"),
        }
    }

    fn add(id: Option<u32>, n: usize) {
        if let Some(id) = id
            && let Err(e) = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX))
        {
            debug!("cannot count: {e:?}");
        }
    }
}

/// What one plugin configuration's contexts share (per Envoy worker).
struct Shared {
    gateway: Gateway,
    /// Present in `jwt` mode.
    auth: Option<RefCell<Authenticator>>,
    keys_schedule: RefCell<Schedule>,
    credentials: RefCell<CredentialCache>,
    /// Usage of finished requests on their way to the control service.
    reports: RefCell<Reports>,
    metrics: Metrics,
    node_id: String,
    /// The worker's rate limit decision stream and the requests waiting on it.
    decisions: RefCell<Decisions>,
    /// Set while the root context acts for a request (hands it an answer).
    delegating: Cell<bool>,
    /// Calls made while acting for a request: their answers reach the root context.
    delegated: RefCell<HashMap<u32, Handle>>,
    /// Key and credential lookups in flight and the requests waiting for them.
    lookups: RefCell<Lookups<Handle>>,
    /// The root context's id: its callbacks act for requests and then act as it again.
    root_context_id: u32,
}

impl Shared {
    /// The quota configuration, when decisions go on the decision stream.
    fn stream_quota(&self) -> Option<&QuotaConfig> {
        self.gateway
            .config
            .quota
            .as_ref()
            .filter(|q| q.transport == QuotaTransport::Stream)
    }

    /// Runs one step of a request's flow with what the worker knows now.
    fn step(&self, run: impl FnOnce(&mut Env) -> Step) -> Step {
        let mut auth = self.auth.as_ref().map(RefCell::borrow_mut);
        let credentials = self.credentials.borrow();
        let mut env = Env::new(
            &self.gateway,
            auth.as_deref_mut(),
            &credentials,
            &grpc::system_now,
        );
        run(&mut env)
    }

    /// Queues the usage of a finished request for the next report.
    fn queue_report(&self, record: gateway_common::proto::UsageRecord) {
        let dropped = self.reports.borrow_mut().queue(record);
        if dropped > 0 {
            log::warn!("usage report buffer full: {dropped} oldest reports dropped");
            Metrics::add(self.metrics.reports_dropped, dropped);
        }
    }
}
