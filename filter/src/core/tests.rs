use super::*;
use gateway_common::proto::SigningCredentials;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

fn gateway_with(authentication: serde_json::Value) -> Gateway {
    let json = serde_json::json!({
        "region": "us-west-2",
        "services": [
            {"name": "bedrock-runtime", "host": "bedrock-runtime.us-west-2.amazonaws.com", "cluster": "rt"},
            {"name": "bedrock-agent-runtime", "host": "bedrock-agent-runtime.us-west-2.amazonaws.com", "cluster": "art"}
        ],
        "authentication": authentication,
        "max_request_body_bytes": 100
    });
    Gateway::from_json(json.to_string().as_bytes()).unwrap()
}

fn gateway() -> Gateway {
    gateway_with(serde_json::json!({"mode": "none"}))
}

fn jwt_gateway() -> Gateway {
    gateway_with(serde_json::json!({
        "mode": "jwt",
        "issuers": [{
            "name": "corp", "issuer": "https://idp", "audiences": ["gw"], "algorithms": ["EdDSA"],
            "token_header": {"name": "x-corp-token"}
        }],
        "access": {"tenants": {"team-a": [{"models": ["anthropic.*"]}]}}
    }))
}

fn read_route(gw: &Gateway, headers: &HeaderList) -> Result<Route, ErrorReply> {
    let incoming = gw.read(headers)?;
    gw.route(incoming, headers)
}

fn models_of(route: &Route) -> Models {
    Models::of(&route.operation, Vec::new(), false)
}

fn h(pairs: &[(&str, &str)]) -> HeaderList {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn credentials() -> SigningIdentity {
    let message = SigningCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
        session_token: "tok".into(),
        expires_at_unix_seconds: 0,
        refresh_after_seconds: 0,
    };
    SigningIdentity::from_proto(message, 0).unwrap()
}

fn alice(tenant: &str) -> Rc<Identity> {
    Rc::new(Identity {
        issuer: "corp".into(),
        tenant: tenant.into(),
        subject: "alice".into(),
        roles: vec!["dev".into(), "ops".into()],
        tier: None,
        expires_at: 0,
    })
}

#[test]
fn routes_plans_and_signs_a_converse_call() {
    let gw = gateway();
    let headers = h(&[
        (":method", "POST"),
        (":path", "/model/m%3A1/converse"),
        (":authority", "gateway:8080"),
        ("content-length", "2"),
        ("content-type", "application/json"),
        ("authorization", "Bearer client"),
    ]);
    let route = read_route(&gw, &headers).unwrap();
    assert_eq!(
        (
            route.service,
            route.operation.name,
            route.operation.path_model.as_deref()
        ),
        (0, "Converse", Some("m:1"))
    );
    let plan = gw.forward(headers.clone(), route, None);
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let edits = gw
        .sign(plan, signing::EMPTY_SHA256, &credentials(), now)
        .unwrap();
    // The client's token goes before anything is written; its host is replaced.
    assert_eq!(edits.remove, ["authorization"]);
    let headers = edits.apply(&headers);
    let get = |n: &str| find_str(&headers, n).map(str::to_string);
    assert_eq!(
        get(":authority").as_deref(),
        Some("bedrock-runtime.us-west-2.amazonaws.com")
    );
    assert_eq!(get("x-bedrock-gateway-cluster").as_deref(), Some("rt"));
    assert_eq!(get("x-amz-security-token").as_deref(), Some("tok"));
    let auth = get("authorization").unwrap();
    assert!(
        auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20270115/us-west-2/bedrock/aws4_request"
        ),
        "{auth}"
    );
    assert_eq!(
        headers.iter().filter(|(n, _)| n == "authorization").count(),
        1
    );
}

