//! Quotas: Envoy's rate limit service (`ShouldRateLimit`) over a descriptor tree with fixed and
//! calendar windows, the settlement of token reservations (`ReportUsage`) and the usage ledger
//! (`GetUsage`, `GET /usage`).
//!
//! Policy is pure: the descriptor [`tree`], the [`window`] arithmetic, the counter [`keys`],
//! the admission decision ([`decide`]) and the settlement of usage reports ([`usage`]) take
//! the time as an argument. The [`store`]s keep counters and the ledger (in memory or in
//! Redis); the [`engine`] ties policy to a store and follows configuration reloads, and
//! [`grpc`] is the transport.

pub mod decide;
pub mod engine;
pub mod grpc;
pub mod keys;
pub mod store;
pub mod tree;
pub mod usage;
pub mod window;

use chrono_tz::Tz;

pub use engine::QuotaEngine;
use store::StoreError;

use crate::util::Secret;

/// The checked `quotas` section, as the service uses it (the filter's part is
/// `FilterConfig::quota`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaSettings {
    /// The rate limit domain this service answers for.
    pub domain: String,
    /// Time zone of calendar windows and of the ledger's days.
    pub time_zone: Tz,
    pub store: StoreSettings,
    pub descriptors: tree::Descriptors,
    /// Rows (tenant and model) the usage ledger keeps a day; more go to `(other)` rows.
    pub ledger_max_rows_per_day: u64,
}

/// Where counters and the ledger are kept.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    Memory,
    Redis(RedisSettings),
}

impl StoreSettings {
    /// `memory` or `redis`, as in the YAML file.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSettings::Memory => "memory",
            StoreSettings::Redis(_) => "redis",
        }
    }

    /// What every counter key starts with.
    pub fn key_prefix(&self) -> &str {
        match self {
            StoreSettings::Memory => keys::DEFAULT_KEY_PREFIX,
            StoreSettings::Redis(redis) => &redis.key_prefix,
        }
    }
}

/// A Redis store. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisSettings {
    /// The `redis://` or `rediss://` URL as configured (it may hold a password): only to
    /// connect with.
    pub url: Secret,
    /// The URL without its password, for logs and `/status`.
    pub display_url: String,
    /// From the environment variable `password_env` names.
    pub password: Option<Secret>,
    pub key_prefix: String,
}

/// Why a quota request could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("quotas are not configured (no `quotas` section)")]
    NotConfigured,
    #[error("quota store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    InvalidArgument(String),
}

impl QuotaError {
    /// Short stable label of the kind of error, usable as a metric tag.
    pub fn kind(&self) -> &'static str {
        match self {
            QuotaError::NotConfigured => "not_configured",
            QuotaError::Store(_) => "store",
            QuotaError::InvalidArgument(_) => "invalid_argument",
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A clock tests set by hand, and settings from a `quotas` section.

    use std::{
        path::Path,
        sync::{Arc, Mutex},
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    use gateway_common::quota_config::QuotaConfig;

    use super::QuotaSettings;
    use crate::{
        config::{self, Overrides},
        util::Clock,
        util::lock,
    };

    /// The service's and the filter's view of a `quotas` section (YAML, at top level).
    pub fn quotas(section: &str) -> (QuotaSettings, QuotaConfig) {
        let text = format!(
            "upstream: {{region: us-east-1}}\nfilter: {{wasm_path: /f.wasm}}\nauth: {{mode: none}}\n{section}"
        );
        let config = config::parse("gateway.yaml", &text, Path::new("/"), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        (
            config.quotas.expect("a quotas section"),
            config.filter.quota.expect("the filter's quota config"),
        )
    }

    pub struct ManualClock(Mutex<SystemTime>);

    impl ManualClock {
        /// At `seconds` after the epoch.
        pub fn at(seconds: i64) -> Arc<Self> {
            let clock = Arc::new(Self(Mutex::new(UNIX_EPOCH)));
            clock.set(seconds);
            clock
        }

        pub fn set(&self, seconds: i64) {
            self.set_time(UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs()));
        }

        pub fn set_time(&self, at: SystemTime) {
            *lock(&self.0) = at;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *lock(&self.0)
        }
    }
}
