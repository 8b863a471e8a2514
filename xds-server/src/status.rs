//! What the server reports about itself: the configuration in force, rejected reloads, ADS
//! streams and NACKs, the signing credentials (never the secret), the issuers' keys and the
//! quotas.
//! Shared by the tasks that update it and rendered by the admin port as JSON (`/status`) and
//! Prometheus text (`/metrics`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::Serialize;

use crate::{
    credentials::CredentialStore,
    identity::{KeyManager, manager::IssuerReport},
    quota::{QuotaEngine, engine::QuotaReport},
    util::{lock, rfc3339, unix_seconds},
};

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
    identity: Arc<KeyManager>,
    quotas: Arc<QuotaEngine>,
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
    /// Version of the keys `GetIdentityKeys` hands out now (16 hex digits).
    pub identity_keys_version: String,
    /// The `jwt` issuers, by name.
    pub identity: BTreeMap<String, IdentityReport>,
    /// `null` without a `quotas` section.
    pub quotas: Option<QuotaReport>,
}

/// One issuer's keys (no secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityReport {
    pub issuer: String,
    /// The configuration key of its key source: `jwks_uri`, `discovery`, `jwks_file`,
    /// `jwks`, `dev_signing_key` or `hs256_secret_env`.
    pub source: &'static str,
    /// The URL or file the keys are read from (for discovery, the JWKS URL once found).
    pub location: Option<String>,
    pub keys: usize,
    pub kids: Vec<String>,
    /// RFC 3339, UTC; `null` before the first read and for keys that are never read.
    pub last_fetch_at: Option<String>,
    pub last_success_at: Option<String>,
    pub next_fetch_at: Option<String>,
    /// Why the last read failed (the last good keys stay in use); `null` after a good one.
    pub last_error: Option<String>,
    pub fetches: u64,
    pub fetch_failures: u64,
    /// Reads caused by tokens with an unknown key id.
    pub unknown_kid_refreshes: u64,
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
        identity: Arc<KeyManager>,
        quotas: Arc<QuotaEngine>,
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
            identity,
            quotas,
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
            identity_keys_version: format!("{:016x}", self.identity.version()),
            identity: self
                .identity
                .report()
                .into_iter()
                .map(|issuer| {
                    (
                        issuer.name,
                        IdentityReport {
                            issuer: issuer.issuer,
                            source: issuer.source,
                            location: issuer.location,
                            keys: issuer.kids.len(),
                            kids: issuer.kids,
                            last_fetch_at: issuer.last_fetch_at.map(rfc3339),
                            last_success_at: issuer.last_success_at.map(rfc3339),
                            next_fetch_at: issuer.next_fetch_at.map(rfc3339),
                            last_error: issuer.last_error,
                            fetches: issuer.fetches,
                            fetch_failures: issuer.failures,
                            unknown_kid_refreshes: issuer.unknown_kid_refreshes,
                        },
                    )
                })
                .collect(),
            quotas: self.quotas.report(),
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
        let (key_requests, unknown_kid_requests) = self.identity.requests();
        metric(
            "identity_key_requests_total",
            "counter",
            "GetIdentityKeys calls answered (Envoy workers asking for token keys).",
            key_requests as f64,
        );
        metric(
            "identity_unknown_kid_requests_total",
            "counter",
            "GetIdentityKeys calls naming an unknown key id (at most one per issuer per unknown_kid_refresh_seconds per Envoy worker).",
            unknown_kid_requests as f64,
        );
        let issuers = self.identity.report();
        let mut labelled =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&IssuerReport) -> f64| {
                let _ = writeln!(out, "# HELP xds_server_{name} {help}");
                let _ = writeln!(out, "# TYPE xds_server_{name} {kind}");
                for issuer in &issuers {
                    let _ = writeln!(
                        out,
                        "xds_server_{name}{{issuer=\"{}\"}} {}",
                        label_value(&issuer.name),
                        value(issuer)
                    );
                }
            };
        labelled(
            "identity_keys",
            "gauge",
            "Verification keys of the issuer handed to the filter.",
            &|i| i.kids.len() as f64,
        );
        labelled(
            "identity_key_fetches_total",
            "counter",
            "Reads of the issuer's keys (good or bad).",
            &|i| i.fetches as f64,
        );
        labelled(
            "identity_key_fetch_failures_total",
            "counter",
            "Failed reads of the issuer's keys (the last good keys stayed in use).",
            &|i| i.failures as f64,
        );
        labelled(
            "identity_unknown_kid_refreshes_total",
            "counter",
            "Reads of the issuer's keys caused by a token with an unknown key id.",
            &|i| i.unknown_kid_refreshes as f64,
        );
        labelled(
            "identity_last_success_timestamp_seconds",
            "gauge",
            "When the issuer's keys were last read successfully (Unix seconds; 0: never).",
            &|i| i.last_success_at.map_or(0, unix_seconds) as f64,
        );
        let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP xds_server_{name} {help}");
            let _ = writeln!(out, "# TYPE xds_server_{name} {kind}");
            let _ = writeln!(out, "xds_server_{name} {value}");
        };
        for (name, help, value) in self.quotas.metrics() {
            metric(name, "counter", help, value as f64);
        }
        if let Some(healthy) = self.quotas.store_healthy() {
            metric(
                "quota_store_healthy",
                "gauge",
                "1 when the quota store's last operation succeeded (only with quotas).",
                f64::from(u8::from(healthy)),
            );
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Decrements the open-stream gauge when an ADS stream ends.
pub struct StreamGuard(Arc<ServerStatus>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.xds_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
