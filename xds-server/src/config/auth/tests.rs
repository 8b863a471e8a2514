use std::{collections::HashMap, path::Path};

use serde_json::json;

use super::*;
use crate::{
    config::{GatewayConfig, Overrides, parse_with_env},
    identity::KeySource,
};

const HEAD: &str = "upstream: {region: us-east-1}\nfilter: {wasm_path: /opt/filter.wasm}\n";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn parse(auth: &str) -> Result<GatewayConfig, ConfigError> {
    let env = HashMap::from([("DEV_JWT_SECRET", SECRET), ("SHORT", "too-short")]);
    parse_with_env(
        "gateway.yaml",
        &format!("{HEAD}{auth}"),
        Path::new("/etc/gateway"),
        &Overrides::default(),
        &|name| env.get(name).map(|v| v.to_string()),
    )
}

fn error(auth: &str) -> String {
    parse(auth).unwrap_err().to_string()
}

#[test]
fn full_auth_section_renders_into_the_filter_configuration() {
    let config = parse(
        r#"
auth:
  issuers:
    - name: corp
      issuer: https://idp.example.com/
      audiences: [bedrock-gateway]
      algorithms: [RS256, ES256]
      jwks_uri: https://idp.example.com/.well-known/jwks.json
      token_header: {name: x-corp-token, prefix: "Bearer "}
      claims: {tenant: "custom:tenant", role: groups, tier: tier}
      required_claims: [tenant]
      clock_skew_seconds: 30
      max_token_bytes: 4096
      jwks_refresh_seconds: 600
      jwks_min_refresh_seconds: 15
      tenants: ["team-*", platform]
      roles: [admin, "dev-*"]
    - name: dev
      issuer: http://127.0.0.1/dev
      audiences: [bedrock-gateway]
      algorithms: [HS256]
      hs256_secret_env: DEV_JWT_SECRET
      tenants: ["dev-*"]
  access:
    default: [{services: [bedrock-runtime], operations: ["*"], models: ["amazon.titan-*"]}]
    tenants: {team-a: [{models: ["anthropic.*"]}]}
    roles: {admin: [{services: ["*"]}]}
  cache_max_entries: 500
  unknown_kid_refresh_seconds: 20
  keys_refresh_seconds: 30
  max_verifications_per_second: 50
  signature_checks: filter
  audit_log: logs/audit.log
"#,
    )
    .unwrap();
    let filter = serde_json::to_value(&config.filter).unwrap();
    assert_eq!(
        filter["authentication"],
        json!({
            "mode": "jwt",
            "issuers": [
                {
                    "name": "corp",
                    "issuer": "https://idp.example.com/",
                    "audiences": ["bedrock-gateway"],
                    "algorithms": ["RS256", "ES256"],
                    "token_header": {"name": "x-corp-token", "prefix": "Bearer "},
                    "claims": {"tenant": "custom:tenant", "subject": "sub", "role": "groups", "tier": "tier"},
                    "required_claims": ["tenant"],
                    "clock_skew_seconds": 30,
                    "max_token_bytes": 4096,
                    "tenants": ["team-*", "platform"],
                    "roles": ["admin", "dev-*"]
                },
                {
                    "name": "dev",
                    "issuer": "http://127.0.0.1/dev",
                    "audiences": ["bedrock-gateway"],
                    "algorithms": ["HS256"],
                    "claims": {"tenant": "tenant", "subject": "sub"},
                    "required_claims": [],
                    "clock_skew_seconds": 60,
                    "max_token_bytes": 8192,
                    "tenants": ["dev-*"]
                }
            ],
            "access": {
                "default": [{"services": ["bedrock-runtime"], "operations": ["*"], "models": ["amazon.titan-*"]}],
                "tenants": {"team-a": [{"services": ["bedrock-runtime"], "operations": ["*"], "models": ["anthropic.*"]}]},
                "roles": {"admin": [{"services": ["*"], "operations": ["*"], "models": ["*"]}]}
            },
            "cache_max_entries": 500,
            "unknown_kid_refresh_seconds": 20,
            "keys_refresh_seconds": 30,
            "max_verifications_per_second": 50,
            "signature_checks": "filter"
        })
    );
    // No secret in what Envoy gets.
    assert!(
        !serde_json::to_string(&config.filter)
            .unwrap()
            .contains(SECRET)
    );
    assert_eq!(
        config.audit_log.as_deref(),
        Some(Path::new("/etc/gateway/logs/audit.log"))
    );

    let corp = &config.identity[0];
    assert_eq!(
        corp.source,
        KeySource::JwksUri("https://idp.example.com/.well-known/jwks.json".into())
    );
    assert_eq!(
        (corp.refresh, corp.min_refresh),
        (Duration::from_secs(600), Duration::from_secs(15))
    );
    assert_eq!(
        config.identity[1].source,
        KeySource::SharedSecret(crate::util::Secret::new(SECRET))
    );
    assert!(!format!("{config:?}").contains(SECRET));
}

