//! One request's way through the gateway, as a state machine the host drives. The host hands
//! it what happened (headers, body pieces, the answers of the control service, the response)
//! with what the worker knows now ([`Env`]: the configuration, the authenticator, usable
//! signing credentials, the time), and performs what each [`Step`] asks for ([`Intent`]s, in
//! order), then tells Envoy to go on or to hold the request ([`Flow`]). Nothing here calls
//! the host.
//!
//! A request is held at its headers until it is decided (read, authenticated, routed,
//! authorized), its body is hashed (and read, when the operation names its models there or a
//! token quota estimates from it) and, with quotas, admitted by the rate limit service; then it
//! is signed and let go. An operation that names its models in the body is authorized once the
//! body is complete. With quotas, the response's token usage is read as it passes and reported
//! once, however the request ends.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use gateway_common::model;
use gateway_common::proto::{SignatureCheck, UsageRecord};
use gateway_common::quota_config::{FailureMode, QuotaTransport};
use gateway_common::ratelimit::RateLimitResponse;
use prost::Message;

use super::audit::AuditRecord;
use super::auth::{Authenticator, Identity, Outcome, PendingCheck, Verdict};
use super::body::{BodyFacts, BodyReader};
use super::credentials::{CredentialCache, SigningIdentity};
use super::errors::ErrorReply;
use super::headers::{HeaderEdits, HeaderList, REQUEST_ID, find_str};
use super::operations::Models;
use super::quota::allowance::Allowances;
use super::quota::estimate::{self, Estimate};
use super::quota::usage::UsageParser;
use super::quota::{self, Ending, Outcome as Ended, Reservation};
use super::signing::{BodyHasher, EMPTY_SHA256};
use super::{ForwardPlan, Gateway, Route};

/// What the worker knows while a step runs. The time is read from `clock` when a step first
/// needs it, once.
pub struct Env<'a> {
    pub gateway: &'a Gateway,
    /// Present in `jwt` mode.
    pub auth: Option<&'a mut Authenticator>,
    pub credentials: &'a CredentialCache,
    /// Token signatures may be checked by the control service (its stream is open).
    pub remote_checks: bool,
    /// The worker's quota allowances, when decisions go on the decision stream.
    pub allowances: Option<&'a mut Allowances>,
    clock: &'a dyn Fn() -> SystemTime,
    now: Cell<Option<SystemTime>>,
}

impl<'a> Env<'a> {
    pub fn new(
        gateway: &'a Gateway,
        auth: Option<&'a mut Authenticator>,
        credentials: &'a CredentialCache,
        clock: &'a dyn Fn() -> SystemTime,
    ) -> Self {
        Self {
            gateway,
            auth,
            credentials,
            remote_checks: false,
            allowances: None,
            clock,
            now: Cell::new(None),
        }
    }

    pub fn now(&self) -> SystemTime {
        match self.now.get() {
            Some(now) => now,
            None => {
                let now = (self.clock)();
                self.now.set(Some(now));
                now
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default()
    }

    fn unix_now(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    /// The signing credentials, when usable now.
    fn signing_credentials(&self) -> Option<&'a SigningIdentity> {
        let now = self.unix_now();
        self.credentials.usable(now).map(|c| &**c)
    }
}

/// What the host does for a step, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Publish the audit record (and the caller's tenant) as filter state.
    Audit {
        fragment: String,
        tenant: Option<String>,
    },
    /// Answer the request with this error (`x-amzn-requestid`: `request_id`).
    Reply {
        reply: ErrorReply,
        request_id: Option<String>,
    },
    /// Get keys (of issuer `issuer` with no key `kid`; any keys when `kid` is `None`), then
    /// [`RequestFlow::lookup_over`]; [`RequestFlow::keys_unavailable`] if they cannot be
    /// asked for.
    AskKeys { issuer: usize, kid: Option<String> },
    /// Ask for the admission decision of this `RateLimitRequest` (on the worker's decision
    /// stream when `stream` and one is open, with allowances when `allowances`; else with a
    /// `ShouldRateLimit` call), then [`RequestFlow::decision`].
    AskDecision {
        request: Vec<u8>,
        stream: bool,
        allowances: bool,
    },
    /// Ask, on the decision stream, for allowances alone: this `RateLimitRequest` charges
    /// nothing (every descriptor's `hits_addend` is 0). Nothing waits for the answer.
    RefillAllowances { request: Vec<u8> },
    /// Ask the control service whether the token's signature is valid (on the worker's
    /// signature check stream), then [`RequestFlow::signature_checked`] (with
    /// [`Verdict::Failed`] when it cannot be asked or does not answer in time).
    CheckSignature(SignatureCheck),
    /// Get signing credentials, then [`RequestFlow::lookup_over`];
    /// [`RequestFlow::credentials_unavailable`] if they cannot be asked for.
    AskCredentials,
    /// Edit the request headers into the upstream ones (the request then goes);
    /// [`RequestFlow::headers_not_set`] if that fails.
    EditHeaders(HeaderEdits),
    /// Queue this usage record for the next report.
    Report(UsageRecord),
    /// The rate limit service did not decide (`error`) and the failure mode applied.
    QuotaFailure { mode: FailureMode, error: String },
}

/// What Envoy is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub intents: Vec<Intent>,
    pub flow: Flow,
}

