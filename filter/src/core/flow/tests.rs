//! The request flow driven by a fake host: every way a request takes through the gateway,
//! in milliseconds. The host's part is played by [`Host`]: it runs steps with a fixed clock,
//! records what each step asks for, and answers lookups and decisions as a test says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_common::proto::{IdentityKeys, IssuerKeys, SigningCredentials, VerificationKey};
use gateway_common::ratelimit::{Code, DescriptorStatus, RateLimitResponse};
use jwt_simple::prelude::*;
use serde_json::json;

use super::*;
use crate::core::headers::find;
use crate::core::testing::frame;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"a-flow-test-secret-of-at-least-32-bytes";
const ISSUER: &str = "https://idp.flow.test";
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const LLAMA: &str = "meta.llama3-8b-instruct-v1:0";

fn clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// The worker's state, as a host keeps it, and the steps it performed.
struct Host {
    gateway: Gateway,
    auth: Option<Authenticator>,
    credentials: CredentialCache,
    /// The worker's signature check stream is open.
    remote_checks: bool,
    /// The worker's quota allowances (decisions on the stream).
    allowances: Option<Allowances>,
}

impl Host {
    fn new(config: serde_json::Value) -> Self {
        let gateway = Gateway::from_json(config.to_string().as_bytes()).unwrap();
        let auth = match &gateway.config.authentication {
            gateway_common::filter_config::Authentication::Jwt(jwt) => {
                Some(Authenticator::new(jwt.clone()))
            }
            gateway_common::filter_config::Authentication::None => None,
        };
        let stream = gateway
            .config
            .quota
            .as_ref()
            .is_some_and(|q| q.transport == QuotaTransport::Stream);
        let mut host = Self {
            gateway,
            auth,
            credentials: CredentialCache::default(),
            remote_checks: false,
            allowances: stream.then(Allowances::default),
        };
        host.give_credentials();
        host
    }

    /// A worker with keys, `jwt` authentication and closed quotas, and a token of a tenant
    /// that may call any model.
    fn with_quotas() -> (Self, String) {
        let mut host = Self::new(config(jwt(), Some(quotas("closed"))));
        host.give_keys();
        (host, token("team-any"))
    }

    fn give_credentials(&mut self) {
        self.credentials
            .refreshed(
                SigningCredentials {
                    access_key_id: "AKIDFLOWTEST".into(),
                    secret_access_key: "flow-secret".into(),
                    session_token: String::new(),
                    expires_at_unix_seconds: 0,
                    refresh_after_seconds: 60,
                },
                NOW,
                60,
            )
            .unwrap();
    }

    fn give_keys(&mut self) {
        let keys = IdentityKeys {
            version: 1,
            issuers: vec![IssuerKeys {
                issuer: ISSUER.into(),
                keys: vec![VerificationKey {
                    kid: "k1".into(),
                    kty: "oct".into(),
                    k: SECRET.to_vec(),
                    ..Default::default()
                }],
            }],
            refresh_after_seconds: 60,
        };
        self.auth.as_mut().unwrap().set_keys(&keys);
    }

    fn step(&mut self, run: impl FnOnce(&mut Env) -> Step) -> Step {
        let mut env = Env::new(&self.gateway, self.auth.as_mut(), &self.credentials, &clock);
        env.remote_checks = self.remote_checks;
        env.allowances = self.allowances.as_mut();
        run(&mut env)
    }

    /// Sends the request's headers (`body`: whether a body follows).
    fn headers(&mut self, flow: &mut RequestFlow, headers: &[(&str, &str)], body: bool) -> Step {
        let headers = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        self.step(|env| flow.on_headers(env, headers, !body))
    }

    /// Sends the whole body in pieces of `piece` bytes.
    fn body(&mut self, flow: &mut RequestFlow, body: &[u8], piece: usize) -> Step {
        let mut last = Step::pause();
        let count = body.len().div_ceil(piece).max(1);
        for i in 1..=count {
            let total = (i * piece).min(body.len());
            last = self.step(|env| {
                flow.on_body(env, total, i == count, |from, len| {
                    Some(body[from..from + len].to_vec())
                })
            });
        }
        last
    }
}

/// Claims valid at [`NOW`] for ten minutes.
fn claims(tenant: &str) -> JWTClaims<serde_json::Value> {
    let mut claims = Claims::with_custom_claims(
        json!({"tenant": tenant}),
        jwt_simple::prelude::Duration::from_mins(10),
    )
    .with_issuer(ISSUER)
    .with_audience("gw")
    .with_subject("alice");
    claims.issued_at = Some(UnixTimeStamp::from_secs(NOW));
    claims.invalid_before = Some(UnixTimeStamp::from_secs(NOW));
    claims.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
    claims
}

