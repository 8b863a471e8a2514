//! One issuer's keys and the task that keeps them fresh: reads on schedule, when a watched
//! file changes, and on demand, one at a time, each updating the schedule and the status.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    fetch::{self, FETCH_TIMEOUT, FetchError, HttpGet},
    jwk::SkippedKey,
    key::VerifyingKey,
    schedule::Schedule,
    source::{IssuerKeySource, KeySource},
};
use crate::util::{Clock, lock};

/// How often watched files (JWKS files, the development key) are checked for changes.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A whole read (discovery then JWKS) that takes longer fails.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2 * FETCH_TIMEOUT.as_secs());

/// What the tasks share: how to fetch and what time it is.
pub(super) struct Context {
    pub(super) http: Arc<dyn HttpGet>,
    pub(super) clock: Arc<dyn Clock>,
}

/// One issuer with one key source.
pub(super) struct Entry {
    pub(super) issuer: String,
    pub(super) source: KeySource,
    pub(super) state: Mutex<EntryState>,
    /// Held while reading: concurrent requests for a read share one.
    fetching: tokio::sync::Mutex<()>,
    /// Tells the refresh task that the schedule moved.
    pub(super) wake: Notify,
    pub(super) cancel: CancellationToken,
}

/// Size, modification time and inode of a watched file; `None` when it cannot be seen.
type FileStamp = Option<(u64, Option<SystemTime>, u64)>;

pub(super) struct EntryState {
    pub(super) name: String,
    pub(super) schedule: Schedule,
    pub(super) keys: Vec<VerifyingKey>,
    skipped: Vec<SkippedKey>,
    /// The JWKS URL discovery found.
    pub(super) jwks_uri: Option<String>,
    pub(super) last_success_at: Option<SystemTime>,
    pub(super) last_error: Option<String>,
    pub(super) fetches: u64,
    pub(super) failures: u64,
    pub(super) unknown_kid_refreshes: u64,
    /// The watched file as of the last read; `None` until first looked at.
    file_stamp: Option<FileStamp>,
}

/// Why a read happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trigger {
    Scheduled,
    FileChanged,
    UnknownKid(String),
}

impl Entry {
    pub(super) fn new(
        source: &IssuerKeySource,
        now: SystemTime,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            issuer: source.issuer.clone(),
            source: source.source.clone(),
            state: Mutex::new(EntryState {
                name: source.name.clone(),
                schedule: Schedule::new(now, source.refresh, source.min_refresh),
                keys: source.source.static_keys().unwrap_or_default(),
                skipped: Vec::new(),
                jwks_uri: None,
                last_success_at: None,
                last_error: None,
                fetches: 0,
                failures: 0,
                unknown_kid_refreshes: 0,
                file_stamp: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            cancel,
        }
    }

    /// The watched file's stamp now (`None` for sources without a file).
    async fn current_stamp(&self) -> Option<FileStamp> {
        let path = self.source.watched_file()?;
        Some(tokio::fs::metadata(path).await.ok().map(|m| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let inode = 0;
            (m.len(), m.modified().ok(), inode)
        }))
    }

    /// Whether the watched file changed since it was last read (or, before any read, since
    /// it was first looked at: the first read is scheduled anyway).
    async fn file_changed(&self) -> bool {
        let Some(stamp) = self.current_stamp().await else {
            return false;
        };
        let mut state = lock(&self.state);
        match state.file_stamp {
            None => {
                state.file_stamp = Some(stamp);
                false
            }
            Some(seen) => seen != stamp,
        }
    }
}

impl EntryState {
    pub(super) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }
}

/// Reads the keys of a re-readable source until the entry is cancelled.
pub(super) async fn run_entry(context: Arc<Context>, entry: Arc<Entry>) {
    let mut file_checks = tokio::time::interval(FILE_CHECK_INTERVAL);
    file_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watches_file = entry.source.watched_file().is_some();
    loop {
        let wait = lock(&entry.state).schedule.until_next(context.clock.now());
        tokio::select! {
            _ = entry.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => refresh(&context, &entry, Trigger::Scheduled).await,
            _ = entry.wake.notified() => {}
            _ = file_checks.tick(), if watches_file => {
                if entry.file_changed().await {
                    refresh(&context, &entry, Trigger::FileChanged).await;
                }
            }
        }
    }
}

/// One read of an entry's keys, unless another one made it unnecessary meanwhile.
pub(super) async fn refresh(context: &Context, entry: &Entry, trigger: Trigger) {
    let _reading = entry.fetching.lock().await;
    let (discovered, name) = {
        let mut state = lock(&entry.state);
        let now = context.clock.now();
        let needed = match &trigger {
            Trigger::Scheduled => state.schedule.is_due(now),
            Trigger::FileChanged => true,
            Trigger::UnknownKid(kid) => {
                !state.has_kid(kid) && state.schedule.on_demand_allowed(now)
            }
        };
        if !needed {
            return;
        }
        if matches!(trigger, Trigger::UnknownKid(_)) {
            state.unknown_kid_refreshes += 1;
        }
        (state.jwks_uri.clone(), state.name.clone())
    };
    if let Trigger::UnknownKid(kid) = &trigger {
        info!(issuer = %name, kid, "identity: token with an unknown key id, reading the keys now");
    }
    // Noted before reading, so that a change made while reading shows as a change
    // afterwards; but a development key that the read itself creates is noted after it.
    let mut stamp = entry.current_stamp().await;
    let result = tokio::time::timeout(
        LOAD_TIMEOUT,
        fetch::load(&entry.source, context.http.as_ref(), discovered),
    )
    .await
    .unwrap_or(Err(FetchError::Timeout(LOAD_TIMEOUT.as_secs())));
    if stamp == Some(None) && matches!(entry.source, KeySource::DevSigningKey(_)) {
        stamp = entry.current_stamp().await;
    }
    let now = context.clock.now();
    let mut state = lock(&entry.state);
    state.fetches += 1;
    if stamp.is_some() {
        state.file_stamp = stamp;
    }
    match result {
        Ok(loaded) => {
            state.schedule.succeeded(now);
            if loaded.skipped != state.skipped {
                for skipped in &loaded.skipped {
                    warn!(issuer = %name, kid = ?skipped.kid, index = skipped.index, reason = %skipped.reason, "identity: key skipped");
                }
            }
            if loaded.keys != state.keys {
                let kids: Vec<&str> = loaded.keys.iter().map(|k| k.kid.as_str()).collect();
                info!(issuer = %name, ?kids, ?trigger, "identity: keys loaded");
            }
            state.keys = loaded.keys;
            state.skipped = loaded.skipped;
            state.jwks_uri = loaded.jwks_uri;
            state.last_success_at = Some(now);
            state.last_error = None;
        }
        Err(error) => {
            state.schedule.failed(now);
            state.failures += 1;
            state.last_error = Some(error.to_string());
            // Discover again next time: the JWKS may have moved.
            state.jwks_uri = None;
            warn!(issuer = %name, %error, kind = error.kind(), keys_kept = state.keys.len(),
                retry_seconds = state.schedule.until_next(now).as_secs(), "identity: could not read the keys");
        }
    }
    drop(state);
    entry.wake.notify_one();
}
