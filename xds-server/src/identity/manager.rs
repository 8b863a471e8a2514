//! Keeps every issuer's keys: reads them at once, then on schedule, when a watched file
//! changes, and when the filter meets an unknown key id (rate-limited, one fetch shared by
//! concurrent callers). A failed read keeps the last good keys. Follows configuration
//! reloads without dropping the keys of issuers whose source did not change.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use gateway_common::proto;
use prost::Message as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    entry::{Context, Entry, Trigger, refresh, run_entry},
    fetch::{FETCH_TIMEOUT, HttpGet},
    source::IssuerKeySource,
};
use crate::util::{
    Clock, lock,
    metrics::{Collect, MetricWriter},
    time::serialize_rfc3339,
    unix_seconds,
};

/// The issuers' keys, shared by the refresh tasks, the control API and the status page.
pub struct KeyManager {
    context: Arc<Context>,
    entries: Mutex<Vec<Arc<Entry>>>,
    shutdown: CancellationToken,
    /// `GetIdentityKeys` calls answered, and those naming an unknown key id.
    requests: AtomicU64,
    unknown_kid_requests: AtomicU64,
}

/// What `/status` shows about one issuer (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuerReport {
    /// The issuer's configuration name: the key of its report.
    #[serde(skip)]
    pub name: String,
    pub issuer: String,
    /// The configuration key of its key source: `jwks_uri`, `discovery`, `jwks_file`,
    /// `jwks`, `dev_signing_key` or `hs256_secret_env`.
    pub source: &'static str,
    /// The URL or file the keys are read from (for discovery, the JWKS URL once found).
    pub location: Option<String>,
    /// How many verification keys it has (`kids.len()`).
    pub keys: usize,
    pub kids: Vec<String>,
    /// RFC 3339, UTC; `null` before the first read and for keys that are never read.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub last_fetch_at: Option<SystemTime>,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub last_success_at: Option<SystemTime>,
    /// `None` for sources that are never re-read.
    #[serde(serialize_with = "serialize_rfc3339")]
    pub next_fetch_at: Option<SystemTime>,
    /// Why the last read failed (the last good keys stay in use); `null` after a good one.
    pub last_error: Option<String>,
    pub fetches: u64,
    #[serde(rename = "fetch_failures")]
    pub failures: u64,
    /// Reads caused by tokens with an unknown key id.
    pub unknown_kid_refreshes: u64,
}

/// The identity part of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityReport {
    /// Version of the keys `GetIdentityKeys` hands out now (16 hex digits).
    pub identity_keys_version: String,
    /// The `jwt` issuers, by name.
    pub identity: BTreeMap<String, IssuerReport>,
}