fn signed_by(kid: &str, tenant: &str) -> String {
    HS256Key::from_bytes(SECRET)
        .with_key_id(kid)
        .authenticate(claims(tenant))
        .unwrap()
}

fn token(tenant: &str) -> String {
    signed_by("k1", tenant)
}

fn config(
    authentication: serde_json::Value,
    quota: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut config = json!({
        "region": "us-east-1",
        "services": [
            {"name": "bedrock-runtime", "host": "bedrock-runtime.us-east-1.amazonaws.com", "cluster": "rt"},
            {"name": "bedrock-agent-runtime", "host": "bedrock-agent-runtime.us-east-1.amazonaws.com", "cluster": "art"},
            {"name": "bedrock", "host": "bedrock.us-east-1.amazonaws.com", "cluster": "cp"}
        ],
        "authentication": authentication,
        "max_request_body_bytes": 1000
    });
    if let Some(quota) = quota {
        config["quota"] = quota;
    }
    config
}

fn none() -> serde_json::Value {
    json!({"mode": "none"})
}

fn jwt() -> serde_json::Value {
    json!({
        "mode": "jwt",
        "issuers": [{"name": "corp", "issuer": ISSUER, "audiences": ["gw"], "algorithms": ["HS256"]}],
        "access": {"tenants": {
            "team-a": [{"services": ["*"], "models": ["anthropic.*"]}],
            "team-any": [{"services": ["*"]}]
        }}
    })
}

fn quotas(failure_mode: &str) -> serde_json::Value {
    json!({
        "domain": "bedrock-gateway", "failure_mode": failure_mode,
        "request_descriptors": [["tenant"]],
        "token_descriptors": [{"keys": ["tenant"], "kind": "total"}],
        "default_max_output_tokens": 100, "chars_per_token": 4
    })
}

/// Request headers as a test writes them.
type Headers = Vec<(&'static str, String)>;

/// A POST to `path`, with a bearer token when one is given.
fn post(path: impl Into<String>, token: Option<&str>) -> Headers {
    let mut headers = vec![(":method", "POST".to_string()), (":path", path.into())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    headers
}

fn converse(model: &str, token: Option<&str>) -> Headers {
    let mut headers = post(format!("/model/{model}/converse"), token);
    headers.push(("content-type", "application/json".to_string()));
    headers.push(("x-request-id", "r-1".to_string()));
    headers
}

fn h<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

const BODY: &[u8] = br#"{"messages":[{"role":"user","content":[{"text":"hello there"}]}]}"#;

/// The reply a step sends, if any.
fn reply(step: &Step) -> Option<(u32, &'static str)> {
    step.intents.iter().find_map(|i| match i {
        Intent::Reply { reply, .. } => Some((reply.status, reply.reason)),
        _ => None,
    })
}

/// The headers a step writes to sign the request, if it does.
fn signed(step: &Step) -> Option<&HeaderList> {
    step.intents.iter().find_map(|i| match i {
        Intent::EditHeaders(edits) => Some(&edits.write),
        _ => None,
    })
}

fn audit(step: &Step) -> Option<serde_json::Value> {
    step.intents.iter().rev().find_map(|i| match i {
        Intent::Audit { fragment, .. } => {
            Some(serde_json::from_str(&format!("{{{fragment}}}")).unwrap())
        }
        _ => None,
    })
}

fn reports(step: &Step) -> Vec<&UsageRecord> {
    step.intents
        .iter()
        .filter_map(|i| match i {
            Intent::Report(record) => Some(record),
            _ => None,
        })
        .collect()
}

fn decision(code: Code) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: code as i32,
        statuses: vec![DescriptorStatus {
            code: code as i32,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        }],
        dynamic_metadata: None,
    }
}

