//! Allowances, pure: what [`grants`] gives a decision stream's worker with an admitted
//! decision that asked for them (`quotas.allowances`), so that it decides later requests with
//! the same descriptors itself, without a round trip.
//!
//! A descriptor no limit matches, or whose limit is `unlimited`, gets an *uncounted* allowance:
//! the worker may admit it for `lifetime_ms` without asking. A descriptor charged to a counted
//! limit gets a share of what remains of the limit after this request, charged ahead to its
//! counter (one more all-or-nothing admission of every counted grant, so counters never exceed
//! their limits), when that share is worth having: at least twice the request's own charge
//! (and at least 1). Near the limit there are no grants, and its last units are decided one
//! request at a time, as without allowances. Shadow-mode limits and refunds get none; a refused
//! decision gets none. What the worker does not spend goes back
//! (`ReportUsageRequest.returned`, settled by [`usage::settle`](super::usage::settle)).

use std::{
    collections::{HashMap, HashSet},
    time::{SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::{
    extensions::common::ratelimit::v3::RateLimitDescriptor,
    service::ratelimit::v3::RateLimitRequest,
};
use gateway_common::proto::{Allowance, DescriptorEntry};

use super::{
    decide::{Item, Plan},
    settings::{AllowanceSettings, PPM},
    store::{Admission, Charge},
    window::window_label,
};

/// One allowance to send with a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub allowance: Allowance,
    /// A counted allowance's units, charged to its descriptor's counter (in one more
    /// all-or-nothing admission with the decision's other counted grants); `None` for an
    /// uncounted one.
    pub charge: Option<Charge>,
}

impl Grant {
    /// Whether the allowance holds units of a counter.
    pub fn is_counted(&self) -> bool {
        self.charge.is_some()
    }
}

/// What one counter was charged by the decision: descriptors with the same entries share a
/// counter, and get one allowance from it.
#[derive(Debug, Clone, Copy, Default)]
struct Charged {
    /// Hits of every descriptor of the request charged to it.
    hits: u64,
    /// Its count after the admission.
    count: u64,
}

/// The allowances of the decision `admission` made for `request` (planned as `plan`) at `now`,
/// in the request's descriptor order; none unless it was admitted.
pub fn grants(
    settings: &AllowanceSettings,
    request: &RateLimitRequest,
    plan: &Plan,
    admission: &Admission,
    now: SystemTime,
) -> Vec<Grant> {
    if !admission.admitted {
        return Vec::new();
    }
    let mut charged: HashMap<&str, Charged> = HashMap::new();
    for item in plan.items() {
        if let Item::Charged { charge, .. } = item
            && let Some(planned) = plan.charges.get(*charge)
        {
            let count = admission.counts.get(*charge).copied().unwrap_or(0);
            let counter = charged.entry(planned.key.as_str()).or_default();
            counter.hits = counter.hits.saturating_add(planned.hits);
            counter.count = counter.count.max(count);
        }
    }
    let now_ms = unix_millis(now);
    let mut granted: HashSet<&str> = HashSet::new();
    let mut grants = Vec::new();
    for (item, descriptor) in plan.items().iter().zip(&request.descriptors) {
        let uncounted = || Grant {
            allowance: Allowance {
                entries: entries(descriptor),
                uncounted: true,
                units: 0,
                window: String::new(),
                valid_for_ms: settings.lifetime_ms,
            },
            charge: None,
        };
        match item {
            Item::NoLimit | Item::Unlimited => grants.push(uncounted()),
            Item::Refunded { .. } => {}
            Item::Charged { limit, .. } if limit.shadow_mode => {}
            Item::Charged {
                charge,
                limit,
                window,
            } => {
                let Some(planned) = plan.charges.get(*charge) else {
                    continue;
                };
                let key = planned.key.as_str();
                let Some(counter) = charged.get(key).copied() else {
                    continue;
                };
                if !granted.insert(key) {
                    continue;
                }
                let units = share(
                    limit.requests_per_unit.saturating_sub(counter.count),
                    settings.share_ppm,
                );
                if units < counter.hits.saturating_mul(2).max(1) {
                    continue;
                }
                let left_ms = window.end.saturating_mul(1000).saturating_sub(now_ms);
                let valid_for_ms =
                    u32::try_from(left_ms.clamp(0, i64::from(settings.lifetime_ms))).unwrap_or(0);
                if valid_for_ms == 0 {
                    continue;
                }
                grants.push(Grant {
                    allowance: Allowance {
                        entries: entries(descriptor),
                        uncounted: false,
                        units,
                        window: window_label(limit.unit, window.start),
                        valid_for_ms,
                    },
                    charge: Some(Charge {
                        key: key.to_string(),
                        hits: units,
                        limit: Some(limit.requests_per_unit),
                        expire_at: window.end,
                    }),
                });
            }
        }
    }
    grants
}

/// `share_ppm` millionths of `remaining`, rounded down.
pub fn share(remaining: u64, share_ppm: u32) -> u64 {
    let units = u128::from(remaining) * u128::from(share_ppm) / u128::from(PPM);
    u64::try_from(units).unwrap_or(u64::MAX)
}

/// A descriptor's entries as the request sent them.
fn entries(descriptor: &RateLimitDescriptor) -> Vec<DescriptorEntry> {
    descriptor
        .entries
        .iter()
        .map(|entry| DescriptorEntry {
            key: entry.key.clone(),
            value: entry.value.clone(),
        })
        .collect()
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

#[cfg(test)]
mod tests;
