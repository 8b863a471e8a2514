//! The only module that talks to Envoy. It reads requests into plain values, asks `core`
//! what to do, and applies the answer. Every host call's failure becomes an explicit reply or
//! a counted failure: the filter never panics.
//!
//! The root context (one per Envoy worker) keeps what requests share: the configuration, the
//! signing credentials and verification keys it refreshes from xds-server, and the usage
//! reports it delivers. `request.rs` is the per-request state machine.

mod decisions;
mod lookups;
mod request;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_common::filter_config::Authentication;
use gateway_common::names::{
    CONTROL_SERVICE, GET_IDENTITY_KEYS, GET_SIGNING_CREDENTIALS, REPORT_USAGE,
};
use gateway_common::proto::{
    GetIdentityKeysRequest, GetSigningCredentialsRequest, IdentityKeys, RateLimitStreamResponse,
    ReportUsageRequest, SigningCredentials, UsageRecord,
};
use gateway_common::quota_config::{QuotaConfig, QuotaTransport};
use gateway_common::ratelimit::RateLimitResponse;
use log::{debug, error, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MetricType};
use std::hash::{BuildHasher, RandomState};

use crate::core::Gateway;
use crate::core::auth::Authenticator;
use crate::core::credentials::CredentialCache;
use crate::core::errors::ErrorReply;
use crate::core::schedule::Schedule;
use decisions::{Decisions, Waiter};
use lookups::{Lookups, Want};
use request::{Handle, Request, StreamAnswer};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root {
            context_id,
            ..Root::default()
        })
    });
}}

