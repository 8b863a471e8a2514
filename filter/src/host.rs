//! The only module that talks to Envoy. It reads the request into plain values, asks `core`
//! what to do, and applies the answer. Every host call's failure becomes an explicit reply:
//! the filter never panics.
//!
//! A request is held at its headers until it is decided (routed, authenticated, authorized)
//! and its body is hashed; then it is signed and let go. Body pieces that arrive while a
//! decision waits for the control service are hashed meanwhile.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_common::filter_config::Authentication;
use gateway_common::names::{
    AUDIT_PROPERTY, CONTROL_SERVICE, GET_IDENTITY_KEYS, GET_SIGNING_CREDENTIALS, TENANT_PROPERTY,
};
use gateway_common::proto::{
    GetIdentityKeysRequest, GetSigningCredentialsRequest, IdentityKeys, SigningCredentials,
};
use log::{debug, error, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::core::audit::AuditRecord;
use crate::core::auth::{Authenticator, Outcome};
use crate::core::credentials::CredentialCache;
use crate::core::errors::ErrorReply;
use crate::core::headers::{HeaderList, REQUEST_ID, find_str};
use crate::core::schedule::Schedule;
use crate::core::signing::{BodyHasher, EMPTY_SHA256};
use crate::core::{ForwardPlan, Gateway, Route};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// How often the root context checks whether credentials or keys need refreshing.
const TICK: Duration = Duration::from_secs(1);

/// What one plugin configuration's contexts share (per Envoy worker).
struct Shared {
    gateway: Gateway,
    /// Present in `jwt` mode.
    auth: Option<RefCell<Authenticator>>,
    keys_schedule: RefCell<Schedule>,
    credentials: RefCell<CredentialCache>,
    node_id: String,
}

impl Shared {
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

    fn call(&self, method: &str, message: &[u8]) -> Result<u32, String> {
        let control = &self.gateway.config.control;
        hostcalls::dispatch_grpc_call(
            &control.cluster,
            CONTROL_SERVICE,
            method,
            Vec::new(),
            Some(message),
            Duration::from_millis(control.timeout_ms),
        )
        .map_err(|e| format!("{e:?}"))
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
}

/// Which control-service call a token belongs to.
enum Call {
    Credentials,
    Keys,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
    calls: HashMap<u32, Call>,
}

impl Root {
    fn refresh_if_due(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let now = unix_now();
        if shared.credentials.borrow().refresh_due(now) {
            match shared.ask_for_credentials(now) {
                Ok(token) => {
                    shared.credentials.borrow_mut().refresh_started();
                    self.calls.insert(token, Call::Credentials);
                }
                Err(e) => {
                    warn!("cannot ask the control service for credentials: {e}");
                    shared.credentials.borrow_mut().failed(now);
                }
            }
        }
        if shared.auth.is_some() && shared.keys_schedule.borrow().due(now) {
            match shared.ask_for_keys(None) {
                Ok(token) => {
                    shared.keys_schedule.borrow_mut().started();
                    self.calls.insert(token, Call::Keys);
                }
                Err(e) => {
                    warn!("cannot ask the control service for keys: {e}");
                    shared.keys_schedule.borrow_mut().failed(now);
                }
            }
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        let Some(shared) = &self.shared else { return };
        match self.calls.remove(&token) {
            Some(Call::Credentials) => shared.store_credentials(status_code, response_size),
            Some(Call::Keys) => shared.store_keys(status_code, response_size),
            None => {}
        }
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
            "bedrock gateway configured: region {}, {} services, authentication {}",
            gateway.config.region,
            gateway.config.services.len(),
            match gateway.config.authentication {
                Authentication::None => "none",
                Authentication::Jwt(_) => "jwt",
            }
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
            node_id,
        }));
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            warn!("cannot set the tick period: {e:?}");
        }
        self.refresh_if_due();
        true
    }

    fn on_tick(&mut self) {
        self.refresh_if_due();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            shared: self.shared.clone(),
            phase: Phase::Deciding,
            pending: None,
            route: None,
            plan: None,
            hasher: None,
            body_hash: None,
            audit: AuditRecord::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Headers are being decided (routing, authentication, authorization).
    Deciding,
    /// The decision waits for keys from the control service.
    AwaitingKeys,
    /// Allowed: waiting for the end of the body to sign.
    Forwarding,
    /// Signing waits for credentials from the control service.
    AwaitingCredentials,
    /// Let go upstream, or answered by the gateway.
    Done,
}

