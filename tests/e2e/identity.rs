//! Identity through real Envoy: JWTs of every algorithm family verified by the filter with
//! keys that xds-server fetched from an identity provider's JWKS, every bad token refused the
//! same way, key rotation without restarts, two issuers, per-tenant model access, spoofed
//! identity headers dropped, and one audit line per decision.

use std::time::{Duration as StdDuration, Instant};

use gateway_e2e::{Stack, StackOptions, TestIdp};
use jwt_simple::prelude::*;
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

use crate::common::{http, post, start, wait_for_audit};

const AUDIENCE: &str = "bedrock-gateway";
const HS_SECRET: &str = "a-development-secret-of-at-least-32-bytes";
const CONVERSE_BODY: &str = r#"{"messages":[{"role":"user","content":[{"text":"hello"}]}]}"#;

/// The corporate IdP's signing keys (one per algorithm family).
struct CorpKeys {
    rsa: RS256KeyPair,
    es256: ES256KeyPair,
    es384: ES384KeyPair,
    ed: Ed25519KeyPair,
}

impl CorpKeys {
    fn new() -> Self {
        Self {
            rsa: RS256KeyPair::from_pem(include_str!(
                "../../filter/src/core/auth/testdata/rsa-2048.pem"
            ))
            .unwrap()
            .with_key_id("rsa-1"),
            es256: ES256KeyPair::generate().with_key_id("p256-1"),
            es384: ES384KeyPair::generate().with_key_id("p384-1"),
            ed: Ed25519KeyPair::generate().with_key_id("ed-1"),
        }
    }

    fn jwks(&self) -> Vec<Value> {
        [
            self.rsa.public_key().to_jwk(),
            self.es256.public_key().to_jwk(),
            self.es384.public_key().to_jwk(),
            self.ed.public_key().to_jwk(),
        ]
        .iter()
        .map(|jwk| without_alg(serde_json::from_str(jwk).unwrap()))
        .collect()
    }
}

/// An RSA JWK usually names no `alg`: one key then serves RS* and PS*.
fn without_alg(mut jwk: Value) -> Value {
    if jwk["kty"] == "RSA" {
        jwk.as_object_mut().unwrap().remove("alg");
    }
    jwk
}

fn claims(idp: &TestIdp, tenant: &str) -> JWTClaims<Value> {
    Claims::with_custom_claims(
        json!({"custom:tenant": tenant, "groups": ["dev"]}),
        Duration::from_mins(10),
    )
    .with_issuer(idp.issuer())
    .with_audience(AUDIENCE)
    .with_subject("alice@example.com")
}

fn issuer_yaml(idp: &TestIdp, name: &str, extra: &str) -> Yaml {
    serde_norway::from_str(&format!(
        r#"
name: {name}
issuer: {issuer}
audiences: [{AUDIENCE}]
jwks_uri: {jwks}
jwks_refresh_seconds: 3
jwks_min_refresh_seconds: 1
{extra}
"#,
        issuer = idp.issuer(),
        jwks = idp.jwks_uri(),
    ))
    .unwrap()
}

struct Setup {
    stack: Stack,
    corp: TestIdp,
    partner: TestIdp,
    keys: CorpKeys,
    partner_key: ES256KeyPair,
}

fn setup() -> Setup {
    setup_with(StackOptions::default().envoy_concurrency)
}

