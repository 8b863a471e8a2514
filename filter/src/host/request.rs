//! One request's callbacks. Each hands what happened to the request's `core::flow::RequestFlow`
//! and performs the step it answers with: the host calls (filter state, local replies, header
//! writes), the lookups and decisions it asks for, and the resumption of a held request.
//! Answers that reach the root context (decisions on the stream, lookups others made) come
//! back through a [`Handle`].

use std::cell::{RefCell, RefMut};
use std::rc::{Rc, Weak};

use gateway_common::names::{AUDIT_PROPERTY, TENANT_PROPERTY};
use gateway_common::quota_config::FailureMode;
use gateway_common::ratelimit::{
    RateLimitResponse, SERVICE as RATELIMIT_SERVICE, SHOULD_RATE_LIMIT,
};
use log::{debug, error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

use super::checks::{self, CHECK_TIMEOUT_MS};
use super::decisions::{self, StreamAnswer};
use super::grpc::{self, now_ms, unix_now};
use super::shared::{Metrics, Shared};
use crate::core::auth::Verdict;
use crate::core::errors::ErrorReply;
use crate::core::flow::{Flow, Intent, RequestFlow, Step};
use crate::core::headers::find_str;

/// The kinds of calls a request makes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A key lookup for every request that needs the same keys.
    Keys,
    /// A credentials lookup for every request that needs them.
    Credentials,
    /// Its `ShouldRateLimit` call.
    Decision,
}

/// The filter's handle on one request. Its state is shared with the root context, which
/// answers quota decisions that arrive on the worker's decision stream and wakes requests
/// whose lookup is over.
pub(super) struct Request(Rc<RefCell<State>>);

/// Where a request's state is reached from outside its own callbacks.
#[derive(Clone)]
pub(super) struct Handle {
    context_id: u32,
    state: Weak<RefCell<State>>,
}

pub(super) struct State {
    shared: Option<Rc<Shared<Handle>>>,
    handle: Handle,
    flow: RequestFlow,
    /// The calls this request made that are not answered yet.
    calls: Vec<(u32, Call)>,
}

