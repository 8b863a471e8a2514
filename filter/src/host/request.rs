//! One request's way through the filter. It is held at its headers until it is decided
//! (read, authenticated, routed, authorized), its body is hashed (and read, when the operation
//! names its models there or a token quota estimates from it) and, with quotas, admitted by
//! the rate limit service; then it is signed and let go. An operation that names its models in
//! the body is authorized once the body is complete. Body pieces that arrive while a decision
//! waits for the control service are hashed meanwhile. With quotas, the response's token usage
//! is read as it passes and reported when it ends.

use std::cell::{RefCell, RefMut};
use std::rc::{Rc, Weak};

use gateway_common::model;

use gateway_common::names::{AUDIT_PROPERTY, TENANT_PROPERTY};
use gateway_common::quota_config::{FailureMode, QuotaTransport};
use gateway_common::ratelimit::{
    RateLimitResponse, SERVICE as RATELIMIT_SERVICE, SHOULD_RATE_LIMIT,
};
use log::{debug, error, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::{
    Metrics, Shared, grpc_answer, grpc_call, internal_error, not_configured, now_ms, system_now,
    unix_now, unix_seconds,
};
use crate::core::audit::AuditRecord;
use crate::core::auth::{Identity, Outcome};
use crate::core::body::{BodyFacts, BodyReader};
use crate::core::errors::ErrorReply;
use crate::core::headers::{HeaderList, REQUEST_ID, find_str};
use crate::core::operations::Models;
use crate::core::quota::estimate::{self, Estimate};
use crate::core::quota::usage::UsageParser;
use crate::core::quota::{self, Ending, Reservation};
use crate::core::signing::{BodyHasher, EMPTY_SHA256};
use crate::core::{ForwardPlan, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Headers are being decided (authentication, routing, authorization).
    Deciding,
    /// The decision waits for keys from the control service.
    AwaitingKeys,
    /// Waiting for the end of the body (allowed, or to be authorized then when the operation
    /// names its models in the body).
    Forwarding,
    /// Admission waits for the rate limit service.
    AwaitingQuota,
    /// Signing waits for credentials from the control service.
    AwaitingCredentials,
    /// Let go upstream, or answered by the gateway.
    Done,
}

/// A request under quotas.
struct Quota {
    context: quota::Context,
    /// Admission passed (or was skipped: no descriptor applied, or the service failed open).
    /// From here on the request reaches the ledger however it ends.
    admitted: bool,
    /// One per descriptor of the admission request.
    reservations: Vec<Reservation>,
    admitted_at: u64,
    /// Reading the response's usage.
    usage: Option<UsageParser>,
    /// The usage record is queued (or owed, while false and forwarded).
    reported: bool,
    forwarded: bool,
}

/// The filter's handle on one request. Its state is shared with the root context, which
/// answers quota decisions that arrive on the worker's decision stream.
pub(super) struct Request(Rc<RefCell<State>>);

/// Where a request's state is reached from outside its own callbacks.
#[derive(Clone)]
pub(super) struct Handle {
    context_id: u32,
    state: Weak<RefCell<State>>,
}

pub(super) struct State {
    shared: Option<Rc<Shared>>,
    handle: Handle,
    phase: Phase,
    /// The request headers and where they route (or why they do not), kept while the
    /// decision waits for keys.
    pending: Option<(HeaderList, Result<Route, ErrorReply>)>,
    identity: Option<Rc<Identity>>,
    plan: Option<ForwardPlan>,
    /// Access is decided (at the headers, or at the body's end for operations that name
    /// their models in the body).
    authorized: bool,
    /// Present while the body is being hashed.
    hasher: Option<BodyHasher>,
    /// Set once the whole body has been hashed.
    body_hash: Option<String>,
    /// Reads the body when the operation names its models there or a token quota estimates
    /// from it; fixed memory whatever the body.
    reader: Option<BodyReader>,
    /// The key or credentials lookup this request made (for every request waiting on it),
    /// while in flight.
    lookup_call: Option<u32>,
    audit: AuditRecord,
    quota: Option<Quota>,
    /// The admission request while its decision is asked for on the stream (to ask again
    /// with a call if the service has no stream).
    quota_request: Option<Vec<u8>>,
}

impl Request {
    pub(super) fn new(shared: Option<Rc<Shared>>, context_id: u32) -> Self {
        Self(Rc::new_cyclic(|me| {
            RefCell::new(State {
                shared,
                handle: Handle {
                    context_id,
                    state: me.clone(),
                },
                phase: Phase::Deciding,
                pending: None,
                identity: None,
                plan: None,
                authorized: false,
                hasher: None,
                body_hash: None,
                reader: None,
                lookup_call: None,
                audit: AuditRecord::default(),
                quota: None,
                quota_request: None,
            })
        }))
    }

    fn state(&self) -> Option<RefMut<'_, State>> {
        let state = self.0.try_borrow_mut();
        if state.is_err() {
            error!("request state already in use");
        }
        state.ok()
    }
}