/// The stack of `setup` with `concurrency` Envoy workers.
fn setup_with(concurrency: u32) -> Setup {
    let corp = TestIdp::start().unwrap();
    let partner = TestIdp::start().unwrap();
    let keys = CorpKeys::new();
    corp.publish(keys.jwks());
    let partner_key = ES256KeyPair::generate().with_key_id("partner-1");
    partner.publish(vec![
        serde_json::from_str(&partner_key.public_key().to_jwk()).unwrap(),
    ]);
    let issuers = vec![
        issuer_yaml(&corp, "corp", "claims: {tenant: \"custom:tenant\", role: groups}\nrequired_claims: [\"custom:tenant\"]\ntenants: [\"team-*\"]\nroles: [dev, kb-readers]"),
        issuer_yaml(&partner, "partner", "claims: {tenant: org.id, subject: email}\nalgorithms: [ES256]\ntenants: [\"partner-*\"]"),
        serde_norway::from_str(&format!(
            "name: dev\nissuer: local-dev\naudiences: [{AUDIENCE}]\nalgorithms: [HS256]\nhs256_secret_env: GATEWAY_TEST_HS_SECRET\nclaims: {{tenant: \"custom:tenant\"}}\ntenants: [team-a]"
        ))
        .unwrap(),
    ];
    let access: Yaml = serde_norway::from_str(
        r#"
tenants:
  team-a: [{models: ["anthropic.*"]}]
  partner-x: [{services: [bedrock-runtime], operations: [Converse], models: ["*"]}]
roles:
  kb-readers: [{services: [bedrock-agent-runtime], operations: [Retrieve]}]
  admin: [{services: ["*"]}]
"#,
    )
    .unwrap();
    let stack = start(StackOptions {
        configure: Box::new(move |c| {
            c["auth"]["mode"] = "jwt".into();
            c["auth"]["issuers"] = Yaml::Sequence(issuers.clone());
            c["auth"]["access"] = access.clone();
            c["auth"]["keys_refresh_seconds"] = 1.into();
            c["auth"]["unknown_kid_refresh_seconds"] = 2.into();
        }),
        xds_env: vec![("GATEWAY_TEST_HS_SECRET".into(), HS_SECRET.into())],
        envoy_concurrency: concurrency,
        ..StackOptions::default()
    });
    Setup {
        stack,
        corp,
        partner,
        keys,
        partner_key,
    }
}

