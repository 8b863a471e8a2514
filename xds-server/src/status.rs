//! What the server reports about itself: the configuration in force, rejected reloads, ADS
//! streams and NACKs, and the signing credentials (never the secret). Shared by the tasks that
//! update it and rendered by the admin port as JSON (`/status`) and Prometheus text
//! (`/metrics`).

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::credentials::CredentialStore;

/// A reload that failed, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub message: String,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Clone)]
struct LoadedConfig {
    version: String,
    loaded_at: SystemTime,
}

/// Counters and state of a running server.
pub struct ServerStatus {
    config_file: String,
    loaded: Mutex<LoadedConfig>,
    last_error: Mutex<Option<LastError>>,
    reloads: AtomicU64,
    rejected_reloads: AtomicU64,
    xds_streams: AtomicU64,
    xds_streams_total: AtomicU64,
    nacks: AtomicU64,
    credentials: Arc<CredentialStore>,
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub config_file: String,
    pub config_version: String,
    pub loaded_at: String,
    /// The newest reload's error while the file on disk is not the configuration in force;
    /// `null` once a reload succeeds.
    pub last_error: Option<LastError>,
    pub rejected_reloads: u64,
    /// ADS streams open now.
    pub xds_streams: u64,
    pub nacks: u64,
    pub credentials: CredentialsReport,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CredentialsReport {
    /// Whether unexpired credentials are there to hand out.
    pub available: bool,
    /// First 4 characters of the access key id (never more).
    pub access_key_id_prefix: Option<String>,
    /// RFC 3339, UTC; `null` for credentials that do not expire.
    pub expires_at: Option<String>,
    pub last_refresh_error: Option<String>,
}

impl ServerStatus {
    pub fn new(
        config_file: String,
        config_version: String,
        loaded_at: SystemTime,
        credentials: Arc<CredentialStore>,
    ) -> Self {
        Self {
            config_file,
            loaded: Mutex::new(LoadedConfig {
                version: config_version,
                loaded_at,
            }),
            last_error: Mutex::new(None),
            reloads: AtomicU64::new(0),
            rejected_reloads: AtomicU64::new(0),
            xds_streams: AtomicU64::new(0),
            xds_streams_total: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
            credentials,
        }
    }

    /// A new configuration is in force.
    pub fn config_loaded(&self, version: String, at: SystemTime) {
        *lock(&self.loaded) = LoadedConfig {
            version,
            loaded_at: at,
        };
        *lock(&self.last_error) = None;
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// A changed file was rejected; the previous configuration stays in force.
    pub fn reload_rejected(&self, message: String, at: SystemTime) {
        *lock(&self.last_error) = Some(LastError {
            message,
            at: rfc3339(at),
        });
        self.rejected_reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an open ADS stream until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.xds_streams.fetch_add(1, Ordering::Relaxed);
        self.xds_streams_total.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(self))
    }

    pub fn nack_received(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self, now: SystemTime) -> StatusReport {
        let loaded = lock(&self.loaded).clone();
        let credentials = self.credentials.status(now);
        StatusReport {
            config_file: self.config_file.clone(),
            config_version: loaded.version,
            loaded_at: rfc3339(loaded.loaded_at),
            last_error: lock(&self.last_error).clone(),
            rejected_reloads: self.rejected_reloads.load(Ordering::Relaxed),
            xds_streams: self.xds_streams.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
            credentials: CredentialsReport {
                available: credentials.available,
                access_key_id_prefix: credentials.access_key_id_prefix,
                expires_at: credentials.expires_at.map(rfc3339),
                last_refresh_error: credentials.last_error,
            },
        }
    }

