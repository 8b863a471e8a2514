//! What the contexts of one plugin configuration share on an Envoy worker ([`Shared`]): the
//! gateway, authenticator and caches, the usage reports, the decision stream, the lookups in
//! flight and the requests waiting on them; and the counters they keep in Envoy's stats
//! ([`Metrics`]). The methods that ask the control service and store its answers are in
//! `control`.
//!
//! A request is held here by a handle of type `W` (`request::Handle`): a parameter, so that
//! this module, which `request` uses, does not use `request` in turn.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use gateway_common::auth_config::SignatureChecks;
use gateway_common::filter_config::Authentication;
use gateway_common::quota_config::{QuotaConfig, QuotaTransport};
use log::debug;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use super::checks::Checks;
use super::decisions::Decisions;
use super::grpc;
use super::lookups::Lookups;
use crate::core::Gateway;
use crate::core::auth::Authenticator;
use crate::core::credentials::CredentialCache;
use crate::core::flow::{Env, Step};
use crate::core::quota::allowance::Allowances;
use crate::core::quota::reports::Reports;
use crate::core::schedule::Schedule;

/// Counters and gauges in Envoy's stats (`wasmcustom.bedrock_gateway.*`).
#[derive(Default, Clone, Copy)]
pub(super) struct Metrics {
    /// The linear memory of this Envoy's filter VMs (one per worker and the main thread's),
    /// in bytes: the sum of what each VM reports on its tick.
    pub(super) vm_memory_bytes: Option<u32>,
    /// Verified tokens cached, summed over this Envoy's workers.
    pub(super) token_cache_entries: Option<u32>,
    pub(super) quota_failures_open: Option<u32>,
    pub(super) quota_failures_closed: Option<u32>,
    pub(super) reports_dropped: Option<u32>,
    pub(super) reports_failed: Option<u32>,
    pub(super) quota_streams_opened: Option<u32>,
    /// Requests admitted from the worker's allowances, without a round trip.
    pub(super) quota_admitted_locally: Option<u32>,
}

impl Metrics {
    pub(super) fn define() -> Self {
        let counter = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        let gauge = |name: &str| hostcalls::define_metric(MetricType::Gauge, name).ok();
        Self {
            vm_memory_bytes: gauge("bedrock_gateway.vm_memory_bytes"),
            token_cache_entries: gauge("bedrock_gateway.token_cache_entries"),
            quota_failures_open: counter("bedrock_gateway.quota_failures_open"),
            quota_failures_closed: counter("bedrock_gateway.quota_failures_closed"),
            reports_dropped: counter("bedrock_gateway.usage_reports_dropped"),
            reports_failed: counter("bedrock_gateway.usage_report_calls_failed"),
            quota_streams_opened: counter("bedrock_gateway.quota_streams_opened"),
            quota_admitted_locally: counter("bedrock_gateway.quota_admitted_locally"),
        }
    }

    /// Moves a gauge that sums the values of several VMs or contexts by the change of this
    /// one's value: `reported` holds what it last added.
    pub(super) fn move_gauge(id: Option<u32>, reported: &Cell<i64>, value: usize) {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        let delta = value - reported.get();
        if delta == 0 {
            return;
        }
        if let Some(id) = id {
            match hostcalls::increment_metric(id, delta) {
                Ok(()) => reported.set(value),
                Err(e) => debug!("cannot set a gauge: {e:?}"),
            }
        }
    }

    /// This VM's linear memory now, into `vm_memory_bytes`.
    pub(super) fn report_vm_memory(&self) {
        VM_MEMORY_REPORTED.with(|reported| {
            Metrics::move_gauge(self.vm_memory_bytes, reported, vm_memory_bytes())
        });
    }

    pub(super) fn add(id: Option<u32>, n: usize) {
        if let Some(id) = id
            && let Err(e) = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX))
        {
            debug!("cannot count: {e:?}");
        }
    }
}

/// The VM's linear memory in bytes (0 off Wasm, in unit tests).
fn vm_memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        core::arch::wasm32::memory_size::<0>() * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}

