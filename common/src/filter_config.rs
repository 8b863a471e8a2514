//! The filter's configuration: JSON that xds-server renders from the gateway's YAML file and
//! delivers inside the Wasm plugin config over xDS. It holds no secret (it is visible in
//! Envoy's `/config_dump`). Both sides validate it with [`FilterConfig::validate`].

use serde::{Deserialize, Serialize};

use crate::auth_config::JwtAuthentication;
use crate::invalid_key::{InvalidKey, invalid};
use crate::names;
use crate::quota_config::QuotaConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// AWS region the requests are signed for.
    pub region: String,
    /// The Bedrock services this gateway forwards to, by endpoint prefix.
    pub services: Vec<UpstreamService>,
    /// Extra rules that pick the service from the request path when the client does not say
    /// which service it calls; tried before the built-in rules.
    #[serde(default)]
    pub path_rules: Vec<PathRule>,
    #[serde(default)]
    pub control: ControlConfig,
    pub authentication: Authentication,
    /// Larger request bodies are refused with 413 before they are buffered for signing.
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
    /// Request and token quotas, through a rate limit service; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaConfig>,
}

/// Where requests for one Bedrock service go and how they are signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UpstreamService {
    /// Endpoint prefix, as in `aws-endpoint-prefix` (`bedrock-runtime`).
    pub name: String,
    /// Host header sent upstream and signed (`bedrock-runtime.us-east-1.amazonaws.com`).
    pub host: String,
    /// Envoy cluster that reaches it.
    pub cluster: String,
    #[serde(default = "default_signing_name")]
    pub signing_name: String,
}

/// `path` is matched segment by segment: `*` matches one segment, a final `**` any rest
/// (including nothing); anything else matches literally (case-sensitive, as sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub path: String,
    pub service: String,
}

/// How the filter reaches xds-server's control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    pub cluster: String,
    pub timeout_ms: u64,
    /// How often the filter asks for signing credentials when the server gave no hint.
    pub credentials_refresh_seconds: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            cluster: names::CONTROL_CLUSTER.to_string(),
            timeout_ms: 2_000,
            credentials_refresh_seconds: 60,
        }
    }
}

/// Who may call. `none` lets every caller through (the reference design with its authorizer
/// disabled); it must be chosen explicitly. `jwt` requires a token from a configured issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Authentication {
    None,
    Jwt(JwtAuthentication),
}

pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 20 * 1024 * 1024;

fn default_max_request_body_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BODY_BYTES
}

fn default_signing_name() -> String {
    names::SIGNING_NAME.to_string()
}

impl FilterConfig {
    /// Parses and validates the JSON the filter receives. Errors name the key
    /// (`quota.failure_mode: unknown variant ...`).
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let mut reader = serde_json::Deserializer::from_slice(json);
        let config: FilterConfig = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => format!("filter configuration: {}", e.inner()),
                path => format!("filter configuration: {path}: {}", e.inner()),
            }
        })?;
        reader
            .end()
            .map_err(|e| format!("filter configuration: {e}"))?;
        config
            .validate()
            .map_err(|e| format!("filter configuration: {e}"))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if !names::is_region_name(&self.region) {
            return Err(invalid("region", "an AWS region name such as us-east-1"));
        }
        if self.services.is_empty() {
            return Err(invalid("services", "at least one service"));
        }
        for (i, service) in self.services.iter().enumerate() {
            let key = |field: &str| format!("services[{i}].{field}");
            if !is_token(&service.name) {
                return Err(invalid(
                    key("name"),
                    "an endpoint prefix such as bedrock-runtime",
                ));
            }
            if self.services[..i].iter().any(|s| s.name == service.name) {
                return Err(invalid(key("name"), "each service only once"));
            }
            if !is_host(&service.host) {
                return Err(invalid(key("host"), "a host name"));
            }
            if service.cluster.is_empty() {
                return Err(invalid(key("cluster"), "an Envoy cluster name"));
            }
            if !is_token(&service.signing_name) {
                return Err(invalid(
                    key("signing_name"),
                    "a SigV4 signing name such as bedrock",
                ));
            }
        }
        for (i, rule) in self.path_rules.iter().enumerate() {
            let key = |field: &str| format!("path_rules[{i}].{field}");
            if let Some(method) = &rule.method
                && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return Err(invalid(
                    key("method"),
                    "an HTTP method in upper case, such as POST",
                ));
            }
            if let Err(expected) = check_path_pattern(&rule.path) {
                return Err(invalid(key("path"), expected));
            }
            if !self.services.iter().any(|s| s.name == rule.service) {
                return Err(invalid(key("service"), "one of the configured services"));
            }
        }
        if self.control.cluster.is_empty() {
            return Err(invalid("control.cluster", "an Envoy cluster name"));
        }
        if self.control.timeout_ms == 0 {
            return Err(invalid("control.timeout_ms", "a timeout above 0"));
        }
        if self.control.credentials_refresh_seconds == 0 {
            return Err(invalid(
                "control.credentials_refresh_seconds",
                "an interval above 0",
            ));
        }
        if self.max_request_body_bytes == 0 {
            return Err(invalid("max_request_body_bytes", "a size above 0"));
        }
        if let Some(quota) = &self.quota {
            quota.validate().map_err(|e| InvalidKey {
                key: format!("quota.{}", e.key),
                expected: e.expected,
            })?;
        }
        if let Authentication::Jwt(jwt) = &self.authentication {
            let services: Vec<String> = self.services.iter().map(|s| s.name.clone()).collect();
            jwt.validate(&services).map_err(|e| InvalidKey {
                key: format!("authentication.{}", e.key),
                expected: e.expected,
            })?;
        }
        Ok(())
    }
}

/// Checks a path pattern; returns what was expected when it is malformed.
pub fn check_path_pattern(pattern: &str) -> Result<(), &'static str> {
    const EXPECTED: &str =
        "a path starting with / whose segments are literals or *, with ** only last";
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(EXPECTED);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if (*segment == "**" && !last)
            || (segment.contains('*') && *segment != "*" && *segment != "**")
        {
            return Err(EXPECTED);
        }
        if segment.contains(['?', '#']) {
            return Err(EXPECTED);
        }
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_host(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
}

#[cfg(test)]
mod tests;