async fn converse(
    stack: &Stack,
    model: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    headers.extend_from_slice(extra);
    post(
        stack,
        &format!("/model/{model}/converse"),
        &headers,
        CONVERSE_BODY,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_every_algorithm_family_are_accepted() {
    let s = setup();
    let c = || claims(&s.corp, "team-a");
    let pem = include_str!("../../filter/src/core/auth/testdata/rsa-2048.pem");
    let tokens = [
        ("RS256", s.keys.rsa.sign(c()).unwrap()),
        (
            "RS512",
            RS512KeyPair::from_pem(pem)
                .unwrap()
                .with_key_id("rsa-1")
                .sign(c())
                .unwrap(),
        ),
        (
            "PS256",
            PS256KeyPair::from_pem(pem)
                .unwrap()
                .with_key_id("rsa-1")
                .sign(c())
                .unwrap(),
        ),
        ("ES256", s.keys.es256.sign(c()).unwrap()),
        ("ES384", s.keys.es384.sign(c()).unwrap()),
        ("EdDSA", s.keys.ed.sign(c()).unwrap()),
        (
            "HS256 (development issuer)",
            HS256Key::from_bytes(HS_SECRET.as_bytes())
                .authenticate(
                    Claims::with_custom_claims(
                        json!({"custom:tenant": "team-a"}),
                        Duration::from_mins(5),
                    )
                    .with_issuer("local-dev")
                    .with_audience(AUDIENCE),
                )
                .unwrap(),
        ),
    ];
    for (alg, token) in tokens {
        let (status, _, body) = converse(&s.stack, "anthropic.claude-3-haiku", &token, &[]).await;
        assert_eq!(status, 200, "{alg}: {body}");
    }
    // The token never reaches Bedrock.
    for request in s.stack.emulator_requests().unwrap() {
        assert!(
            request.headers.iter().all(|(_, v)| !v.contains("eyJ")),
            "{request:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_alike() {
    let s = setup();
    let good = s.keys.es256.sign(claims(&s.corp, "team-a")).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |v: &str| Base64UrlSafeNoPadding::encode_to_string(v).unwrap();
    let mut expired = claims(&s.corp, "team-a");
    expired.expires_at = Some(Clock::now_since_epoch() - Duration::from_mins(10));
    let mut future = claims(&s.corp, "team-a");
    future.invalid_before = Some(Clock::now_since_epoch() + Duration::from_mins(10));
    let rsa_n = s.keys.rsa.public_key().to_components().n;
    let cases = [
        (
            "alg none",
            format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        (
            "alg none with a signature",
            format!("{}.{}.AAAA", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        (
            "HS256 signed with the RSA public key",
            HS256Key::from_bytes(&rsa_n)
                .with_key_id("rsa-1")
                .authenticate(claims(&s.corp, "team-a"))
                .unwrap(),
        ),
        (
            "unknown kid",
            ES256KeyPair::generate()
                .with_key_id("nobody-knows-me")
                .sign(claims(&s.corp, "team-a"))
                .unwrap(),
        ),
        (
            "bad base64 segment",
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
        ),
        (
            "wrong signature",
            format!(
                "{}.{}.{}",
                parts[0],
                parts[1],
                s.keys
                    .es256
                    .sign(claims(&s.corp, "team-b"))
                    .unwrap()
                    .split('.')
                    .nth(2)
                    .unwrap()
            ),
        ),
        ("expired", s.keys.es256.sign(expired).unwrap()),
        ("not yet valid", s.keys.es256.sign(future).unwrap()),
        (
            "wrong audience",
            s.keys
                .es256
                .sign(claims(&s.corp, "team-a").with_audience("someone-else"))
                .unwrap(),
        ),
        ("not a JWT", "hello".to_string()),
    ];
    let refused = cases.len();
    for (case, token) in cases {
        let response = crate::common::http()
            .post(format!(
                "{}/model/anthropic.claude-3-haiku/converse",
                s.stack.gateway_url()
            ))
            .header("authorization", format!("Bearer {token}"))
            .body(CONVERSE_BODY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{case}");
        let headers = response.headers().clone();
        assert_eq!(
            headers["x-amzn-errortype"], "UnrecognizedClientException",
            "{case}"
        );
        assert_eq!(
            headers["www-authenticate"], r#"Bearer realm="bedrock-gateway", error="invalid_token""#,
            "{case}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"message": "The security token included in the request is invalid."}),
            "{case}"
        );
    }
    let (status, error_type, _) = post(&s.stack, "/model/m/converse", &[], CONVERSE_BODY).await;
    assert_eq!(
        (status, error_type.as_deref()),
        (401, Some("MissingAuthenticationTokenException"))
    );
    assert!(
        s.stack.emulator_requests().unwrap().is_empty(),
        "a refused request reached Bedrock"
    );

    let audit = wait_for_audit(&s.stack, refused + 1);
    let reasons: Vec<&str> = audit
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    for expected in [
        "algorithm_not_allowed",
        "unknown_key",
        "malformed_token",
        "bad_signature",
        "token_expired",
        "token_not_yet_valid",
        "wrong_audience",
        "missing_token",
    ] {
        assert!(reasons.contains(&expected), "no {expected} in {reasons:?}");
    }
    assert!(
        audit
            .iter()
            .all(|l| l["decision"] == "deny" && l["status"] == 401)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_without_restarting_anything() {
    let s = setup();
    let old = s.keys.ed.sign(claims(&s.corp, "team-a")).unwrap();
    assert_eq!(
        converse(&s.stack, "anthropic.claude-3-haiku", &old, &[])
            .await
            .0,
        200
    );

    // A new key appears at the IdP: a token signed with it works at once, before the next
    // scheduled refresh (every 3 s): its unknown kid makes xds-server fetch the JWKS again,
    // which it may do once the last fetch is a second old.
    let hits = s.corp.jwks_hits();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while s.corp.jwks_hits() == hits {
        assert!(Instant::now() < deadline, "no scheduled JWKS fetch");
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let rotated = Ed25519KeyPair::generate().with_key_id("ed-2");
    let mut jwks = s.keys.jwks();
    jwks.push(serde_json::from_str(&rotated.public_key().to_jwk()).unwrap());
    s.corp.publish(jwks.clone());
    let new = rotated.sign(claims(&s.corp, "team-a")).unwrap();
    let (status, _, body) = converse(&s.stack, "anthropic.claude-3-haiku", &new, &[]).await;
    assert_eq!(status, 200, "{body}");

    // The old key is withdrawn: after the next scheduled refresh its tokens are refused, even
    // the one already verified and cached.
    jwks.retain(|k| k["kid"] != "ed-1");
    s.corp.publish(jwks);
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let (status, _, _) = converse(&s.stack, "anthropic.claude-3-haiku", &old, &[]).await;
        if status == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a withdrawn key still verifies tokens"
        );
        tokio::time::sleep(StdDuration::from_millis(250)).await;
    }
    assert_eq!(
        converse(&s.stack, "anthropic.claude-3-haiku", &new, &[])
            .await
            .0,
        200
    );
    // Unknown kids do not make the gateway hammer the IdP: at most one fetch a second for
    // them, besides the scheduled ones.
    let hits = s.corp.jwks_hits();
    let lookups = s
        .stack
        .xds_metric("identity_unknown_kid_requests_total")
        .unwrap();
    let started = Instant::now();
    for i in 0..20 {
        let stranger = Ed25519KeyPair::generate().with_key_id(&format!("random-{i}"));
        let token = stranger.sign(claims(&s.corp, "team-a")).unwrap();
        assert_eq!(
            converse(&s.stack, "anthropic.claude-3-haiku", &token, &[])
                .await
                .0,
            401
        );
    }
    // At most one fetch a second for unknown kids plus the scheduled one every 3 s, plus one
    // for a window that straddles a second boundary.
    let elapsed = started.elapsed().as_secs() as usize;
    let bound = hits + 2 + elapsed + elapsed / 3;
    assert!(
        s.corp.jwks_hits() <= bound,
        "20 unknown kids caused {} JWKS fetches in {elapsed} s",
        s.corp.jwks_hits() - hits
    );
    // Nor the control service.
    assert_lookups_bounded(&s.stack, lookups, elapsed, "20 unknown kids");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_tokens_cost_one_key_lookup_per_issuer_however_many_arrive() {
    let s = setup();
    // Keys are there (a first good request), then a flood: the same unknown kid again and
    // again, and fresh ones, all at once.
    let good = s.keys.es256.sign(claims(&s.corp, "team-a")).unwrap();
    assert_eq!(
        converse(&s.stack, "anthropic.claude-3-haiku", &good, &[])
            .await
            .0,
        200
    );
    let lookups = s
        .stack
        .xds_metric("identity_unknown_kid_requests_total")
        .unwrap();
    let started = Instant::now();
    let forger = Ed25519KeyPair::generate().with_key_id("forged");
    let mut tokens: Vec<String> = (0..100)
        .map(|_| forger.sign(claims(&s.corp, "team-a")).unwrap())
        .collect();
    tokens.extend((0..50).map(|i| {
        Ed25519KeyPair::generate()
            .with_key_id(&format!("fresh-{i}"))
            .sign(claims(&s.corp, "team-a"))
            .unwrap()
    }));
    let answers = futures::future::join_all(
        tokens
            .iter()
            .map(|token| converse(&s.stack, "anthropic.claude-3-haiku", token, &[])),
    )
    .await;
    assert!(
        answers.iter().all(|(status, _, _)| *status == 401),
        "{answers:?}"
    );
    let elapsed = started.elapsed().as_secs() as usize;
    assert_lookups_bounded(&s.stack, lookups, elapsed, "150 forged tokens");
    // Callers with good tokens are served meanwhile.
    assert_eq!(
        converse(&s.stack, "anthropic.claude-3-haiku", &good, &[])
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_asserts_only_its_own_tenants_and_roles() {
    let s = setup();
    // The partner IdP may not speak for team-a, nor the development issuer for platform.
    let partner_claims = Claims::with_custom_claims(
        json!({"org": {"id": "team-a"}, "email": "mallory@partner.example"}),
        Duration::from_mins(10),
    )
    .with_issuer(s.partner.issuer())
    .with_audience(AUDIENCE);
    let impostor = s.partner_key.sign(partner_claims).unwrap();
    let dev = HS256Key::from_bytes(HS_SECRET.as_bytes())
        .authenticate(
            Claims::with_custom_claims(
                json!({"custom:tenant": "platform"}),
                Duration::from_mins(5),
            )
            .with_issuer("local-dev")
            .with_audience(AUDIENCE),
        )
        .unwrap();
    for token in [&impostor, &dev] {
        let (status, error_type, body) =
            converse(&s.stack, "anthropic.claude-3-haiku", token, &[]).await;
        assert_eq!(
            (status, error_type.as_deref()),
            (401, Some("UnrecognizedClientException")),
            "{body}"
        );
    }
    // A corp token may claim roles, but only corp's: `admin` is ignored, so team-z (no
    // grants of its own) cannot list the foundation models.
    let mut admin = claims(&s.corp, "team-z");
    admin.custom["groups"] = json!(["admin"]);
    let admin = s.keys.es256.sign(admin).unwrap();
    let auth = format!("Bearer {admin}");
    let response = http()
        .get(format!("{}/foundation-models", s.stack.gateway_url()))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let audit = wait_for_audit(&s.stack, 3);
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|l| l["reason"] == "tenant_not_allowed")
        .collect();
    assert_eq!(refused.len(), 2, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_issuers_with_their_own_tenant_claims() {
    let s = setup();
    let partner_claims = Claims::with_custom_claims(
        json!({"org": {"id": "partner-x"}, "email": "bob@partner.example"}),
        Duration::from_mins(10),
    )
    .with_issuer(s.partner.issuer())
    .with_audience(AUDIENCE);
    let token = s.partner_key.sign(partner_claims).unwrap();
    let (status, _, body) = converse(&s.stack, "meta.llama3-8b", &token, &[]).await;
    assert_eq!(status, 200, "{body}");
    // The partner tenant may only Converse.
    let (status, error_type, _) = post(
        &s.stack,
        "/model/meta.llama3-8b/invoke",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        r#"{"prompt":"x"}"#,
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (403, Some("AccessDeniedException"))
    );
    // A corp token claiming the partner's issuer is not the partner's.
    let forged = s
        .keys
        .es256
        .sign(claims(&s.corp, "partner-x").with_issuer(s.partner.issuer()))
        .unwrap();
    assert_eq!(
        converse(&s.stack, "meta.llama3-8b", &forged, &[]).await.0,
        401
    );

    let audit = wait_for_audit(&s.stack, 3);
    let allowed = audit.iter().find(|l| l["decision"] == "allow").unwrap();
    assert_eq!(
        (
            allowed["issuer"].as_str(),
            allowed["tenant"].as_str(),
            allowed["subject"].as_str()
        ),
        (
            Some("partner"),
            Some("partner-x"),
            Some("bob@partner.example")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn model_access_per_tenant_and_role_and_no_spoofing() {
    let s = setup();
    let team_a = s.keys.es256.sign(claims(&s.corp, "team-a")).unwrap();
    let spoof = [
        ("x-bedrock-gateway-tenant", "root"),
        ("x-bedrock-gateway-subject", "admin"),
        ("x-bedrock-gateway-role", "admin"),
        ("x-bedrock-gateway-tier", "platinum"),
        ("x-bedrock-gateway-issuer", "corp"),
    ];
    let (status, _, body) = converse(&s.stack, "anthropic.claude-3-haiku", &team_a, &spoof).await;
    assert_eq!(status, 200, "{body}");
    let seen = s.stack.emulator_requests().unwrap();
    let request = seen.last().unwrap();
    for (name, _) in spoof {
        assert_eq!(request.header(name), None, "{name} reached Bedrock");
    }
    assert_eq!(
        request
            .header("authorization")
            .map(|a| a.starts_with("AWS4-HMAC-SHA256")),
        Some(true)
    );

    // Not an allowed model: 403 naming nothing.
    let (status, error_type, body) = converse(&s.stack, "meta.llama3-8b", &team_a, &spoof).await;
    assert_eq!(
        (status, error_type.as_deref()),
        (403, Some("AccessDeniedException")),
        "{body}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "You don't have access to the model with the specified model ID."})
    );
    // Cross-region profiles and ARNs of an allowed model are the allowed model.
    for model in [
        "us.anthropic.claude-3-haiku",
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fanthropic.claude-3-haiku",
    ] {
        assert_eq!(
            converse(&s.stack, model, &team_a, &[]).await.0,
            200,
            "{model}"
        );
    }
    // A tenant without an entry and without a default: nothing.
    let team_z = s.keys.es256.sign(claims(&s.corp, "team-z")).unwrap();
    assert_eq!(
        converse(&s.stack, "anthropic.claude-3-haiku", &team_z, &[])
            .await
            .0,
        403
    );
    // Its role grants Retrieve, though.
    let mut with_role = claims(&s.corp, "team-z");
    with_role.custom["groups"] = json!(["kb-readers"]);
    let kb_reader = s.keys.es256.sign(with_role).unwrap();
    let (status, _, body) = post(
        &s.stack,
        "/knowledgebases/KB1/retrieve",
        &[
            ("authorization", &format!("Bearer {kb_reader}")),
            ("content-type", "application/json"),
        ],
        r#"{"retrievalQuery":{"text":"q"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let audit = wait_for_audit(&s.stack, 6);
    let denied = audit
        .iter()
        .find(|l| l["reason"] == "model_not_allowed")
        .expect("a model_not_allowed line");
    assert_eq!(denied["model"], "meta.llama3-8b");
    let first = &audit[0];
    for field in [
        "time",
        "request_id",
        "tenant",
        "subject",
        "issuer",
        "service",
        "operation",
        "model",
        "decision",
        "reason",
        "status",
        "duration_ms",
    ] {
        assert!(
            first.get(field).is_some(),
            "audit line without {field}: {first}"
        );
    }
    assert_eq!(
        (
            first["tenant"].as_str(),
            first["operation"].as_str(),
            first["decision"].as_str(),
            first["status"].as_u64()
        ),
        (Some("team-a"), Some("Converse"), Some("allow"), Some(200))
    );
    assert!(
        !s.stack
            .audit_lines()
            .unwrap()
            .iter()
            .any(|l| l.to_string().contains("eyJ")),
        "a token in the audit log"
    );
}

/// Per Envoy worker (2), one key lookup, then none for unknown_kid_refresh_seconds (2 s)
/// after it was answered: `before` is the lookup count when the `elapsed` seconds began.
fn assert_lookups_bounded(stack: &Stack, before: u64, elapsed: usize, what: &str) {
    let asked = stack
        .xds_metric("identity_unknown_kid_requests_total")
        .unwrap()
        - before;
    assert!(
        asked as usize <= 2 * (1 + elapsed / 2 + 1),
        "{what} cost {asked} key lookups in {elapsed} s"
    );
}

/// A gauge of the gateway's Envoy (`wasmcustom.bedrock_gateway.NAME`).
fn filter_gauge(stack: &Stack, name: &str) -> Option<u64> {
    let stats = stack
        .envoy_admin_get(&format!("/stats?filter=bedrock_gateway.{name}$"))
        .ok()?;
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("wasmcustom.bedrock_gateway.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_filter_reports_its_vm_memory_and_cached_tokens() {
    let s = setup();
    // Seven tokens, each used once: each is verified and cached by one worker.
    for n in 0..7 {
        let token = s
            .keys
            .es256
            .sign(claims(&s.corp, "team-a").with_jwt_id(format!("gauge-{n}")))
            .unwrap();
        let (status, _, body) = converse(&s.stack, "anthropic.claude-3-haiku", &token, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while filter_gauge(&s.stack, "token_cache_entries") != Some(7) && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    assert_eq!(filter_gauge(&s.stack, "token_cache_entries"), Some(7));
    // Two workers and the main thread, each at least a few 64 KiB pages.
    let memory = filter_gauge(&s.stack, "vm_memory_bytes").unwrap();
    assert!(memory >= 3 * 2 * 65_536, "{memory}");
    assert_eq!(memory % 65_536, 0, "{memory}");
    // A configuration change replaces the root contexts: the old caches leave the gauge.
    let mut config = s.stack.config().unwrap();
    config["auth"]["cache_max_entries"] = 500.into();
    s.stack.write_config(&config).unwrap();
    let deadline = Instant::now() + StdDuration::from_secs(15);
    while filter_gauge(&s.stack, "token_cache_entries") != Some(0) && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    assert_eq!(filter_gauge(&s.stack, "token_cache_entries"), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_tokens_are_checked_by_xds_server_and_by_the_filter_without_it() {
    let s = setup();
    let checks = |verdict: &str| {
        s.stack
            .xds_metric(&format!("signature_checks_total{{verdict=\"{verdict}\"}}"))
            .unwrap()
    };
    let fresh = |n: u32| {
        [
            s.keys
                .rsa
                .sign(claims(&s.corp, "team-a").with_jwt_id(format!("rs-{n}"))),
            s.keys
                .es256
                .sign(claims(&s.corp, "team-a").with_jwt_id(format!("es-{n}"))),
            s.keys
                .ed
                .sign(claims(&s.corp, "team-a").with_jwt_id(format!("ed-{n}"))),
        ]
        .map(Result::unwrap)
    };
    let good = s.keys.es256.sign(claims(&s.corp, "team-a")).unwrap();
    let (signed, _) = good.rsplit_once('.').unwrap();
    let other = s.keys.es256.sign(claims(&s.corp, "team-b")).unwrap();
    let forged = format!("{signed}.{}", other.rsplit_once('.').unwrap().1);
    let model = "anthropic.claude-3-haiku";

    // Each fresh token's signature is checked once, by xds-server; a forged one is refused.
    for token in fresh(1) {
        assert_eq!(converse(&s.stack, model, &token, &[]).await.0, 200);
        assert_eq!(converse(&s.stack, model, &token, &[]).await.0, 200);
    }
    assert_eq!(converse(&s.stack, model, &forged, &[]).await.0, 401);
    let (valid, invalid) = (checks("valid"), checks("invalid"));
    assert!(
        (3..=6).contains(&valid),
        "one per token and worker at most: {valid}"
    );
    assert_eq!(invalid, 1);

    // `signature_checks: filter`: the filter checks them itself.
    let mut config = s.stack.config().unwrap();
    config["auth"]["signature_checks"] = "filter".into();
    s.stack.write_config(&config).unwrap();
    filter_config_applied(&s.stack, r#"\"signature_checks\":\"filter\""#, true).await;
    for token in fresh(2) {
        assert_eq!(converse(&s.stack, model, &token, &[]).await.0, 200);
    }
    assert_eq!(converse(&s.stack, model, &forged, &[]).await.0, 401);
    assert_eq!((checks("valid"), checks("invalid")), (valid, invalid));

    // Back to xds-server, which then goes away: the filter checks fresh tokens itself.
    config["auth"]["signature_checks"] = "xds-server".into();
    s.stack.write_config(&config).unwrap();
    filter_config_applied(&s.stack, r#"\"signature_checks\":\"filter\""#, false).await;
    assert_eq!(converse(&s.stack, model, &fresh(3)[0], &[]).await.0, 200);
    let mut stack = s.stack;
    stack.stop_xds();
    for token in fresh(4) {
        let (status, _, body) = converse(&stack, model, &token, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(converse(&stack, model, &forged, &[]).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_seen_once_do_not_push_a_token_in_use_out_of_the_cache() {
    // One worker, so every request meets the same cache, of four tokens.
    let s = setup_with(1);
    let mut config = s.stack.config().unwrap();
    config["auth"]["cache_max_entries"] = 4.into();
    s.stack.write_config(&config).unwrap();
    filter_config_applied(&s.stack, r#"\"cache_max_entries\":4,"#, true).await;
    let valid = || {
        s.stack
            .xds_metric("signature_checks_total{verdict=\"valid\"}")
            .unwrap()
    };
    let before = valid();
    let model = "anthropic.claude-3-haiku";
    let busy = s.keys.rsa.sign(claims(&s.corp, "team-a")).unwrap();
    // A busy caller between tokens that come once each, ten times the cache's size.
    for n in 0..40 {
        let (status, _, body) = converse(&s.stack, model, &busy, &[]).await;
        assert_eq!(status, 200, "{body}");
        let once = s
            .keys
            .es256
            .sign(claims(&s.corp, "team-a").with_jwt_id(format!("once-{n}")))
            .unwrap();
        assert_eq!(converse(&s.stack, model, &once, &[]).await.0, 200);
    }
    // Each of the 40 checked once, the busy token once: evicting the oldest entry regardless
    // would have checked it again every few requests.
    assert_eq!(valid() - before, 41);
    assert_eq!(filter_gauge(&s.stack, "token_cache_entries"), Some(4));
}

/// Waits until the filter configuration in Envoy's config dump has (or no longer has)
/// `needle`, then a moment for every worker to take it.
async fn filter_config_applied(stack: &Stack, needle: &str, present: bool) {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let dump = stack.envoy_admin_get("/config_dump").unwrap_or_default();
        if dump.contains(needle) == present {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not take the configuration"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    tokio::time::sleep(StdDuration::from_millis(500)).await;
}