#[test]
fn a_request_is_held_until_its_body_is_signed_and_then_let_go() {
    let mut host = Host::new(config(none(), None));
    let mut flow = RequestFlow::default();
    let step = host.headers(&mut flow, &h(&converse(HAIKU, None)), true);
    assert_eq!(step.flow, Flow::Pause);
    assert_eq!(audit(&step).unwrap()["decision"], "allow");
    assert!(signed(&step).is_none());
    let step = host.body(&mut flow, BODY, 7);
    assert_eq!(step.flow, Flow::Continue);
    let headers = signed(&step).expect("signed headers");
    let authorization =
        String::from_utf8(find(headers, "authorization").unwrap().to_vec()).unwrap();
    assert!(
        authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDFLOWTEST/20270115/us-east-1/bedrock/aws4_request"
        ),
        "{authorization}"
    );
    assert_eq!(
        find(headers, ":authority"),
        Some(&b"bedrock-runtime.us-east-1.amazonaws.com"[..])
    );
    assert!(flow.finished());
    // Later callbacks only let things go.
    assert_eq!(host.step(|env| flow.body_end(env)).flow, Flow::Continue);
}

#[test]
fn a_request_without_body_is_signed_at_its_headers() {
    let mut host = Host::new(config(none(), None));
    let mut flow = RequestFlow::default();
    let get = vec![
        (":method", "GET".to_string()),
        (":path", "/foundation-models".to_string()),
    ];
    let step = host.headers(&mut flow, &h(&get), false);
    assert_eq!(step.flow, Flow::Continue);
    assert!(signed(&step).is_some());
    assert_eq!(
        step.intents.len(),
        2,
        "the audit record, then the headers: {step:?}"
    );
}

#[test]
fn refusals_before_and_after_authentication() {
    let mut host = Host::new(config(jwt(), None));
    host.give_keys();
    let team_a = token("team-a");
    let cases: Vec<(Headers, (u32, &'static str))> = vec![
        // Before anything: a path that reads two ways, with or without a token.
        (
            post(format!("/model/{HAIKU}/../{LLAMA}/converse"), None),
            (400, "ambiguous_path"),
        ),
        // Configuration-dependent answers only once authenticated.
        (post("/nothing/routes/here", None), (401, "missing_token")),
        (
            post("/nothing/routes/here", Some(&team_a)),
            (400, "unknown_path"),
        ),
        (
            {
                let mut headers = post("/model/m/converse", Some("not.a.token"));
                headers.push(("aws-endpoint-prefix", "s3".into()));
                headers
            },
            (401, "malformed_token"),
        ),
        (converse(LLAMA, Some(&team_a)), (403, "model_not_allowed")),
        (
            post(format!("/model/{HAIKU}/a-future-operation"), Some(&team_a)),
            (403, "model_undetermined"),
        ),
        (
            {
                let mut headers = converse(HAIKU, Some(&team_a));
                headers.push(("content-length", "1001".into()));
                headers
            },
            (413, "body_too_large"),
        ),
    ];
    for (headers, expected) in cases {
        let mut flow = RequestFlow::default();
        let step = host.headers(&mut flow, &h(&headers), true);
        assert_eq!(reply(&step), Some(expected), "{headers:?}");
        assert_eq!(step.flow, Flow::Pause);
        assert_eq!(audit(&step).unwrap()["decision"], "deny");
        assert!(flow.finished());
    }
    // A chunked body over the limit, and a host that cannot read the body.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team_a))), true);
    let step = host.step(|env| flow.on_body(env, 1001, false, |_, _| panic!("not read")));
    assert_eq!(reply(&step), Some((413, "body_too_large")));
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team_a))), true);
    let step = host.step(|env| flow.on_body(env, 10, false, |_, _| None));
    assert_eq!(reply(&step), Some((500, "host_error")));
    let step = RequestFlow::default().not_configured(NOW);
    assert_eq!(reply(&step), Some((500, "not_configured")));
}

#[test]
fn unknown_keys_are_asked_for_then_the_request_is_decided_again() {
    let mut host = Host::new(config(jwt(), None));
    let team_a = token("team-a");
    // A fresh worker has no keys: ask, then decide without asking again.
    let mut flow = RequestFlow::default();
    let step = host.headers(&mut flow, &h(&converse(HAIKU, Some(&team_a))), false);
    assert_eq!(
        step.intents,
        [Intent::AskKeys {
            issuer: 0,
            kid: None
        }]
    );
    assert_eq!(step.flow, Flow::Pause);
    host.give_keys();
    let step = host.step(|env| flow.lookup_over(env));
    assert_eq!(audit(&step).unwrap()["tenant"], "team-a");
    assert!(signed(&step).is_some());
    // The lookup gives up, or cannot be asked: decided with what the worker has.
    let mut host = Host::new(config(jwt(), None));
    for give_up in [true, false] {
        let mut flow = RequestFlow::default();
        host.headers(&mut flow, &h(&converse(HAIKU, Some(&team_a))), false);
        let step = if give_up {
            host.step(|env| flow.lookup_over(env))
        } else {
            host.step(|env| flow.keys_unavailable(env))
        };
        assert_eq!(reply(&step), Some((503, "no_keys")));
    }
    // A key id the worker does not know is asked for once, then refused.
    let mut host = Host::new(config(jwt(), None));
    host.give_keys();
    let stranger = signed_by("k9", "team-a");
    let mut flow = RequestFlow::default();
    let step = host.headers(&mut flow, &h(&converse(HAIKU, Some(&stranger))), false);
    assert_eq!(
        step.intents,
        [Intent::AskKeys {
            issuer: 0,
            kid: Some("k9".into())
        }]
    );
    let step = host.step(|env| flow.lookup_over(env));
    assert_eq!(reply(&step), Some((401, "unknown_key")));
}

