//! `ShouldRateLimit` as pure functions: [`plan`] turns a request into counter charges and
//! refunds (which descriptor matches which limit, its window and key, its hits); the store
//! runs them; [`decide`] turns the store's answer into Envoy's response, one status per
//! descriptor in order. Semantics follow envoyproxy/ratelimit, with all-or-nothing admission.
//!
//! Every response also carries, in `dynamic_metadata`, the window each descriptor's counter
//! was charged (or refunded) in ([`WINDOWS_KEY`]: `UNIT/START`, null where no counted limit
//! matched) and the server's time of the decision ([`DECIDED_AT_KEY`]), whatever the verdict:
//! the filter sends the window back with its corrections, so they reach the counter admission
//! charged whatever its own clock says.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::{
    envoy::{
        extensions::common::ratelimit::v3::RateLimitDescriptor,
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse,
            rate_limit_response::{Code, DescriptorStatus, RateLimit as LimitProto},
        },
    },
    google::protobuf::{
        Duration as DurationProto, ListValue, NullValue, Struct, Value, value::Kind,
    },
};
use gateway_common::{
    model,
    quota_config::ContextKey,
    ratelimit::{DECIDED_AT_KEY, WINDOWS_KEY},
};

use super::{
    keys::counter_key,
    settings::QuotaSettings,
    store::{Adjustment, Admission, Charge, MAX_COUNT, admission_over},
    tree::{Limit, RateLimit},
    window::{Window, window, window_label},
};
use crate::util::unix_seconds;

/// The store operations one request needs, and how to read their results.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// For [`CounterStore::admit`](super::store::CounterStore::admit), all or nothing.
    pub charges: Vec<Charge>,
    /// Negative hits: given back whatever the admission's outcome.
    pub refunds: Vec<Adjustment>,
    items: Vec<Item>,
}

impl Plan {
    /// What became of each descriptor, in the request's order.
    pub fn items(&self) -> &[Item] {
        &self.items
    }
}

/// What became of one descriptor.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// No limit matches it: OK, nothing counted.
    NoLimit,
    /// An `unlimited` node: OK, nothing counted.
    Unlimited,
    /// Charged to its limit's counter in `window`.
    Charged {
        /// Index in `charges` (and in the admission's counts).
        charge: usize,
        limit: RateLimit,
        window: Window,
    },
    /// Negative hits, given back to its limit's counter in `window`.
    Refunded {
        /// Index in `refunds`; `None` for a refund of 0.
        refund: Option<usize>,
        limit: RateLimit,
        window: Window,
    },
}

impl Item {
    /// The window this descriptor's counter is in, as the response names it.
    fn window_label(&self) -> Option<String> {
        match self {
            Item::NoLimit | Item::Unlimited => None,
            Item::Charged { limit, window, .. } | Item::Refunded { limit, window, .. } => {
                Some(window_label(limit.unit, window.start))
            }
        }
    }
}

/// The hits a descriptor adds: its own `hits_addend` when set (0 is a pre-check that counts
/// nothing), else the request's, where 0 means 1 (as unset does in Envoy's message). At most
/// [`MAX_COUNT`].
pub fn descriptor_hits(descriptor: &RateLimitDescriptor, request_hits: u32) -> u64 {
    let hits = match &descriptor.hits_addend {
        Some(own) => own.value,
        None if request_hits == 0 => 1,
        None => u64::from(request_hits),
    };
    hits.min(MAX_COUNT)
}

/// A descriptor's entries as the tree and the counter keys see them: a `model` value as its
/// model key ([`gateway_common::model::key`], as the limit tree's `key: model` values are), so
/// that every spelling of one model meets one node and one counter.
pub fn canonical_entries<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, Cow<'a, str>)> {
    let model_key = ContextKey::Model.name();
    entries
        .into_iter()
        .map(|(key, value)| {
            if key != model_key {
                return (key, Cow::Borrowed(value));
            }
            let canonical = model::key(value);
            if canonical == value {
                (key, Cow::Borrowed(value))
            } else {
                (key, Cow::Owned(canonical))
            }
        })
        .collect()
}

/// Plans `request` at `now` (Unix seconds); `None` when its domain is not this service's
/// (answered OK with no statuses, as envoyproxy/ratelimit does).
pub fn plan(settings: &QuotaSettings, request: &RateLimitRequest, now: i64) -> Option<Plan> {
    if request.domain != settings.domain {
        return None;
    }
    let mut plan = Plan {
        charges: Vec::new(),
        refunds: Vec::new(),
        items: Vec::with_capacity(request.descriptors.len()),
    };
    for descriptor in &request.descriptors {
        let entries = canonical_entries(
            descriptor
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str())),
        );
        let item = match settings.descriptors.find(&entries) {
            None => Item::NoLimit,
            Some(Limit::Unlimited) => Item::Unlimited,
            Some(Limit::Rate(limit)) => {
                let window = window(limit.unit, now, settings.time_zone);
                let key = counter_key(
                    settings.store.key_prefix(),
                    &settings.domain,
                    &entries,
                    limit.unit,
                    window.start,
                );
                let hits = descriptor_hits(descriptor, request.hits_addend);
                if descriptor.is_negative_hits {
                    let refund = (hits > 0).then(|| {
                        plan.refunds.push(Adjustment {
                            key,
                            delta: -i64::try_from(hits).unwrap_or(i64::MAX),
                            expire_at: window.end,
                        });
                        plan.refunds.len() - 1
                    });
                    Item::Refunded {
                        refund,
                        limit: limit.clone(),
                        window,
                    }
                } else {
                    plan.charges.push(Charge {
                        key,
                        hits,
                        limit: (!limit.shadow_mode).then_some(limit.requests_per_unit),
                        expire_at: window.end,
                    });
                    Item::Charged {
                        charge: plan.charges.len() - 1,
                        limit: limit.clone(),
                        window,
                    }
                }
            }
        };
        plan.items.push(item);
    }
    Some(plan)
}