impl KeyManager {
    /// A manager with no issuers; [`Self::apply`] gives it some. Its tasks stop with
    /// `shutdown`.
    pub fn new(http: Arc<dyn HttpGet>, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Self {
        Self {
            context: Arc::new(Context { http, clock }),
            entries: Mutex::new(Vec::new()),
            shutdown,
            requests: AtomicU64::new(0),
            unknown_kid_requests: AtomicU64::new(0),
        }
    }

    /// `GetIdentityKeys` calls answered so far, and those naming an unknown key id.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.unknown_kid_requests.load(Ordering::Relaxed),
        )
    }

    /// Makes `sources` the issuers. An issuer whose `iss` and source are unchanged keeps its
    /// keys and schedule (a new name or interval applies at once); others start afresh.
    /// Must run inside the Tokio runtime (it starts the refresh tasks).
    pub fn apply(&self, sources: &[IssuerKeySource]) {
        let now = self.context.clock.now();
        let mut entries = lock(&self.entries);
        let mut next = Vec::with_capacity(sources.len());
        for source in sources {
            let kept = entries
                .iter()
                .find(|e| e.issuer == source.issuer && e.source == source.source);
            if let Some(entry) = kept {
                let mut state = lock(&entry.state);
                state.name.clone_from(&source.name);
                state
                    .schedule
                    .set_intervals(source.refresh, source.min_refresh);
                drop(state);
                entry.wake.notify_one();
                next.push(Arc::clone(entry));
                continue;
            }
            let entry = Arc::new(Entry::new(source, now, self.shutdown.child_token()));
            info!(issuer = %source.name, iss = %source.issuer, source = source.source.label(), "identity: issuer configured");
            if entry.source.static_keys().is_none() {
                tokio::spawn(run_entry(Arc::clone(&self.context), Arc::clone(&entry)));
            }
            next.push(entry);
        }
        for old in entries.iter() {
            if !next.iter().any(|e| Arc::ptr_eq(e, old)) {
                old.cancel.cancel();
                let name = lock(&old.state).name.clone();
                info!(issuer = %name, iss = %old.issuer, "identity: issuer removed or its key source changed");
            }
        }
        *entries = next;
    }

    /// The answer to `GetIdentityKeys`. When the caller met `unknown_kid` of
    /// `unknown_kid_issuer` and that issuer was not read within its minimum interval, its
    /// keys are read first (the caller waits at most [`FETCH_TIMEOUT`]).
    pub async fn identity_keys(
        &self,
        unknown_kid_issuer: &str,
        unknown_kid: &str,
        keys_refresh_seconds: u64,
    ) -> proto::IdentityKeys {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !unknown_kid_issuer.is_empty() {
            self.unknown_kid_requests.fetch_add(1, Ordering::Relaxed);
            self.refresh_for_unknown_kid(unknown_kid_issuer, unknown_kid)
                .await;
        }
        self.answer(keys_refresh_seconds)
    }

    async fn refresh_for_unknown_kid(&self, iss: &str, kid: &str) {
        let entry = lock(&self.entries)
            .iter()
            .find(|e| e.issuer == iss)
            .cloned();
        let Some(entry) = entry else {
            debug!(
                iss,
                kid, "unknown key id of an issuer that is not configured"
            );
            return;
        };
        if entry.source.static_keys().is_some() {
            return;
        }
        let wanted = {
            let state = lock(&entry.state);
            !state.has_kid(kid) && state.schedule.on_demand_allowed(self.context.clock.now())
        };
        if !wanted {
            return;
        }
        let context = Arc::clone(&self.context);
        let trigger = Trigger::UnknownKid(kid.to_string());
        // In a task of its own: a caller that stops waiting does not cancel the read.
        let read = tokio::spawn(async move { refresh(&context, &entry, trigger).await });
        if tokio::time::timeout(FETCH_TIMEOUT, read).await.is_err() {
            warn!(
                iss,
                kid,
                "keys still being read after {FETCH_TIMEOUT:?}: answering with the keys at hand"
            );
        }
    }

    /// Every issuer's current keys, their version and when to ask again.
    pub fn answer(&self, keys_refresh_seconds: u64) -> proto::IdentityKeys {
        let now = self.context.clock.now();
        let entries = lock(&self.entries).clone();
        let mut issuers = Vec::with_capacity(entries.len());
        let mut until_next: Option<Duration> = None;
        for entry in &entries {
            let state = lock(&entry.state);
            issuers.push(proto::IssuerKeys {
                issuer: entry.issuer.clone(),
                keys: state
                    .keys
                    .iter()
                    .map(proto::VerificationKey::from)
                    .collect(),
            });
            if entry.source.static_keys().is_none() {
                let wait = state.schedule.until_next(now);
                until_next = Some(until_next.map_or(wait, |w| w.min(wait)));
            }
        }
        proto::IdentityKeys {
            version: keys_version(&issuers),
            issuers,
            refresh_after_seconds: refresh_after_seconds(until_next, keys_refresh_seconds),
        }
    }

    /// One report per issuer, in configuration order.
    pub fn report(&self) -> Vec<IssuerReport> {
        let entries = lock(&self.entries).clone();
        entries
            .iter()
            .map(|entry| {
                let state = lock(&entry.state);
                let refetched = entry.source.static_keys().is_none();
                IssuerReport {
                    name: state.name.clone(),
                    issuer: entry.issuer.clone(),
                    source: entry.source.label(),
                    location: state.jwks_uri.clone().or_else(|| entry.source.location()),
                    keys: state.keys.len(),
                    kids: state.keys.iter().map(|k| k.kid.clone()).collect(),
                    last_fetch_at: state.schedule.last_attempt(),
                    last_success_at: state.last_success_at,
                    next_fetch_at: refetched.then(|| state.schedule.next_at()),
                    last_error: state.last_error.clone(),
                    fetches: state.fetches,
                    failures: state.failures,
                    unknown_kid_refreshes: state.unknown_kid_refreshes,
                }
            })
            .collect()
    }

    /// The identity part of `/status`.
    pub fn status_report(&self) -> IdentityReport {
        IdentityReport {
            identity_keys_version: format!("{:016x}", self.version()),
            identity: self
                .report()
                .into_iter()
                .map(|issuer| (issuer.name.clone(), issuer))
                .collect(),
        }
    }

    /// A manager without issuers whose reads would all fail, for tests of its neighbours.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Self> {
        struct Offline;
        impl HttpGet for Offline {
            fn get<'a>(
                &'a self,
                url: &'a str,
            ) -> std::pin::Pin<
                Box<dyn Future<Output = Result<Vec<u8>, super::fetch::FetchError>> + Send + 'a>,
            > {
                Box::pin(async move {
                    Err(super::fetch::FetchError::Http {
                        url: url.to_string(),
                        reason: "offline".into(),
                    })
                })
            }
        }
        Arc::new(Self::new(
            Arc::new(Offline),
            Arc::new(crate::util::SystemClock),
            CancellationToken::new(),
        ))
    }

    /// The version of the current keys (as in [`Self::answer`]).
    pub fn version(&self) -> u64 {
        self.answer(1).version
    }
}

