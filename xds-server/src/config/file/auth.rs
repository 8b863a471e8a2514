//! The `auth` section as written by the operator. The doc comment of each field is its
//! reference documentation: meaning, default and unit.

use std::path::PathBuf;

use gateway_common::auth_config::{AccessPolicy, SignatureChecks, TokenHeader};
use serde::Deserialize;

/// How callers are authenticated, and the audit log of their requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `none` lets every caller through (use it only where the network already restricts who
    /// reaches the listener); `jwt` requires a token from one of `issuers`. Default `jwt`:
    /// authentication is never off unless the file says so.
    #[serde(default)]
    pub mode: AuthMode,
    /// `jwt` only: the token issuers the gateway trusts, at least one. A token is accepted
    /// when its `iss` is one of theirs, its signature verifies with one of that issuer's keys,
    /// its `aud` names one of the issuer's audiences and it is within its validity period.
    #[serde(default)]
    pub issuers: Option<Vec<IssuerSection>>,
    /// `jwt` only: which services, operations and models each tenant and role may use:
    /// `default` (for tenants without an entry of their own), `tenants` and `roles`, each a
    /// list of grants `{services, operations, models}` of glob patterns (`*` any run of
    /// characters, `?` one). A grant's `services` defaults to `[bedrock-runtime]`,
    /// `operations` and `models` to `["*"]`. A call is allowed when a grant of the caller's
    /// tenant (or `default`) or of one of its roles matches it. Default: nothing is allowed.
    #[serde(default)]
    pub access: Option<AccessPolicy>,
    /// `jwt` only: verified tokens each Envoy worker remembers (until they expire), so a token
    /// is verified once rather than on every request; at least 1. Default `10000`.
    #[serde(default)]
    pub cache_max_entries: Option<usize>,
    /// `jwt` only: seconds during which, after a token with an unknown key id made the filter
    /// ask for fresh keys, further unknown key ids of that issuer are refused without asking.
    /// Default `10`.
    #[serde(default)]
    pub unknown_kid_refresh_seconds: Option<u64>,
    /// `jwt` only: signature verifications (tokens not in the cache) each Envoy worker does
    /// per second at most; beyond, requests with uncached tokens get 429
    /// `ThrottlingException` (SDKs retry), so a flood of forged tokens cannot take the CPU
    /// that callers with cached tokens need. At least 1. Default `200`.
    #[serde(default)]
    pub max_verifications_per_second: Option<u32>,
    /// `jwt` only: where the signatures of tokens an Envoy worker has not verified yet are
    /// checked: `xds-server` (natively, over a stream per worker; the filter checks them
    /// itself while that stream is down) or `filter` (in Wasm). Default `xds-server`.
    #[serde(default)]
    pub signature_checks: Option<SignatureChecks>,
    /// `jwt` only: seconds between the filter's requests for the issuers' keys when this
    /// server gives no earlier hint; above 0. Default `60`.
    #[serde(default)]
    pub keys_refresh_seconds: Option<u64>,
    /// The audit access log: one JSON line per request the filter handled (time, request id,
    /// tenant, subject, issuer, service, operation, model, decision, reason, status, duration,
    /// bytes), in both modes. A path on the machine where Envoy runs; a relative path is
    /// relative to this file's directory; `off`: no audit log on the listener (the filter
    /// still publishes its record as filter state). Default (also when `null`) `/dev/stdout`.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
}

/// Value of `auth.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    None,
    #[default]
    Jwt,
}