#[test]
fn defaults_of_a_minimal_issuer() {
    let config = parse(
        "auth:\n  issuers:\n    - {name: corp, issuer: https://idp.example.com, audiences: [gw], discovery: true}\n",
    )
    .unwrap();
    let Authentication::Jwt(jwt) = &config.filter.authentication else {
        panic!("jwt is the default mode");
    };
    assert_eq!(jwt.issuers[0].algorithms, Algorithm::ASYMMETRIC);
    assert_eq!(jwt.issuers[0].claims, ClaimMapping::default());
    assert_eq!(jwt.access, Default::default());
    assert_eq!(
        (
            jwt.cache_max_entries,
            jwt.unknown_kid_refresh_seconds,
            jwt.keys_refresh_seconds
        ),
        (10_000, 10, 60)
    );
    assert_eq!(config.audit_log.as_deref(), Some(Path::new("/dev/stdout")));
    let source = &config.identity[0];
    assert_eq!(
        source.source,
        KeySource::Discovery {
            issuer: "https://idp.example.com".into(),
            url: "https://idp.example.com/.well-known/openid-configuration".into()
        }
    );
    assert_eq!(
        (source.refresh, source.min_refresh),
        (Duration::from_secs(300), Duration::from_secs(30))
    );
}

#[test]
fn local_sources_resolve_against_the_file_and_dev_keys_default_to_eddsa() {
    let config = parse(
        r#"
auth:
  issuers:
    - {name: file, issuer: a, audiences: [gw], jwks_file: keys/corp.jwks.json, tenants: ["*"]}
    - {name: dev, issuer: b, audiences: [gw], dev_signing_key: ../.run/dev-issuer.pem, tenants: [dev]}
  audit_log: null
"#,
    )
    .unwrap();
    assert_eq!(
        config.identity[0].source,
        KeySource::JwksFile("/etc/gateway/keys/corp.jwks.json".into())
    );
    assert_eq!(
        config.identity[1].source,
        KeySource::DevSigningKey("/etc/gateway/../.run/dev-issuer.pem".into())
    );
    let Authentication::Jwt(jwt) = &config.filter.authentication else {
        panic!("jwt");
    };
    assert_eq!(jwt.issuers[1].algorithms, [Algorithm::EdDSA]);
    assert_eq!(config.audit_log.as_deref(), Some(Path::new("/dev/stdout")));
}

#[test]
fn inline_keys_are_checked_when_loading() {
    let config = parse(
        r#"
auth:
  issuers:
    - name: inline
      issuer: a
      audiences: [gw]
      jwks:
        keys:
          - {kty: EC, crv: P-256, kid: "1", x: MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4, y: 4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM}
"#,
    )
    .unwrap();
    let KeySource::Inline(keys) = &config.identity[0].source else {
        panic!("inline");
    };
    assert_eq!(keys[0].kid, "1");
}

#[test]
fn mode_none_takes_no_jwt_keys_but_an_audit_log() {
    let config = parse("auth: {mode: none, audit_log: /var/log/audit.log}\n").unwrap();
    assert_eq!(config.filter.authentication, Authentication::None);
    assert!(config.identity.is_empty());
    assert_eq!(
        config.audit_log.as_deref(),
        Some(Path::new("/var/log/audit.log"))
    );
    let off = parse("auth: {mode: none, audit_log: off}\n").unwrap();
    assert_eq!(off.audit_log, None);
    let file_named_off = parse("auth: {mode: none, audit_log: ./off}\n").unwrap();
    assert_eq!(
        file_named_off.audit_log.as_deref(),
        Some(Path::new("/etc/gateway/./off"))
    );
    assert_eq!(
        error("auth: {mode: none, keys_refresh_seconds: 5}\n"),
        "gateway.yaml: auth.keys_refresh_seconds: expected no value with `auth.mode: none` (it only applies to `mode: jwt`)"
    );
}

