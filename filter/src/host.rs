//! The only module that talks to Envoy. It reads the request into plain values, asks
//! `core::Gateway` what to do, and applies the answer. Every host call's failure becomes an
//! explicit reply: the filter never panics.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_common::names::{CONTROL_SERVICE, GET_SIGNING_CREDENTIALS};
use gateway_common::proto::{GetSigningCredentialsRequest, SigningCredentials};
use log::{debug, error, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::core::credentials::{CredentialCache, SigningIdentity};
use crate::core::errors::ErrorReply;
use crate::core::headers::{REQUEST_ID, find_str};
use crate::core::signing::{BodyHasher, EMPTY_SHA256};
use crate::core::{ForwardPlan, Gateway};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// How often the root context checks whether credentials need refreshing.
const TICK: Duration = Duration::from_secs(1);

type SharedCredentials = Rc<RefCell<CredentialCache>>;

#[derive(Default)]
struct Root {
    gateway: Option<Rc<Gateway>>,
    credentials: SharedCredentials,
    node_id: String,
}

impl Root {
    fn refresh_credentials_if_due(&mut self) {
        let Some(gateway) = &self.gateway else { return };
        let now = unix_now();
        if !self.credentials.borrow().refresh_due(now) {
            return;
        }
        let current = self
            .credentials
            .borrow()
            .usable(now)
            .map(|c| c.access_key_id.clone())
            .unwrap_or_default();
        match ask_for_credentials(gateway, &self.node_id, current) {
            Ok(_) => self.credentials.borrow_mut().refresh_started(),
            Err(e) => {
                warn!("cannot ask the control service for credentials: {e}");
                self.credentials.borrow_mut().failed(now);
            }
        }
    }
}

impl Context for Root {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let Some(gateway) = &self.gateway else { return };
        store_credentials(gateway, &self.credentials, status_code, response_size);
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
        match Gateway::from_json(&json) {
            Ok(gateway) => {
                info!(
                    "bedrock gateway configured: region {}, {} services",
                    gateway.config.region,
                    gateway.config.services.len()
                );
                self.gateway = Some(Rc::new(gateway));
            }
            Err(e) => {
                error!("{e}");
                return false;
            }
        }
        if let Ok(Some(id)) = hostcalls::get_property(vec!["node", "id"]) {
            self.node_id = String::from_utf8_lossy(&id).into_owned();
        }
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            warn!("cannot set the tick period: {e:?}");
        }
        self.refresh_credentials_if_due();
        true
    }

    fn on_tick(&mut self) {
        self.refresh_credentials_if_due();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request {
            gateway: self.gateway.clone(),
            credentials: Rc::clone(&self.credentials),
            node_id: self.node_id.clone(),
            plan: None,
            hasher: None,
            awaiting_credentials: None,
            request_id: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's state between Envoy's callbacks.
struct Request {
    gateway: Option<Rc<Gateway>>,
    credentials: SharedCredentials,
    node_id: String,
    plan: Option<ForwardPlan>,
    /// Present while the body is being hashed.
    hasher: Option<BodyHasher>,
    /// The payload hash, while this request waits for its own credentials call.
    awaiting_credentials: Option<String>,
    request_id: Option<String>,
}

impl Request {
    fn reply(&self, reply: ErrorReply) -> Action {
        debug!("refused ({}): {}", reply.reason, reply.message);
        let body = reply.body();
        let headers = reply.headers(self.request_id.as_deref());
        if let Err(e) = hostcalls::send_http_response(reply.status, headers, Some(&body)) {
            error!("cannot send a local reply: {e:?}");
        }
        Action::Pause
    }

    /// The body is complete: sign with cached credentials, or fetch them first.
    fn finish(&mut self, payload_hash: String) -> Action {
        let Some(gateway) = self.gateway.clone() else {
            return self.reply(not_configured());
        };
        let now = unix_now();
        let cached = self.credentials.borrow().usable(now).cloned();
        if let Some(credentials) = cached {
            return self.sign_and_forward(&gateway, &payload_hash, &credentials);
        }
        match ask_for_credentials(&gateway, &self.node_id, String::new()) {
            Ok(_) => {
                self.awaiting_credentials = Some(payload_hash);
                Action::Pause
            }
            Err(e) => {
                warn!("cannot ask the control service for credentials: {e}");
                self.reply(ErrorReply::no_credentials())
            }
        }
    }

    fn sign_and_forward(
        &mut self,
        gateway: &Gateway,
        payload_hash: &str,
        credentials: &SigningIdentity,
    ) -> Action {
        let Some(plan) = self.plan.take() else {
            return Action::Continue;
        };
        let headers = match gateway.sign(plan, payload_hash, credentials, system_now()) {
            Ok(headers) => headers,
            Err(reply) => return self.reply(reply),
        };
        let pairs: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        match hostcalls::set_map_bytes(MapType::HttpRequestHeaders, pairs) {
            Ok(()) => Action::Continue,
            Err(e) => {
                error!("cannot set the upstream headers: {e:?}");
                self.reply(internal_error())
            }
        }
    }
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, _token: u32, status_code: u32, response_size: usize) {
        let Some(payload_hash) = self.awaiting_credentials.take() else {
            return;
        };
        let Some(gateway) = self.gateway.clone() else {
            return;
        };
        store_credentials(&gateway, &self.credentials, status_code, response_size);
        let cached = self.credentials.borrow().usable(unix_now()).cloned();
        let action = match cached {
            Some(credentials) => self.sign_and_forward(&gateway, &payload_hash, &credentials),
            None => self.reply(ErrorReply::no_credentials()),
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
        let Some(gateway) = self.gateway.clone() else {
            return self.reply(not_configured());
        };
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(e) => {
                error!("cannot read the request headers: {e:?}");
                return self.reply(internal_error());
            }
        };
        self.request_id = find_str(&headers, REQUEST_ID).map(str::to_string);
        match gateway.plan(headers) {
            Err(reply) => self.reply(reply),
            Ok(plan) => {
                self.plan = Some(plan);
                if end_of_stream {
                    self.finish(EMPTY_SHA256.to_string())
                } else {
                    self.hasher = Some(BodyHasher::default());
                    Action::Pause
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(gateway), Some(hasher)) = (self.gateway.clone(), self.hasher.as_mut()) else {
            return Action::Continue;
        };
        let limit = gateway.config.max_request_body_bytes;
        if body_size as u64 > limit {
            self.hasher = None;
            return self.reply(ErrorReply::body_too_large(limit));
        }
        let start = hasher.consumed();
        if body_size > start {
            match hostcalls::get_buffer(BufferType::HttpRequestBody, start, body_size - start) {
                Ok(Some(piece)) => hasher.update(&piece),
                Ok(None) => {}
                Err(e) => {
                    error!("cannot read the request body: {e:?}");
                    self.hasher = None;
                    return self.reply(internal_error());
                }
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        match self.hasher.take() {
            Some(hasher) => self.finish(hasher.finish_hex()),
            None => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _count: usize) -> Action {
        match self.hasher.take() {
            Some(hasher) => self.finish(hasher.finish_hex()),
            None => Action::Continue,
        }
    }
}

fn ask_for_credentials(gateway: &Gateway, node_id: &str, current: String) -> Result<u32, String> {
    let request = GetSigningCredentialsRequest {
        node_id: node_id.to_string(),
        current_access_key_id: current,
    }
    .encode_to_vec();
    let control = &gateway.config.control;
    hostcalls::dispatch_grpc_call(
        &control.cluster,
        CONTROL_SERVICE,
        GET_SIGNING_CREDENTIALS,
        Vec::new(),
        Some(&request),
        Duration::from_millis(control.timeout_ms),
    )
    .map_err(|e| format!("{e:?}"))
}

/// Reads a control-service answer into the cache (or records the failure).
fn store_credentials(gateway: &Gateway, cache: &SharedCredentials, status_code: u32, size: usize) {
    let now = unix_now();
    let answer = if status_code == 0 {
        hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .map_err(|e| format!("{e:?}"))
            .and_then(|body| {
                SigningCredentials::decode(body.unwrap_or_default().as_slice())
                    .map_err(|e| e.to_string())
            })
    } else {
        let detail = hostcalls::get_grpc_status()
            .ok()
            .and_then(|(_, message)| message)
            .unwrap_or_default();
        Err(format!("gRPC status {status_code} {detail}"))
    };
    let mut cache = cache.borrow_mut();
    match answer {
        Ok(message) => {
            let key = message.access_key_id.clone();
            match cache.refreshed(
                message,
                now,
                gateway.config.control.credentials_refresh_seconds,
            ) {
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