#[test]
fn models_named_in_the_body_are_decided_at_its_end() {
    let mut host = Host::new(config(jwt(), None));
    host.give_keys();
    let team_a = token("team-a");
    let headers = post("/async-invoke", Some(&team_a));
    let cases: [(String, Option<(u32, &str)>); 4] = [
        (json!({"modelId": format!("us.{HAIKU}")}).to_string(), None),
        (
            json!({"modelId": LLAMA}).to_string(),
            Some((403, "model_not_allowed")),
        ),
        (
            format!(r#"{{"modelId":"{HAIKU}","ModelId":"{LLAMA}"}}"#),
            Some((400, "ambiguous_body")),
        ),
        ("not json".to_string(), Some((400, "malformed_body"))),
    ];
    for (body, expected) in cases {
        let mut flow = RequestFlow::default();
        let step = host.headers(&mut flow, &h(&headers), true);
        assert_eq!(step.flow, Flow::Pause);
        assert_eq!(audit(&step).unwrap()["decision"], "pending");
        let step = host.body(&mut flow, body.as_bytes(), 5);
        assert_eq!(reply(&step), expected, "{body}");
        if expected.is_none() {
            let record = audit(&step).unwrap();
            assert_eq!(
                (record["model"].as_str(), record["model_key"].as_str()),
                (Some(format!("us.{HAIKU}").as_str()), Some(HAIKU))
            );
            assert!(signed(&step).is_some());
        }
    }
}

#[test]
fn credentials_are_waited_for_or_the_request_is_refused() {
    let mut host = Host::new(config(none(), None));
    host.credentials = CredentialCache::default();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, None)), true);
    let step = host.body(&mut flow, BODY, 100);
    assert_eq!(step.intents.last(), Some(&Intent::AskCredentials));
    assert_eq!(step.flow, Flow::Pause);
    host.give_credentials();
    let step = host.step(|env| flow.lookup_over(env));
    assert!(signed(&step).is_some());
    assert_eq!(step.flow, Flow::Continue);
    for unavailable in [true, false] {
        let mut host = Host::new(config(none(), None));
        host.credentials = CredentialCache::default();
        let mut flow = RequestFlow::default();
        host.headers(&mut flow, &h(&converse(HAIKU, None)), false);
        let step = if unavailable {
            host.step(|env| flow.credentials_unavailable(env))
        } else {
            host.step(|env| flow.lookup_over(env))
        };
        assert_eq!(reply(&step), Some((503, "no_credentials")));
    }
}

