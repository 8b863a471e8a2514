//! The quota service in force: the settings of the configuration in force and the store they
//! name. A reload swaps the settings and keeps the store (and its counters) unless
//! `quotas.store` changed. Runs the pure [`decide`], [`allowance`] and [`usage`] steps against
//! the store, counts what happens and keeps the store's health.

use std::{
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwapOption;
use chrono::NaiveDate;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use gateway_common::proto::{Allowance, CounterAdjustment, UsageRecord};
use serde::Serialize;
use tracing::{debug, info, warn};

use super::{
    allowance::{self, Grant},
    decide,
    settings::{QuotaError, QuotaSettings, StoreSettings},
    store::{
        Admission, Charge, CounterStore, MAX_REPORT_ID_BYTES, Report, StoreError, UsageLedger,
        memory::MemoryStore, redis::RedisStore,
    },
    usage::{self, UsageQuery, UsageRow},
    window::local_date,
};
use crate::util::{
    Clock, lock,
    metrics::{Collect, MetricWriter},
    unix_seconds,
};

/// How often the store is pinged while idle, so `/status` tells whether it answers.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);

/// One store, seen as counters and as ledger.
#[derive(Clone)]
struct Backend {
    counters: Arc<dyn CounterStore>,
    ledger: Arc<dyn UsageLedger>,
}

struct Active {
    settings: Arc<QuotaSettings>,
    store: Backend,
}

#[derive(Default)]
struct Counters {
    decisions: AtomicU64,
    unknown_domain: AtomicU64,
    over_limit: AtomicU64,
    shadow_over_limit: AtomicU64,
    refunds: AtomicU64,
    store_errors: AtomicU64,
    usage_records: AtomicU64,
    refusals_reported: AtomicU64,
    gateway_refusals_reported: AtomicU64,
    adjustments: AtomicU64,
    adjustments_dropped: AtomicU64,
    duplicate_reports: AtomicU64,
    report_ids_forgotten: AtomicU64,
    ledger_rows_collapsed: AtomicU64,
    streams_opened: AtomicU64,
    stream_requests: AtomicU64,
    allowances_granted: AtomicU64,
    allowance_units_granted: AtomicU64,
    allowances_withdrawn: AtomicU64,
    allowance_units_returned: AtomicU64,
}

/// A decision, and the allowances granted with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub response: RateLimitResponse,
    /// Empty unless asked for, configured (`quotas.allowances`) and admitted.
    pub allowances: Vec<Allowance>,
}

/// `/status`'s `quotas` member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuotaReport {
    pub domain: String,
    /// `memory` or `redis`.
    pub store: &'static str,
    /// The Redis URL (never its password); `null` for memory.
    pub redis_url: Option<String>,
    /// Whether the store's last operation (or health check) succeeded.
    pub healthy: bool,
    pub last_store_error: Option<String>,
    pub time_zone: String,
    /// Redis's clock minus this server's, in milliseconds, as the last health check measured
    /// it; `null` for memory or before the first check. Admissions Redis runs later than this
    /// server waits for them are not counted, by Redis's clock: keep the clocks in step.
    pub store_clock_offset_ms: Option<i64>,
}

#[derive(Default)]
struct Health {
    failing: bool,
    last_error: Option<String>,
}

/// Quotas as configured now; `None` inside while the configuration has no `quotas`.
pub struct QuotaEngine {
    active: ArcSwapOption<Active>,
    clock: Arc<dyn Clock>,
    counters: Counters,
    health: Mutex<Health>,
    genai: super::genai::GenAiMetrics,
}

