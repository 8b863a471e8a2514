//! The root context of one Envoy worker: takes the configuration, keeps the tick (the
//! decision stream's upkeep, scheduled refreshes of credentials and keys, usage reports) and
//! receives the answers of the calls it makes and of the decision stream, handing requests
//! theirs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::time::Duration;

use gateway_common::filter_config::Authentication;
use gateway_common::names::REPORT_USAGE;
use gateway_common::proto::{RateLimitStreamResponse, SignatureVerdict};
use gateway_common::ratelimit::RateLimitResponse;
use log::{debug, error, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use super::checks::{self, CHECK_TIMEOUT_MS, STREAM_MAX_AGE_MS};
use super::decisions::{self, StreamAnswer};
use super::grpc::{self, now_ms, unix_now};
use super::lookups::{Lookups, Want};
use super::request::{Handle, Request};
use super::shared::{Metrics, Shared, worker_reports};
use super::tagged::Waiter;
use crate::core::Gateway;
use crate::core::auth::Authenticator;
use crate::core::auth::Verdict;
use crate::core::credentials::CredentialCache;
use crate::core::quota::allowance::Allowances;
use crate::core::schedule::Schedule;

/// How often the root context refreshes credentials and keys when due, and sends usage.
const TICK: Duration = Duration::from_millis(500);

/// Which control-service call a token belongs to.
enum Call {
    Credentials,
    Keys,
    Report,
}

/// The root context of one Envoy worker.
pub(super) struct Root {
    context_id: u32,
    shared: Option<Rc<Shared<Handle>>>,
    calls: HashMap<u32, Call>,
    /// When [`Root::on_schedule`] last ran (ms since the Unix epoch).
    scheduled_at_ms: u64,
    /// The tick period in use.
    tick: Duration,
    /// What this context last added to the `token_cache_entries` gauge.
    cache_entries_reported: Cell<i64>,
    /// The requests admitted from allowances this context last counted in
    /// `quota_admitted_locally`.
    admitted_locally: Cell<u64>,
}

impl Root {
    pub(super) fn new(context_id: u32) -> Self {
        Self {
            context_id,
            shared: None,
            calls: HashMap::new(),
            scheduled_at_ms: 0,
            tick: TICK,
            cache_entries_reported: Cell::new(0),
            admitted_locally: Cell::new(0),
        }
    }

    /// Fails overdue decisions and checks, and (re-)opens the decision and signature check
    /// streams when due.
    fn maintain_streams(&self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = now_ms();
        if shared.checks_signatures_remotely() {
            let overdue = shared.checks.borrow_mut().expired(now);
            deliver_verdicts(&shared, overdue, Verdict::Failed);
            shared.checks.borrow_mut().open_if_due(
                &shared.gateway.config.control.cluster,
                STREAM_MAX_AGE_MS,
                now,
            );
        }
        let Some(quota) = shared.stream_quota() else {
            return;
        };
        let returned = shared.allowances.borrow_mut().expire(now);
        shared.reports.borrow_mut().give_back(returned);
        let admitted = shared.allowances.borrow().admitted();
        let counted = self.admitted_locally.replace(admitted);
        Metrics::add(
            shared.metrics.quota_admitted_locally,
            usize::try_from(admitted.wrapping_sub(counted)).unwrap_or_default(),
        );
        let overdue = shared.decisions.borrow_mut().expired(now);
        let timed_out = StreamAnswer::Decided(Err("no decision within the timeout".into()));
        deliver_all(&shared, overdue, &timed_out);
        shared
            .delegated
            .borrow_mut()
            .retain(|_, handle| handle.alive());
        if shared.decisions.borrow_mut().open_if_due(
            &quota.cluster,
            quota.stream_max_age_seconds.saturating_mul(1000),
            now,
        ) {
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
        shared.metrics.report_vm_memory();
        if let Some(auth) = &shared.auth {
            let entries = auth.borrow().cached_tokens();
            Metrics::move_gauge(
                shared.metrics.token_cache_entries,
                &self.cache_entries_reported,
                entries,
            );
        }
    }

    /// Sends queued usage, one batch at a time. A batch whose delivery is not confirmed is
    /// sent again, unchanged and under its id, before anything newer.
    fn send_reports(&mut self, shared: &Shared<Handle>) {
        let mut reports = shared.reports.borrow_mut();
        let Some(batch) = reports.next(&shared.node_id) else {
            return;
        };
        match shared.call(REPORT_USAGE, &batch.encode_to_vec()) {
            Ok(token) => {
                self.calls.insert(token, Call::Report);
            }
            Err(e) => {
                warn!("cannot send usage reports: {e}");
                Metrics::add(shared.metrics.reports_failed, 1);
                reports.unconfirmed();
            }
        }
    }
}

impl Drop for Root {
    /// A report call in flight dies with its root context (a configuration change replaced
    /// it): the batch goes again, under its id, from the worker's queue. Its cached tokens
    /// leave the gauge with it.
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            if self.calls.values().any(|call| matches!(call, Call::Report)) {
                shared.reports.borrow_mut().unconfirmed();
            }
            // The next configuration's limits may differ: its allowances are its own.
            let returned = shared.allowances.borrow_mut().drain();
            shared.reports.borrow_mut().give_back(returned);
            Metrics::move_gauge(
                shared.metrics.token_cache_entries,
                &self.cache_entries_reported,
                0,
            );
        }
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
                    let records = shared.reports.borrow_mut().confirmed();
                    debug!("{records} usage records reported");
                    // More may be waiting: keep going without waiting for the next tick.
                    self.send_reports(&shared);
                } else {
                    warn!("usage report failed with gRPC status {status_code}; will retry");
                    Metrics::add(shared.metrics.reports_failed, 1);
                    shared.reports.borrow_mut().unconfirmed();
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
        if shared.checks.borrow().is_stream(token) {
            return signature_verdict(&shared, message_size);
        }
        if !shared.decisions.borrow().is_stream(token) {
            return;
        }
        // One that cannot be read: its request times out.
        let Some(message) =
            stream_message::<RateLimitStreamResponse>(message_size, "rate limit decision")
        else {
            return;
        };
        // Charged whether or not a request still waits: spent here or given back (at once
        // when this configuration's decisions no longer go on the stream).
        if !message.allowances.is_empty() {
            let mut allowances = shared.allowances.borrow_mut();
            let mut returned = allowances.grant(&message.allowances, now_ms());
            if shared.stream_quota().is_none() {
                returned.extend(allowances.drain());
            }
            shared.reports.borrow_mut().give_back(returned);
        }
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
        if let Some(handle) = waiter.handle {
            handle.deliver(&shared, |state| {
                state.stream_answer(&shared, StreamAnswer::Decided(answer))
            });
        }
    }

    fn on_grpc_stream_close(&mut self, token: u32, status_code: u32) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let detail = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_default();
        if shared.checks.borrow().is_stream(token) {
            let (waiters, _) =
                shared
                    .checks
                    .borrow_mut()
                    .closed(token, status_code, detail, now_ms());
            // Checked here instead, whatever ended the stream.
            return deliver_verdicts(&shared, waiters, Verdict::Failed);
        }
        let (waiters, closed) =
            shared
                .decisions
                .borrow_mut()
                .closed(token, status_code, detail, now_ms());
        deliver_all(&shared, waiters, &StreamAnswer::after(closed));
    }
}