/// The answer, and what it says for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub response: RateLimitResponse,
    pub over_limit: bool,
    /// Descriptors whose shadow-mode limit is exceeded (admitted anyway).
    pub shadow_over_limit: u64,
}

/// The response to a planned request, given the admission of its charges and the counts after
/// its refunds (`None` for a window that is gone).
pub fn decide(
    plan: &Plan,
    admission: &Admission,
    refunded: &[Option<u64>],
    now: SystemTime,
) -> Decision {
    let over = if admission.admitted {
        vec![false; plan.charges.len()]
    } else {
        admission_over(&plan.charges, &admission.counts)
    };
    let mut shadow_over_limit = 0;
    let statuses = plan
        .items
        .iter()
        .map(|item| match item {
            Item::NoLimit => status(Code::Ok, None, 0, None),
            Item::Unlimited => status(Code::Ok, None, u32::MAX, None),
            Item::Charged {
                charge,
                limit,
                window,
            } => {
                let count = admission.counts.get(*charge).copied().unwrap_or(0);
                let is_over = over.get(*charge).copied().unwrap_or(false);
                if limit.shadow_mode && count > limit.requests_per_unit {
                    shadow_over_limit += 1;
                }
                let code = if is_over { Code::OverLimit } else { Code::Ok };
                let remaining = limit.requests_per_unit.saturating_sub(count);
                status(
                    code,
                    Some(limit),
                    saturate(remaining),
                    Some(until(window.end, now)),
                )
            }
            Item::Refunded {
                refund,
                limit,
                window,
            } => {
                let count = refund
                    .and_then(|i| refunded.get(i).copied().flatten())
                    .unwrap_or(0);
                let remaining = limit.requests_per_unit.saturating_sub(count);
                status(
                    Code::Ok,
                    Some(limit),
                    saturate(remaining),
                    Some(until(window.end, now)),
                )
            }
        })
        .collect();
    let windows = plan.items.iter().map(Item::window_label).collect();
    let over_limit = !admission.admitted;
    Decision {
        response: RateLimitResponse {
            overall_code: if over_limit {
                Code::OverLimit
            } else {
                Code::Ok
            } as i32,
            statuses,
            dynamic_metadata: Some(metadata(windows, now)),
            ..Default::default()
        },
        over_limit,
        shadow_over_limit,
    }
}

/// The answer for a domain this service does not know (or while there are no quotas): OK,
/// no statuses, and nothing counted for any of the request's descriptors.
pub fn unknown_domain(request: &RateLimitRequest, now: SystemTime) -> RateLimitResponse {
    RateLimitResponse {
        overall_code: Code::Ok as i32,
        dynamic_metadata: Some(metadata(vec![None; request.descriptors.len()], now)),
        ..Default::default()
    }
}

/// `dynamic_metadata`: [`WINDOWS_KEY`], per descriptor the window its counter is in (null
/// where nothing was counted), and [`DECIDED_AT_KEY`], `now` in Unix seconds.
pub fn metadata(windows: Vec<Option<String>>, now: SystemTime) -> Struct {
    let value = |kind: Kind| Value { kind: Some(kind) };
    let windows = windows
        .into_iter()
        .map(|window| {
            value(match window {
                Some(window) => Kind::StringValue(window),
                None => Kind::NullValue(NullValue::NullValue as i32),
            })
        })
        .collect();
    Struct {
        fields: [
            (
                WINDOWS_KEY.to_string(),
                value(Kind::ListValue(ListValue { values: windows })),
            ),
            (
                DECIDED_AT_KEY.to_string(),
                value(Kind::NumberValue(unix_seconds(now) as f64)),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

fn status(
    code: Code,
    limit: Option<&RateLimit>,
    limit_remaining: u32,
    duration_until_reset: Option<DurationProto>,
) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        current_limit: limit.map(|limit| LimitProto {
            name: limit.name.clone().unwrap_or_default(),
            requests_per_unit: saturate(limit.requests_per_unit),
            unit: limit.unit.proto(),
        }),
        limit_remaining,
        duration_until_reset,
        quota: None,
    }
}

fn saturate(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// From `now` to `reset_at` (Unix seconds), never negative.
fn until(reset_at: i64, now: SystemTime) -> DurationProto {
    let reset = UNIX_EPOCH + Duration::from_secs(u64::try_from(reset_at).unwrap_or(0));
    let left = reset.duration_since(now).unwrap_or_default();
    DurationProto {
        seconds: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(left.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests;
