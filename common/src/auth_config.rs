//! The `jwt` authentication section of the filter configuration: issuers, how their claims
//! map to the tenant context, and which services, operations and models each tenant or role
//! may use. Keys are not here: they come from the control API (`GetIdentityKeys`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::invalid_key::{InvalidKey, invalid};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtAuthentication {
    pub issuers: Vec<Issuer>,
    #[serde(default)]
    pub access: AccessPolicy,
    /// Verified tokens remembered (by a keyed hash of the token, until their `exp`), per Envoy worker.
    #[serde(default = "default_cache_max_entries")]
    pub cache_max_entries: usize,
    /// After a token with an unknown key id made the filter ask for fresh keys, further
    /// unknown key ids of that issuer are refused without asking for this many seconds.
    #[serde(default = "default_unknown_kid_refresh_seconds")]
    pub unknown_kid_refresh_seconds: u64,
    /// How often the filter asks for the keys when the server gave no hint.
    #[serde(default = "default_keys_refresh_seconds")]
    pub keys_refresh_seconds: u64,
    /// Signature verifications (tokens not in the cache) each Envoy worker performs per
    /// second at most; beyond, requests with uncached tokens get 429 (the SDKs retry). Keeps
    /// a flood of forged tokens from taking the CPU that callers with cached tokens need.
    #[serde(default = "default_max_verifications_per_second")]
    pub max_verifications_per_second: u32,
    /// Where the signatures of tokens a worker has not verified yet are checked. Left out of
    /// the JSON when it is the default, so that a filter older than this setting (which
    /// refuses members it does not know) takes the configuration of a newer xds-server.
    #[serde(default, skip_serializing_if = "SignatureChecks::is_default")]
    pub signature_checks: SignatureChecks,
}

/// Where token signatures are checked (everything else about a token is checked by the
/// filter either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SignatureChecks {
    /// By xds-server, natively, over a stream per Envoy worker; by the filter while that
    /// stream is not there or an xds-server does not answer.
    #[default]
    XdsServer,
    /// By the filter (in Wasm, many times slower for RSA and ECDSA).
    Filter,
}

impl SignatureChecks {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// A short label for logs and the audit log.
    pub name: String,
    /// The exact `iss` claim of its tokens.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Signature algorithms accepted from this issuer.
    pub algorithms: Vec<Algorithm>,
    /// Another request header the token may come in (besides `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_header: Option<TokenHeader>,
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Claims (paths as in `claims`) every token must carry.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Tolerance for `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_skew_seconds")]
    pub clock_skew_seconds: u64,
    /// Longer tokens are refused before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Tenants this issuer may assert (glob patterns): a token claiming another tenant is
    /// refused. `None`: every tenant, allowed only when this is the only issuer (so that one
    /// identity provider cannot claim a tenant meant for another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Roles this issuer may assert (glob patterns): other roles in its tokens are ignored.
    /// `None`: every role, allowed only when this is the only issuer or it maps no role claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
}

/// JWS algorithms. `none` does not exist here on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    /// Shared-secret tokens: for development only, never accepted unless listed.
    HS256,
}

impl Algorithm {
    pub const ASYMMETRIC: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ASYMMETRIC
            .into_iter()
            .chain([Algorithm::HS256])
            .find(|a| a.name() == name)
    }
}

/// A header carrying a token, e.g. `x-corp-token: Token <jwt>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenHeader {
    /// Header name, lower case.
    pub name: String,
    /// Text before the token in the value (`Bearer `); empty when the value is the token.
    #[serde(default)]
    pub prefix: String,
}

/// Where the tenant context comes from in the token's claims. A path is first looked up as a
/// top-level claim name (so `custom:tenant` and `https://example.com/tenant` work as they
/// are), then as a dotted path into nested objects (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimMapping {
    pub tenant: String,
    pub subject: String,
    /// A string or an array of strings (every element is a role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            tenant: "tenant".to_string(),
            subject: "sub".to_string(),
            role: None,
            tier: None,
        }
    }
}

/// Which calls each tenant (and role) may make. A call is allowed when a grant of the
/// caller's tenant (or `default`, for tenants without an entry) or of one of its roles matches
/// its service, operation and model. Everything else is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    #[serde(default)]
    pub default: Vec<Grant>,
    #[serde(default)]
    pub tenants: BTreeMap<String, Vec<Grant>>,
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<Grant>>,
}

/// Glob patterns (`*` matches any run of characters, `?` one character).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Service endpoint prefixes.
    #[serde(default = "default_grant_services")]
    pub services: Vec<String>,
    /// Operation names as in the AWS API (`Converse`, `InvokeModel*`); an operation the
    /// gateway does not know by name only matches `*`.
    #[serde(default = "everything")]
    pub operations: Vec<String>,
    /// Model ids, inference profile ids or ARNs. A pattern also matches a model reached
    /// through a foundation-model or inference-profile ARN, or a cross-region profile
    /// (`us.anthropic.claude...` matches `anthropic.claude*`). Calls that name no model are
    /// not restricted by this list.
    #[serde(default = "everything")]
    pub models: Vec<String>,
}

fn default_grant_services() -> Vec<String> {
    vec!["bedrock-runtime".to_string()]
}

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_cache_max_entries() -> usize {
    10_000
}

