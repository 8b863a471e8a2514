//! Polls the configuration file and applies good changes. Polling (not inotify) sees every
//! way a file gets replaced: editors' rename-on-save and Kubernetes' ConfigMap symlink swaps.
//! A bad change is logged, counted and remembered while the last good configuration keeps
//! serving. [`Reloader`] decides (no IO); [`watch_config`] reads and sleeps.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::{
    active::ActiveConfig,
    config::{self, ConfigError, GatewayConfig, Overrides},
    snapshot::Snapshot,
    util::{
        Clock, lock,
        metrics::{Collect, MetricWriter},
        rfc3339, unix_seconds,
    },
};

/// What was last read from the file: its digest, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

impl Seen {
    fn of(read: &io::Result<Vec<u8>>) -> Self {
        match read {
            Ok(content) => Seen::Content(Sha256::digest(content).into()),
            Err(error) => Seen::Unreadable(error.to_string()),
        }
    }
}

/// The result of looking at the file once.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// Same as last time (good or bad): nothing to do.
    Unchanged,
    Loaded(Box<GatewayConfig>),
    Rejected(ConfigError),
}

/// Turns successive reads of the configuration file into reload decisions.
#[derive(Debug, Clone)]
pub struct Reloader {
    file: String,
    base_dir: PathBuf,
    overrides: Overrides,
    last_seen: Option<Seen>,
}

impl Reloader {
    pub fn new(path: &Path, overrides: Overrides) -> Self {
        Self {
            file: path.display().to_string(),
            base_dir: config::base_dir(path),
            overrides,
            last_seen: None,
        }
    }

    /// Judges the outcome of reading the file.
    pub fn check(&mut self, read: io::Result<Vec<u8>>) -> Reload {
        let seen = Seen::of(&read);
        if self.last_seen.as_ref() == Some(&seen) {
            return Reload::Unchanged;
        }
        self.last_seen = Some(seen);
        match self.parse(read) {
            Ok(config) => Reload::Loaded(Box::new(config)),
            Err(error) => Reload::Rejected(error),
        }
    }

    /// Parses what was read at startup (and remembers it, so only later changes reload).
    pub fn load(&mut self, read: io::Result<Vec<u8>>) -> Result<GatewayConfig, ConfigError> {
        self.last_seen = Some(Seen::of(&read));
        self.parse(read)
    }

    fn parse(&self, read: io::Result<Vec<u8>>) -> Result<GatewayConfig, ConfigError> {
        match read {
            Ok(content) => match std::str::from_utf8(&content) {
                Ok(text) => config::parse(&self.file, text, &self.base_dir, &self.overrides),
                Err(e) => Err(ConfigError::Read {
                    file: self.file.clone(),
                    reason: format!("expected UTF-8 text: {e}"),
                }),
            },
            Err(error) => Err(ConfigError::Read {
                file: self.file.clone(),
                reason: error.to_string(),
            }),
        }
    }
}

/// Polls `path` every `interval` until `shutdown`, publishing each good change.
pub async fn watch_config(
    path: PathBuf,
    mut reloader: Reloader,
    interval: Duration,
    publish: watch::Sender<Arc<ActiveConfig>>,
    status: Arc<ReloadStatus>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let read = tokio::fs::read(&path).await;
        match reloader.check(read) {
            Reload::Unchanged => {}
            Reload::Loaded(config) => {
                let snapshot = Snapshot::build(&config);
                let version = snapshot.version().to_string();
                let previous = publish.borrow().snapshot.version().to_string();
                info!(file = %path.display(), version, previous, "configuration reloaded");
                status.config_loaded(version, clock.now());
                publish.send_replace(Arc::new(ActiveConfig {
                    config: *config,
                    snapshot,
                }));
            }
            Reload::Rejected(error) => {
                error!(error = %error, kind = error.kind(), "configuration change rejected; still serving the previous configuration");
                status.reload_rejected(error.to_string(), clock.now());
            }
        }
    }
}

/// The configuration in force and the reloads: the configuration part of `/status`.
pub struct ReloadStatus {
    config_file: String,
    loaded: Mutex<LoadedConfig>,
    last_error: Mutex<Option<LastError>>,
    reloads: AtomicU64,
    rejected_reloads: AtomicU64,
}

#[derive(Debug, Clone)]
struct LoadedConfig {
    version: String,
    loaded_at: SystemTime,
}