    /// The same facts as [`Self::report`], in the Prometheus text format.
    pub fn prometheus(&self, now: SystemTime) -> String {
        let loaded = lock(&self.loaded).clone();
        let credentials = self.credentials.status(now);
        let failing = lock(&self.last_error).is_some();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP xds_server_{name} {help}");
            let _ = writeln!(out, "# TYPE xds_server_{name} {kind}");
            let _ = writeln!(out, "xds_server_{name} {value}");
        };
        metric(
            "config_reloads_total",
            "counter",
            "Changed configuration files loaded after startup.",
            self.reloads.load(Ordering::Relaxed) as f64,
        );
        metric(
            "config_rejected_reloads_total",
            "counter",
            "Changed configuration files rejected (the previous configuration kept serving).",
            self.rejected_reloads.load(Ordering::Relaxed) as f64,
        );
        metric(
            "config_last_reload_failed",
            "gauge",
            "1 while the file on disk is rejected and an older configuration is in force.",
            f64::from(u8::from(failing)),
        );
        metric(
            "config_loaded_timestamp_seconds",
            "gauge",
            "When the configuration in force was loaded (Unix seconds).",
            unix_seconds(loaded.loaded_at) as f64,
        );
        metric(
            "xds_streams",
            "gauge",
            "ADS streams open now.",
            self.xds_streams.load(Ordering::Relaxed) as f64,
        );
        metric(
            "xds_streams_total",
            "counter",
            "ADS streams opened.",
            self.xds_streams_total.load(Ordering::Relaxed) as f64,
        );
        metric(
            "xds_nacks_total",
            "counter",
            "xDS responses rejected by Envoy.",
            self.nacks.load(Ordering::Relaxed) as f64,
        );
        metric(
            "credentials_available",
            "gauge",
            "1 when unexpired signing credentials are available.",
            f64::from(u8::from(credentials.available)),
        );
        metric(
            "credentials_expiry_timestamp_seconds",
            "gauge",
            "When the current signing credentials expire (Unix seconds; 0 when they do not).",
            credentials.expires_at.map_or(0, unix_seconds) as f64,
        );
        metric(
            "credentials_refreshes_total",
            "counter",
            "Successful fetches of signing credentials.",
            credentials.refreshes as f64,
        );
        metric(
            "credentials_refresh_failures_total",
            "counter",
            "Failed fetches of signing credentials.",
            credentials.refresh_failures as f64,
        );
        out
    }
}

/// Decrements the open-stream gauge when an ADS stream ends.
pub struct StreamGuard(Arc<ServerStatus>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.xds_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data: keep going.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2026-11-21T10:00:00Z` (whole seconds, UTC).
pub fn rfc3339(at: SystemTime) -> String {
    aws_smithy_types::DateTime::from_secs(unix_seconds(at))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("@{}", unix_seconds(at)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_000_000) + Duration::from_millis(900)),
            "2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn reload_errors_are_reported_until_a_reload_succeeds() {
        let status = ServerStatus::new(
            "gateway.yaml".into(),
            "v1".into(),
            UNIX_EPOCH,
            Arc::new(CredentialStore::default()),
        );
        let at = UNIX_EPOCH + Duration::from_secs(60);
        status.reload_rejected("gateway.yaml: upstream.region: expected ...".into(), at);
        let report = status.report(at);
        assert_eq!(report.rejected_reloads, 1);
        assert_eq!(
            report.last_error,
            Some(LastError {
                message: "gateway.yaml: upstream.region: expected ...".into(),
                at: "1970-01-01T00:01:00Z".into()
            })
        );
        assert_eq!(report.config_version, "v1");
        assert!(
            status
                .prometheus(at)
                .contains("xds_server_config_rejected_reloads_total 1\n")
        );
        assert!(
            status
                .prometheus(at)
                .contains("xds_server_config_last_reload_failed 1\n")
        );

        status.config_loaded("v2".into(), at);
        let report = status.report(at);
        assert_eq!(report.last_error, None);
        assert_eq!(report.rejected_reloads, 1);
        assert_eq!(report.config_version, "v2");
        assert!(
            status
                .prometheus(at)
                .contains("xds_server_config_last_reload_failed 0\n")
        );
    }

    #[test]
    fn counts_open_streams_and_nacks() {
        let status = Arc::new(ServerStatus::new(
            "f".into(),
            "v".into(),
            UNIX_EPOCH,
            Arc::new(CredentialStore::default()),
        ));
        let first = status.stream_opened();
        let second = status.stream_opened();
        status.nack_received();
        assert_eq!(status.report(UNIX_EPOCH).xds_streams, 2);
        drop(first);
        let report = status.report(UNIX_EPOCH);
        assert_eq!((report.xds_streams, report.nacks), (1, 1));
        drop(second);
        let text = status.prometheus(UNIX_EPOCH);
        assert!(text.contains("xds_server_xds_streams 0\n"), "{text}");
        assert!(text.contains("xds_server_xds_streams_total 2\n"), "{text}");
        assert!(text.contains("xds_server_xds_nacks_total 1\n"), "{text}");
    }
}