#[test]
fn quotas_admit_refuse_and_fail_as_configured() {
    let team = token("team-any");
    // Admitted on the stream.
    let mut host = Host::new(config(jwt(), Some(quotas("closed"))));
    host.give_keys();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    let step = host.body(&mut flow, BODY, 100);
    let Some(Intent::AskDecision {
        request,
        stream: true,
        allowances: true,
    }) = step.intents.last()
    else {
        panic!("{step:?}");
    };
    let asked = gateway_common::ratelimit::RateLimitRequest::decode(request.as_slice()).unwrap();
    assert_eq!(asked.descriptors.len(), 2);
    // No stream after all: the same request as a call.
    assert_eq!(
        flow.ask_decision_again().intents,
        [Intent::AskDecision {
            request: request.clone(),
            stream: false,
            allowances: false,
        }]
    );
    let step = host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    assert!(signed(&step).is_some());
    assert_eq!(step.flow, Flow::Continue);
    // A second answer is for nobody.
    assert_eq!(
        host.step(|env| flow.decision(env, Ok(decision(Code::Ok))))
            .flow,
        Flow::Pause
    );

    // Over a limit: 429, and a ledger record of the refusal.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    let step = host.step(|env| flow.decision(env, Ok(decision(Code::OverLimit))));
    assert_eq!(reply(&step), Some((429, "quota_exceeded")));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert!(records[0].refused && !records[0].refused_by_gateway);

    // No decision: closed refuses, open lets go without a reservation.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    let step = host.step(|env| flow.decision_not_asked(env, "overflow".into()));
    assert_eq!(
        step.intents[0],
        Intent::QuotaFailure {
            mode: FailureMode::Closed,
            error: "overflow".into()
        }
    );
    assert_eq!(reply(&step), Some((503, "quota_unavailable")));
    assert!(reports(&step).is_empty(), "not admitted: not in the ledger");
    let mut host = Host::new(config(jwt(), Some(quotas("open"))));
    host.give_keys();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    let step = host.step(|env| flow.decision(env, Err("timeout".into())));
    assert!(matches!(
        step.intents[0],
        Intent::QuotaFailure {
            mode: FailureMode::Open,
            ..
        }
    ));
    assert!(signed(&step).is_some());
    // Nothing was reserved: the tokens its response reports are charged when it ends, to
    // the window of its admission (no window named), so a budget counts what was spent while
    // the service was away; its request hit is not charged afterwards.
    let response_headers = vec![
        (":status".to_string(), b"200".to_vec()),
        ("content-type".to_string(), b"application/json".to_vec()),
    ];
    host.step(|env| flow.on_response_headers(env, 200, &response_headers, false));
    let body = br#"{"output":{},"usage":{"inputTokens":12,"outputTokens":5,"totalTokens":17}}"#;
    let step = host.step(|env| flow.on_response_body(env, body, true));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (12, 5));
    assert_eq!(
        records[0].adjustments.len(),
        1,
        "{:?}",
        records[0].adjustments
    );
    assert_eq!(records[0].adjustments[0].delta, 17);
    assert_eq!(records[0].adjustments[0].window, "");
    assert_eq!(
        records[0].adjustments[0].entries.len(),
        2,
        "tenant, then tokens"
    );

    // A failed-open response without usage charges nothing.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    host.step(|env| flow.decision(env, Err("timeout".into())));
    let step = host.step(|env| flow.on_log(env));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert!(records[0].adjustments.is_empty());
}

/// The decision a request asks for, decoded.
fn asked(step: &Step) -> Option<(gateway_common::ratelimit::RateLimitRequest, bool)> {
    step.intents.iter().find_map(|i| match i {
        Intent::AskDecision {
            request,
            allowances,
            ..
        } => Some((
            gateway_common::ratelimit::RateLimitRequest::decode(request.as_slice()).unwrap(),
            *allowances,
        )),
        _ => None,
    })
}

/// An allowance of `units` on the descriptor of `entries`, in window `minute/60`.
fn allowance(
    entries: &[gateway_common::ratelimit::Entry],
    units: u64,
) -> gateway_common::proto::Allowance {
    gateway_common::proto::Allowance {
        entries: entries
            .iter()
            .map(|e| gateway_common::proto::DescriptorEntry {
                key: e.key.clone(),
                value: e.value.clone(),
            })
            .collect(),
        uncounted: false,
        units,
        window: "minute/60".into(),
        valid_for_ms: 1000,
    }
}

