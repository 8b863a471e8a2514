//! Keeps the current credentials fresh. The schedule is pure ([`refresh_delay`], [`Backoff`](crate::util::Backoff));
//! [`run_refresher`] only fetches, stores and sleeps.
//!
//! - Expiring credentials are fetched again when `min(5 minutes, half the remaining lifetime)`
//!   of their lifetime remains; long-term ones every 15 minutes (a rotated key is noticed).
//! - A failed fetch is retried after 1, 2, 4 ... up to 30 seconds, and the previous
//!   credentials keep being handed out until they expire.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::source::{CredentialSource, Credentials, CredentialsError};
use serde::Serialize;

use crate::util::{
    Backoff, Clock, lock,
    metrics::{Collect, MetricWriter},
    rfc3339,
    time::serialize_rfc3339,
    unix_seconds,
};

/// How often long-term credentials are read again.
pub const LONG_TERM_REFRESH: Duration = Duration::from_secs(15 * 60);
/// Expiring credentials are refreshed when at most this much of their lifetime remains.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Shortest wait between two fetches.
pub const MIN_DELAY: Duration = Duration::from_secs(1);
/// A fetch that takes longer counts as failed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait, after fetching credentials at `now`, before fetching again.
pub fn refresh_delay(now: SystemTime, expires_at: Option<SystemTime>) -> Duration {
    match expires_at {
        None => LONG_TERM_REFRESH,
        Some(expires_at) => {
            let remaining = expires_at.duration_since(now).unwrap_or(Duration::ZERO);
            let margin = EXPIRY_MARGIN.min(remaining / 2);
            (remaining - margin).max(MIN_DELAY)
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RefreshState {
    next_refresh_at: Option<SystemTime>,
    last_error: Option<String>,
    refreshes: u64,
    refresh_failures: u64,
}

/// The current credentials and the refresher's state, shared with the control API and the
/// status page.
#[derive(Default)]
pub struct CredentialStore {
    current: ArcSwapOption<Credentials>,
    state: Mutex<RefreshState>,
}

/// What the status page shows about credentials (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStatus {
    pub available: bool,
    pub access_key_id_prefix: Option<String>,
    pub expires_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub next_refresh_at: Option<SystemTime>,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

/// What `/status` shows about credentials (no secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialsReport {
    /// Whether unexpired credentials are there to hand out.
    pub available: bool,
    /// First 4 characters of the access key id (never more).
    pub access_key_id_prefix: Option<String>,
    /// RFC 3339, UTC; `null` for credentials that do not expire.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub expires_at: Option<SystemTime>,
    pub last_refresh_error: Option<String>,
}

impl Collect for CredentialStore {
    fn collect(&self, metrics: &mut MetricWriter<'_>, now: SystemTime) -> fmt::Result {
        let status = self.status(now);
        metrics.gauge(
            "credentials_available",
            "1 when unexpired signing credentials are available.",
            i64::from(status.available),
        )?;
        metrics.gauge(
            "credentials_expiry_timestamp_seconds",
            "When the current signing credentials expire (Unix seconds; 0 when they do not).",
            status.expires_at.map_or(0, unix_seconds),
        )?;
        metrics.counter(
            "credentials_refreshes",
            "Successful fetches of signing credentials.",
            status.refreshes,
        )?;
        metrics.counter(
            "credentials_refresh_failures",
            "Failed fetches of signing credentials.",
            status.refresh_failures,
        )
    }
}

impl CredentialStore {
    /// The credentials to hand out at `now`: `None` before the first successful fetch and
    /// once the last ones have expired.
    pub fn current(&self, now: SystemTime) -> Option<Arc<Credentials>> {
        self.current.load_full().filter(|c| !c.is_expired(now))
    }

    /// When the refresher fetches next.
    pub fn next_refresh_at(&self) -> Option<SystemTime> {
        lock(&self.state).next_refresh_at
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }

    pub fn status(&self, now: SystemTime) -> CredentialStatus {
        let current = self.current(now);
        let state = lock(&self.state).clone();
        CredentialStatus {
            available: current.is_some(),
            access_key_id_prefix: current.as_ref().map(|c| c.access_key_id_prefix()),
            expires_at: current.as_ref().and_then(|c| c.expires_at),
            last_error: state.last_error,
            next_refresh_at: state.next_refresh_at,
            refreshes: state.refreshes,
            refresh_failures: state.refresh_failures,
        }
    }

    /// The credentials part of `/status` (no secret).
    pub fn report(&self, now: SystemTime) -> CredentialsReport {
        let status = self.status(now);
        CredentialsReport {
            available: status.available,
            access_key_id_prefix: status.access_key_id_prefix,
            expires_at: status.expires_at,
            last_refresh_error: status.last_error,
        }
    }

    fn store(&self, credentials: Credentials, next_refresh_at: SystemTime) {
        self.current.store(Some(Arc::new(credentials)));
        let mut state = lock(&self.state);
        state.next_refresh_at = Some(next_refresh_at);
        state.last_error = None;
        state.refreshes += 1;
    }

    fn record_failure(&self, error: &CredentialsError, next_refresh_at: SystemTime) {
        let mut state = lock(&self.state);
        state.next_refresh_at = Some(next_refresh_at);
        state.last_error = Some(error.to_string());
        state.refresh_failures += 1;
    }
}

/// Fetches credentials now, then whenever the schedule says, until `shutdown`.
pub async fn run_refresher(
    source: Arc<dyn CredentialSource>,
    store: Arc<CredentialStore>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return,
            fetched = tokio::time::timeout(FETCH_TIMEOUT, source.fetch()) => fetched,
        };
        let now = clock.now();
        let fetched = fetched
            .unwrap_or(Err(CredentialsError::Timeout(FETCH_TIMEOUT.as_secs())))
            .and_then(|credentials| {
                if credentials.is_expired(now) {
                    Err(CredentialsError::Expired {
                        provider: credentials.provider.clone(),
                    })
                } else {
                    Ok(credentials)
                }
            });
        let delay = match fetched {
            Ok(credentials) => {
                backoff.reset();
                let delay = refresh_delay(now, credentials.expires_at);
                let previous = store.current.load_full();
                if previous.as_ref().map(|p| &p.access_key_id) != Some(&credentials.access_key_id) {
                    info!(
                        provider = %credentials.provider,
                        access_key_id = %credentials.access_key_id_prefix(),
                        expires_at = ?credentials.expires_at.map(rfc3339),
                        next_refresh_seconds = delay.as_secs(),
                        "signing credentials loaded"
                    );
                }
                store.store(credentials, now + delay);
                delay
            }
            Err(error) => {
                let delay = backoff.next_delay();
                let serving = store.current(now).is_some();
                warn!(%error, retry_seconds = delay.as_secs(), serving_previous = serving, "could not refresh signing credentials");
                store.record_failure(&error, now + delay);
                delay
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests;
