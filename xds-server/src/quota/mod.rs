//! Quotas: Envoy's rate limit service (`ShouldRateLimit`) over a descriptor tree with fixed and
//! calendar windows, the settlement of token reservations (`ReportUsage`) and the usage ledger
//! (`GetUsage`, `GET /usage`).
//!
//! Policy is pure: the descriptor [`tree`], the [`window`] arithmetic, the counter [`keys`],
//! the admission decision ([`decide`]), the allowances granted with it ([`allowance`]) and the
//! settlement of usage reports ([`usage`]) take the time as an argument. The [`store`]s keep counters and the ledger (in memory or in
//! Redis); the [`engine`] ties policy to a store and follows configuration reloads, and
//! [`grpc`] is the transport.

pub mod allowance;
pub mod decide;
pub mod engine;
pub mod genai;
pub mod grpc;
pub mod keys;
pub mod settings;
pub mod store;
pub mod tree;
pub mod usage;
pub mod window;

pub use engine::QuotaEngine;
pub use settings::{AllowanceSettings, QuotaError, QuotaSettings, RedisSettings, StoreSettings};

#[cfg(test)]
pub(crate) mod testing {
    //! A clock tests set by hand, and settings from a `quotas` section.

    use std::{
        path::Path,
        sync::{Arc, Mutex},
        time::{Duration, SystemTime, UNIX_EPOCH},
    };

    use envoy_types::pb::{
        envoy::extensions::common::ratelimit::v3::{
            RateLimitDescriptor, rate_limit_descriptor::Entry,
        },
        google::protobuf::UInt64Value,
    };
    use gateway_common::quota_config::QuotaConfig;

    use super::settings::QuotaSettings;
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

    /// 2026-02-10T12:00:30.25Z: when the policy tests decide.
    pub fn decision_time() -> SystemTime {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 2, 10)
            .and_then(|d| d.and_hms_opt(12, 0, 30))
            .expect("a valid date")
            .and_utc()
            .timestamp();
        UNIX_EPOCH + Duration::from_secs(at.unsigned_abs()) + Duration::from_millis(250)
    }

    /// A descriptor of `entries` with its own `hits` (none: the request's), negative or not.
    pub fn descriptor(
        entries: &[(&str, &str)],
        hits: Option<u64>,
        negative: bool,
    ) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
            hits_addend: hits.map(|value| UInt64Value { value }),
            is_negative_hits: negative,
            ..Default::default()
        }
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