impl Handle {
    pub(super) fn alive(&self) -> bool {
        self.state.strong_count() > 0
    }

    /// Runs `f` on the request as its own callback would (Envoy's effective context set to
    /// it), then lets the request go on if `f` says so, and makes the root context the
    /// effective one again. Nothing happens when the request is gone. Only from a root
    /// context callback.
    pub(super) fn deliver(&self, shared: &Shared, f: impl FnOnce(&mut State) -> Action) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        if hostcalls::set_effective_context(self.context_id).is_err() {
            return;
        }
        match state.try_borrow_mut() {
            Ok(mut state) => {
                shared.delegating.set(true);
                let action = f(&mut state);
                shared.delegating.set(false);
                resume_if_continue(action);
            }
            Err(_) => error!("request state already in use"),
        }
        if let Err(e) = hostcalls::set_effective_context(shared.root_context_id) {
            debug!("cannot act as the root context again: {e:?}");
        }
    }
}

impl State {
    /// Answers the request with a gateway error and records the refusal. A request refused
    /// after it passed quota admission gives its charges back and reaches the ledger.
    fn refuse(&mut self, reply: ErrorReply) -> Action {
        debug!("refused ({}): {}", reply.reason, reply.message);
        if let Some(shared) = self.shared.clone() {
            self.report(&shared, quota::Outcome::RefusedByGateway);
        }
        self.audit.deny(reply.reason);
        self.publish_audit(None);
        self.phase = Phase::Done;
        self.hasher = None;
        self.reader = None;
        let body = reply.body();
        let headers = reply.headers(self.audit.request_id.as_deref());
        if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(&body)) {
            error!("cannot send a local reply: {e:?}");
        }
        Action::Pause
    }

    fn publish_audit(&self, tenant: Option<&str>) {
        let fragment = self.audit.fragment();
        if let Err(e) = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(fragment.as_bytes())) {
            debug!("cannot set the audit record: {e:?}");
        }
        if let Some(tenant) = tenant
            && let Err(e) = hostcalls::set_property(vec![TENANT_PROPERTY], Some(tenant.as_bytes()))
        {
            debug!("cannot set the tenant: {e:?}");
        }
    }

    /// Authenticates the held request, then answers its routing outcome and authorizes it
    /// (or, when the operation names its models in the body, prepares to at the body's end).
    /// Nothing that depends on the configuration is answered before the caller is known.
    /// `may_refresh`: an unknown key may be looked up.
    fn decide(
        &mut self,
        shared: &Shared,
        headers: HeaderList,
        routed: Result<Route, ErrorReply>,
        may_refresh: bool,
    ) -> Action {
        let identity = match &shared.auth {
            None => None,
            Some(auth) => {
                let outcome = auth
                    .borrow_mut()
                    .authenticate(&headers, unix_now(), may_refresh);
                match outcome {
                    Outcome::Authenticated(identity) => Some(identity),
                    Outcome::NeedKeys { issuer, kid } => {
                        return match shared.need_keys(issuer, kid, &self.handle, now_ms()) {
                            Ok(call) => {
                                if let Some(token) = call {
                                    self.track(shared, token);
                                    self.lookup_call = Some(token);
                                }
                                self.pending = Some((headers, routed));
                                self.phase = Phase::AwaitingKeys;
                                Action::Pause
                            }
                            Err(e) => {
                                warn!("cannot ask the control service for keys: {e}");
                                self.decide(shared, headers, routed, false)
                            }
                        };
                    }
                    Outcome::Refused(error) => {
                        return self.refuse(ErrorReply::unauthenticated(error));
                    }
                }
            }
        };
        if let Some(identity) = &identity {
            self.audit.identify(identity);
        }
        let route = match routed {
            Ok(route) => route,
            Err(reply) => return self.refuse(reply),
        };
        self.identity = identity;
        let plan = shared
            .gateway
            .forward(headers, route, self.identity.as_deref());
        if plan.route.operation.models_in_body() {
            // Provisional until the body is read: a request abandoned before then is logged.
            self.audit.pending();
            self.publish_audit(None);
        } else {
            let models = Models::of(&plan.route.operation, Vec::new(), false);
            if let Err(reply) = self.authorize(shared, &plan.route, models) {
                return self.refuse(reply);
            }
        }
        self.plan = Some(plan);
        self.phase = Phase::Forwarding;
        self.proceed(shared)
    }

    /// Decides access for a call naming `models`; allowed, the request gets its quota
    /// context and its audit record says so.
    fn authorize(
        &mut self,
        shared: &Shared,
        route: &Route,
        models: Models,
    ) -> Result<(), ErrorReply> {
        self.audit.name_model(models.primary());
        if let Some(identity) = &self.identity {
            shared.gateway.authorize(identity, route, &models)?;
        }
        if shared.gateway.config.quota.is_some() {
            self.quota = Some(Quota {
                context: quota_context(shared, self.identity.as_deref(), route, &models),
                admitted: false,
                reservations: Vec::new(),
                admitted_at: 0,
                usage: None,
                reported: false,
                forwarded: false,
            });
        }
        self.authorized = true;
        self.audit.allow();
        self.publish_audit(self.identity.as_ref().map(|i| i.tenant.as_str()));
        Ok(())
    }

    /// Once the body is complete: access (for operations that name their models in the
    /// body), admission (with quotas), then signing; until then keeps holding the request.
    fn proceed(&mut self, shared: &Shared) -> Action {
        let Some(payload_hash) = self.body_hash.clone() else {
            return Action::Pause;
        };
        // Taken out while `self` decides (and put back): no copy of the route per request.
        let Some(plan) = self.plan.take() else {
            return Action::Continue;
        };
        let operation = plan.route.operation.name;
        let mut facts = match self.reader.take() {
            None => BodyFacts::default(),
            Some(reader) => match reader.finish(plan.route.operation.models_in_body()) {
                Ok(facts) => facts,
                Err(error) => return self.refuse(ErrorReply::bad_body(error)),
            },
        };
        if !self.authorized {
            let models = Models::of(
                &plan.route.operation,
                std::mem::take(&mut facts.models),
                facts.beyond_table,
            );
            if let Err(reply) = self.authorize(shared, &plan.route, models) {
                return self.refuse(reply);
            }
        }
        self.plan = Some(plan);
        if let Some(quota) = self.quota.as_mut().filter(|q| !q.admitted) {
            let Some(config) = &shared.gateway.config.quota else {
                return Action::Continue;
            };
            let estimate = if config.counts_tokens() {
                estimate::estimate(operation, &facts, config)
            } else {
                Estimate::default()
            };
            match quota::admission(config, &quota.context, estimate) {
                None => {
                    quota.admitted = true;
                    quota.admitted_at = unix_now();
                }
                Some(admission) => {
                    quota.reservations = admission.reservations;
                    let request = admission.request.encode_to_vec();
                    let sent = config.transport == QuotaTransport::Stream
                        && shared.decisions.borrow_mut().send(
                            &request,
                            &self.handle,
                            config.timeout_ms,
                            now_ms(),
                        );
                    if sent {
                        self.quota_request = Some(request);
                        self.phase = Phase::AwaitingQuota;
                        return Action::Pause;
                    }
                    return self.ask_unary(shared, &request);
                }
            }
        }
        self.sign_and_forward(shared, &payload_hash)
    }

    /// Asks for the admission decision with a `ShouldRateLimit` call.
    fn ask_unary(&mut self, shared: &Shared, request: &[u8]) -> Action {
        let Some(config) = &shared.gateway.config.quota else {
            return Action::Continue;
        };
        match grpc_call(
            &config.cluster,
            RATELIMIT_SERVICE,
            SHOULD_RATE_LIMIT,
            request,
            config.timeout_ms,
        ) {
            Ok(token) => {
                self.track(shared, token);
                self.phase = Phase::AwaitingQuota;
                Action::Pause
            }
            Err(e) => self.quota_failed(shared, &e),
        }
    }

    /// The rate limit service did not decide: the configured failure mode applies.
    fn quota_failed(&mut self, shared: &Shared, error: &str) -> Action {
        let mode = shared
            .gateway
            .config
            .quota
            .as_ref()
            .map_or(FailureMode::Open, |q| q.failure_mode);
        warn!("quota check failed ({error}); failing {mode:?}");
        match mode {
            FailureMode::Open => {
                Metrics::add(shared.metrics.quota_failures_open, 1);
                if let Some(quota) = self.quota.as_mut() {
                    // Nothing was reserved: nothing to settle.
                    quota.reservations.clear();
                    quota.admitted = true;
                    quota.admitted_at = unix_now();
                }
                self.phase = Phase::Forwarding;
                self.proceed(shared)
            }
            FailureMode::Closed => {
                Metrics::add(shared.metrics.quota_failures_closed, 1);
                self.refuse(ErrorReply::quota_unavailable())
            }
        }
    }

    fn sign_and_forward(&mut self, shared: &Shared, payload_hash: &str) -> Action {
        let clock = system_now();
        let now = unix_seconds(clock);
        let cached = shared.credentials.borrow().usable(now).cloned();
        let Some(credentials) = cached else {
            return match shared.need_credentials(&self.handle, now_ms()) {
                Ok(call) => {
                    if let Some(token) = call {
                        self.track(shared, token);
                        self.lookup_call = Some(token);
                    }
                    self.phase = Phase::AwaitingCredentials;
                    Action::Pause
                }
                Err(e) => {
                    warn!("cannot ask the control service for credentials: {e}");
                    self.refuse(ErrorReply::no_credentials())
                }
            };
        };
        let Some(plan) = self.plan.take() else {
            return Action::Continue;
        };
        let headers = match shared.gateway.sign(plan, payload_hash, &credentials, clock) {
            Ok(headers) => headers,
            Err(reply) => return self.refuse(reply),
        };
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        match hostcalls::set_map_bytes(MapType::HttpRequestHeaders, pairs) {
            Ok(()) => {
                self.phase = Phase::Done;
                if let Some(quota) = self.quota.as_mut() {
                    quota.forwarded = true;
                }
                Action::Continue
            }
            Err(e) => {
                error!("cannot set the upstream headers: {e:?}");
                self.refuse(internal_error())
            }
        }
    }

    /// The body is complete (or there is none).
    fn body_complete(&mut self, shared: &Shared, payload_hash: String) -> Action {
        self.body_hash = Some(payload_hash);
        match self.phase {
            Phase::Forwarding => self.proceed(shared),
            Phase::Done => Action::Continue,
            Phase::Deciding
            | Phase::AwaitingKeys
            | Phase::AwaitingQuota
            | Phase::AwaitingCredentials => Action::Pause,
        }
    }

    /// Queues the usage record of this request (once): forwarded (when its response ended),
    /// refused by a quota, or refused by the gateway after admission.
    fn report(&mut self, shared: &Shared, outcome: quota::Outcome) {
        let Some(quota) = self.quota.as_mut() else {
            return;
        };
        let due = match outcome {
            quota::Outcome::Forwarded => quota.forwarded,
            quota::Outcome::RefusedByQuota => true,
            quota::Outcome::RefusedByGateway => quota.admitted && !quota.forwarded,
        };
        if quota.reported || !due {
            return;
        }
        quota.reported = true;
        let (usage, adjustments) = match outcome {
            quota::Outcome::RefusedByQuota => (None, Vec::new()),
            quota::Outcome::RefusedByGateway => (
                None,
                quota::settle(&quota.reservations, Ending::RefusedByGateway),
            ),
            quota::Outcome::Forwarded => {
                let usage = quota.usage.take().and_then(UsageParser::finish);
                (
                    usage,
                    quota::settle(&quota.reservations, Ending::Forwarded(usage)),
                )
            }
        };
        let admitted_at = if quota.admitted_at == 0 {
            unix_now()
        } else {
            quota.admitted_at
        };
        shared.queue_report(quota::record(
            &quota.context,
            admitted_at,
            usage,
            adjustments,
            outcome,
        ));
    }
}

