//! The production source: the AWS SDK's standard credential chain (environment variables,
//! shared config and credentials files with SSO and `credential_process`, web identity / IRSA,
//! the ECS and EKS container endpoints, EC2 instance metadata).

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use super::source::{CredentialSource, Credentials, CredentialsError, FetchFuture};
use crate::util::Secret;

pub struct AwsChainSource {
    provider: SharedCredentialsProvider,
}

impl AwsChainSource {
    /// The standard chain as `aws_config` resolves it for `region` (which matters to STS
    /// based providers such as web identity).
    /// Without a region, the SDK's own lookup (environment, profile, instance metadata).
    pub async fn new(region: Option<&str>) -> Result<Self, CredentialsError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_string()));
        }
        let config = loader.load().await;
        let provider = config.credentials_provider().ok_or_else(|| {
            CredentialsError::Unavailable("the AWS SDK configured no credential provider".into())
        })?;
        Ok(Self { provider })
    }
}

impl CredentialSource for AwsChainSource {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let credentials = self
                .provider
                .provide_credentials()
                .await
                .map_err(|e| CredentialsError::Unavailable(describe(&e)))?;
            Ok(from_sdk(&credentials))
        })
    }
}

/// The error and its causes, each said once, as `/status` and the log show them. (The SDK's
/// `DisplayErrorContext` also appends the whole `Debug` form, which repeats every cause.)
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let said = error.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = error.source();
    }
    text
}

fn from_sdk(credentials: &aws_credential_types::Credentials) -> Credentials {
    Credentials {
        access_key_id: credentials.access_key_id().to_string(),
        secret_access_key: Secret::new(credentials.secret_access_key()),
        session_token: credentials.session_token().map(Secret::new),
        expires_at: credentials.expiry(),
        provider: provider_name(credentials),
    }
}

/// The SDK keeps the provider's name private but shows it in its (redacting) `Debug` output.
/// Only used for logs; `unknown` if that output ever changes shape.
fn provider_name(credentials: &aws_credential_types::Credentials) -> String {
    let debug = format!("{credentials:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .filter(|name| !name.is_empty() && name.len() <= 64)
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    #[test]
    fn errors_say_each_cause_once_without_debug_output() {
        let error = aws_credential_types::provider::error::CredentialsError::not_loaded(
            "no credentials found in chain",
        );
        let text = describe(&error);
        assert_eq!(
            text,
            "the credential provider was not enabled: no credentials found in chain"
        );
    }

    #[test]
    fn converts_sdk_credentials_and_names_the_provider() {
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sdk = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret-example",
            Some("token-example".into()),
            Some(expiry),
            "EnvironmentVariable",
        );
        let credentials = from_sdk(&sdk);
        assert_eq!(credentials.access_key_id, "AKIDEXAMPLE");
        assert_eq!(credentials.secret_access_key.expose(), "secret-example");
        assert_eq!(
            credentials.session_token.as_ref().map(Secret::expose),
            Some("token-example")
        );
        assert_eq!(credentials.expires_at, Some(expiry));
        assert_eq!(credentials.provider, "EnvironmentVariable");
    }
}