#[test]
fn errors_name_the_yaml_key() {
    let issuer = |extra: &str| {
        format!(
            "auth:\n  issuers:\n    - {{name: corp, issuer: https://idp.example.com/, audiences: [gw], {extra}}}\n"
        )
    };
    let cases = [
        (
            issuer("jwks_uri: https://a/k, algorithms: [RS256, HS512]"),
            "auth.issuers[0].algorithms[1]: expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, found \"HS512\"",
        ),
        (
            issuer("hs256_secret_env: SHORT, algorithms: [HS256]"),
            "auth.issuers[0].hs256_secret_env: expected the name of an environment variable of xds-server holding the HS256 secret (at least 32 bytes), found \"SHORT\", whose value has only 9 bytes",
        ),
        (
            issuer("hs256_secret_env: DEV_JWT_SECRET"),
            "auth.issuers[0].algorithms: expected a list that includes HS256, which hs256_secret_env's tokens are signed with",
        ),
        (
            issuer("dev_signing_key: k.pem, algorithms: [EdDSA, ES256]"),
            "auth.issuers[0].algorithms: expected only EdDSA with dev_signing_key (an Ed25519 key), found [\"EdDSA\", \"ES256\"]",
        ),
        (
            issuer("jwks_uri: https://a/k, claims: {tier: \"a..b\"}"),
            "auth.issuers[0].claims.tier: expected a claim name or a dotted path such as realm_access.roles, found \"a..b\"",
        ),
        (
            issuer("jwks_uri: https://a/k, required_claims: [\" tenant\"]"),
            "auth.issuers[0].required_claims[0]: expected a claim name or a dotted path such as realm_access.roles, found \" tenant\"",
        ),
        (
            issuer("jwks_uri: https://a/k, jwks_min_refresh_seconds: 0"),
            "auth.issuers[0].jwks_min_refresh_seconds: expected a number of seconds above 0, found 0",
        ),
        (
            issuer("jwks_uri: https://a/k, audiences: []").replace("audiences: [gw], ", ""),
            "auth.issuers[0].audiences: expected at least one audience, none empty, found []",
        ),
        (
            format!(
                "{}    - {{name: corp, issuer: b, audiences: [gw], jwks_uri: https://a/k}}\n",
                issuer("jwks_uri: https://a/k")
            ),
            "auth.issuers[1].name: expected a name no other issuer has, found \"corp\"",
        ),
        (
            format!(
                "{}    - {{name: partner, issuer: b, audiences: [gw], jwks_uri: https://a/k, tenants: [\"partner-*\"]}}\n",
                issuer("jwks_uri: https://a/k")
            ),
            "auth.issuers[0].tenants: expected the tenants this issuer may assert (glob patterns), required when several issuers are configured",
        ),
        (
            format!(
                "{}    - {{name: partner, issuer: b, audiences: [gw], jwks_uri: https://a/k, tenants: [p], claims: {{role: groups}}}}\n",
                issuer("jwks_uri: https://a/k, tenants: [corp-*]")
            ),
            "auth.issuers[1].roles: expected the roles this issuer may assert (glob patterns), required when several issuers are configured and it maps a role claim",
        ),
        (
            issuer("jwks_uri: https://a/k, tenants: []"),
            "auth.issuers[0].tenants: expected at least one pattern, none empty, found []",
        ),
        (
            issuer("jwks_uri: https://a/k, token_header: {name: x-bedrock-gateway-tenant}"),
            "auth.issuers[0].token_header.name: expected a lower-case header name that the gateway does not set itself, found \"x-bedrock-gateway-tenant\"",
        ),
        (
            issuer("jwks_uri: https://a/k, token_header: {name: \"x token\"}"),
            "auth.issuers[0].token_header.name: expected a lower-case header name that the gateway does not set itself, found \"x token\"",
        ),
        (
            issuer("jwks_uri: https://a/k, clock_skew_seconds: 86400"),
            "auth.issuers[0].clock_skew_seconds: expected a number of seconds up to 3600, found 86400",
        ),
        (
            format!(
                "{}  cache_max_entries: 0\n",
                issuer("jwks_uri: https://a/k")
            ),
            "auth.cache_max_entries: expected at least 1, found 0",
        ),
        (
            format!(
                "{}  access: {{roles: {{admin: [{{services: [bedrock-runtime, s3]}}]}}}}\n",
                issuer("jwks_uri: https://a/k")
            ),
            "auth.access.roles.admin.services: expected patterns matching at least one configured service, found \"s3\"",
        ),
    ];
    for (auth, expected) in cases {
        assert_eq!(error(&auth), format!("gateway.yaml: {expected}"), "{auth}");
    }
}

#[test]
fn claim_paths() {
    for ok in [
        "tenant",
        "realm_access.roles",
        "custom:tenant",
        "https://example.com/tenant",
        "a.b.c",
    ] {
        assert!(is_claim_path(ok), "{ok}");
    }
    for bad in [
        "", " tenant", "tenant ", ".tenant", "tenant.", "a..b", "a\nb",
    ] {
        assert!(!is_claim_path(bad), "{bad:?}");
    }
}

#[test]
fn the_default_signature_checks_leave_the_filter_json_as_older_filters_read_it() {
    let text =
        "auth:\n  issuers: [{name: dev, issuer: a, audiences: [gw], dev_signing_key: dev.pem}]\n";
    let config = parse(text).unwrap();
    let filter = serde_json::to_value(&config.filter).unwrap();
    assert_eq!(filter["authentication"].get("signature_checks"), None);
    let Authentication::Jwt(jwt) = &config.filter.authentication else {
        panic!("jwt");
    };
    assert_eq!(
        jwt.signature_checks,
        gateway_common::auth_config::SignatureChecks::XdsServer
    );
    assert_eq!(
        error("auth: {mode: none, signature_checks: filter}\n"),
        "gateway.yaml: auth.signature_checks: expected no value with `auth.mode: none` (it only applies to `mode: jwt`)"
    );
    assert!(
        error("auth:\n  issuers: [{name: dev, issuer: a, audiences: [gw], dev_signing_key: dev.pem}]\n  signature_checks: envoy\n")
            .contains("auth.signature_checks")
    );
}
