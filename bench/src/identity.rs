//! The benchmarks' token issuer: an RS256 key (2048 bits), its JWKS as a file and inline,
//! tokens of it, and the gateway's `auth` section that trusts it.

use std::path::{Path, PathBuf};

use jwt_simple::prelude::*;
use serde_norway::Value as Yaml;

pub const ISSUER: &str = "https://idp.bench.example";
pub const AUDIENCE: &str = "bedrock-gateway";

pub struct BenchIdp {
    key: RS256KeyPair,
    /// The JWKS document.
    pub jwks: String,
    pub jwks_file: PathBuf,
}

/// How the gateway's `auth` section is set up.
pub struct JwtSettings<'a> {
    pub cache_max_entries: usize,
    pub max_verifications_per_second: u32,
    /// `xds-server` or `filter`.
    pub signature_checks: &'a str,
    /// A path, or `off`.
    pub audit_log: &'a str,
}

impl BenchIdp {
    /// The issuer, its JWKS written into `work`.
    pub fn new(work: &Path) -> anyhow::Result<Self> {
        let key = RS256KeyPair::from_pem(include_str!(
            "../../filter/src/core/auth/testdata/rsa-2048.pem"
        ))?
        .with_key_id("bench-1");
        let mut jwk: serde_json::Value = serde_json::from_str(&key.public_key().to_jwk())?;
        jwk["alg"] = "RS256".into();
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let jwks_file = work.join("jwks.json");
        std::fs::write(&jwks_file, &jwks)?;
        Ok(Self {
            key,
            jwks,
            jwks_file,
        })
    }

    /// A token of `tenant`, distinct for each `n`, valid for two hours.
    pub fn token(&self, tenant: &str, n: usize) -> anyhow::Result<String> {
        let claims = Claims::with_custom_claims(
            serde_json::json!({"tenant": tenant, "n": n}),
            Duration::from_hours(2),
        )
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
        .with_subject("bench-user");
        self.key.sign(claims)
    }

    /// The gateway's `auth` section trusting this issuer, every model allowed.
    pub fn auth(&self, settings: &JwtSettings<'_>) -> anyhow::Result<Yaml> {
        Ok(serde_norway::from_str(&format!(
            r#"
mode: jwt
audit_log: {audit_log}
cache_max_entries: {cache}
signature_checks: {checks}
max_verifications_per_second: {budget}
issuers:
  - name: corp
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [RS256]
    jwks_file: {jwks}
access:
  default: [{{models: ["*"]}}]
"#,
            audit_log = settings.audit_log,
            cache = settings.cache_max_entries,
            checks = settings.signature_checks,
            budget = settings.max_verifications_per_second,
            jwks = self.jwks_file.display(),
        ))?)
    }
}