fn default_unknown_kid_refresh_seconds() -> u64 {
    10
}

fn default_keys_refresh_seconds() -> u64 {
    60
}

/// Default of `max_verifications_per_second`.
pub const DEFAULT_MAX_VERIFICATIONS_PER_SECOND: u32 = 200;

fn default_max_verifications_per_second() -> u32 {
    DEFAULT_MAX_VERIFICATIONS_PER_SECOND
}

fn default_clock_skew_seconds() -> u64 {
    60
}

/// 8 KiB: far above real tokens, far below what could hurt.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;

fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}

impl JwtAuthentication {
    /// Semantic checks; keys are relative to `authentication`.
    pub fn validate(&self, services: &[String]) -> Result<(), InvalidKey> {
        if self.issuers.is_empty() {
            return Err(invalid("issuers", "at least one issuer"));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = |field: &str| format!("issuers[{i}].{field}");
            if issuer.name.is_empty() {
                return Err(invalid(key("name"), "a name"));
            }
            if self.issuers[..i].iter().any(|o| o.name == issuer.name) {
                return Err(invalid(key("name"), "a name no other issuer has"));
            }
            if issuer.issuer.is_empty() {
                return Err(invalid(key("issuer"), "the `iss` value of its tokens"));
            }
            if self.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
                return Err(invalid(key("issuer"), "an `iss` value no other issuer has"));
            }
            if issuer.audiences.is_empty() || issuer.audiences.iter().any(String::is_empty) {
                return Err(invalid(
                    key("audiences"),
                    "at least one audience, none empty",
                ));
            }
            if issuer.algorithms.is_empty() {
                return Err(invalid(key("algorithms"), "at least one algorithm"));
            }
            if let Some(header) = &issuer.token_header
                && (header.name.is_empty()
                    || header.name != header.name.to_ascii_lowercase()
                    || header.name.starts_with(':'))
            {
                return Err(invalid(
                    key("token_header.name"),
                    "a lower-case header name",
                ));
            }
            if issuer.claims.tenant.is_empty() || issuer.claims.subject.is_empty() {
                return Err(invalid(
                    key("claims"),
                    "non-empty claim paths for tenant and subject",
                ));
            }
            if issuer.max_token_bytes < 64 {
                return Err(invalid(key("max_token_bytes"), "at least 64 bytes"));
            }
        }
        // Scopes after every other check of the issuers: a duplicate name is the first thing
        // to fix.
        let several = self.issuers.len() > 1;
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = |field: &str| format!("issuers[{i}].{field}");
            match &issuer.tenants {
                None if several => {
                    return Err(invalid(
                        key("tenants"),
                        "the tenants this issuer may assert (glob patterns), required when several issuers are configured",
                    ));
                }
                Some(patterns) if patterns.is_empty() || patterns.iter().any(String::is_empty) => {
                    return Err(invalid(key("tenants"), "at least one pattern, none empty"));
                }
                _ => {}
            }
            match &issuer.roles {
                None if several && issuer.claims.role.is_some() => {
                    return Err(invalid(
                        key("roles"),
                        "the roles this issuer may assert (glob patterns), required when several issuers are configured and it maps a role claim",
                    ));
                }
                Some(patterns) if patterns.iter().any(String::is_empty) => {
                    return Err(invalid(key("roles"), "patterns, none empty"));
                }
                _ => {}
            }
        }
        let grants =
            self.access
                .default
                .iter()
                .map(|g| ("access.default".to_string(), g))
                .chain(
                    self.access.tenants.iter().flat_map(|(t, gs)| {
                        gs.iter().map(move |g| (format!("access.tenants.{t}"), g))
                    }),
                )
                .chain(
                    self.access.roles.iter().flat_map(|(r, gs)| {
                        gs.iter().map(move |g| (format!("access.roles.{r}"), g))
                    }),
                );
        for (key, grant) in grants {
            for service in &grant.services {
                if !services.iter().any(|s| glob_matches(service, s)) {
                    return Err(invalid(
                        format!("{key}.services"),
                        "patterns matching at least one configured service",
                    ));
                }
            }
            if grant
                .operations
                .iter()
                .chain(&grant.models)
                .any(String::is_empty)
            {
                return Err(invalid(key, "non-empty patterns"));
            }
        }
        if self.cache_max_entries == 0 {
            return Err(invalid("cache_max_entries", "at least 1"));
        }
        if self.keys_refresh_seconds == 0 {
            return Err(invalid("keys_refresh_seconds", "an interval above 0"));
        }
        Ok(())
    }
}

/// Glob match: `*` any run of characters (also none), `?` exactly one; case-sensitive.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("anthropic.*", "anthropic.claude-v2", true),
            ("anthropic.*", "us.anthropic.claude-v2", false),
            ("*.anthropic.*", "us.anthropic.claude-v2", true),
            ("Converse*", "ConverseStream", true),
            ("Converse*", "Converse", true),
            ("InvokeModel", "InvokeModelWithResponseStream", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in Algorithm::ASYMMETRIC.into_iter().chain([Algorithm::HS256]) {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(json, format!("\"{}\"", alg.name()));
        }
        assert_eq!(Algorithm::from_name("none"), None);
        assert_eq!(Algorithm::from_name("HS512"), None);
    }
}
