//! Fixtures shared by the fuzz targets (`fuzz_targets/`) and the seed generator
//! (`examples/seeds.rs`): a gateway configuration, a JWT configuration with fixed keys (the
//! seeds are tokens signed with them), the operations whose bodies name models, and how an
//! input is cut into the pieces Envoy would hand over.

use std::sync::LazyLock;

use bedrock_gateway_filter::core::operations::{self, Operation};
use gateway_common::auth_config::{
    Algorithm, ClaimMapping, Issuer, JwtAuthentication, TokenHeader,
};
use gateway_common::proto::{IdentityKeys, IssuerKeys, VerificationKey};
use jwt_simple::prelude::*;

/// The time every token is checked at (the seeds are valid then).
pub const NOW: u64 = 1_800_000_000;

pub const SERVICES: [&str; 4] = [
    "bedrock-runtime",
    "bedrock-agent-runtime",
    "bedrock",
    "bedrock-agent",
];
pub const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// A gateway serving the four Bedrock services, with one configured path rule.
pub const GATEWAY_CONFIG: &str = r#"{
    "region": "us-east-1",
    "services": [
        {"name": "bedrock-runtime", "host": "bedrock-runtime.us-east-1.amazonaws.com", "cluster": "rt"},
        {"name": "bedrock-agent-runtime", "host": "bedrock-agent-runtime.us-east-1.amazonaws.com", "cluster": "art"},
        {"name": "bedrock", "host": "bedrock.us-east-1.amazonaws.com", "cluster": "cp"},
        {"name": "bedrock-agent", "host": "bedrock-agent.us-east-1.amazonaws.com", "cluster": "agent"}
    ],
    "path_rules": [{"method": "POST", "path": "/custom/*/run/**", "service": "bedrock-agent-runtime"}],
    "authentication": {"mode": "none"},
    "max_request_body_bytes": 1048576
}"#;

pub const ISSUER: &str = "https://idp.example.com";
pub const PARTNER_ISSUER: &str = "https://partner.example.net";
/// The header the partner issuer's tokens may also come in (`Token <jwt>`).
pub const PARTNER_HEADER: &str = "x-partner-token";
pub const AUDIENCE: &str = "bedrock-gateway";

/// The RSA key of the filter's own tests.
pub const RSA_PEM: &str = include_str!("../../src/core/auth/testdata/rsa-2048.pem");
/// Test-only keys, made for these fixtures.
pub const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGKqEaZbLWkmA4tIlwUDLUjDHr97bGEeKEmkvjIOSmvD
-----END PRIVATE KEY-----";
pub const P256_SCALAR: [u8; 32] = [
    0x87, 0xf9, 0xad, 0xb0, 0xec, 0xee, 0x2c, 0xff, 0xbd, 0xcb, 0x1b, 0x09, 0x87, 0xca, 0x70, 0x0c,
    0xb6, 0xaa, 0xdc, 0x54, 0xd8, 0xf3, 0xb8, 0xf5, 0x65, 0x36, 0xbc, 0x7b, 0xfb, 0x5a, 0x1f, 0x2d,
];
pub const HS256_SECRET: &[u8] = b"fuzzing-only-secret-0123456789abcdef";

/// Two issuers: the corporate one (every algorithm, tenant, role and tier claims, restricted
/// tenants and roles) and a partner with its own token header (EdDSA only).
pub fn jwt_config() -> JwtAuthentication {
    let mut algorithms = Algorithm::ASYMMETRIC.to_vec();
    algorithms.push(Algorithm::HS256);
    JwtAuthentication {
        issuers: vec![
            Issuer {
                name: "corp".into(),
                issuer: ISSUER.into(),
                audiences: vec![AUDIENCE.into(), "other".into()],
                algorithms,
                token_header: None,
                claims: ClaimMapping {
                    tenant: "custom:tenant".into(),
                    subject: "sub".into(),
                    role: Some("realm_access.roles".into()),
                    tier: Some("tier".into()),
                },
                required_claims: vec!["sub".into()],
                clock_skew_seconds: 30,
                max_token_bytes: 8192,
                tenants: Some(vec!["team-*".into(), "ops".into()]),
                roles: Some(vec!["dev".into(), "admin-*".into()]),
            },
            Issuer {
                name: "partner".into(),
                issuer: PARTNER_ISSUER.into(),
                audiences: vec![AUDIENCE.into()],
                algorithms: vec![Algorithm::EdDSA],
                token_header: Some(TokenHeader {
                    name: PARTNER_HEADER.into(),
                    prefix: "Token ".into(),
                }),
                claims: ClaimMapping::default(),
                required_claims: vec![],
                clock_skew_seconds: 0,
                max_token_bytes: 2048,
                tenants: None,
                roles: None,
            },
        ],
        access: Default::default(),
        cache_max_entries: 16,
        unknown_kid_refresh_seconds: 10,
        keys_refresh_seconds: 60,
        max_verifications_per_second: 1000,
        signature_checks: Default::default(),
    }
}