/// How often the root context refreshes credentials and keys when due, and sends usage.
const TICK: Duration = Duration::from_millis(500);
/// Usage records per ReportUsage call.
const REPORT_BATCH: usize = 500;

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
    /// Usage of finished requests, waiting to be sent (bounded; oldest dropped first).
    reports: RefCell<VecDeque<UsageRecord>>,
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
    /// Identifies this worker's usage reports (with a sequence number).
    report_nonce: u64,
    report_sequence: Cell<u64>,
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

    fn ask_for_credentials(&self, now: u64) -> Result<u32, String> {
        let current = self
            .credentials
            .borrow()
            .usable(now)
            .map(|c| c.access_key_id.clone())
            .unwrap_or_default();
        let request = GetSigningCredentialsRequest {
            node_id: self.node_id.clone(),
            current_access_key_id: current,
        };
        self.call(GET_SIGNING_CREDENTIALS, &request.encode_to_vec())
    }

    fn ask_for_keys(&self, unknown: Option<(String, String)>) -> Result<u32, String> {
        let (issuer, kid) = unknown.unwrap_or_default();
        let request = GetIdentityKeysRequest {
            node_id: self.node_id.clone(),
            unknown_kid_issuer: issuer,
            unknown_kid: kid,
        };
        self.call(GET_IDENTITY_KEYS, &request.encode_to_vec())
    }

    /// A request needs keys (of `issuer` with no key `kid`, or any keys when `kid` is
    /// `None`): it waits for the lookup in flight for the same thing, or starts one. The
    /// token of a call it started is returned (its answer reaches that request).
    fn need_keys(
        &self,
        issuer: usize,
        kid: Option<String>,
        handle: &Handle,
        now_ms: u64,
    ) -> Result<Option<u32>, String> {
        let want = if kid.is_some() {
            Want::IssuerKeys(issuer)
        } else {
            Want::AnyKeys
        };
        self.need(want, handle, now_ms, || {
            let unknown = kid.and_then(|kid| {
                let auth = self.auth.as_ref()?.borrow();
                Some((auth.config.issuers.get(issuer)?.issuer.clone(), kid))
            });
            self.ask_for_keys(unknown)
        })
    }

    /// A request needs signing credentials: it waits for the lookup in flight, or starts
    /// one (its token is returned).
    fn need_credentials(&self, handle: &Handle, now_ms: u64) -> Result<Option<u32>, String> {
        self.need(Want::Credentials, handle, now_ms, || {
            self.ask_for_credentials(unix_now())
        })
    }

    fn need(
        &self,
        want: Want,
        handle: &Handle,
        now_ms: u64,
        call: impl FnOnce() -> Result<u32, String>,
    ) -> Result<Option<u32>, String> {
        let token = if self.lookups.borrow().in_flight(want) {
            None
        } else {
            let token = call()?;
            self.lookup_started(token, want, now_ms);
            Some(token)
        };
        self.lookups.borrow_mut().wait(want, handle.clone());
        Ok(token)
    }

    fn lookup_started(&self, token: u32, want: Want, now_ms: u64) {
        let deadline = now_ms.saturating_add(self.gateway.config.control.timeout_ms);
        self.lookups.borrow_mut().started(token, want, deadline);
    }

    /// A key lookup was answered: the keys are stored, and further unknown kids of the issuer
    /// it was for are refused without asking for a while.
    fn keys_answered(&self, token: u32, status_code: u32, size: usize) {
        self.store_keys(status_code, size);
        let want = self.lookups.borrow_mut().answered(token);
        if let (Some(Want::IssuerKeys(issuer)), Some(auth)) = (want, &self.auth) {
            auth.borrow_mut().lookup_done(issuer, unix_now());
        }
    }

    /// A credentials lookup was answered.
    fn credentials_answered(&self, token: u32, status_code: u32, size: usize) {
        self.store_credentials(status_code, size);
        self.lookups.borrow_mut().answered(token);
    }

    /// Gives up lookups past their deadline and hands every request whose lookup is over
    /// back to its way. Only from a root context callback.
    fn wake_waiters(&self, now_ms: u64) {
        let (expired, ready) = self.lookups.borrow_mut().due(now_ms, Handle::alive);
        for want in expired {
            match (want, &self.auth) {
                (Want::IssuerKeys(issuer), Some(auth)) => {
                    auth.borrow_mut().lookup_done(issuer, unix_now());
                }
                (Want::Credentials, _) => self.credentials.borrow_mut().failed(unix_now()),
                _ => {}
            }
        }
        for handle in ready {
            handle.deliver(self, |state| state.lookup_over(self));
        }
    }

    /// The id of the next usage report batch.
    fn next_report_id(&self) -> String {
        let sequence = self.report_sequence.get();
        self.report_sequence.set(sequence.wrapping_add(1));
        format!("{:016x}-{sequence}", self.report_nonce)
    }

    fn call(&self, method: &str, message: &[u8]) -> Result<u32, String> {
        let control = &self.gateway.config.control;
        grpc_call(
            &control.cluster,
            CONTROL_SERVICE,
            method,
            message,
            control.timeout_ms,
        )
    }

    /// Reads a credentials answer into the cache (or records the failure).
    fn store_credentials(&self, status_code: u32, size: usize) {
        let now = unix_now();
        let mut cache = self.credentials.borrow_mut();
        match grpc_answer::<SigningCredentials>(status_code, size) {
            Ok(message) => {
                let key = message.access_key_id.clone();
                let default_refresh = self.gateway.config.control.credentials_refresh_seconds;
                match cache.refreshed(message, now, default_refresh) {
                    Ok(()) => debug!("signing credentials refreshed ({key})"),
                    Err(e) => warn!("the control service sent unusable credentials: {e:?}"),
                }
            }
            Err(e) => {
                warn!("credentials refresh failed: {e}");
                cache.failed(now);
            }
        }
    }

    /// Reads a keys answer into the authenticator (or records the failure).
    fn store_keys(&self, status_code: u32, size: usize) {
        let Some(auth) = &self.auth else { return };
        let now = unix_now();
        let mut schedule = self.keys_schedule.borrow_mut();
        match grpc_answer::<IdentityKeys>(status_code, size) {
            Ok(message) => {
                let mut auth = auth.borrow_mut();
                let changed = auth.keys_version() != Some(message.version);
                for skipped in auth.set_keys(&message) {
                    warn!("{skipped}");
                }
                if changed {
                    info!(
                        "token verification keys updated: {} keys (version {})",
                        auth.key_count(),
                        message.version
                    );
                }
                let after = match message.refresh_after_seconds {
                    0 => auth.config.keys_refresh_seconds,
                    hint => u64::from(hint),
                };
                schedule.succeeded(now, after);
            }
            Err(e) => {
                warn!("keys refresh failed: {e}");
                schedule.failed(now);
            }
        }
    }

    /// Queues the usage of a finished request for the next report.
    fn queue_report(&self, record: UsageRecord) {
        let capacity = self
            .gateway
            .config
            .quota
            .as_ref()
            .map_or(1, |q| q.report_buffer);
        let mut reports = self.reports.borrow_mut();
        reports.push_back(record);
        let excess = reports.len().saturating_sub(capacity);
        if excess > 0 {
            reports.drain(..excess);
            warn!("usage report buffer full: {excess} oldest reports dropped");
            Metrics::add(self.metrics.reports_dropped, excess);
        }
    }
}

/// Which control-service call a token belongs to.
enum Call {
    Credentials,
    Keys,
    Report,
}

#[derive(Default)]
struct Root {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    calls: HashMap<u32, Call>,
    /// The usage batch being delivered (or whose delivery failed): sent again unchanged,
    /// under its id, until the control service confirms it, so that it is applied once.
    report: Option<ReportUsageRequest>,
    /// When [`Root::on_schedule`] last ran (ms since the Unix epoch).
    scheduled_at_ms: u64,
    /// The tick period in use.
    tick: Duration,
}