/// The request context quota descriptors are built from; the model is the primary model's
/// key, so that every spelling of a model is one counter.
fn quota_context(
    shared: &Shared,
    identity: Option<&Identity>,
    route: &Route,
    models: &Models,
) -> quota::Context {
    quota::Context {
        tenant: identity.map(|i| i.tenant.clone()),
        subject: identity.map(|i| i.subject.clone()),
        tier: identity.and_then(|i| i.tier.clone()),
        issuer: identity.map(|i| i.issuer.clone()),
        service: shared.gateway.service_name(route).to_string(),
        operation: route.operation.name.to_string(),
        model: models.primary().map(model::key),
    }
}

/// What became of a quota decision asked for on the stream.
#[derive(Clone)]
pub(super) enum StreamAnswer {
    Decided(Result<RateLimitResponse, String>),
    /// The service has no stream: ask again with the unary call.
    AskAgain,
}

impl State {
    /// A decision from the worker's decision stream (or its failure).
    pub(super) fn stream_answer(&mut self, shared: &Shared, answer: StreamAnswer) -> Action {
        if self.phase != Phase::AwaitingQuota {
            return Action::Pause;
        }
        match answer {
            StreamAnswer::Decided(answer) => self.quota_answer(shared, answer),
            // Nothing was decided (or counted): the same request, as a call.
            StreamAnswer::AskAgain => match self.quota_request.take() {
                Some(request) => self.ask_unary(shared, &request),
                None => self.refuse(internal_error()),
            },
        }
    }

