//! AWS credentials and where they come from: the types the credential modules share, apart
//! from them so they import it one way.

use std::{fmt, future::Future, pin::Pin, time::SystemTime};

use crate::util::Secret;

/// A set of AWS credentials. `Debug` shows the first 4 characters of the access key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Set for temporary credentials.
    pub session_token: Option<Secret>,
    /// When they stop working; `None` for long-term credentials.
    pub expires_at: Option<SystemTime>,
    /// Which provider produced them (`EnvironmentVariable`, `ProfileFile`, `WebIdentityToken`,
    /// `EcsContainer`, `IMDSv2`, `static`...), for logs.
    pub provider: String,
}

impl Credentials {
    /// The first 4 characters of the access key id: enough to tell keys apart in logs.
    pub fn access_key_id_prefix(&self) -> String {
        self.access_key_id.chars().take(4).collect()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "access_key_id",
                &format_args!("{}…", self.access_key_id_prefix()),
            )
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .field("expires_at", &self.expires_at)
            .field("provider", &self.provider)
            .finish()
    }
}

/// Why no credentials could be had. The message never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("no AWS credentials: {0}")]
    Unavailable(String),
    #[error("fetching AWS credentials took longer than {0} seconds")]
    Timeout(u64),
    #[error("the {provider} provider returned credentials that have already expired")]
    Expired { provider: String },
}

impl CredentialsError {
    /// Short stable label, usable as a metric tag.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialsError::Unavailable(_) => "unavailable",
            CredentialsError::Timeout(_) => "timeout",
            CredentialsError::Expired { .. } => "expired",
        }
    }
}

pub type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credentials, CredentialsError>> + Send + 'a>>;

/// Where credentials come from.
pub trait CredentialSource: Send + Sync + 'static {
    /// Fetches the credentials as of now (a source may cache them).
    fn fetch(&self) -> FetchFuture<'_>;
}

/// Always the same credentials: for tests and fixed setups.
#[derive(Debug, Clone)]
pub struct StaticCredentialSource(Credentials);

impl StaticCredentialSource {
    pub fn new(credentials: Credentials) -> Self {
        Self(credentials)
    }
}

impl CredentialSource for StaticCredentialSource {
    fn fetch(&self) -> FetchFuture<'_> {
        let credentials = self.0.clone();
        Box::pin(async move { Ok(credentials) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let credentials = Credentials {
            access_key_id: "AKIAEXAMPLEKEYID".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("FQoGZXIvYXdzEXAMPLETOKEN")),
            expires_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(60)),
            provider: "static".into(),
        };
        for text in [format!("{credentials:?}"), format!("{credentials:#?}")] {
            assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
            assert!(!text.contains("FQoGZXIvYXdz"), "{text}");
            assert!(!text.contains("AKIAEXAMPLE"), "{text}");
            assert!(text.contains("AKIA…"), "{text}");
        }
        let error = CredentialsError::Expired {
            provider: credentials.provider.clone(),
        };
        assert!(!format!("{error:?}").contains("wJalr"));
        assert_eq!(credentials.access_key_id_prefix(), "AKIA");
    }

    #[test]
    fn expiry() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expires_at: Some(at),
            provider: "static".into(),
        };
        assert!(!credentials.is_expired(at - Duration::from_secs(1)));
        assert!(credentials.is_expired(at));
        credentials.expires_at = None;
        assert!(!credentials.is_expired(at + Duration::from_secs(1_000_000)));
    }
}