impl Root {
    /// Fails overdue decisions and (re-)opens the decision stream when it is due.
    fn maintain_decisions(&self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let Some(quota) = shared.stream_quota() else {
            return;
        };
        let now = now_ms();
        let overdue = shared.decisions.borrow_mut().expired(now);
        let timed_out = StreamAnswer::Decided(Err("no decision within the timeout".into()));
        deliver_all(&shared, overdue, &timed_out);
        shared
            .delegated
            .borrow_mut()
            .retain(|_, handle| handle.alive());
        if shared
            .decisions
            .borrow_mut()
            .open_if_due(&quota.cluster, now)
        {
            Metrics::add(shared.metrics.quota_streams_opened, 1);
        }
    }

    fn on_schedule(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = unix_now();
        let asking = |want| shared.lookups.borrow().in_flight(want);
        if shared.credentials.borrow().refresh_due(now) && !asking(Want::Credentials) {
            match shared.ask_for_credentials(now) {
                Ok(token) => {
                    shared.credentials.borrow_mut().refresh_started();
                    // Requests that find no usable credentials wait for this lookup.
                    shared.lookup_started(token, Want::Credentials, now_ms());
                    self.calls.insert(token, Call::Credentials);
                }
                Err(e) => {
                    warn!("cannot ask the control service for credentials: {e}");
                    shared.credentials.borrow_mut().failed(now);
                }
            }
        }
        if shared.auth.is_some() && shared.keys_schedule.borrow().due(now) && !asking(Want::AnyKeys)
        {
            match shared.ask_for_keys(None) {
                Ok(token) => {
                    shared.keys_schedule.borrow_mut().started();
                    // Requests that find no keys yet wait for this lookup.
                    shared.lookup_started(token, Want::AnyKeys, now_ms());
                    self.calls.insert(token, Call::Keys);
                }
                Err(e) => {
                    warn!("cannot ask the control service for keys: {e}");
                    shared.keys_schedule.borrow_mut().failed(now);
                }
            }
        }
        self.send_reports(&shared);
    }

    /// Sends queued usage, one batch at a time. A batch whose delivery is not confirmed is
    /// sent again, unchanged and under its id, before anything newer.
    fn send_reports(&mut self, shared: &Shared) {
        if self.calls.values().any(|c| matches!(c, Call::Report)) {
            return;
        }
        let request = match self.report.take() {
            Some(request) => request,
            None => {
                let records: Vec<UsageRecord> = {
                    let mut reports = shared.reports.borrow_mut();
                    let n = reports.len().min(REPORT_BATCH);
                    reports.drain(..n).collect()
                };
                if records.is_empty() {
                    return;
                }
                ReportUsageRequest {
                    node_id: shared.node_id.clone(),
                    records,
                    report_id: shared.next_report_id(),
                }
            }
        };
        match shared.call(REPORT_USAGE, &request.encode_to_vec()) {
            Ok(token) => {
                self.calls.insert(token, Call::Report);
            }
            Err(e) => {
                warn!("cannot send usage reports: {e}");
                Metrics::add(shared.metrics.reports_failed, 1);
            }
        }
        self.report = Some(request);
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        match self.calls.remove(&token) {
            Some(Call::Credentials) => {
                shared.credentials_answered(token, status_code, response_size);
                shared.wake_waiters(now_ms());
            }
            Some(Call::Keys) => {
                shared.keys_answered(token, status_code, response_size);
                shared.wake_waiters(now_ms());
            }
            Some(Call::Report) => {
                if status_code == 0 {
                    if let Some(request) = self.report.take() {
                        debug!(
                            "{} usage records reported ({})",
                            request.records.len(),
                            request.report_id
                        );
                    }
                    // More may be waiting: keep going without waiting for the next tick.
                    self.send_reports(&shared);
                } else {
                    warn!("usage report failed with gRPC status {status_code}; will retry");
                    Metrics::add(shared.metrics.reports_failed, 1);
                }
            }
            None => {
                // A call a request made while this context acted for it.
                let handle = shared.delegated.borrow_mut().remove(&token);
                if let Some(handle) = handle {
                    handle.deliver(&shared, |state| {
                        state.call_answer(&shared, token, status_code, response_size)
                    });
                }
            }
        }
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if !shared.decisions.borrow().is_stream(token) {
            return;
        }
        let message = match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, message_size) {
            Ok(bytes) => RateLimitStreamResponse::decode(bytes.unwrap_or_default().as_slice()),
            Err(e) => {
                warn!("cannot read a rate limit decision: {e:?}");
                return;
            }
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                // Its request times out.
                warn!("undecodable rate limit decision: {e}");
                return;
            }
        };
        let waiter = shared.decisions.borrow_mut().answered(message.id);
        let Some(waiter) = waiter else {
            debug!("decision {} arrived after its request gave up", message.id);
            return;
        };
        let answer = if message.status_code == 0 {
            RateLimitResponse::decode(message.response.as_slice()).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "gRPC status {} {}",
                message.status_code, message.status_message
            ))
        };
        waiter.handle.deliver(&shared, |state| {
            state.stream_answer(&shared, StreamAnswer::Decided(answer))
        });
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let detail = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_default();
        let (waiters, answer) =
            shared
                .decisions
                .borrow_mut()
                .closed(token, status_code, detail, now_ms());
        deliver_all(&shared, waiters, &answer);
    }
}

