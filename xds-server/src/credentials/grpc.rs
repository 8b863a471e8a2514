//! `GetSigningCredentials`: the current signing credentials, in their wire form.

use std::time::SystemTime;

use gateway_common::proto::{GetSigningCredentialsRequest, SigningCredentials};
use tonic::Status;
use tracing::{debug, info};

use super::{refresher::CredentialStore, source::Credentials};

/// Seconds until the filter should ask again: when the server itself fetches next, but at
/// least 1 and at most the configured `credentials_refresh_seconds`.
pub fn refresh_after_seconds(
    now: SystemTime,
    next_refresh_at: Option<SystemTime>,
    credentials_refresh_seconds: u64,
) -> u32 {
    let max = credentials_refresh_seconds.clamp(1, u64::from(u32::MAX));
    let until_refresh = next_refresh_at
        .map(|at| at.duration_since(now).map_or(0, |d| d.as_secs()))
        .unwrap_or(max);
    u32::try_from(until_refresh.clamp(1, max)).unwrap_or(u32::MAX)
}

/// The wire form of `credentials`; the one place secrets leave the process.
fn to_proto(credentials: &Credentials, refresh_after_seconds: u32) -> SigningCredentials {
    SigningCredentials {
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: credentials.secret_access_key.expose().to_string(),
        session_token: credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .unwrap_or_default(),
        expires_at_unix_seconds: credentials.expires_at.map_or(0, crate::util::unix_seconds),
        refresh_after_seconds,
    }
}

/// The answer to `request` at `now`: `UNAVAILABLE` (with the reason, never a secret) when
/// there are no unexpired credentials.
pub fn signing_credentials(
    store: &CredentialStore,
    now: SystemTime,
    request: &GetSigningCredentialsRequest,
    credentials_refresh_seconds: u64,
) -> Result<SigningCredentials, Status> {
    let Some(credentials) = store.current(now) else {
        let reason = store
            .last_error()
            .unwrap_or_else(|| "not fetched yet".to_string());
        debug!(node = %request.node_id, %reason, "no signing credentials to hand out");
        return Err(Status::unavailable(format!(
            "no unexpired AWS signing credentials: {reason}"
        )));
    };
    if !request.current_access_key_id.is_empty()
        && request.current_access_key_id != credentials.access_key_id
    {
        info!(
            node = %request.node_id,
            from = %request.current_access_key_id.chars().take(4).collect::<String>(),
            to = %credentials.access_key_id_prefix(),
            "filter switches to new signing credentials"
        );
    }
    let refresh_after =
        refresh_after_seconds(now, store.next_refresh_at(), credentials_refresh_seconds);
    Ok(to_proto(&credentials, refresh_after))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::util::Secret;

    #[test]
    fn refresh_after_is_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |s: u64| Some(now + Duration::from_secs(s));
        assert_eq!(refresh_after_seconds(now, at(30), 60), 30);
        assert_eq!(refresh_after_seconds(now, at(900), 60), 60);
        assert_eq!(refresh_after_seconds(now, at(0), 60), 1);
        assert_eq!(
            refresh_after_seconds(now, Some(now - Duration::from_secs(5)), 60),
            1
        );
        assert_eq!(refresh_after_seconds(now, None, 60), 60);
        assert_eq!(refresh_after_seconds(now, at(10), 0), 1);
        assert_eq!(
            refresh_after_seconds(now, at(u64::from(u32::MAX) + 10), u64::MAX),
            u32::MAX
        );
    }

    #[test]
    fn wire_form() {
        let credentials = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: Secret::new("secret"),
            session_token: None,
            expires_at: None,
            provider: "static".into(),
        };
        let proto = to_proto(&credentials, 7);
        assert_eq!(proto.secret_access_key, "secret");
        assert_eq!(proto.session_token, "");
        assert_eq!(proto.expires_at_unix_seconds, 0);
        assert_eq!(proto.refresh_after_seconds, 7);
    }
}
