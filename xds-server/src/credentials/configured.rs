//! The credential source `upstream.credentials` names, built once when xds-server starts.

use std::sync::Arc;

use super::{
    aws::AwsChainSource,
    source::{CredentialSource, CredentialsError, StaticCredentialSource},
};
use crate::config::CredentialSettings;

/// The source for `settings`: the standard AWS chain resolved for `region`, or the fixed
/// credentials the configuration read from the environment.
pub async fn configured_source(
    settings: &CredentialSettings,
    region: &str,
) -> Result<Arc<dyn CredentialSource>, CredentialsError> {
    Ok(match settings {
        CredentialSettings::AwsChain => Arc::new(AwsChainSource::new(Some(region)).await?),
        CredentialSettings::Static(credentials) => {
            Arc::new(StaticCredentialSource::new(credentials.clone()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{credentials::Credentials, util::Secret};

    #[tokio::test]
    async fn a_static_setting_yields_its_credentials() {
        let credentials = Credentials {
            access_key_id: "AKIACONFIGURED00".into(),
            secret_access_key: Secret::new("configured-secret-value"),
            session_token: Some(Secret::new("configured-session-token")),
            expires_at: None,
            provider: "env ACCESS".into(),
        };
        let settings = CredentialSettings::Static(credentials.clone());
        let source = configured_source(&settings, "us-east-1").await.unwrap();
        assert_eq!(source.fetch().await.unwrap(), credentials);
        let debug = format!("{settings:?}");
        assert!(!debug.contains("configured-secret-value"), "{debug}");
        assert!(!debug.contains("configured-session-token"), "{debug}");
        assert!(!debug.contains("AKIACONFIGURED00"), "{debug}");
    }
}