/// Hands every waiting request the same answer.
fn deliver_all(shared: &Shared, waiters: Vec<Waiter>, answer: &StreamAnswer) {
    for waiter in waiters {
        waiter
            .handle
            .deliver(shared, |state| state.stream_answer(shared, answer.clone()));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let json = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => Vec::new(),
            Err(e) => {
                error!("cannot read the plugin configuration: {e:?}");
                return false;
            }
        };
        let gateway = match Gateway::from_json(&json) {
            Ok(gateway) => gateway,
            Err(e) => {
                error!("{e}");
                return false;
            }
        };
        info!(
            "bedrock gateway configured: region {}, {} services, authentication {}, quotas {}",
            gateway.config.region,
            gateway.config.services.len(),
            match gateway.config.authentication {
                Authentication::None => "none",
                Authentication::Jwt(_) => "jwt",
            },
            if gateway.config.quota.is_some() {
                "on"
            } else {
                "off"
            },
        );
        let auth = match &gateway.config.authentication {
            Authentication::Jwt(jwt) => Some(RefCell::new(Authenticator::new(jwt.clone()))),
            Authentication::None => None,
        };
        let node_id = match hostcalls::get_property(vec!["node", "id"]) {
            Ok(Some(id)) => String::from_utf8_lossy(&id).into_owned(),
            _ => String::new(),
        };
        self.shared = Some(Rc::new(Shared {
            gateway,
            auth,
            keys_schedule: RefCell::new(Schedule::default()),
            credentials: RefCell::new(CredentialCache::default()),
            reports: RefCell::new(VecDeque::new()),
            metrics: Metrics::define(),
            node_id,
            decisions: RefCell::new(Decisions::default()),
            delegating: Cell::new(false),
            delegated: RefCell::new(HashMap::new()),
            lookups: RefCell::new(Lookups::default()),
            root_context_id: self.context_id,
            report_nonce: RandomState::new().hash_one(now_ms()),
            report_sequence: Cell::new(0),
        }));
        // Overdue decisions of the decision stream are found on the tick: tick often enough
        // for the quota timeout to hold within a quarter of itself.
        let tick = match self.shared.as_ref().and_then(|s| s.stream_quota()) {
            Some(quota) => TICK.min(Duration::from_millis((quota.timeout_ms / 4).max(10))),
            None => TICK,
        };
        if let Err(e) = hostcalls::set_tick_period(tick) {
            warn!("cannot set the tick period: {e:?}");
        }
        self.tick = tick;
        self.maintain_decisions();
        self.on_schedule();
        true
    }

    fn on_tick(&mut self) {
        self.maintain_decisions();
        if let Some(shared) = self.shared.clone() {
            shared.wake_waiters(now_ms());
        }
        // Every TICK, whatever the tick period (half a tick early rather than a tick late).
        let now = now_ms();
        let due = TICK.saturating_sub(self.tick / 2).as_millis() as u64;
        if now.saturating_sub(self.scheduled_at_ms) >= due {
            self.scheduled_at_ms = now;
            self.on_schedule();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.shared.clone(), context_id)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u64,
) -> Result<u32, String> {
    hostcalls::dispatch_grpc_call(
        cluster,
        service,
        method,
        Vec::new(),
        Some(message),
        Duration::from_millis(timeout_ms),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Decodes a gRPC answer.
fn grpc_answer<M: Message + Default>(status_code: u32, size: usize) -> Result<M, String> {
    if status_code != 0 {
        let detail = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_default();
        return Err(format!("gRPC status {status_code} {detail}"));
    }
    let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .map_err(|e| format!("{e:?}"))?;
    M::decode(body.unwrap_or_default().as_slice()).map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn system_now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or_else(|_| SystemTime::now())
}

fn unix_now() -> u64 {
    unix_seconds(system_now())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn not_configured() -> ErrorReply {
    ErrorReply::new(
        500,
        "InternalServerException",
        "not_configured",
        "The gateway filter has no valid configuration.",
    )
}

fn internal_error() -> ErrorReply {
    ErrorReply::new(
        500,
        "InternalServerException",
        "host_error",
        "The gateway failed to process the request.",
    )
}