/// The stream message just received (`what` it is, for the log), when it can be read.
fn stream_message<M: Message + Default>(size: usize, what: &str) -> Option<M> {
    let bytes = match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size) {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(e) => {
            warn!("cannot read a {what}: {e:?}");
            return None;
        }
    };
    M::decode(bytes.as_slice())
        .map_err(|e| warn!("undecodable {what}: {e}"))
        .ok()
}

/// A verdict from the signature check stream, for the request waiting on it.
fn signature_verdict(shared: &Shared<Handle>, message_size: usize) {
    // One that cannot be read: its request times out, then checks the token itself.
    let Some(message) = stream_message::<SignatureVerdict>(message_size, "signature verdict")
    else {
        return;
    };
    let waiter = shared.checks.borrow_mut().answered(message.id);
    match waiter {
        Some(waiter) => deliver_verdicts(shared, vec![waiter], checks::verdict(&message)),
        None => debug!(
            "signature verdict {} arrived after its request gave up",
            message.id
        ),
    }
}

/// Hands every waiting request the same signature verdict.
fn deliver_verdicts(shared: &Shared<Handle>, waiters: Vec<Waiter<Handle>>, verdict: Verdict) {
    for handle in waiters.into_iter().filter_map(|w| w.handle) {
        handle.deliver(shared, |state| state.signature_verdict(shared, verdict));
    }
}