impl QuotaEngine {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            active: ArcSwapOption::empty(),
            clock,
            counters: Counters::default(),
            health: Mutex::default(),
            genai: super::genai::GenAiMetrics::default(),
        }
    }

    /// The GenAI metrics of the reports applied so far (OpenMetrics text, no `# EOF`).
    pub fn genai_metrics(&self) -> String {
        self.genai.encode()
    }

    /// An engine without quotas, for tests of its neighbours.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<Self> {
        Arc::new(Self::new(Arc::new(crate::util::SystemClock)))
    }

    /// Puts `settings` in force. The store is rebuilt only when its own settings changed.
    pub fn apply(&self, settings: Option<&QuotaSettings>) -> Result<(), StoreError> {
        let Some(settings) = settings else {
            if self.active.swap(None).is_some() {
                info!("quotas switched off");
            }
            return Ok(());
        };
        let current = self.active.load_full();
        let store = match current.as_deref() {
            Some(active) if active.settings.store == settings.store => active.store.clone(),
            _ => {
                let store = self.open_store(&settings.store)?;
                info!(store = settings.store.kind(), "quota store set up");
                *lock(&self.health) = Health::default();
                store
            }
        };
        self.active.store(Some(Arc::new(Active {
            settings: Arc::new(settings.clone()),
            store,
        })));
        Ok(())
    }

    fn open_store(&self, store: &StoreSettings) -> Result<Backend, StoreError> {
        Ok(match store {
            StoreSettings::Memory => {
                let memory = Arc::new(MemoryStore::new(Arc::clone(&self.clock)));
                Backend {
                    counters: memory.clone(),
                    ledger: memory,
                }
            }
            StoreSettings::Redis(redis) => {
                let redis = Arc::new(RedisStore::new(redis)?);
                Backend {
                    counters: redis.clone(),
                    ledger: redis,
                }
            }
        })
    }

    fn active(&self) -> Result<Arc<Active>, QuotaError> {
        self.active.load_full().ok_or(QuotaError::NotConfigured)
    }

    /// Answers `ShouldRateLimit`. Without quotas every domain is unknown: OK. Never grants
    /// allowances.
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, QuotaError> {
        Ok(self.decide(request, false).await?.response)
    }

    /// Decides `request` as [`should_rate_limit`](Self::should_rate_limit) does and, when
    /// `allowances` asks for them, `quotas.allowances` is set and the request is admitted,
    /// grants allowances ([`allowance::grants`]), charged to their counters by one more
    /// all-or-nothing admission. When that admission is refused (another decision took the
    /// units first) or fails, the counted ones are not granted; the decision stands.
    pub async fn decide(
        &self,
        request: &RateLimitRequest,
        allowances: bool,
    ) -> Result<Decided, QuotaError> {
        let now = self.clock.now();
        let active = self.active().ok();
        let plan = active
            .as_ref()
            .and_then(|active| decide::plan(&active.settings, request, unix_seconds(now)));
        let (Some(active), Some(plan)) = (active, plan) else {
            debug!(domain = %request.domain, "rate limit request for an unknown domain: allowed");
            self.counters.unknown_domain.fetch_add(1, Ordering::Relaxed);
            return Ok(Decided {
                response: decide::unknown_domain(request, now),
                allowances: Vec::new(),
            });
        };
        let refunded = if plan.refunds.is_empty() {
            Vec::new()
        } else {
            let refunded = self.checked(active.store.counters.adjust(&plan.refunds).await)?;
            self.counters
                .refunds
                .fetch_add(plan.refunds.len() as u64, Ordering::Relaxed);
            refunded
        };
        let admission = if plan.charges.is_empty() {
            Admission {
                admitted: true,
                counts: Vec::new(),
            }
        } else {
            self.checked(active.store.counters.admit(&plan.charges).await)?
        };
        let decision = decide::decide(&plan, &admission, &refunded, now);
        self.counters.decisions.fetch_add(1, Ordering::Relaxed);
        if decision.over_limit {
            self.counters.over_limit.fetch_add(1, Ordering::Relaxed);
        }
        self.counters
            .shadow_over_limit
            .fetch_add(decision.shadow_over_limit, Ordering::Relaxed);
        let allowances = match (allowances, &active.settings.allowances) {
            (true, Some(settings)) => {
                let grants = allowance::grants(settings, request, &plan, &admission, now);
                self.charge_grants(&active, grants).await
            }
            _ => Vec::new(),
        };
        Ok(Decided {
            response: decision.response,
            allowances,
        })
    }

    /// Charges the counted `grants` in one all-or-nothing admission and returns the
    /// allowances granted: all of them, or the uncounted ones alone when the admission is
    /// refused or fails.
    async fn charge_grants(&self, active: &Active, grants: Vec<Grant>) -> Vec<Allowance> {
        let charges: Vec<Charge> = grants.iter().filter_map(|g| g.charge.clone()).collect();
        let charged = if charges.is_empty() {
            true
        } else {
            match self.checked(active.store.counters.admit(&charges).await) {
                Ok(admission) if admission.admitted => true,
                Ok(_) => {
                    debug!(
                        counted = charges.len(),
                        "allowances refused: their counters changed since the decision"
                    );
                    false
                }
                Err(error) => {
                    debug!(%error, "allowances not granted: the store failed");
                    false
                }
            }
        };
        let counters = &self.counters;
        if !charged {
            counters
                .allowances_withdrawn
                .fetch_add(charges.len() as u64, Ordering::Relaxed);
        }
        let granted: Vec<Allowance> = grants
            .into_iter()
            .filter(|grant| charged || !grant.is_counted())
            .map(|grant| grant.allowance)
            .collect();
        let units = granted
            .iter()
            .fold(0u64, |units, a| units.saturating_add(a.units));
        counters
            .allowances_granted
            .fetch_add(granted.len() as u64, Ordering::Relaxed);
        counters
            .allowance_units_granted
            .fetch_add(units, Ordering::Relaxed);
        granted
    }

    /// Applies `ReportUsage`: ledger rows, the corrections of what admission charged and the
    /// allowance units given back (`returned`), once per `report_id` (empty: no
    /// de-duplication). A batch already applied answers OK and changes nothing. Returns
    /// change counters only: neither the ledger nor the GenAI metrics.
    pub async fn report_usage(
        &self,
        report_id: &str,
        records: &[UsageRecord],
        returned: &[CounterAdjustment],
    ) -> Result<(), QuotaError> {
        if report_id.len() > MAX_REPORT_ID_BYTES {
            return Err(QuotaError::InvalidArgument(format!(
                "report_id: expected at most {MAX_REPORT_ID_BYTES} bytes, found {}",
                report_id.len()
            )));
        }
        let active = self.active()?;
        if records.is_empty() && returned.is_empty() {
            return Ok(());
        }
        let now = unix_seconds(self.clock.now());
        let settlement = usage::settle(&active.settings, records, returned, now);
        let report = Report {
            id: (!report_id.is_empty()).then(|| report_id.to_string()),
            adjustments: settlement.adjustments,
            ledger: settlement.ledger,
            max_rows_per_day: active.settings.ledger_max_rows_per_day,
        };
        let outcome = self.checked(active.store.ledger.settle(&report).await)?;
        let counters = &self.counters;
        counters
            .report_ids_forgotten
            .fetch_add(outcome.ids_forgotten, Ordering::Relaxed);
        if outcome.duplicate {
            debug!(report_id, "usage report applied before: ignored");
            counters.duplicate_reports.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.genai.record(records);
        let gone = outcome
            .counts
            .iter()
            .filter(|count| count.is_none())
            .count() as u64;
        let refusals = records.iter().filter(|r| r.refused).count() as u64;
        let gateway_refusals = records
            .iter()
            .filter(|r| r.refused_by_gateway && !r.refused)
            .count() as u64;
        counters
            .usage_records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        counters
            .refusals_reported
            .fetch_add(refusals, Ordering::Relaxed);
        counters
            .gateway_refusals_reported
            .fetch_add(gateway_refusals, Ordering::Relaxed);
        counters
            .adjustments
            .fetch_add(outcome.counts.len() as u64 - gone, Ordering::Relaxed);
        counters
            .adjustments_dropped
            .fetch_add(settlement.dropped + gone, Ordering::Relaxed);
        counters
            .ledger_rows_collapsed
            .fetch_add(outcome.collapsed, Ordering::Relaxed);
        counters
            .allowance_units_returned
            .fetch_add(settlement.returned_units, Ordering::Relaxed);
        if outcome.collapsed > 0 {
            debug!(
                records = outcome.collapsed,
                max_rows_per_day = report.max_rows_per_day,
                "usage ledger day full: records counted under model (other)"
            );
        }
        Ok(())
    }

    /// The ledger rows `query` asks for, sorted.
    pub async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, QuotaError> {
        let active = self.active()?;
        let found = self.checked(
            active
                .store
                .ledger
                .query(&query.days(), query.tenant.as_deref())
                .await,
        )?;
        Ok(usage::rows(found))
    }

    /// The settings in force; `None` without quotas.
    pub fn settings(&self) -> Option<Arc<QuotaSettings>> {
        self.active.load().as_ref().map(|a| Arc::clone(&a.settings))
    }

    /// The counts of these counters now (0 for one that does not exist), read without changing
    /// them: an admission of 0 hits under no limit counts nothing and creates no counter.
    pub async fn read_counters(&self, keys: &[String]) -> Result<Vec<u64>, QuotaError> {
        let active = self.active()?;
        let charges: Vec<Charge> = keys
            .iter()
            .map(|key| Charge {
                key: key.clone(),
                hits: 0,
                limit: None,
                expire_at: 0,
            })
            .collect();
        Ok(self
            .checked(active.store.counters.admit(&charges).await)?
            .counts)
    }

    /// Today in the quotas' time zone (UTC without quotas).
    pub fn today(&self) -> NaiveDate {
        let tz = self
            .active
            .load()
            .as_ref()
            .map_or(chrono_tz::UTC, |a| a.settings.time_zone);
        local_date(unix_seconds(self.clock.now()), tz)
    }

    /// Checks that the store answers (updating the health `/status` shows).
    pub async fn check_health(&self) {
        if let Ok(active) = self.active() {
            let _ = self.checked(active.store.counters.ping().await);
        }
    }

    /// Records the store's health; a failure becomes [`QuotaError::Store`].
    fn checked<T>(&self, result: Result<T, StoreError>) -> Result<T, QuotaError> {
        let mut health = lock(&self.health);
        match &result {
            Ok(_) if health.failing => {
                info!("quota store answers again");
                health.failing = false;
            }
            Ok(_) => {}
            Err(error) => {
                self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
                if health.failing {
                    debug!(%error, "quota store still failing");
                } else {
                    warn!(%error, "quota store failing: rate limit decisions answer UNAVAILABLE");
                    health.failing = true;
                }
                health.last_error = Some(error.to_string());
            }
        }
        result.map_err(QuotaError::from)
    }

    pub fn report(&self) -> Option<QuotaReport> {
        let active = self.active.load_full()?;
        let health = lock(&self.health);
        let settings = &active.settings;
        Some(QuotaReport {
            domain: settings.domain.clone(),
            store: settings.store.kind(),
            redis_url: match &settings.store {
                StoreSettings::Memory => None,
                StoreSettings::Redis(redis) => Some(redis.display_url.clone()),
            },
            healthy: !health.failing,
            last_store_error: health.last_error.clone(),
            time_zone: settings.time_zone.name().to_string(),
            store_clock_offset_ms: active.store.counters.clock_offset_ms(),
        })
    }

    /// Counts a `StreamRateLimit` stream a caller opened.
    pub fn stream_opened(&self) {
        self.counters.streams_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision asked for on a `StreamRateLimit` stream.
    pub fn stream_request(&self) {
        self.counters
            .stream_requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, help, value)` of each counter (named without `_total`, which `/metrics` adds).
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        vec![
            (
                "quota_decisions",
                "Rate limit requests answered, by ShouldRateLimit or on a StreamRateLimit stream (unknown domains and store failures excluded).",
                read(&c.decisions),
            ),
            (
                "quota_unknown_domain",
                "ShouldRateLimit requests for another domain (or without quotas): allowed.",
                read(&c.unknown_domain),
            ),
            (
                "quota_over_limit",
                "ShouldRateLimit answers OVER_LIMIT.",
                read(&c.over_limit),
            ),
            (
                "quota_shadow_over_limit",
                "Descriptors over a shadow-mode limit (admitted anyway).",
                read(&c.shadow_over_limit),
            ),
            (
                "quota_refunds",
                "Descriptors with negative hits given back.",
                read(&c.refunds),
            ),
            (
                "quota_store_errors",
                "Failed operations of the quota store, health checks included (requests then get UNAVAILABLE).",
                read(&c.store_errors),
            ),
            (
                "quota_usage_records",
                "Usage records applied from ReportUsage batches (duplicates excluded).",
                read(&c.usage_records),
            ),
            (
                "quota_refusals_reported",
                "Usage records of requests refused by a quota.",
                read(&c.refusals_reported),
            ),
            (
                "quota_gateway_refusals_reported",
                "Usage records of requests admitted, then refused by the gateway itself (their charges are given back).",
                read(&c.gateway_refusals_reported),
            ),
            (
                "quota_duplicate_reports",
                "ReportUsage batches whose report_id was applied before: answered OK, not applied again.",
                read(&c.duplicate_reports),
            ),
            (
                "quota_report_ids_forgotten",
                "Report ids the memory store forgot before their hour was up, to keep at most 100000.",
                read(&c.report_ids_forgotten),
            ),
            (
                "quota_ledger_rows_collapsed",
                "Usage records counted under model (other) because their day had quotas.ledger_max_rows_per_day rows.",
                read(&c.ledger_rows_collapsed),
            ),
            (
                "quota_adjustments",
                "Counter corrections applied from usage reports (token reservations settled, charges and allowance units given back).",
                read(&c.adjustments),
            ),
            (
                "quota_adjustments_dropped",
                "Corrections dropped: their window had ended or was not one, a refund found no counter, no counted limit matched, or an allowance return was not negative.",
                read(&c.adjustments_dropped),
            ),
            (
                "quota_streams_opened",
                "StreamRateLimit streams opened (the filter keeps one per Envoy worker).",
                read(&c.streams_opened),
            ),
            (
                "quota_stream_requests",
                "Rate limit requests received on StreamRateLimit streams.",
                read(&c.stream_requests),
            ),
            (
                "quota_allowances_granted",
                "Allowances granted with decisions (quotas.allowances), counted and uncounted.",
                read(&c.allowances_granted),
            ),
            (
                "quota_allowance_units_granted",
                "Units charged ahead to counters by the counted allowances granted.",
                read(&c.allowance_units_granted),
            ),
            (
                "quota_allowances_withdrawn",
                "Counted allowances not granted: their charge was refused (another decision took the units first) or the store failed.",
                read(&c.allowances_withdrawn),
            ),
            (
                "quota_allowance_units_returned",
                "Allowance units given back unspent in usage reports and applied to their counters (duplicates excluded).",
                read(&c.allowance_units_returned),
            ),
        ]
    }

    /// 1 while quotas are configured and the store answers.
    pub fn store_healthy(&self) -> Option<bool> {
        self.active.load().as_ref()?;
        Some(!lock(&self.health).failing)
    }
}

impl Collect for QuotaEngine {
    fn collect(&self, metrics: &mut MetricWriter<'_>, _now: SystemTime) -> fmt::Result {
        for (name, help, value) in self.metrics() {
            metrics.counter(name, help, value)?;
        }
        if let Some(healthy) = self.store_healthy() {
            metrics.gauge(
                "quota_store_healthy",
                "1 when the quota store's last operation succeeded (only with quotas).",
                i64::from(healthy),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
