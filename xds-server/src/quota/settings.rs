//! The checked `quotas` section as the service uses it, and why a quota request could not be
//! answered: the types the quota modules share, apart from them so they import it one way.

use chrono_tz::Tz;

use super::{keys, store::StoreError, tree};
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
    /// `quotas.allowances`: grants of units charged ahead with the decisions of streams that
    /// ask for them; `None` (the section is absent): no grants.
    pub allowances: Option<AllowanceSettings>,
}

/// The checked `quotas.allowances` section: how much of a limit one grant takes, and for how
/// long (see [`allowance`](super::allowance)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowanceSettings {
    /// The fraction of what remains of a limit one grant takes, in millionths:
    /// 1 to [`MAX_ALLOWANCE_SHARE_PPM`].
    pub share_ppm: u32,
    /// The longest life of a grant, in milliseconds: [`MIN_ALLOWANCE_LIFETIME_MS`] to
    /// [`MAX_ALLOWANCE_LIFETIME_MS`].
    pub lifetime_ms: u32,
}

/// Millionths in a whole, the unit of [`AllowanceSettings::share_ppm`].
pub const PPM: u32 = 1_000_000;
/// Largest [`AllowanceSettings::share_ppm`]: half of what remains, so that two grants never
/// take more than remains.
pub const MAX_ALLOWANCE_SHARE_PPM: u32 = PPM / 2;
/// Shortest [`AllowanceSettings::lifetime_ms`].
pub const MIN_ALLOWANCE_LIFETIME_MS: u32 = 10;
/// Longest [`AllowanceSettings::lifetime_ms`]: a minute.
pub const MAX_ALLOWANCE_LIFETIME_MS: u32 = 60_000;

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