#[test]
fn allowances_admit_requests_in_the_worker_and_settle_to_their_window() {
    let (mut host, team) = Host::with_quotas();
    let now_ms = NOW * 1000;
    // The first request asks the service, and for allowances; a second one meanwhile asks
    // without (one ask per set of descriptors in flight).
    let mut first = RequestFlow::default();
    host.headers(&mut first, &h(&converse(HAIKU, Some(&team))), true);
    let (request, asks) = asked(&host.body(&mut first, BODY, 100)).unwrap();
    assert!(asks);
    let mut second = RequestFlow::default();
    host.headers(&mut second, &h(&converse(HAIKU, Some(&team))), true);
    let (_, asks) = asked(&host.body(&mut second, BODY, 100)).unwrap();
    assert!(!asks);
    // The service grants 3 requests and 3 requests' tokens.
    let reserved = request.descriptors[1].hits_addend.unwrap().value;
    let allowances = host.allowances.as_mut().unwrap();
    let returned = allowances.grant(
        &[
            allowance(&request.descriptors[0].entries, 3),
            allowance(&request.descriptors[1].entries, 3 * reserved),
        ],
        now_ms,
    );
    assert!(returned.is_empty());
    // Three requests are admitted here: signed at once, no decision asked. The second leaves
    // less than half, so it asks for a refill that charges nothing; the third finds that
    // refill in flight and asks for none.
    for i in 0..3 {
        let mut flow = RequestFlow::default();
        host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
        let step = host.body(&mut flow, BODY, 100);
        assert!(asked(&step).is_none(), "{step:?}");
        assert!(signed(&step).is_some());
        assert_eq!(step.flow, Flow::Continue);
        let refill = step.intents.iter().find_map(|i| match i {
            Intent::RefillAllowances { request } => Some(
                gateway_common::ratelimit::RateLimitRequest::decode(request.as_slice()).unwrap(),
            ),
            _ => None,
        });
        match refill {
            None => assert_ne!(i, 1, "request {i}"),
            Some(refill) => {
                assert_eq!(i, 1);
                assert_eq!(refill.descriptors.len(), 2);
                assert!(
                    refill
                        .descriptors
                        .iter()
                        .all(|d| d.hits_addend.unwrap().value == 0)
                );
            }
        }
        if i == 0 {
            // Its settlement goes to the window of the allowance.
            let response_headers = vec![
                (":status".to_string(), b"200".to_vec()),
                ("content-type".to_string(), b"application/json".to_vec()),
            ];
            host.step(|env| flow.on_response_headers(env, 200, &response_headers, false));
            let body =
                br#"{"output":{},"usage":{"inputTokens":2,"outputTokens":1,"totalTokens":3}}"#;
            let records = host.step(|env| flow.on_response_body(env, body, true));
            let records = reports(&records);
            assert_eq!(records.len(), 1);
            let adjustment = &records[0].adjustments[0];
            assert_eq!(adjustment.window, "minute/60");
            assert_eq!(adjustment.delta, 3 - i64::try_from(reserved).unwrap());
        }
    }
    // Spent: the next request asks the service again.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    assert!(asked(&host.body(&mut flow, BODY, 100)).is_some());
    assert_eq!(host.allowances.as_ref().unwrap().admitted(), 3);
    // Another tenant's descriptors are not covered by these.
    let other = token("team-a");
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&other))), true);
    assert!(asked(&host.body(&mut flow, BODY, 100)).is_some());
}

#[test]
fn unary_decisions_use_no_allowances() {
    let mut quotas = quotas("closed");
    quotas["transport"] = "unary".into();
    let mut host = Host::new(config(jwt(), Some(quotas)));
    host.give_keys();
    assert!(host.allowances.is_none());
    let team = token("team-any");
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    let (_, asks) = asked(&host.body(&mut flow, BODY, 100)).unwrap();
    assert!(!asks);
}

#[test]
fn usage_is_read_from_the_response_and_reported_once() {
    let (mut host, team) = Host::with_quotas();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    host.body(&mut flow, BODY, 100);
    host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    assert!(flow.wants_response());
    let response_headers = vec![
        (":status".to_string(), b"200".to_vec()),
        ("content-type".to_string(), b"application/json".to_vec()),
    ];
    let step = host.step(|env| flow.on_response_headers(env, 200, &response_headers, false));
    assert!(step.intents.is_empty() && flow.reading_response());
    let body = br#"{"output":{},"usage":{"inputTokens":12,"outputTokens":5,"totalTokens":17}}"#;
    let step = host.step(|env| flow.on_response_body(env, body, true));
    let records = reports(&step);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (12, 5));
    // Reserved: ceil(chars/4) + 100 output; settled to 17.
    assert_eq!(records[0].adjustments.len(), 1);
    assert!(records[0].adjustments[0].delta < 0);
    assert_eq!(records[0].model, HAIKU);
    assert!(
        reports(&host.step(|env| flow.on_log(env))).is_empty(),
        "once"
    );
}

#[test]
fn a_request_refused_after_admission_gives_its_charges_back() {
    let (mut host, team) = Host::with_quotas();
    let mut headers = converse(HAIKU, Some(&team));
    headers.push(("x-amz-meta-note", "caf\u{e9}".into()));
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&headers), false);
    let step = host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    assert_eq!(reply(&step), Some((400, "unsignable_header")));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert!(records[0].refused_by_gateway);
    assert_eq!(
        records[0]
            .adjustments
            .iter()
            .map(|a| a.delta)
            .collect::<Vec<_>>(),
        [-1, -100],
        "the request's hit and its reservation (no body: 0 input + 100 output)"
    );
    // A host that cannot set the signed headers: the same.
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    let step = host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    assert!(signed(&step).is_some());
    let step = flow.headers_not_set(NOW);
    assert_eq!(reply(&step), Some((500, "host_error")));
    assert!(reports(&step)[0].refused_by_gateway);
}