impl Collect for KeyManager {
    fn collect(&self, metrics: &mut MetricWriter<'_>, _now: SystemTime) -> fmt::Result {
        let (key_requests, unknown_kid_requests) = self.requests();
        metrics.counter(
            "identity_key_requests",
            "GetIdentityKeys calls answered (Envoy workers asking for token keys).",
            key_requests,
        )?;
        metrics.counter(
            "identity_unknown_kid_requests",
            "GetIdentityKeys calls naming an unknown key id (at most one per issuer per unknown_kid_refresh_seconds per Envoy worker).",
            unknown_kid_requests,
        )?;
        let issuers = self.report();
        let by_issuer = |value: fn(&IssuerReport) -> u64| {
            issuers
                .iter()
                .map(move |issuer| (issuer.name.as_str(), value(issuer)))
        };
        metrics.gauges(
            "identity_keys",
            "Verification keys of the issuer handed to the filter.",
            "issuer",
            issuers
                .iter()
                .map(|i| (i.name.as_str(), i64::try_from(i.keys).unwrap_or(i64::MAX))),
        )?;
        metrics.counters(
            "identity_key_fetches",
            "Reads of the issuer's keys (good or bad).",
            "issuer",
            by_issuer(|i| i.fetches),
        )?;
        metrics.counters(
            "identity_key_fetch_failures",
            "Failed reads of the issuer's keys (the last good keys stayed in use).",
            "issuer",
            by_issuer(|i| i.failures),
        )?;
        metrics.counters(
            "identity_unknown_kid_refreshes",
            "Reads of the issuer's keys caused by a token with an unknown key id.",
            "issuer",
            by_issuer(|i| i.unknown_kid_refreshes),
        )?;
        metrics.gauges(
            "identity_last_success_timestamp_seconds",
            "When the issuer's keys were last read successfully (Unix seconds; 0: never).",
            "issuer",
            issuers
                .iter()
                .map(|i| (i.name.as_str(), i.last_success_at.map_or(0, unix_seconds))),
        )
    }
}

/// Changes whenever any key of any issuer does; the same keys give the same version
/// whatever their order.
pub fn keys_version(issuers: &[proto::IssuerKeys]) -> u64 {
    let mut encoded: Vec<Vec<u8>> = issuers
        .iter()
        .map(|issuer| {
            let mut keys: Vec<Vec<u8>> = issuer.keys.iter().map(|k| k.encode_to_vec()).collect();
            keys.sort();
            let mut out = issuer.issuer.clone().into_bytes();
            for key in keys {
                out.push(0);
                out.extend((key.len() as u64).to_be_bytes());
                out.extend(key);
            }
            out
        })
        .collect();
    encoded.sort();
    let mut hash = Sha256::new();
    for part in encoded {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

/// Seconds until the filter should ask again: when the server reads keys next (rounded
/// up), at least 1 and at most `keys_refresh_seconds`.
pub fn refresh_after_seconds(until_next: Option<Duration>, keys_refresh_seconds: u64) -> u32 {
    let max = keys_refresh_seconds.clamp(1, u64::from(u32::MAX));
    let wait = until_next.map_or(max, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    u32::try_from(wait.clamp(1, max)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