impl Step {
    fn pause() -> Self {
        Self {
            intents: Vec::new(),
            flow: Flow::Pause,
        }
    }

    fn go() -> Self {
        Self {
            intents: Vec::new(),
            flow: Flow::Continue,
        }
    }

    fn with(mut self, intent: Intent) -> Self {
        self.intents.push(intent);
        self
    }

    /// This step, after the intents of `first`.
    fn after(mut self, mut first: Vec<Intent>) -> Self {
        first.append(&mut self.intents);
        self.intents = first;
        self
    }
}

/// Where a request is. The data a phase needs lives in it.
#[derive(Debug)]
enum Phase {
    /// Before the headers are decided.
    Start,
    /// The decision waits for keys: the headers and where they route (or why not).
    AwaitingKeys {
        headers: HeaderList,
        routed: Result<Route, ErrorReply>,
    },
    /// The decision waits for the control service's verdict on the token's signature.
    AwaitingSignature {
        headers: HeaderList,
        routed: Result<Route, ErrorReply>,
        pending: Box<PendingCheck>,
    },
    /// Held until the body's end. `authorized`: access was decided at the headers (otherwise
    /// the operation names its models in the body, and it is decided at its end).
    Held { plan: ForwardPlan, authorized: bool },
    /// Admission waits for the rate limit service (`request`: to ask again with a call).
    AwaitingDecision { plan: ForwardPlan, request: Vec<u8> },
    /// Signing waits for credentials.
    AwaitingCredentials { plan: ForwardPlan },
    /// Let go upstream.
    Forwarded,
    /// Answered by the gateway.
    Answered,
}

/// The request body as it arrives.
#[derive(Default)]
struct Body {
    /// Present while the body is being hashed.
    hasher: Option<BodyHasher>,
    /// Reads the body when the operation names its models there or a token quota estimates
    /// from it; fixed memory whatever the body.
    reader: Option<BodyReader>,
    /// Set once the whole body has been hashed.
    hash: Option<String>,
}

/// A request under quotas, once it is authorized.
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
    /// The usage record is queued.
    reported: bool,
    /// The response's `:status`, once its headers arrived.
    status: u32,
    /// When the response's first output (a streamed content event) passed.
    first_output: Option<SystemTime>,
}

/// One request's state.
pub struct RequestFlow {
    phase: Phase,
    body: Body,
    identity: Option<Rc<Identity>>,
    audit: AuditRecord,
    quota: Option<Quota>,
    /// When the request headers arrived: the start of the request's duration.
    started: Option<SystemTime>,
}

impl Default for RequestFlow {
    fn default() -> Self {
        Self {
            phase: Phase::Start,
            body: Body::default(),
            identity: None,
            audit: AuditRecord::default(),
            quota: None,
            started: None,
        }
    }
}

