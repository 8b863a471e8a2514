//! What the server reports about itself, assembled from the components that own the facts:
//! the configuration in force and rejected reloads ([`crate::watch`]), ADS streams and NACKs
//! ([`crate::xds::streams`]), the signing credentials, never the secret ([`crate::credentials`]),
//! the issuers' keys ([`crate::identity`]) and the quotas ([`crate::quota`]). Each owns its
//! serializable report and its metrics; this module only puts them side by side for the admin
//! port's `/status` (JSON) and `/metrics` (OpenMetrics text).

use std::{sync::Arc, time::SystemTime};

use serde::Serialize;

use crate::{
    credentials::{CredentialStore, refresher::CredentialsReport},
    identity::signatures::SignatureChecker,
    identity::{KeyManager, manager::IdentityReport},
    quota::{QuotaEngine, engine::QuotaReport},
    util::metrics::{self, Collect},
    watch::{ReloadReport, ReloadStatus},
    xds::streams::{StreamCounters, StreamReport},
};

/// The components of a running server that report.
pub struct ServerStatus {
    pub reloads: Arc<ReloadStatus>,
    pub streams: Arc<StreamCounters>,
    /// The signature checks the control service makes for the filter.
    pub signatures: Arc<SignatureChecker>,
    /// Stopping: health checks fail while the server still serves (see `ServeOptions::drain`).
    draining: std::sync::atomic::AtomicBool,
    credentials: Arc<CredentialStore>,
    identity: Arc<KeyManager>,
    quotas: Arc<QuotaEngine>,
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    #[serde(flatten)]
    pub config: ReloadReport,
    #[serde(flatten)]
    pub streams: StreamReport,
    pub credentials: CredentialsReport,
    #[serde(flatten)]
    pub identity: IdentityReport,
    /// `null` without a `quotas` section.
    pub quotas: Option<QuotaReport>,
}

impl ServerStatus {
    /// From now on `/healthz` answers 503: the server is stopping.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `config_file` at `config_version` was loaded at `loaded_at`.
    pub fn new(
        config_file: String,
        config_version: String,
        loaded_at: SystemTime,
        credentials: Arc<CredentialStore>,
        identity: Arc<KeyManager>,
        quotas: Arc<QuotaEngine>,
    ) -> Self {
        Self {
            reloads: Arc::new(ReloadStatus::new(config_file, config_version, loaded_at)),
            streams: Arc::default(),
            signatures: Arc::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            credentials,
            identity,
            quotas,
        }
    }

    pub fn report(&self, now: SystemTime) -> StatusReport {
        StatusReport {
            config: self.reloads.report(),
            streams: self.streams.report(),
            credentials: self.credentials.report(now),
            identity: self.identity.status_report(),
            quotas: self.quotas.report(),
        }
    }

    /// Every component's metrics, in the OpenMetrics text format.
    pub fn prometheus(&self, now: SystemTime) -> String {
        let components: [Arc<dyn Collect>; 6] = [
            Arc::clone(&self.reloads) as _,
            Arc::clone(&self.streams) as _,
            Arc::clone(&self.credentials) as _,
            Arc::clone(&self.identity) as _,
            Arc::clone(&self.signatures) as _,
            Arc::clone(&self.quotas) as _,
        ];
        let text = metrics::encode(&components, now);
        // The GenAI metrics keep their conventional names, outside the server's prefix.
        match text.strip_suffix("# EOF\n") {
            Some(head) => format!("{head}{}# EOF\n", self.quotas.genai_metrics()),
            None => text,
        }
    }
}

#[cfg(test)]
mod tests;