thread_local! {
    /// What this VM last added to `vm_memory_bytes`: every root context of the VM reports
    /// the same memory, once.
    static VM_MEMORY_REPORTED: Cell<i64> = const { Cell::new(0) };

    /// This worker's usage records (each Envoy worker thread runs its own VM). Every root
    /// context of the worker uses this one queue, so that when a configuration change
    /// replaces the root context, the new one delivers what the old one had not: during an
    /// xds-server outage that is everything since it began.
    static WORKER_REPORTS: RefCell<Option<Rc<RefCell<Reports>>>> = const { RefCell::new(None) };
}

/// The worker's usage record queue, made on first use with the id nonce `nonce()`, holding
/// at most `capacity` records from now on; and how many of the oldest were dropped to fit.
pub(super) fn worker_reports(
    capacity: usize,
    nonce: impl FnOnce() -> u64,
) -> (Rc<RefCell<Reports>>, usize) {
    WORKER_REPORTS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let reports =
            cell.get_or_insert_with(|| Rc::new(RefCell::new(Reports::new(capacity, nonce()))));
        let dropped = reports.borrow_mut().set_capacity(capacity);
        (Rc::clone(reports), dropped)
    })
}

/// What one plugin configuration's contexts share (per Envoy worker). `W`: a handle on a
/// request (`request::Handle`).
pub(super) struct Shared<W> {
    pub(super) gateway: Gateway,
    /// Present in `jwt` mode.
    pub(super) auth: Option<RefCell<Authenticator>>,
    pub(super) keys_schedule: RefCell<Schedule>,
    pub(super) credentials: RefCell<CredentialCache>,
    /// Usage of finished requests on their way to the control service: the worker's queue
    /// ([`worker_reports`]), not this configuration's.
    pub(super) reports: Rc<RefCell<Reports>>,
    pub(super) metrics: Metrics,
    pub(super) node_id: String,
    /// The worker's rate limit decision stream and the requests waiting on it.
    pub(super) decisions: RefCell<Decisions<W>>,
    /// Quota allowances granted on the decision stream, spent by this configuration's
    /// requests.
    pub(super) allowances: RefCell<Allowances>,
    /// The worker's signature check stream and the requests waiting on it.
    pub(super) checks: RefCell<Checks<W>>,
    /// Set while the root context acts for a request (hands it an answer).
    pub(super) delegating: Cell<bool>,
    /// Calls made while acting for a request: their answers reach the root context.
    pub(super) delegated: RefCell<HashMap<u32, W>>,
    /// Key and credential lookups in flight and the requests waiting for them.
    pub(super) lookups: RefCell<Lookups<W>>,
    /// The root context's id: its callbacks act for requests and then act as it again.
    pub(super) root_context_id: u32,
}

impl<W> Shared<W> {
    /// The quota configuration, when decisions go on the decision stream.
    pub(super) fn stream_quota(&self) -> Option<&QuotaConfig> {
        self.gateway
            .config
            .quota
            .as_ref()
            .filter(|q| q.transport == QuotaTransport::Stream)
    }

    /// Whether token signatures go to the control service.
    pub(super) fn checks_signatures_remotely(&self) -> bool {
        matches!(
            &self.gateway.config.authentication,
            Authentication::Jwt(jwt) if jwt.signature_checks == SignatureChecks::XdsServer
        )
    }

    /// Runs one step of a request's flow with what the worker knows now.
    pub(super) fn step(&self, run: impl FnOnce(&mut Env) -> Step) -> Step {
        let mut auth = self.auth.as_ref().map(RefCell::borrow_mut);
        let credentials = self.credentials.borrow();
        let mut env = Env::new(
            &self.gateway,
            auth.as_deref_mut(),
            &credentials,
            &grpc::system_now,
        );
        env.remote_checks = self.checks.borrow().is_open();
        let mut allowances = self
            .stream_quota()
            .is_some()
            .then(|| self.allowances.borrow_mut());
        env.allowances = allowances.as_deref_mut();
        run(&mut env)
    }

    /// Queues the usage of a finished request for the next report.
    pub(super) fn queue_report(&self, record: gateway_common::proto::UsageRecord) {
        let dropped = self.reports.borrow_mut().queue(record);
        if dropped > 0 {
            log::warn!("usage report buffer full: {dropped} oldest reports dropped");
            Metrics::add(self.metrics.reports_dropped, dropped);
        }
    }
}