/// A reload that failed, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub message: String,
    /// RFC 3339, UTC.
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub config_file: String,
    pub config_version: String,
    pub loaded_at: String,
    /// The newest reload's error while the file on disk is not the configuration in force;
    /// `null` once a reload succeeds.
    pub last_error: Option<LastError>,
    pub rejected_reloads: u64,
}

impl ReloadStatus {
    /// `config_file` at `version` is in force since `loaded_at`.
    pub fn new(config_file: String, version: String, loaded_at: SystemTime) -> Self {
        Self {
            config_file,
            loaded: Mutex::new(LoadedConfig { version, loaded_at }),
            last_error: Mutex::new(None),
            reloads: AtomicU64::new(0),
            rejected_reloads: AtomicU64::new(0),
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

    pub fn report(&self) -> ReloadReport {
        let loaded = lock(&self.loaded).clone();
        ReloadReport {
            config_file: self.config_file.clone(),
            config_version: loaded.version,
            loaded_at: rfc3339(loaded.loaded_at),
            last_error: lock(&self.last_error).clone(),
            rejected_reloads: self.rejected_reloads.load(Ordering::Relaxed),
        }
    }
}

impl Collect for ReloadStatus {
    fn collect(&self, metrics: &mut MetricWriter<'_>, _now: SystemTime) -> fmt::Result {
        let loaded_at = lock(&self.loaded).loaded_at;
        let failing = lock(&self.last_error).is_some();
        metrics.counter(
            "config_reloads",
            "Changed configuration files loaded after startup.",
            self.reloads.load(Ordering::Relaxed),
        )?;
        metrics.counter(
            "config_rejected_reloads",
            "Changed configuration files rejected (the previous configuration kept serving).",
            self.rejected_reloads.load(Ordering::Relaxed),
        )?;
        metrics.gauge(
            "config_last_reload_failed",
            "1 while the file on disk is rejected and an older configuration is in force.",
            i64::from(failing),
        )?;
        metrics.gauge(
            "config_loaded_timestamp_seconds",
            "When the configuration in force was loaded (Unix seconds).",
            unix_seconds(loaded_at),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "upstream: {region: us-east-1}\nfilter: {wasm_path: /f.wasm}\nauth: {mode: none}\n";

    fn reloader() -> Reloader {
        Reloader::new(Path::new("/etc/gateway/gateway.yaml"), Overrides::default())
    }

    #[test]
    fn reloads_only_changed_content() {
        let mut reloader = reloader();
        let Reload::Loaded(config) = reloader.check(Ok(GOOD.into())) else {
            panic!("first read must load");
        };
        assert_eq!(config.upstream.region, "us-east-1");
        assert_eq!(reloader.check(Ok(GOOD.into())), Reload::Unchanged);

        let changed = GOOD.replace("us-east-1", "eu-west-1");
        assert!(
            matches!(reloader.check(Ok(changed.into())), Reload::Loaded(c) if c.upstream.region == "eu-west-1")
        );
    }

    #[test]
    fn a_bad_change_is_reported_once_and_a_fix_loads_again() {
        let mut reloader = reloader();
        assert!(matches!(reloader.check(Ok(GOOD.into())), Reload::Loaded(_)));
        let bad = GOOD.replace("us-east-1", "moon");
        let Reload::Rejected(error) = reloader.check(Ok(bad.clone().into())) else {
            panic!("bad region must be rejected");
        };
        assert_eq!(
            error.to_string(),
            "/etc/gateway/gateway.yaml: upstream.region: expected an AWS region name such as us-east-1, found \"moon\""
        );
        assert_eq!(reloader.check(Ok(bad.into())), Reload::Unchanged);
        // Back to the very content in force: loaded again (the snapshot version says whether
        // anything changed for Envoy).
        assert!(matches!(reloader.check(Ok(GOOD.into())), Reload::Loaded(_)));
    }

    #[test]
    fn unreadable_and_non_utf8_files_are_rejected() {
        let mut reloader = reloader();
        let missing = || {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                "No such file or directory",
            ))
        };
        let Reload::Rejected(error) = reloader.check(missing()) else {
            panic!("a missing file must be rejected");
        };
        assert_eq!(
            error.to_string(),
            "/etc/gateway/gateway.yaml: cannot read the file: No such file or directory"
        );
        assert_eq!(reloader.check(missing()), Reload::Unchanged);
        assert!(matches!(
            reloader.check(Ok(vec![0xff, 0xfe])),
            Reload::Rejected(ConfigError::Read { reason, .. }) if reason.starts_with("expected UTF-8 text")
        ));
    }
}