/// One trusted token issuer. Exactly one key source is required: `jwks_uri`, `discovery`,
/// `jwks_file`, `jwks`, `dev_signing_key` or `hs256_secret_env`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// A short label for logs, the status page and the audit log; unique. Required.
    pub name: String,
    /// The exact `iss` claim of the issuer's tokens (`https://idp.example.com/`); unique.
    /// Required.
    pub issuer: String,
    /// A token's `aud` must name at least one of these. Required, at least one.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer: `RS256`, `RS384`, `RS512`, `PS256`,
    /// `PS384`, `PS512`, `ES256`, `ES384`, `EdDSA`, and `HS256` (only with
    /// `hs256_secret_env`, and only when listed). Default: every asymmetric one; `EdDSA` for
    /// `dev_signing_key`; no default with `hs256_secret_env`.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// Key source: the URL of the issuer's JWKS, `https://` (or `http://` to a loopback
    /// address, for local tests).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Key source: `true` reads the OpenID Connect discovery document at
    /// `{issuer}/.well-known/openid-configuration` (`issuer` must then be an `https://` URL)
    /// and the JWKS its `jwks_uri` names. Default `false`.
    #[serde(default)]
    pub discovery: bool,
    /// Key source: a JWKS file on the machine where this server runs (air-gapped setups); a
    /// relative path is relative to this file's directory. Re-read when it changes (checked
    /// every second) and every `jwks_refresh_seconds`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Key source: the JWKS itself, `{keys: [...]}`; every key in it must be usable.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// Key source, for development: an Ed25519 private key (PKCS#8 PEM) on this server's
    /// machine, created (mode 0600, parent directories made) when missing; a relative path is
    /// relative to this file's directory. Its public key verifies the issuer's tokens, with
    /// key id = the first 16 hex digits of the SHA-256 of the raw public key;
    /// `xds-server mint-token` signs with it. Only `EdDSA` is allowed with it.
    #[serde(default)]
    pub dev_signing_key: Option<PathBuf>,
    /// Key source, for development: the name of an environment variable (of this server)
    /// holding an HS256 shared secret of at least 32 bytes. Requires `HS256` in `algorithms`.
    /// The secret goes to the filter over the control API, never into Envoy's configuration.
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// Another request header the token may come in, besides `Authorization: Bearer`:
    /// `{name, prefix}` with `name` in lower case (not one of the `x-bedrock-gateway-*`
    /// headers the gateway sets itself) and `prefix` the text before the token (default
    /// empty). Default: none.
    #[serde(default)]
    pub token_header: Option<TokenHeader>,
    /// Which claims carry the caller's tenant context. A path is first looked up as a
    /// top-level claim name (`custom:tenant`, `https://example.com/tenant`), then as a dotted
    /// path into nested objects (`realm_access.roles`).
    #[serde(default)]
    pub claims: ClaimsSection,
    /// Claims (paths as in `claims`) every token must carry. Default: none.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// The tenants this issuer may assert, as glob patterns: a token claiming another tenant
    /// is refused (401, audit reason `tenant_not_allowed`), so that one identity provider
    /// cannot claim a tenant meant for another (an exempt `platform` tenant, say). Required
    /// when several issuers are configured; with one issuer, default every tenant.
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    /// The roles this issuer may assert, as glob patterns: other roles in its tokens are
    /// ignored. Required when several issuers are configured and this one has `claims.role`;
    /// otherwise default every role.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Seconds of tolerance for `exp`, `nbf` and `iat`, up to 3600. Default `60`.
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
    /// Longer tokens are refused before any parsing; at least 64. Default `8192`.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Seconds between scheduled re-reads of the keys (`jwks_uri`, `discovery`,
    /// `jwks_file`); above 0. A failed read is retried after 1, 2, 4 ... 30 seconds while the
    /// last good keys stay in use. Default `300`.
    #[serde(default = "default_jwks_refresh_seconds")]
    pub jwks_refresh_seconds: u64,
    /// Shortest spacing, in seconds, of re-reads caused by tokens whose key id none of the
    /// issuer's keys has (a key published since the last read is found at once, but unknown
    /// key ids cannot flood the issuer); above 0. Default `30`.
    #[serde(default = "default_jwks_min_refresh_seconds")]
    pub jwks_min_refresh_seconds: u64,
}

/// `auth.issuers[].claims`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsSection {
    /// The tenant (a string). Default `tenant`.
    #[serde(default = "default_tenant_claim")]
    pub tenant: String,
    /// The caller (a string). Default `sub`.
    #[serde(default = "default_subject_claim")]
    pub subject: String,
    /// The caller's roles: a string or an array of strings. Default: none.
    #[serde(default)]
    pub role: Option<String>,
    /// The caller's tier (a string), for later filters. Default: none.
    #[serde(default)]
    pub tier: Option<String>,
}

impl Default for ClaimsSection {
    fn default() -> Self {
        Self {
            tenant: default_tenant_claim(),
            subject: default_subject_claim(),
            role: None,
            tier: None,
        }
    }
}

/// Defaults of the `jwt`-only keys of [`AuthSection`].
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;
pub const DEFAULT_UNKNOWN_KID_REFRESH_SECONDS: u64 = 10;
pub const DEFAULT_KEYS_REFRESH_SECONDS: u64 = 60;
/// Default of `auth.audit_log`.
pub const DEFAULT_AUDIT_LOG: &str = "/dev/stdout";
/// The value of `auth.audit_log` that turns it off (a file of that name: `./off`).
pub const AUDIT_LOG_OFF: &str = "off";

fn default_tenant_claim() -> String {
    "tenant".to_string()
}

fn default_subject_claim() -> String {
    "sub".to_string()
}

fn default_clock_skew_seconds() -> u64 {
    60
}

fn default_max_token_bytes() -> usize {
    gateway_common::auth_config::DEFAULT_MAX_TOKEN_BYTES
}

fn default_jwks_refresh_seconds() -> u64 {
    300
}

fn default_jwks_min_refresh_seconds() -> u64 {
    30
}