/// Hands every waiting request the same answer.
fn deliver_all(shared: &Shared<Handle>, waiters: Vec<Waiter<Handle>>, answer: &StreamAnswer) {
    for handle in waiters.into_iter().filter_map(|w| w.handle) {
        handle.deliver(shared, |state| state.stream_answer(shared, answer.clone()));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // A callback of its own (the VM may have held calls back for an earlier configuration).
        grpc::release_outbound();
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
        let report_buffer = gateway.config.quota.as_ref().map_or(1, |q| q.report_buffer);
        let auth = match &gateway.config.authentication {
            Authentication::Jwt(jwt) => Some(RefCell::new(Authenticator::new(jwt.clone()))),
            Authentication::None => None,
        };
        let node_id = match hostcalls::get_property(vec!["node", "id"]) {
            Ok(Some(id)) => String::from_utf8_lossy(&id).into_owned(),
            _ => String::new(),
        };
        let (reports, dropped) =
            worker_reports(report_buffer, || RandomState::new().hash_one(now_ms()));
        let metrics = Metrics::define();
        Metrics::add(metrics.reports_dropped, dropped);
        self.admitted_locally.set(0);
        if let Some(old) = &self.shared {
            let returned = old.allowances.borrow_mut().drain();
            old.reports.borrow_mut().give_back(returned);
        }
        self.shared = Some(Rc::new(Shared {
            gateway,
            auth,
            keys_schedule: RefCell::new(Schedule::default()),
            credentials: RefCell::new(CredentialCache::default()),
            reports,
            metrics,
            node_id,
            decisions: RefCell::new(decisions::decisions()),
            allowances: RefCell::new(Allowances::default()),
            checks: RefCell::new(checks::checks()),
            delegating: Cell::new(false),
            delegated: RefCell::new(HashMap::new()),
            lookups: RefCell::new(Lookups::default()),
            root_context_id: self.context_id,
        }));
        // Overdue decisions of the decision stream are found on the tick: tick often enough
        // for the quota timeout to hold within a quarter of itself.
        let mut tick = match self.shared.as_ref().and_then(|s| s.stream_quota()) {
            Some(quota) => TICK.min(Duration::from_millis((quota.timeout_ms / 4).max(10))),
            None => TICK,
        };
        // Overdue signature checks too.
        if self
            .shared
            .as_ref()
            .is_some_and(|s| s.checks_signatures_remotely())
        {
            tick = tick.min(Duration::from_millis(CHECK_TIMEOUT_MS / 4));
        }
        if let Err(e) = hostcalls::set_tick_period(tick) {
            warn!("cannot set the tick period: {e:?}");
        }
        self.tick = tick;
        self.maintain_streams();
        self.on_schedule();
        true
    }

    fn on_tick(&mut self) {
        // A callback of its own: the calls an earlier one held back may be tried again.
        grpc::release_outbound();
        self.maintain_streams();
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