impl RequestFlow {
    /// Whether the request is answered or let go: later request callbacks only continue.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Forwarded | Phase::Answered)
    }

    /// The request headers arrived.
    pub fn on_headers(&mut self, env: &mut Env, headers: HeaderList, end_of_stream: bool) -> Step {
        // Timings are reported with usage, which only quotas send: no clock read without them.
        if env.gateway.config.quota.is_some() {
            self.started = Some(env.now());
        }
        self.audit.request_id = find_str(&headers, REQUEST_ID).map(str::to_string);
        let incoming = match env.gateway.read(&headers) {
            Ok(incoming) => incoming,
            Err(reply) => return self.refuse(env.unix_now(), reply),
        };
        // Routed now (so the body is read from its first piece), answered after
        // authentication.
        let routed = env.gateway.route(incoming, &headers);
        if let Ok(route) = &routed {
            self.audit.service = Some(env.gateway.service_name(route).to_string());
            self.audit.operation = Some(route.operation.name);
            self.audit.name_model(route.operation.path_model.as_deref());
            let estimates = env.gateway.config.quota.as_ref().is_some_and(|q| {
                q.counts_tokens() && estimate::generates_tokens(route.operation.name)
            });
            if route.operation.models_in_body() || estimates {
                self.body.reader = Some(BodyReader::new(
                    route.operation.body_models,
                    route.operation.undetermined,
                ));
            }
        }
        if end_of_stream {
            self.body.hash = Some(EMPTY_SHA256.to_string());
        } else {
            self.body.hasher = Some(BodyHasher::default());
        }
        self.decide(env, headers, routed, true)
    }

    /// Body arrived: `total` bytes of it so far; `end`: the body is complete. `read(from,
    /// len)` reads bytes of Envoy's buffer (`None` when the host cannot): only the ones not
    /// read yet, and only while the body is wanted and within its limit.
    pub fn on_body(
        &mut self,
        env: &mut Env,
        total: usize,
        end: bool,
        read: impl FnOnce(usize, usize) -> Option<Vec<u8>>,
    ) -> Step {
        let limit = env.gateway.config.max_request_body_bytes;
        let Some(hasher) = self.body.hasher.as_mut() else {
            return if self.finished() {
                Step::go()
            } else {
                Step::pause()
            };
        };
        if total as u64 > limit {
            return self.refuse(env.unix_now(), ErrorReply::body_too_large(limit));
        }
        let from = hasher.consumed();
        if total > from {
            let Some(piece) = read(from, total - from) else {
                return self.host_failed(env.unix_now());
            };
            hasher.update(&piece);
            if let Some(reader) = self.body.reader.as_mut() {
                reader.feed(&piece);
            }
        }
        if end {
            self.body_end(env)
        } else {
            Step::pause()
        }
    }

    /// The body ended (with trailers, or a last empty piece).
    pub fn body_end(&mut self, env: &mut Env) -> Step {
        let Some(hasher) = self.body.hasher.take() else {
            return Step::go();
        };
        self.body.hash = Some(hasher.finish_hex());
        match self.phase {
            Phase::Held { .. } => self.proceed(env),
            Phase::Forwarded | Phase::Answered => Step::go(),
            _ => Step::pause(),
        }
    }

    /// Decides the held headers: authentication, then the routing outcome, then access (or,
    /// when the operation names its models in the body, the plan to decide it at the body's
    /// end). Nothing that depends on the configuration is answered before the caller is
    /// known. `may_refresh`: an unknown key may be looked up.
    fn decide(
        &mut self,
        env: &mut Env,
        headers: HeaderList,
        routed: Result<Route, ErrorReply>,
        may_refresh: bool,
    ) -> Step {
        // The clock is read only to authenticate.
        let now = if env.auth.is_some() {
            env.unix_now()
        } else {
            0
        };
        let remote = env.remote_checks;
        let outcome = env
            .auth
            .as_deref_mut()
            .map(|auth| auth.authenticate_with(&headers, now, may_refresh, remote));
        self.authenticated(env, headers, routed, outcome)
    }

    /// The control service's verdict on the signature the request waited for.
    pub fn signature_checked(&mut self, env: &mut Env, verdict: Verdict) -> Step {
        let (headers, routed, pending) = match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::AwaitingSignature {
                headers,
                routed,
                pending,
            } => (headers, routed, pending),
            other => {
                self.phase = other;
                return Step::pause();
            }
        };
        let now = env.unix_now();
        let outcome = env
            .auth
            .as_deref_mut()
            .map(|auth| auth.signature_checked(*pending, verdict, now));
        self.authenticated(env, headers, routed, outcome)
    }

    /// Goes on once authentication has an outcome (`None`: mode `none`).
    fn authenticated(
        &mut self,
        env: &mut Env,
        headers: HeaderList,
        routed: Result<Route, ErrorReply>,
        outcome: Option<Outcome>,
    ) -> Step {
        let identity = match outcome {
            None => None,
            Some(Outcome::Authenticated(identity)) => Some(identity),
            Some(Outcome::NeedKeys { issuer, kid }) => {
                self.phase = Phase::AwaitingKeys { headers, routed };
                return Step::pause().with(Intent::AskKeys { issuer, kid });
            }
            Some(Outcome::NeedSignature(pending)) => {
                let check = pending.check.clone();
                self.phase = Phase::AwaitingSignature {
                    headers,
                    routed,
                    pending,
                };
                return Step::pause().with(Intent::CheckSignature(check));
            }
            Some(Outcome::Refused(error)) => {
                return self.refuse(env.unix_now(), ErrorReply::unauthenticated(error));
            }
        };
        if let Some(identity) = &identity {
            self.audit.identify(identity);
        }
        let route = match routed {
            Ok(route) => route,
            Err(reply) => return self.refuse(env.unix_now(), reply),
        };
        self.identity = identity;
        let plan = env
            .gateway
            .forward(headers, route, self.identity.as_deref());
        let mut intents = Vec::new();
        let authorized = !plan.route.operation.models_in_body();
        if authorized {
            let models = Models::of(&plan.route.operation, Vec::new(), false);
            match self.authorize(env, &plan.route, models) {
                Ok(audit) => intents.push(audit),
                Err(reply) => return self.refuse(env.unix_now(), reply),
            }
        } else {
            // Provisional until the body is read: a request abandoned before then is logged.
            self.audit.pending();
            intents.push(self.audit_intent(None));
        }
        self.phase = Phase::Held { plan, authorized };
        self.proceed(env).after(intents)
    }

    /// Decides access for a call naming `models`; allowed, the request gets its quota
    /// context, and the audit record to publish says so.
    fn authorize(
        &mut self,
        env: &Env,
        route: &Route,
        models: Models,
    ) -> Result<Intent, ErrorReply> {
        self.audit.name_model(models.primary());
        if let Some(identity) = &self.identity {
            env.gateway.authorize(identity, route, &models)?;
        }
        if let Some(config) = &env.gateway.config.quota {
            let mut context = quota_context(env.gateway, self.identity.as_deref(), route, &models);
            if let Some(prices) = &config.prices {
                // Priced, or refused: never counted as free.
                context.prices = Some(
                    prices
                        .of(context.model.as_deref())
                        .ok_or_else(ErrorReply::unpriced_model)?,
                );
            }
            self.quota = Some(Quota {
                context,
                admitted: false,
                reservations: Vec::new(),
                admitted_at: 0,
                usage: None,
                reported: false,
                status: 0,
                first_output: None,
            });
        }
        self.audit.allow();
        let tenant = self.identity.as_ref().map(|i| i.tenant.clone());
        Ok(self.audit_intent(tenant))
    }

    /// Once the body is complete: access (for operations that name their models in the
    /// body), admission (with quotas), then signing; until then keeps holding the request.
    fn proceed(&mut self, env: &mut Env) -> Step {
        if self.body.hash.is_none() {
            return Step::pause();
        }
        let (plan, authorized) = match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::Held { plan, authorized } => (plan, authorized),
            other => {
                self.phase = other;
                return Step::pause();
            }
        };
        let mut facts = match self.body.reader.take() {
            None => BodyFacts::default(),
            Some(reader) => match reader.finish(plan.route.operation.models_in_body()) {
                Ok(facts) => facts,
                Err(error) => return self.refuse(env.unix_now(), ErrorReply::bad_body(error)),
            },
        };
        let mut intents = Vec::new();
        if !authorized {
            let models = Models::of(
                &plan.route.operation,
                std::mem::take(&mut facts.models),
                facts.beyond_table,
            );
            match self.authorize(env, &plan.route, models) {
                Ok(audit) => intents.push(audit),
                Err(reply) => return self.refuse(env.unix_now(), reply),
            }
        }
        if let (Some(quota), Some(config)) = (
            self.quota.as_mut().filter(|q| !q.admitted),
            env.gateway.config.quota.as_ref(),
        ) {
            let estimate = if config.counts_tokens() {
                estimate::estimate(plan.route.operation.name, &facts, config)
            } else {
                Estimate::default()
            };
            match quota::admission(config, &quota.context, estimate) {
                None => {
                    quota.admitted = true;
                    quota.admitted_at = env.unix_now();
                }
                Some(mut admission) => {
                    let stream = config.transport == QuotaTransport::Stream;
                    let (now_ms, wait_ms) = (env.now_ms(), config.timeout_ms);
                    let unix_now = env.unix_now();
                    let allowances = env.allowances.as_deref_mut().filter(|_| stream);
                    let mut ask_allowances = false;
                    if let Some(allowances) = allowances {
                        if let Some(spent) = allowances.spend(&mut admission.reservations, now_ms) {
                            // Admitted here, from the worker's allowances.
                            quota.reservations = admission.reservations;
                            quota.admitted = true;
                            quota.admitted_at = unix_now;
                            if spent.refill && allowances.ask(&quota.reservations, now_ms, wait_ms)
                            {
                                intents.push(Intent::RefillAllowances {
                                    request: quota::refill(admission.request).encode_to_vec(),
                                });
                            }
                            return self.sign(env, plan).after(intents);
                        }
                        ask_allowances = allowances.ask(&admission.reservations, now_ms, wait_ms);
                    }
                    quota.reservations = admission.reservations;
                    let request = admission.request.encode_to_vec();
                    self.phase = Phase::AwaitingDecision {
                        plan,
                        request: request.clone(),
                    };
                    return Step::pause()
                        .with(Intent::AskDecision {
                            request,
                            stream,
                            allowances: ask_allowances,
                        })
                        .after(intents);
                }
            }
        }
        self.sign(env, plan).after(intents)
    }

    /// Signs and lets the request go, or waits for credentials.
    fn sign(&mut self, env: &mut Env, plan: ForwardPlan) -> Step {
        let Some(credentials) = env.signing_credentials() else {
            self.phase = Phase::AwaitingCredentials { plan };
            return Step::pause().with(Intent::AskCredentials);
        };
        let Some(hash) = self.body.hash.as_deref() else {
            self.phase = Phase::Held {
                plan,
                authorized: true,
            };
            return Step::pause();
        };
        match env.gateway.sign(plan, hash, credentials, env.now()) {
            Ok(headers) => {
                self.phase = Phase::Forwarded;
                Step::go().with(Intent::EditHeaders(headers))
            }
            Err(reply) => self.refuse(env.unix_now(), reply),
        }
    }

    /// The decision the request waited for: admitted (it goes on), over a limit (429), or
    /// none (`Err`: the failure mode applies).
    pub fn decision(&mut self, env: &mut Env, answer: Result<RateLimitResponse, String>) -> Step {
        let plan = match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::AwaitingDecision { plan, .. } => plan,
            other => {
                self.phase = other;
                return Step::pause();
            }
        };
        let response = match answer {
            Ok(response) => response,
            Err(error) => return self.decision_failed(env, plan, error),
        };
        match quota::verdict(&response) {
            Ok(()) => {
                let now = env.unix_now();
                if let Some(quota) = self.quota.as_mut() {
                    quota::charged(&mut quota.reservations, &response);
                    quota.admitted = true;
                    quota.admitted_at = response
                        .decided_at()
                        .and_then(|t| u64::try_from(t).ok())
                        .unwrap_or(now);
                }
                self.phase = Phase::Held {
                    plan,
                    authorized: true,
                };
                self.proceed(env)
            }
            Err(reply) => {
                let now = env.unix_now();
                let report = self.report(now, Some(env.now()), Ended::RefusedByQuota);
                self.refuse(now, reply).after(report.into_iter().collect())
            }
        }
    }

    /// The decision stream has no answer for this request and the service takes calls: the
    /// same request, as a call.
    pub fn ask_decision_again(&mut self) -> Step {
        match &self.phase {
            Phase::AwaitingDecision { request, .. } => Step::pause().with(Intent::AskDecision {
                request: request.clone(),
                stream: false,
                allowances: false,
            }),
            _ => Step::pause(),
        }
    }

    /// The rate limit service did not decide: the configured failure mode applies.
    fn decision_failed(&mut self, env: &mut Env, plan: ForwardPlan, error: String) -> Step {
        let mode = env
            .gateway
            .config
            .quota
            .as_ref()
            .map_or(FailureMode::Open, |q| q.failure_mode);
        let count = Intent::QuotaFailure { mode, error };
        match mode {
            FailureMode::Open => {
                let now = env.unix_now();
                if let Some(quota) = self.quota.as_mut() {
                    // Nothing was reserved. The tokens the response reports are charged when
                    // it ends (reserved 0, so settling charges all of them), to the window of
                    // the admission time (none named): budgets count what was spent while
                    // the service was away. Its request hit is not charged afterwards.
                    quota.reservations.retain(|r| r.kind.is_some());
                    for reservation in &mut quota.reservations {
                        reservation.reserved = 0;
                        reservation.window = None;
                    }
                    quota.admitted = true;
                    quota.admitted_at = now;
                }
                self.phase = Phase::Held {
                    plan,
                    authorized: true,
                };
                self.proceed(env).after(vec![count])
            }
            FailureMode::Closed => self
                .refuse(env.unix_now(), ErrorReply::quota_unavailable())
                .after(vec![count]),
        }
    }

    /// The lookup the request waited for (keys, credentials) is over, answered or given up:
    /// it goes on with what the worker has now, without looking up again.
    pub fn lookup_over(&mut self, env: &mut Env) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::AwaitingKeys { headers, routed } => self.decide(env, headers, routed, false),
            Phase::AwaitingCredentials { plan } if env.signing_credentials().is_some() => {
                self.sign(env, plan)
            }
            Phase::AwaitingCredentials { .. } => {
                self.refuse(env.unix_now(), ErrorReply::no_credentials())
            }
            other => {
                self.phase = other;
                Step::pause()
            }
        }
    }

    /// Keys could not be asked for: decide with what the worker has.
    pub fn keys_unavailable(&mut self, env: &mut Env) -> Step {
        match std::mem::replace(&mut self.phase, Phase::Start) {
            Phase::AwaitingKeys { headers, routed } => self.decide(env, headers, routed, false),
            other => {
                self.phase = other;
                Step::pause()
            }
        }
    }

    /// Credentials could not be asked for.
    pub fn credentials_unavailable(&mut self, env: &mut Env) -> Step {
        self.refuse(env.unix_now(), ErrorReply::no_credentials())
    }

    /// The decision could not be asked for (the call failed at once).
    pub fn decision_not_asked(&mut self, env: &mut Env, error: String) -> Step {
        self.decision(env, Err(error))
    }

    /// The host could not do what a step asked for (read headers, set them, read the body),
    /// at `now` (Unix seconds).
    pub fn host_failed(&mut self, now: u64) -> Step {
        self.refuse(now, ErrorReply::internal())
    }

    /// The host could not set the signed headers: the request never left, and is refused
    /// like one the gateway refuses after admission.
    pub fn headers_not_set(&mut self, now: u64) -> Step {
        self.phase = Phase::Answered;
        self.refuse(now, ErrorReply::internal())
    }

    /// The filter has no valid configuration: every request is refused.
    pub fn not_configured(&mut self, now: u64) -> Step {
        self.refuse(now, ErrorReply::not_configured())
    }

    /// The response headers arrived (`status` is `:status`).
    pub fn on_response_headers(
        &mut self,
        env: &mut Env,
        status: u32,
        headers: &[(String, Vec<u8>)],
        end_of_stream: bool,
    ) -> Step {
        if !matches!(self.phase, Phase::Forwarded) {
            return Step::go();
        }
        let Some(quota) = self.quota.as_mut() else {
            return Step::go();
        };
        quota.usage = Some(UsageParser::new(status, headers));
        quota.status = status;
        if end_of_stream {
            return self.forwarded_report(env);
        }
        Step::go()
    }

    /// Whether the response headers are wanted (to read the token usage of a forwarded
    /// request under quotas).
    pub fn wants_response(&self) -> bool {
        matches!(self.phase, Phase::Forwarded) && self.quota.is_some()
    }

    /// Whether the response body is read (for its token usage).
    pub fn reading_response(&self) -> bool {
        self.quota.as_ref().is_some_and(|q| q.usage.is_some())
    }

    /// A piece of the response body passed.
    pub fn on_response_body(&mut self, env: &mut Env, piece: &[u8], end_of_stream: bool) -> Step {
        if let Some(quota) = self.quota.as_mut()
            && let Some(parser) = quota.usage.as_mut()
        {
            parser.feed(piece);
            if quota.first_output.is_none() && parser.output_started() {
                quota.first_output = Some(env.now());
            }
        }
        if end_of_stream {
            return self.forwarded_report(env);
        }
        Step::go()
    }

    /// The request is over (its log is written). A response that ended without its end
    /// (client gone, upstream reset): the reservation stands as the charge.
    pub fn on_log(&mut self, env: &mut Env) -> Step {
        self.forwarded_report(env)
    }

    fn forwarded_report(&mut self, env: &Env) -> Step {
        let mut step = Step::go();
        // Without quotas there is no record, and no reason to read the clock.
        if matches!(self.phase, Phase::Forwarded)
            && self.quota.as_ref().is_some_and(|q| !q.reported)
            && let Some(record) = self.report(env.unix_now(), Some(env.now()), Ended::Forwarded)
        {
            step.intents.push(record);
        }
        step
    }

    /// Answers the request with a gateway error and records the refusal. A request refused
    /// after it passed quota admission gives its charges back and reaches the ledger.
    fn refuse(&mut self, now: u64, reply: ErrorReply) -> Step {
        let mut intents: Vec<Intent> = self
            .report(now, None, Ended::RefusedByGateway)
            .into_iter()
            .collect();
        self.audit.deny(reply.reason);
        intents.push(self.audit_intent(None));
        intents.push(Intent::Reply {
            reply,
            request_id: self.audit.request_id.clone(),
        });
        self.phase = Phase::Answered;
        self.body = Body::default();
        Step {
            intents,
            flow: Flow::Pause,
        }
    }

    fn audit_intent(&self, tenant: Option<String>) -> Intent {
        Intent::Audit {
            fragment: self.audit.fragment(),
            tenant,
        }
    }

    /// The usage record of this request, once: forwarded (when its response ended), refused
    /// by a quota, or refused by the gateway after admission.
    /// `now` in Unix seconds; `clock_now`, when the caller has the clock, for the record's
    /// timings (unmeasured without it).
    fn report(
        &mut self,
        now: u64,
        clock_now: Option<SystemTime>,
        outcome: Ended,
    ) -> Option<Intent> {
        let forwarded = matches!(self.phase, Phase::Forwarded);
        let quota = self.quota.as_mut()?;
        let due = match outcome {
            Ended::Forwarded => forwarded,
            Ended::RefusedByQuota => true,
            Ended::RefusedByGateway => quota.admitted && !forwarded,
        };
        if quota.reported || !due {
            return None;
        }
        quota.reported = true;
        let (usage, adjustments) = match outcome {
            Ended::RefusedByQuota => (None, Vec::new()),
            Ended::RefusedByGateway => (
                None,
                quota::settle(
                    &quota.reservations,
                    Ending::RefusedByGateway,
                    quota.context.prices,
                ),
            ),
            Ended::Forwarded => {
                let usage = quota.usage.take().and_then(UsageParser::finish);
                (
                    usage,
                    quota::settle(
                        &quota.reservations,
                        Ending::Forwarded(usage),
                        quota.context.prices,
                    ),
                )
            }
        };
        let admitted_at = if quota.admitted_at == 0 {
            now
        } else {
            quota.admitted_at
        };
        let since_start = |at: SystemTime| {
            self.started
                .and_then(|started| at.duration_since(started).ok())
                .map_or(0, |d| {
                    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
                })
        };
        let timing = quota::Timing {
            duration_us: clock_now.map_or(0, since_start),
            time_to_first_output_us: quota.first_output.map_or(0, since_start),
            status: quota.status,
        };
        Some(Intent::Report(quota::record(
            &quota.context,
            admitted_at,
            usage,
            adjustments,
            outcome,
            timing,
        )))
    }
}

/// The request context quota descriptors are built from; the model is the primary model's
/// key, so that every spelling of a model is one counter.
fn quota_context(
    gateway: &Gateway,
    identity: Option<&Identity>,
    route: &Route,
    models: &Models,
) -> quota::Context {
    quota::Context {
        tenant: identity.map(|i| i.tenant.clone()),
        subject: identity.map(|i| i.subject.clone()),
        tier: identity.and_then(|i| i.tier.clone()),
        issuer: identity.map(|i| i.issuer.clone()),
        service: gateway.service_name(route).to_string(),
        operation: route.operation.name.to_string(),
        model: models.primary().map(model::key),
        prices: None,
    }
}

#[cfg(test)]
mod tests;