impl Request {
    pub(super) fn new(shared: Option<Rc<Shared<Handle>>>, context_id: u32) -> Self {
        Self(Rc::new_cyclic(|me| {
            RefCell::new(State {
                shared,
                handle: Handle {
                    context_id,
                    state: me.clone(),
                },
                flow: RequestFlow::default(),
                calls: Vec::new(),
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
    pub(super) fn deliver(&self, shared: &Shared<Handle>, f: impl FnOnce(&mut State) -> Action) {
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
    /// Performs a step: its intents in order, then Envoy is told to go on or hold. An
    /// intent that fails is the last of its step; the flow answers its failure with the next.
    fn perform(&mut self, shared: &Shared<Handle>, step: Step) -> Action {
        let mut step = step;
        loop {
            let mut next = None;
            for intent in step.intents {
                next = self.perform_one(shared, intent);
                if next.is_some() {
                    break;
                }
            }
            match next {
                Some(following) => step = following,
                None => {
                    return match step.flow {
                        Flow::Continue => Action::Continue,
                        Flow::Pause => Action::Pause,
                    };
                }
            }
        }
    }

    /// Does what one intent asks; when it cannot, the flow's next step.
    fn perform_one(&mut self, shared: &Shared<Handle>, intent: Intent) -> Option<Step> {
        match intent {
            Intent::Audit { fragment, tenant } => {
                publish_audit(&fragment, tenant.as_deref());
                None
            }
            Intent::Reply { reply, request_id } => {
                send_reply(&reply, request_id.as_deref());
                None
            }
            Intent::AskKeys { issuer, kid } => {
                match shared.need_keys(issuer, kid, &self.handle, now_ms()) {
                    Ok(call) => {
                        self.made(shared, call, Call::Keys);
                        None
                    }
                    Err(e) => {
                        warn!("cannot ask the control service for keys: {e}");
                        Some(shared.step(|env| self.flow.keys_unavailable(env)))
                    }
                }
            }
            Intent::CheckSignature(check) => {
                let sent = shared.checks.borrow_mut().send(
                    checks::message(check),
                    Some(&self.handle),
                    CHECK_TIMEOUT_MS,
                    now_ms(),
                );
                // No stream: checked here.
                (!sent)
                    .then(|| shared.step(|env| self.flow.signature_checked(env, Verdict::Failed)))
            }
            Intent::AskCredentials => match shared.need_credentials(&self.handle, now_ms()) {
                Ok(call) => {
                    self.made(shared, call, Call::Credentials);
                    None
                }
                Err(e) => {
                    warn!("cannot ask the control service for credentials: {e}");
                    Some(shared.step(|env| self.flow.credentials_unavailable(env)))
                }
            },
            Intent::AskDecision {
                request,
                stream,
                allowances,
            } => {
                let config = shared.gateway.config.quota.as_ref()?;
                if stream
                    && shared.decisions.borrow_mut().send(
                        decisions::message(&request, allowances),
                        Some(&self.handle),
                        config.timeout_ms,
                        now_ms(),
                    )
                {
                    return None;
                }
                match grpc::call(
                    &config.cluster,
                    RATELIMIT_SERVICE,
                    SHOULD_RATE_LIMIT,
                    &request,
                    config.timeout_ms,
                ) {
                    Ok(token) => {
                        self.made(shared, Some(token), Call::Decision);
                        None
                    }
                    Err(e) => Some(shared.step(|env| self.flow.decision_not_asked(env, e))),
                }
            }
            Intent::EditHeaders(edits) => {
                let removed = edits.remove.iter().try_for_each(|name| {
                    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None)
                });
                let written = removed.and_then(|()| {
                    edits.write.iter().try_for_each(|(name, value)| {
                        hostcalls::set_map_value_bytes(
                            MapType::HttpRequestHeaders,
                            name,
                            Some(value),
                        )
                    })
                });
                match written {
                    Ok(()) => None,
                    Err(e) => {
                        error!("cannot set the upstream headers: {e:?}");
                        Some(self.flow.headers_not_set(unix_now()))
                    }
                }
            }
            Intent::RefillAllowances { request } => {
                let timeout_ms = shared.gateway.config.quota.as_ref()?.timeout_ms;
                // No stream: the allowances run out, and requests ask for more with decisions.
                shared.decisions.borrow_mut().send(
                    decisions::message(&request, true),
                    None,
                    timeout_ms,
                    now_ms(),
                );
                None
            }
            Intent::Report(record) => {
                shared.queue_report(record);
                None
            }
            Intent::QuotaFailure { mode, error } => {
                warn!("quota check failed ({error}); failing {mode:?}");
                let counter = match mode {
                    FailureMode::Open => shared.metrics.quota_failures_open,
                    FailureMode::Closed => shared.metrics.quota_failures_closed,
                };
                Metrics::add(counter, 1);
                None
            }
        }
    }

    /// Notes a call this request made (`None`: it waits for another's), and, when it was
    /// made on the root context's behalf, that its answer (which then reaches the root
    /// context) is this request's.
    fn made(&mut self, shared: &Shared<Handle>, token: Option<u32>, call: Call) {
        let Some(token) = token else {
            return;
        };
        self.calls.push((token, call));
        if shared.delegating.get() {
            shared
                .delegated
                .borrow_mut()
                .insert(token, self.handle.clone());
        }
    }

    /// A decision from the worker's decision stream (or its failure).
    pub(super) fn stream_answer(
        &mut self,
        shared: &Shared<Handle>,
        answer: StreamAnswer,
    ) -> Action {
        let step = match answer {
            StreamAnswer::Decided(answer) => shared.step(|env| self.flow.decision(env, answer)),
            // Nothing was decided (or counted): the same request, as a call.
            StreamAnswer::AskAgain => self.flow.ask_decision_again(),
        };
        self.perform(shared, step)
    }

    /// The control service's verdict on the request's token signature (or `Failed`).
    pub(super) fn signature_verdict(
        &mut self,
        shared: &Shared<Handle>,
        verdict: Verdict,
    ) -> Action {
        let step = shared.step(|env| self.flow.signature_checked(env, verdict));
        self.perform(shared, step)
    }

    /// The lookup this request waited for is over (the root context saw it answered, or
    /// give up).
    pub(super) fn lookup_over(&mut self, shared: &Shared<Handle>) -> Action {
        let step = shared.step(|env| self.flow.lookup_over(env));
        self.perform(shared, step)
    }

    /// The answer to a call this request made.
    pub(super) fn call_answer(
        &mut self,
        shared: &Shared<Handle>,
        token: u32,
        status_code: u32,
        size: usize,
    ) -> Action {
        let Some(at) = self.calls.iter().position(|(t, _)| *t == token) else {
            return Action::Pause;
        };
        let (_, call) = self.calls.swap_remove(at);
        let step = match call {
            // Lookups made for every request waiting on them: the others are woken by the
            // root context.
            Call::Keys => {
                shared.keys_answered(token, status_code, size);
                shared.step(|env| self.flow.lookup_over(env))
            }
            Call::Credentials => {
                shared.credentials_answered(token, status_code, size);
                shared.step(|env| self.flow.lookup_over(env))
            }
            Call::Decision => {
                let answer = grpc::answer::<RateLimitResponse>(status_code, size);
                shared.step(|env| self.flow.decision(env, answer))
            }
        };
        self.perform(shared, step)
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
    fn on_http_request_headers(&mut self, _count: usize, end_of_stream: bool) -> Action {
        let Some(mut state) = self.state() else {
            return Action::Continue;
        };
        let Some(shared) = state.shared.clone() else {
            let step = state.flow.not_configured(unix_now());
            return state.perform_unconfigured(step);
        };
        let step = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => shared.step(|env| state.flow.on_headers(env, headers, end_of_stream)),
            Err(e) => {
                error!("cannot read the request headers: {e:?}");
                state.flow.host_failed(unix_now())
            }
        };
        state.perform(&shared, step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut state) = self.state() else {
            return Action::Continue;
        };
        let Some(shared) = state.shared.clone() else {
            return Action::Continue;
        };
        let step = shared.step(|env| {
            state
                .flow
                .on_body(
                    env,
                    body_size,
                    end_of_stream,
                    |from, len| match hostcalls::get_buffer(BufferType::HttpRequestBody, from, len)
                    {
                        Ok(piece) => Some(piece.unwrap_or_default()),
                        Err(e) => {
                            error!("cannot read the request body: {e:?}");
                            None
                        }
                    },
                )
        });
        state.perform(&shared, step)
    }

    fn on_http_request_trailers(&mut self, _count: usize) -> Action {
        let Some(mut state) = self.state() else {
            return Action::Continue;
        };
        let Some(shared) = state.shared.clone() else {
            return Action::Continue;
        };
        let step = shared.step(|env| state.flow.body_end(env));
        state.perform(&shared, step)
    }

    fn on_http_response_headers(&mut self, _count: usize, end_of_stream: bool) -> Action {
        let Some(mut state) = self.state() else {
            return Action::Continue;
        };
        let Some(shared) = state.shared.clone() else {
            return Action::Continue;
        };
        if !state.flow.wants_response() {
            return Action::Continue;
        }
        let headers = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_else(|e| {
            warn!("cannot read the response headers: {e:?}");
            Vec::new()
        });
        let status = find_str(&headers, ":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let step = shared.step(|env| {
            state
                .flow
                .on_response_headers(env, status, &headers, end_of_stream)
        });
        state.perform(&shared, step)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut state) = self.state() else {
            return Action::Continue;
        };
        let Some(shared) = state.shared.clone() else {
            return Action::Continue;
        };
        if !state.flow.reading_response() {
            return Action::Continue;
        }
        let piece = match hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size) {
            Ok(piece) => piece.unwrap_or_default(),
            Err(e) => {
                warn!("cannot read the response body: {e:?}");
                Vec::new()
            }
        };
        let step = shared.step(|env| state.flow.on_response_body(env, &piece, end_of_stream));
        state.perform(&shared, step)
    }

    fn on_log(&mut self) {
        let Some(mut state) = self.state() else {
            return;
        };
        let Some(shared) = state.shared.clone() else {
            return;
        };
        let step = shared.step(|env| state.flow.on_log(env));
        state.perform(&shared, step);
    }
}

impl State {
    /// Performs the refusal of a request that arrived while the filter has no configuration
    /// (only the audit record and the reply: nothing else can be asked for).
    fn perform_unconfigured(&mut self, step: Step) -> Action {
        for intent in step.intents {
            match intent {
                Intent::Audit { fragment, tenant } => publish_audit(&fragment, tenant.as_deref()),
                Intent::Reply { reply, request_id } => send_reply(&reply, request_id.as_deref()),
                _ => {}
            }
        }
        Action::Pause
    }
}

/// The audit record (and the caller's tenant) as filter state.
fn publish_audit(fragment: &str, tenant: Option<&str>) {
    if let Err(e) = hostcalls::set_property(vec![AUDIT_PROPERTY], Some(fragment.as_bytes())) {
        debug!("cannot set the audit record: {e:?}");
    }
    if let Some(tenant) = tenant
        && let Err(e) = hostcalls::set_property(vec![TENANT_PROPERTY], Some(tenant.as_bytes()))
    {
        debug!("cannot set the tenant: {e:?}");
    }
}

/// Answers the request with a gateway error.
fn send_reply(reply: &ErrorReply, request_id: Option<&str>) {
    debug!("refused ({}): {}", reply.reason, reply.message);
    let body = reply.body();
    let headers = reply.headers(request_id);
    if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(&body)) {
        error!("cannot send a local reply: {e:?}");
    }
}
