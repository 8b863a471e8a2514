//! The control port: plain HTTP/JSON for tests and operators. Health, the request log, the
//! prompt cache, temporary credentials in the container-credentials format, and counters.

use std::time::SystemTime;

use http::{Method, Request, StatusCode};
use serde_json::json;

use crate::state::State;

pub const HEALTH: &str = "/health";
pub const REQUESTS: &str = "/requests";
pub const CREDENTIALS: &str = "/credentials";
pub const STATS: &str = "/stats";
pub const CACHE: &str = "/cache";

/// A control response before it becomes HTTP: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn json(value: &impl serde::Serialize) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "application/json",
            body: serde_json::to_string(value).expect("control replies serialize"),
        }
    }

    fn text(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }
}

/// Answers `method path` on the control port.
pub fn reply(state: &State, method: &Method, path: &str, now: SystemTime) -> Reply {
    match (method, path) {
        (&Method::GET, HEALTH) => Reply::text(StatusCode::OK, "ok"),
        (&Method::GET, REQUESTS) => Reply::json(&state.records().snapshot()),
        (&Method::DELETE, REQUESTS) => {
            let mut records = state.records();
            let cleared = records.snapshot().len();
            records.clear();
            Reply::json(&json!({ "cleared": cleared }))
        }
        (&Method::DELETE, CACHE) => {
            let cleared = state.prompt_cache().clear();
            tracing::info!(prefixes = cleared, "prompt cache cleared");
            Reply::json(&json!({ "cleared": cleared }))
        }
        (&Method::GET, CREDENTIALS) => {
            let issued = state.issue_credentials(now);
            tracing::info!(
                access_key_id = %issued.access_key_id,
                expiration = %issued.expiration,
                "issued temporary credentials"
            );
            Reply::json(&issued)
        }
        (&Method::GET, STATS) => Reply::json(&json!({
            "requests": state.records().total(),
            "issued_credentials": state.credentials().issued_total(),
        })),
        (_, HEALTH | REQUESTS | CREDENTIALS | STATS | CACHE) => {
            Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => Reply::text(
            StatusCode::NOT_FOUND,
            "not found: try GET /health, GET|DELETE /requests, DELETE /cache, GET /credentials or \
             GET /stats",
        ),
    }
}

/// Answers a control request; the server turns the body into its response body type.
pub(crate) fn handle<B>(state: &State, request: &Request<B>) -> http::Response<String> {
    let reply = reply(
        state,
        request.method(),
        request.uri().path(),
        SystemTime::now(),
    );
    tracing::debug!(method = %request.method(), path = request.uri().path(), status = reply.status.as_u16(), "control request");
    let mut response = http::Response::new(reply.body);
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(reply.content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatorConfig;
    use crate::credentials::Lookup;
    use crate::records::RequestRecord;
    use std::time::Duration;

    fn state() -> State {
        State::new(EmulatorConfig {
            temp_credentials_ttl: Duration::from_secs(60),
            ..EmulatorConfig::new("us-east-1")
        })
        .unwrap()
    }

    fn json_of(reply: Reply) -> serde_json::Value {
        assert_eq!(reply.content_type, "application/json");
        serde_json::from_str(&reply.body).unwrap()
    }

    fn record() -> RequestRecord {
        RequestRecord {
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![],
            body_len: 0,
            body_sha256: String::new(),
            access_key_id: None,
            signature_valid: false,
            status: 403,
            error_code: None,
            usage: None,
        }
    }

    #[test]
    fn health_and_routing() {
        let state = state();
        let now = SystemTime::now();
        assert_eq!(
            reply(&state, &Method::GET, HEALTH, now),
            Reply::text(StatusCode::OK, "ok")
        );
        assert_eq!(
            reply(&state, &Method::POST, HEALTH, now).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            reply(&state, &Method::GET, "/nope", now).status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn requests_are_listed_and_cleared() {
        let state = state();
        let now = SystemTime::now();
        state.records().push(record());
        state.records().push(record());
        let listed: serde_json::Value =
            serde_json::from_str(&reply(&state, &Method::GET, REQUESTS, now).body).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2);
        assert_eq!(listed[0]["status"], 403);
        assert_eq!(
            json_of(reply(&state, &Method::DELETE, REQUESTS, now)),
            json!({"cleared": 2})
        );
        assert_eq!(
            json_of(reply(&state, &Method::GET, REQUESTS, now)),
            json!([])
        );
        assert_eq!(
            json_of(reply(&state, &Method::GET, STATS, now)),
            json!({"issued_credentials": 0, "requests": 2})
        );
    }

    #[test]
    fn the_prompt_cache_is_cleared_apart_from_the_requests() {
        use crate::prompt_cache::PrefixBuilder;
        let state = state();
        let now = SystemTime::now();
        let mut prefix = PrefixBuilder::default();
        prefix.content(&json!("system prompt"), 2);
        prefix.checkpoint();
        let checkpoints = prefix.finish().unwrap();
        state.prompt_cache().use_prefixes("m", &checkpoints);
        state.records().push(record());
        // Clearing the requests keeps the cache.
        assert_eq!(
            json_of(reply(&state, &Method::DELETE, REQUESTS, now)),
            json!({"cleared": 1})
        );
        assert_eq!(state.prompt_cache().len(), 1);
        assert_eq!(
            json_of(reply(&state, &Method::DELETE, CACHE, now)),
            json!({"cleared": 1})
        );
        assert!(state.prompt_cache().is_empty());
        assert_eq!(
            json_of(reply(&state, &Method::DELETE, CACHE, now)),
            json!({"cleared": 0})
        );
        assert_eq!(
            reply(&state, &Method::GET, CACHE, now).status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        // The next request with that prefix writes it again.
        assert_eq!(
            state.prompt_cache().use_prefixes("m", &checkpoints).write,
            2
        );
    }

    #[test]
    fn credentials_are_issued_fresh_and_accepted() {
        let state = state();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        let first: serde_json::Value =
            serde_json::from_str(&reply(&state, &Method::GET, CREDENTIALS, now).body).unwrap();
        let second: serde_json::Value =
            serde_json::from_str(&reply(&state, &Method::GET, CREDENTIALS, now).body).unwrap();
        assert_ne!(first["AccessKeyId"], second["AccessKeyId"]);
        assert_ne!(first["SecretAccessKey"], second["SecretAccessKey"]);
        assert_eq!(first["Expiration"], "2026-11-22T00:01:00Z");
        assert_eq!(first["RoleArn"], crate::credentials::ROLE_ARN);
        let akid = first["AccessKeyId"].as_str().unwrap();
        match state.credentials().lookup(akid, now) {
            Lookup::Valid {
                secret_access_key,
                session_token,
            } => {
                assert_eq!(secret_access_key.expose(), first["SecretAccessKey"]);
                assert_eq!(session_token.unwrap().expose(), first["Token"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            json_of(reply(&state, &Method::GET, STATS, now)),
            json!({"issued_credentials": 2, "requests": 0})
        );
    }
}
