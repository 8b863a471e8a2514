use gateway_common::auth_config::{Algorithm, ClaimMapping};
use jwt_simple::prelude::{
    Ed25519PublicKey, EdDSAPublicKeyLike as _, HS256Key, MACLike as _, Token, VerificationOptions,
};
use serde_json::json;

use super::*;

fn issuer(claims: ClaimMapping) -> Issuer {
    Issuer {
        name: "local-dev".into(),
        issuer: "http://127.0.0.1/local-dev".into(),
        audiences: vec!["bedrock-gateway".into(), "other".into()],
        algorithms: vec![Algorithm::EdDSA],
        token_header: None,
        claims,
        required_claims: vec![],
        clock_skew_seconds: 60,
        max_token_bytes: 8192,
        tenants: None,
        roles: None,
    }
}

fn request() -> TokenRequest {
    TokenRequest {
        tenant: "team-a".into(),
        subject: "alice".into(),
        roles: vec![],
        tier: None,
        ttl: Duration::from_secs(3600),
        extra: vec![],
    }
}

fn as_json(claims: &JWTClaims<Map<String, Value>>) -> Value {
    serde_json::to_value(claims).unwrap()
}

#[test]
fn default_mapping_and_registered_claims() {
    let claims = claims(&issuer(ClaimMapping::default()), &request(), 1_800_000_000).unwrap();
    assert_eq!(
        as_json(&claims),
        json!({
            "iss": "http://127.0.0.1/local-dev",
            "aud": "bedrock-gateway",
            "iat": 1_800_000_000u64,
            "nbf": 1_800_000_000u64,
            "exp": 1_800_003_600u64,
            "tenant": "team-a",
            "sub": "alice",
        })
    );
}

#[test]
fn mapped_paths_nest_or_stay_top_level() {
    let mapping = ClaimMapping {
        tenant: "custom:tenant".into(),
        subject: "https://example.com/user.name".into(),
        role: Some("realm_access.roles".into()),
        tier: Some("realm_access.tier".into()),
    };
    let mut request = request();
    request.roles = vec!["admin".into(), "dev".into()];
    request.tier = Some("gold".into());
    request.extra = vec![
        ("realm_access.region".into(), json!("eu")),
        ("team_size".into(), json!(7)),
    ];
    let claims = claims(&issuer(mapping), &request, 0).unwrap();
    let value = as_json(&claims);
    assert_eq!(value["custom:tenant"], "team-a");
    assert_eq!(value["https://example.com/user.name"], "alice");
    assert_eq!(
        value["realm_access"],
        json!({"roles": ["admin", "dev"], "tier": "gold", "region": "eu"})
    );
    assert_eq!(value["team_size"], 7);
}

#[test]
fn refuses_what_it_cannot_lay_out() {
    let mut with_role = request();
    with_role.roles = vec!["admin".into()];
    assert_eq!(
        claims(&issuer(ClaimMapping::default()), &with_role, 0).unwrap_err(),
        MintError::Unmapped {
            issuer: "local-dev".into(),
            field: "role"
        }
    );
    let mut extra = request();
    extra.extra = vec![("exp".into(), json!(1))];
    assert_eq!(
        claims(&issuer(ClaimMapping::default()), &extra, 0).unwrap_err(),
        MintError::Registered("exp".into())
    );
    extra.extra = vec![("tenant".into(), json!("team-b"))];
    assert_eq!(
        claims(&issuer(ClaimMapping::default()), &extra, 0).unwrap_err(),
        MintError::Conflict("tenant".into())
    );
    extra.extra = vec![("tenant.inner".into(), json!("x"))];
    assert_eq!(
        claims(&issuer(ClaimMapping::default()), &extra, 0).unwrap_err(),
        MintError::Conflict("tenant.inner".into())
    );
    let mut scoped = issuer(ClaimMapping::default());
    scoped.tenants = Some(vec!["dev-*".into()]);
    assert_eq!(
        claims(&scoped, &request(), 0).unwrap_err(),
        MintError::TenantNotAllowed {
            issuer: "local-dev".into(),
            tenant: request().tenant
        }
    );
    let mut dev = request();
    dev.tenant = "dev-1".into();
    assert!(claims(&scoped, &dev, 0).is_ok());
}

#[test]
fn signed_tokens_verify_with_the_published_keys() {
    let now = u64::try_from(crate::util::unix_seconds(std::time::SystemTime::now())).unwrap();
    let claims = || claims(&issuer(ClaimMapping::default()), &request(), now).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let dev = super::super::dev_key::load_or_create(&dir.path().join("k.pem")).unwrap();
    let super::super::KeyMaterial::Ed25519 { x } = dev.verifying_key().material else {
        panic!("not Ed25519");
    };
    let kid = dev.kid().to_string();
    let token = sign(&SigningKey::Ed25519(Box::new(dev)), claims()).unwrap();
    assert_eq!(
        Token::decode_metadata(&token).unwrap().key_id(),
        Some(kid.as_str())
    );
    let verified = Ed25519PublicKey::from_bytes(&x)
        .unwrap()
        .verify_token::<Map<String, Value>>(&token, Some(VerificationOptions::default()))
        .unwrap();
    assert_eq!(verified.custom["tenant"], "team-a");
    assert_eq!(verified.subject.as_deref(), Some("alice"));

    let secret = Secret::new("0123456789abcdef0123456789abcdef");
    let token = sign(&SigningKey::Hs256(secret.clone()), claims()).unwrap();
    assert_eq!(Token::decode_metadata(&token).unwrap().algorithm(), "HS256");
    assert!(
        HS256Key::from_bytes(secret.expose().as_bytes())
            .verify_token::<Map<String, Value>>(&token, None)
            .is_ok()
    );
    assert!(!format!("{:?}", SigningKey::Hs256(secret)).contains("0123456789"));
}

#[test]
fn lifetimes_and_extra_claims() {
    let s = Duration::from_secs;
    for (text, expected) in [
        ("90", s(90)),
        ("90s", s(90)),
        ("15m", s(900)),
        ("1h", s(3600)),
        ("7d", s(604_800)),
    ] {
        assert_eq!(parse_ttl(text), Ok(expected), "{text}");
    }
    for bad in [
        "",
        "0",
        "0h",
        "1w",
        "h",
        "-1h",
        "1.5h",
        "99999999999999999999d",
    ] {
        assert!(parse_ttl(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_claim("tier=gold"), Ok(("tier".into(), json!("gold"))));
    assert_eq!(parse_claim("n=3"), Ok(("n".into(), json!(3))));
    assert_eq!(
        parse_claim("groups=[\"a\"]"),
        Ok(("groups".into(), json!(["a"])))
    );
    assert_eq!(parse_claim("empty="), Ok(("empty".into(), json!(""))));
    assert!(parse_claim("=x").is_err() && parse_claim("novalue").is_err());
}