pub fn rsa_pair() -> RS256KeyPair {
    RS256KeyPair::from_pem(RSA_PEM).unwrap_or_else(|e| panic!("fixture RSA key: {e}"))
}

pub fn ed25519_pair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_pem(ED25519_PEM).unwrap_or_else(|e| panic!("fixture Ed25519 key: {e}"))
}

pub fn p256_pair() -> ES256KeyPair {
    ES256KeyPair::from_bytes(&P256_SCALAR).unwrap_or_else(|e| panic!("fixture P-256 key: {e}"))
}

/// The keys the control service would send for [`jwt_config`]: RSA (`rsa`), P-256 (`p256`),
/// Ed25519 (`ed`) and the HS256 secret (`hs`) for the corporate issuer; the same Ed25519 key
/// (`partner-ed`) for the partner.
pub fn identity_keys() -> IdentityKeys {
    let rsa = rsa_pair().public_key().to_components();
    let p256 = p256_pair()
        .public_key()
        .public_key()
        .to_bytes_uncompressed();
    let ed = ed25519_pair().public_key().to_bytes();
    let half = (p256.len() - 1) / 2;
    let ed_key = |kid: &str| VerificationKey {
        kid: kid.into(),
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: ed.clone(),
        ..Default::default()
    };
    IdentityKeys {
        version: 1,
        issuers: vec![
            IssuerKeys {
                issuer: ISSUER.into(),
                keys: vec![
                    VerificationKey {
                        kid: "rsa".into(),
                        kty: "RSA".into(),
                        n: rsa.n,
                        e: rsa.e,
                        ..Default::default()
                    },
                    VerificationKey {
                        kid: "p256".into(),
                        kty: "EC".into(),
                        crv: "P-256".into(),
                        x: p256[1..1 + half].to_vec(),
                        y: p256[1 + half..].to_vec(),
                        ..Default::default()
                    },
                    ed_key("ed"),
                    VerificationKey {
                        kid: "hs".into(),
                        kty: "oct".into(),
                        k: HS256_SECRET.to_vec(),
                        ..Default::default()
                    },
                ],
            },
            IssuerKeys {
                issuer: PARTNER_ISSUER.into(),
                keys: vec![ed_key("partner-ed")],
            },
        ],
        refresh_after_seconds: 60,
    }
}

/// An operation found in the real table from a request that calls it.
fn operation(service: &str, method: &str, path: &[&str], name: &str) -> Operation {
    let operation = operations::identify(service, method, path);
    assert_eq!(operation.name, name, "{service} {method} {path:?}");
    operation
}

/// Operations whose bodies the body target reads: some name models in the body (at several
/// depths, one with undetermined paths), some do not.
pub static BODY_OPERATIONS: LazyLock<Vec<Operation>> = LazyLock::new(|| {
    vec![
        operation(
            "bedrock-runtime",
            "POST",
            &["model", "m", "converse"],
            "Converse",
        ),
        operation(
            "bedrock-runtime",
            "POST",
            &["model", "m", "invoke"],
            "InvokeModel",
        ),
        operation(
            "bedrock-runtime",
            "POST",
            &["async-invoke"],
            "StartAsyncInvoke",
        ),
        operation(
            "bedrock-agent-runtime",
            "POST",
            &["retrieveAndGenerate"],
            "RetrieveAndGenerate",
        ),
        operation("bedrock-agent", "POST", &["flows", ""], "CreateFlow"),
        operation(
            "bedrock",
            "POST",
            &["evaluation-jobs"],
            "CreateEvaluationJob",
        ),
    ]
});

/// Cuts `body` into pieces of alternately `sizes[0]` and `sizes[1]` bytes (0: all that is
/// left), the way Envoy hands a body over in pieces of its own choosing.
pub fn pieces(body: &[u8], sizes: [u8; 2]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut turn = 0;
    while !rest.is_empty() {
        let size = match sizes[turn % 2] {
            0 => rest.len(),
            n => usize::from(n).min(rest.len()),
        };
        let (piece, tail) = rest.split_at(size);
        out.push(piece);
        rest = tail;
        turn += 1;
    }
    out
}

/// `(selector, sizes, body)` of a body or usage input, when it is long enough.
pub fn split_input(data: &[u8]) -> Option<(u8, [u8; 2], &[u8])> {
    match data {
        [selector, a, b, body @ ..] => Some((*selector, [*a, *b], body)),
        _ => None,
    }
}
