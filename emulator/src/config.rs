//! The emulator's settings, validated once before any socket is bound.

use std::fmt;
use std::time::Duration;

use gateway_common::names;

/// A secret string (secret access key, session token). Its `Debug` never shows the value, so
/// a stray `{:?}` in a log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for signing and for the one endpoint whose job is to hand it out.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Long-term (or fixed temporary) credentials given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// When set, requests signed with these credentials must carry it in
    /// `x-amz-security-token`.
    pub session_token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// The region every request must be signed for (and whose hosts are accepted).
    pub region: String,
    /// Credentials accepted besides those issued by the control port.
    pub static_credentials: Option<StaticCredentials>,
    /// Lifetime of the credentials `GET /credentials` issues.
    pub temp_credentials_ttl: Duration,
    /// Largest accepted difference between `x-amz-date` and the emulator's clock.
    pub max_clock_skew: Duration,
    /// Accept any `Host` (e.g. `127.0.0.1:4566`) instead of only Bedrock's hostnames.
    pub any_host: bool,
}

impl EmulatorConfig {
    /// Defaults matching the command line's: 900 s credentials, 300 s clock skew, strict hosts.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            static_credentials: None,
            temp_credentials_ttl: Duration::from_secs(900),
            max_clock_skew: Duration::from_secs(300),
            any_host: false,
        }
    }

    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        self.static_credentials = Some(StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: session_token.map(Secret::new),
        });
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !names::is_region_name(&self.region) {
            return Err(ConfigError::Region(self.region.clone()));
        }
        if let Some(creds) = &self.static_credentials {
            if creds.access_key_id.is_empty()
                || !creds
                    .access_key_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric())
            {
                return Err(ConfigError::AccessKeyId(creds.access_key_id.clone()));
            }
            if creds.secret_access_key.expose().is_empty() {
                return Err(ConfigError::EmptySecret);
            }
            if creds
                .session_token
                .as_ref()
                .is_some_and(|t| t.expose().is_empty())
            {
                return Err(ConfigError::EmptySessionToken);
            }
        }
        if self.temp_credentials_ttl.is_zero() {
            return Err(ConfigError::ZeroTtl);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--region: expected an AWS region name such as us-east-1, got {0:?}")]
    Region(String),
    #[error("--access-key-id: expected a non-empty string of ASCII letters and digits, got {0:?}")]
    AccessKeyId(String),
    #[error("--secret-access-key: expected a non-empty value")]
    EmptySecret,
    #[error("--session-token: expected a non-empty value when given")]
    EmptySessionToken,
    #[error("--temp-credentials-ttl-seconds: expected at least 1")]
    ZeroTtl,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let creds = EmulatorConfig::new("us-east-1").with_static_credentials(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-value".into()),
        );
        let shown = format!("{creds:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("session-token-value"), "{shown}");
    }

    #[test]
    fn validation_names_the_option() {
        let cases = [
            (
                EmulatorConfig::new("moon-base"),
                "--region: expected an AWS region name such as us-east-1, got \"moon-base\"",
            ),
            (
                EmulatorConfig::new("us-east-1").with_static_credentials("AK/ID", "s", None),
                "--access-key-id: expected a non-empty string of ASCII letters and digits, got \"AK/ID\"",
            ),
            (
                EmulatorConfig::new("us-east-1").with_static_credentials("AKID", "", None),
                "--secret-access-key: expected a non-empty value",
            ),
            (
                EmulatorConfig::new("us-east-1").with_static_credentials(
                    "AKID",
                    "s",
                    Some(String::new()),
                ),
                "--session-token: expected a non-empty value when given",
            ),
            (
                EmulatorConfig {
                    temp_credentials_ttl: Duration::ZERO,
                    ..EmulatorConfig::new("us-east-1")
                },
                "--temp-credentials-ttl-seconds: expected at least 1",
            ),
        ];
        for (config, expected) in cases {
            assert_eq!(config.validate().unwrap_err().to_string(), expected);
        }
        assert_eq!(EmulatorConfig::new("eu-west-3").validate(), Ok(()));
    }
}