    fn quota_answer(
        &mut self,
        shared: &Shared,
        answer: Result<RateLimitResponse, String>,
    ) -> Action {
        self.quota_request = None;
        match answer {
            Err(e) => self.quota_failed(shared, &e),
            Ok(response) => match quota::verdict(&response) {
                Ok(()) => {
                    if let Some(quota) = self.quota.as_mut() {
                        quota::charged(&mut quota.reservations, &response);
                        quota.admitted = true;
                        quota.admitted_at = response
                            .decided_at()
                            .and_then(|t| u64::try_from(t).ok())
                            .unwrap_or_else(unix_now);
                    }
                    self.phase = Phase::Forwarding;
                    self.proceed(shared)
                }
                Err(reply) => {
                    self.report(shared, quota::Outcome::RefusedByQuota);
                    self.refuse(reply)
                }
            },
        }
    }

    /// Notes a call this request made, when it was made on the root context's behalf (the
    /// answer then reaches the root context, which hands it back here).
    fn track(&self, shared: &Shared, token: u32) {
        if shared.delegating.get() {
            shared
                .delegated
                .borrow_mut()
                .insert(token, self.handle.clone());
        }
    }

    /// The lookup this request waited for is over (answered, or given up): it goes on with
    /// what the worker has now, without looking up again.
    pub(super) fn lookup_over(&mut self, shared: &Shared) -> Action {
        match self.phase {
            Phase::AwaitingKeys => match self.pending.take() {
                Some((headers, routed)) => {
                    self.phase = Phase::Deciding;
                    self.decide(shared, headers, routed, false)
                }
                None => self.refuse(internal_error()),
            },
            Phase::AwaitingCredentials => {
                if shared.credentials.borrow().usable(unix_now()).is_some() {
                    self.phase = Phase::Forwarding;
                    self.proceed(shared)
                } else {
                    self.refuse(ErrorReply::no_credentials())
                }
            }
            _ => Action::Pause,
        }
    }