#[test]
fn refusals() {
    let gw = gateway();
    let cases = [
        (
            h(&[(":path", "/model/m/converse")]),
            400,
            "malformed_request",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("content-length", "101"),
            ]),
            413,
            "body_too_large",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("content-length", "ten"),
            ]),
            400,
            "malformed_request",
        ),
        (
            h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("aws-endpoint-prefix", "s3"),
            ]),
            400,
            "unknown_service",
        ),
        (
            h(&[(":method", "GET"), (":path", "/foundation-models")]),
            400,
            "service_not_enabled",
        ),
        (
            h(&[(":method", "GET"), (":path", "/")]),
            400,
            "unknown_path",
        ),
    ];
    for (headers, status, reason) in cases {
        let error = read_route(&gw, &headers).unwrap_err();
        assert_eq!((error.status, error.reason), (status, reason));
    }
    assert!(
        read_route(
            &gw,
            &h(&[
                (":method", "POST"),
                (":path", "/model/m/converse"),
                ("content-length", "100")
            ])
        )
        .is_ok()
    );
}

#[test]
fn header_routes_to_agent_runtime() {
    let gw = gateway();
    let headers = h(&[
        (":method", "POST"),
        (":path", "/x/y"),
        ("aws-endpoint-prefix", "bedrock-agent-runtime"),
    ]);
    let route = read_route(&gw, &headers).unwrap();
    assert_eq!((route.service, route.operation.name), (1, "Unknown"));
    let plan = gw.forward(headers, route, None);
    assert_eq!(find_str(&plan.headers, "aws-endpoint-prefix"), None);
}

#[test]
fn authorization_by_tenant_policy() {
    let gw = jwt_gateway();
    let route = |path: &str| read_route(&gw, &h(&[(":method", "POST"), (":path", path)])).unwrap();
    assert!(
        gw.authorize(
            &alice("team-a"),
            &route("/model/anthropic.claude-v2/converse"),
            &models_of(&route("/model/anthropic.claude-v2/converse"))
        )
        .is_ok()
    );
    let denied = gw
        .authorize(
            &alice("team-a"),
            &route("/model/meta.llama3/converse"),
            &models_of(&route("/model/meta.llama3/converse")),
        )
        .unwrap_err();
    assert_eq!(
        (denied.status, denied.code, denied.reason),
        (403, "AccessDeniedException", "model_not_allowed")
    );
    let denied = gw
        .authorize(
            &alice("team-b"),
            &route("/model/anthropic.claude-v2/converse"),
            &models_of(&route("/model/anthropic.claude-v2/converse")),
        )
        .unwrap_err();
    assert_eq!(denied.reason, "operation_not_allowed");
    let denied = gw
        .authorize(
            &alice("team-a"),
            &route("/knowledgebases/K/retrieve"),
            &models_of(&route("/knowledgebases/K/retrieve")),
        )
        .unwrap_err();
    assert_eq!(denied.reason, "operation_not_allowed");
    // Mode none authorizes everything.
    assert!(
        gateway()
            .authorize(
                &alice("x"),
                &route("/model/meta.llama3/converse"),
                &models_of(&route("/model/meta.llama3/converse"))
            )
            .is_ok()
    );
}

#[test]
fn identity_headers_replace_spoofed_ones_and_token_headers_are_dropped() {
    let gw = jwt_gateway();
    let headers = h(&[
        (":method", "POST"),
        (":path", "/model/m/converse"),
        ("x-bedrock-gateway-tenant", "spoofed"),
        ("x-bedrock-gateway-tier", "platinum"),
        ("x-corp-token", "eyJ..."),
        ("authorization", "Bearer eyJ..."),
    ]);
    let route = read_route(&gw, &headers).unwrap();
    let plan = gw.forward(headers, route, Some(&alice("team-a")));
    let all = |name: &str| {
        plan.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-bedrock-gateway-tenant"), ["team-a"]);
    assert_eq!(all("x-bedrock-gateway-subject"), ["alice"]);
    assert_eq!(all("x-bedrock-gateway-role"), ["dev,ops"]);
    assert!(
        all("x-bedrock-gateway-tier").is_empty(),
        "no tier claim: the spoofed one is gone"
    );
    assert!(all("x-corp-token").is_empty() && all("authorization").is_empty());
    // In mode none a spoofed identity header is dropped too.
    let gw = gateway();
    let headers = h(&[
        (":method", "POST"),
        (":path", "/model/m/converse"),
        ("x-bedrock-gateway-tenant", "spoofed"),
    ]);
    let route = read_route(&gw, &headers).unwrap();
    assert_eq!(
        find_str(
            &gw.forward(headers, route, None).headers,
            "x-bedrock-gateway-tenant"
        ),
        None
    );
}