#[test]
fn a_body_ending_with_trailers_and_a_response_without_body() {
    let (mut host, team) = Host::with_quotas();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    let step = host.step(|env| {
        flow.on_body(env, BODY.len(), false, |from, len| {
            Some(BODY[from..from + len].to_vec())
        })
    });
    assert_eq!(step.flow, Flow::Pause);
    // Trailers end the body.
    let step = host.step(|env| flow.body_end(env));
    assert!(matches!(
        step.intents.last(),
        Some(Intent::AskDecision { .. })
    ));
    host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    // Usage in the headers of a response that has no body (InvokeModel's counts).
    let response_headers = vec![
        (":status".to_string(), b"200".to_vec()),
        (
            "x-amzn-bedrock-input-token-count".to_string(),
            b"7".to_vec(),
        ),
        (
            "x-amzn-bedrock-output-token-count".to_string(),
            b"3".to_vec(),
        ),
    ];
    let step = host.step(|env| flow.on_response_headers(env, 200, &response_headers, true));
    let records = reports(&step);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (7, 3));
    assert!(reports(&host.step(|env| flow.on_log(env))).is_empty());
}

#[test]
fn a_response_that_never_ends_leaves_the_reservation_standing() {
    let (mut host, team) = Host::with_quotas();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), false);
    host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    let response_headers = vec![(":status".to_string(), b"200".to_vec())];
    host.step(|env| flow.on_response_headers(env, 200, &response_headers, false));
    host.step(|env| flow.on_response_body(env, b"{\"output\":", false));
    // The client went away: the log ends the request.
    let step = host.step(|env| flow.on_log(env));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert!(
        records[0].adjustments.is_empty(),
        "no usage known: the reservation stands"
    );
}

#[test]
fn a_streamed_response_is_let_through_and_settled_to_its_metadata() {
    let (mut host, team) = Host::with_quotas();
    let mut headers = converse(HAIKU, Some(&team));
    headers[1].1 = format!("/model/{HAIKU}/converse-stream");
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&headers), true);
    host.body(&mut flow, BODY, 64);
    let step = host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    assert!(signed(&step).is_some());
    let response_headers = vec![
        (":status".to_string(), b"200".to_vec()),
        (
            "content-type".to_string(),
            b"application/vnd.amazon.eventstream".to_vec(),
        ),
    ];
    host.step(|env| flow.on_response_headers(env, 200, &response_headers, false));
    let mut stream = frame("messageStart", r#"{"role":"assistant"}"#);
    stream.extend(frame(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
    ));
    stream.extend(frame(
        "metadata",
        r#"{"usage":{"inputTokens":9,"outputTokens":4,"totalTokens":13},"metrics":{"latencyMs":5}}"#,
    ));
    // Every piece passes at once (nothing is held back), frames split anywhere.
    for piece in stream.chunks(7) {
        let step = host.step(|env| flow.on_response_body(env, piece, false));
        assert_eq!(step.flow, Flow::Continue);
        assert!(reports(&step).is_empty(), "reported only at the end");
    }
    let step = host.step(|env| flow.on_response_body(env, &[], true));
    let records = reports(&step);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (9, 4));
    assert_eq!(
        records[0].operation, "ConverseStream",
        "the streaming operation is counted as itself"
    );
    assert!(reports(&host.step(|env| flow.on_log(env))).is_empty());
}

#[test]
fn a_failed_response_gives_its_token_reservation_back() {
    let (mut host, team) = Host::with_quotas();
    let mut flow = RequestFlow::default();
    host.headers(&mut flow, &h(&converse(HAIKU, Some(&team))), true);
    host.body(&mut flow, BODY, 100);
    host.step(|env| flow.decision(env, Ok(decision(Code::Ok))));
    let response_headers = vec![
        (":status".to_string(), b"400".to_vec()),
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "x-amzn-errortype".to_string(),
            b"ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/".to_vec(),
        ),
    ];
    host.step(|env| flow.on_response_headers(env, 400, &response_headers, false));
    let step = host
        .step(|env| flow.on_response_body(env, br#"{"message":"The model is not ready"}"#, true));
    let records = reports(&step);
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].input_tokens, records[0].output_tokens), (0, 0));
    assert!(!records[0].refused && !records[0].refused_by_gateway);
    // Reserved ceil(15 characters of string values ("user", "hello there") / 4) = 4 input
    // + 100 output tokens; a failed call used none of them: all given back.
    assert_eq!(
        records[0]
            .adjustments
            .iter()
            .map(|a| a.delta)
            .collect::<Vec<_>>(),
        [-104]
    );
}