/// One request's state between Envoy's callbacks.
struct Request {
    shared: Option<Rc<Shared>>,
    phase: Phase,
    /// The request headers, kept while the decision waits for keys.
    pending: Option<HeaderList>,
    route: Option<Route>,
    plan: Option<ForwardPlan>,
    /// Present while the body is being hashed.
    hasher: Option<BodyHasher>,
    /// Set once the whole body has been hashed.
    body_hash: Option<String>,
    audit: AuditRecord,
}

impl Request {
    /// Answers the request with a gateway error and records the refusal.
    fn refuse(&mut self, reply: ErrorReply) -> Action {
        debug!("refused ({}): {}", reply.reason, reply.message);
        self.audit.deny(reply.reason);
        self.publish_audit(None);
        self.phase = Phase::Done;
        self.hasher = None;
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

    /// Authenticates and authorizes the held request. `may_refresh`: an unknown key may be
    /// looked up (once).
    fn decide(
        &mut self,
        shared: &Shared,
        headers: HeaderList,
        route: Route,
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
                        let unknown = (!kid.is_empty()).then_some((issuer, kid));
                        return match shared.ask_for_keys(unknown) {
                            Ok(_) => {
                                self.pending = Some(headers);
                                self.route = Some(route);
                                self.phase = Phase::AwaitingKeys;
                                Action::Pause
                            }
                            Err(e) => {
                                warn!("cannot ask the control service for keys: {e}");
                                self.decide(shared, headers, route, false)
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
            if let Err(reply) = shared.gateway.authorize(identity, &route) {
                return self.refuse(reply);
            }
        }
        self.audit.allow();
        self.publish_audit(identity.as_ref().map(|i| i.tenant.as_str()));
        self.plan = Some(shared.gateway.forward(headers, route, identity.as_deref()));
        self.phase = Phase::Forwarding;
        self.proceed(shared)
    }

    /// Signs once the body is complete; until then keeps holding the request.
    fn proceed(&mut self, shared: &Shared) -> Action {
        let Some(payload_hash) = self.body_hash.clone() else {
            return Action::Pause;
        };
        let now = unix_now();
        let cached = shared.credentials.borrow().usable(now).cloned();
        let Some(credentials) = cached else {
            return match shared.ask_for_credentials(now) {
                Ok(_) => {
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
        let headers = match shared
            .gateway
            .sign(plan, &payload_hash, &credentials, system_now())
        {
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
            Phase::Deciding | Phase::AwaitingKeys | Phase::AwaitingCredentials => Action::Pause,
        }
    }
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let action = match self.phase {
            Phase::AwaitingKeys => {
                shared.store_keys(status_code, response_size);
                match (self.pending.take(), self.route.take()) {
                    (Some(headers), Some(route)) => self.decide(&shared, headers, route, false),
                    _ => self.refuse(internal_error()),
                }
            }
            Phase::AwaitingCredentials => {
                shared.store_credentials(status_code, response_size);
                if shared.credentials.borrow().usable(unix_now()).is_some() {
                    self.phase = Phase::Forwarding;
                    self.proceed(&shared)
                } else {
                    self.refuse(ErrorReply::no_credentials())
                }
            }
            _ => return,
        };
        if matches!(action, Action::Continue)
            && let Err(e) = hostcalls::resume_http_request()
        {
            error!("cannot resume the request: {e:?}");
        }
    }
}

impl HttpContext for Request {
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
        let route = match shared.gateway.route(&headers) {
            Ok(route) => route,
            Err(reply) => return self.refuse(reply),
        };
        self.audit.service = Some(shared.gateway.service_name(&route).to_string());
        self.audit.operation = Some(route.operation.name);
        self.audit.model = route.operation.model.clone();
        if end_of_stream {
            self.body_hash = Some(EMPTY_SHA256.to_string());
        } else {
            self.hasher = Some(BodyHasher::default());
        }
        self.decide(&shared, headers, route, true)
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
                Ok(Some(piece)) => hasher.update(&piece),
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
}

/// Decodes a gRPC answer of the control service.
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

fn system_now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or_else(|_| SystemTime::now())
}

fn unix_now() -> u64 {
    system_now()
        .duration_since(UNIX_EPOCH)
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