    /// The answer to a control-service or rate limit call this request made.
    pub(super) fn call_answer(
        &mut self,
        shared: &Shared,
        token: u32,
        status_code: u32,
        size: usize,
    ) -> Action {
        if self.lookup_call == Some(token) {
            // A lookup this request made for every request waiting on it: the others are
            // woken by the root context.
            self.lookup_call = None;
            match self.phase {
                Phase::AwaitingCredentials => {
                    shared.credentials_answered(token, status_code, size);
                }
                _ => shared.keys_answered(token, status_code, size),
            }
            return self.lookup_over(shared);
        }
        match self.phase {
            Phase::AwaitingQuota => {
                let answer = grpc_answer::<RateLimitResponse>(status_code, size);
                self.quota_answer(shared, answer)
            }
            _ => Action::Pause,
        }
    }
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let Some(mut state) = self.state() else {
            return;
        };
        let Some(shared) = state.shared.clone() else {
            return;
        };
        resume_if_continue(state.call_answer(&shared, token, status_code, response_size));
    }
}

/// Lets a held request go on when the filter's answer is to continue.
fn resume_if_continue(action: Action) {
    if matches!(action, Action::Continue)
        && let Err(e) = hostcalls::resume_http_request()
    {
        error!("cannot resume the request: {e:?}");
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, count: usize, end_of_stream: bool) -> Action {
        self.state().map_or(Action::Continue, |mut s| {
            s.on_http_request_headers(count, end_of_stream)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.state().map_or(Action::Continue, |mut s| {
            s.on_http_request_body(body_size, end_of_stream)
        })
    }

    fn on_http_request_trailers(&mut self, count: usize) -> Action {
        self.state()
            .map_or(Action::Continue, |mut s| s.on_http_request_trailers(count))
    }

    fn on_http_response_headers(&mut self, count: usize, end_of_stream: bool) -> Action {
        self.state().map_or(Action::Continue, |mut s| {
            s.on_http_response_headers(count, end_of_stream)
        })
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.state().map_or(Action::Continue, |mut s| {
            s.on_http_response_body(body_size, end_of_stream)
        })
    }

    fn on_log(&mut self) {
        if let Some(mut state) = self.state() {
            state.on_log();
        }
    }
}

/// `State` carries the request callbacks (`Request` hands them over); gRPC answers reach it
/// through [`State::call_answer`].
impl Context for State {}

impl HttpContext for State {
    fn on_http_request_headers(&mut self, _count: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return self.refuse(not_configured());
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(e) => {
                error!("cannot read the request headers: {e:?}");
                return self.refuse(internal_error());
            }
        };
        self.audit.request_id = find_str(&headers, REQUEST_ID).map(str::to_string);
        let incoming = match shared.gateway.read(&headers) {
            Ok(incoming) => incoming,
            Err(reply) => return self.refuse(reply),
        };
        // Routed now (so the body is read from its first piece), answered after
        // authentication.
        let routed = shared.gateway.route(incoming, &headers);
        if let Ok(route) = &routed {
            self.audit.service = Some(shared.gateway.service_name(route).to_string());
            self.audit.operation = Some(route.operation.name);
            self.audit.name_model(route.operation.path_model.as_deref());
            let estimates = shared.gateway.config.quota.as_ref().is_some_and(|q| {
                q.counts_tokens() && estimate::generates_tokens(route.operation.name)
            });
            if route.operation.models_in_body() || estimates {
                self.reader = Some(BodyReader::new(
                    route.operation.body_models,
                    route.operation.undetermined,
                ));
            }
        }
        if end_of_stream {
            self.body_hash = Some(EMPTY_SHA256.to_string());
        } else {
            self.hasher = Some(BodyHasher::default());
        }
        self.decide(&shared, headers, routed, true)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let Some(hasher) = self.hasher.as_mut() else {
            return if self.phase == Phase::Done {
                Action::Continue
            } else {
                Action::Pause
            };
        };
        let limit = shared.gateway.config.max_request_body_bytes;
        if body_size as u64 > limit {
            return self.refuse(ErrorReply::body_too_large(limit));
        }
        let start = hasher.consumed();
        if body_size > start {
            match hostcalls::get_buffer(BufferType::HttpRequestBody, start, body_size - start) {
                Ok(Some(piece)) => {
                    hasher.update(&piece);
                    if let Some(reader) = self.reader.as_mut() {
                        reader.feed(&piece);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    error!("cannot read the request body: {e:?}");
                    return self.refuse(internal_error());
                }
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        match self.hasher.take() {
            Some(hasher) => self.body_complete(&shared, hasher.finish_hex()),
            None => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _count: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        match self.hasher.take() {
            Some(hasher) => self.body_complete(&shared, hasher.finish_hex()),
            None => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _count: usize, end_of_stream: bool) -> Action {
        let Some(quota) = self.quota.as_mut().filter(|q| q.forwarded) else {
            return Action::Continue;
        };
        match hostcalls::get_map_bytes(MapType::HttpResponseHeaders) {
            Ok(headers) => {
                let status = find_str(&headers, ":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                quota.usage = Some(UsageParser::new(status, &headers));
            }
            Err(e) => warn!("cannot read the response headers: {e:?}"),
        }
        if end_of_stream && let Some(shared) = self.shared.clone() {
            self.report(&shared, quota::Outcome::Forwarded);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(parser) = self.quota.as_mut().and_then(|q| q.usage.as_mut()) else {
            return Action::Continue;
        };
        if body_size > 0 {
            match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
                Ok(Some(piece)) => parser.feed(&piece),
                Ok(None) => {}
                Err(e) => warn!("cannot read the response body: {e:?}"),
            }
        }
        if end_of_stream && let Some(shared) = self.shared.clone() {
            self.report(&shared, quota::Outcome::Forwarded);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A response that ended without its end (client gone, upstream reset): the
        // reservation stands as the charge.
        if let Some(shared) = self.shared.clone() {
            self.report(&shared, quota::Outcome::Forwarded);
        }
    }
}