#[test]
fn an_operation_the_gateway_does_not_know_is_forwarded_signed() {
    // Any Bedrock API, present or future: without a model policy to apply, it passes signed.
    let mut host = Host::new(config(none(), None));
    let mut flow = RequestFlow::default();
    let headers = vec![
        (":method", "POST".to_string()),
        (":path", format!("/model/{HAIKU}/a-future-operation")),
        ("content-type", "application/json".to_string()),
    ];
    let step = host.headers(&mut flow, &h(&headers), true);
    assert_eq!(step.flow, Flow::Pause);
    let record = audit(&step).unwrap();
    assert_eq!(
        (&record["decision"], &record["operation"]),
        (&json!("allow"), &json!("Unknown")),
        "{record}"
    );
    let step = host.body(&mut flow, br#"{"anything":[1,2,3]}"#, 8);
    let headers = signed(&step).expect("signed");
    assert_eq!(
        find(headers, ":authority"),
        Some(&b"bedrock-runtime.us-east-1.amazonaws.com"[..])
    );
    assert_eq!(step.flow, Flow::Continue);
}

/// A worker with an Ed25519 issuer whose signatures the control service checks, and a token
/// of it for a tenant that may call any model.
fn with_remote_checks() -> (Host, String) {
    let key = Ed25519KeyPair::generate().with_key_id("ed");
    let mut auth = jwt();
    auth["issuers"][0]["algorithms"] = json!(["EdDSA"]);
    let mut host = Host::new(config(auth, None));
    host.auth.as_mut().unwrap().set_keys(&IdentityKeys {
        version: 1,
        issuers: vec![IssuerKeys {
            issuer: ISSUER.into(),
            keys: vec![VerificationKey {
                kid: "ed".into(),
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: key.public_key().to_bytes(),
                ..Default::default()
            }],
        }],
        refresh_after_seconds: 60,
    });
    host.remote_checks = true;
    (host, key.sign(claims("team-any")).unwrap())
}

fn asked_signature(step: &Step) -> Option<&SignatureCheck> {
    step.intents.iter().find_map(|i| match i {
        Intent::CheckSignature(check) => Some(check),
        _ => None,
    })
}

#[test]
fn a_fresh_token_waits_for_its_signature_verdict_while_the_body_arrives() {
    for verdict in [Verdict::Valid, Verdict::Failed, Verdict::Unsupported] {
        let (mut host, token) = with_remote_checks();
        let mut flow = RequestFlow::default();
        let step = host.headers(&mut flow, &h(&converse(HAIKU, Some(&token))), true);
        assert_eq!(step.flow, Flow::Pause);
        assert_eq!(asked_signature(&step).unwrap().algorithm, "EdDSA");
        assert!(audit(&step).is_none(), "not decided yet");
        // The body is hashed meanwhile; the request still waits.
        let step = host.body(&mut flow, BODY, 7);
        assert_eq!((step.flow, signed(&step)), (Flow::Pause, None));
        let step = host.step(|env| flow.signature_checked(env, verdict));
        assert_eq!(step.flow, Flow::Continue, "{verdict:?}");
        assert_eq!(audit(&step).unwrap()["tenant"], "team-any");
        assert!(signed(&step).is_some());
        // The next request with the token is not asked about.
        let mut again = RequestFlow::default();
        let step = host.headers(&mut again, &h(&converse(HAIKU, Some(&token))), false);
        assert!(asked_signature(&step).is_none());
        assert!(signed(&step).is_some());
    }
}

#[test]
fn a_signature_the_control_service_refuses_is_refused() {
    for (verdict, status) in [(Verdict::Invalid, 401), (Verdict::Busy, 429)] {
        let (mut host, token) = with_remote_checks();
        let mut flow = RequestFlow::default();
        let step = host.headers(&mut flow, &h(&converse(HAIKU, Some(&token))), true);
        assert!(asked_signature(&step).is_some());
        let step = host.step(|env| flow.signature_checked(env, verdict));
        assert_eq!(reply(&step).map(|r| r.0), Some(status), "{verdict:?}");
        assert_eq!(audit(&step).unwrap()["decision"], "deny");
        // Body pieces after the refusal change nothing.
        let step = host.body(&mut flow, BODY, 100);
        assert!(signed(&step).is_none());
    }
}
