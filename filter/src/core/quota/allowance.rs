//! Allowances: units of descriptors' counters that xds-server charged ahead for this worker
//! (`quotas.allowances`, granted with a decision on the decision stream), spent here on later
//! requests with the same descriptors so that they need no round trip. A request is admitted
//! here only when every one of its descriptors has a valid allowance that covers what it
//! reserves; otherwise it asks the service as without allowances. What is left of an
//! allowance when it expires (or its window changes, or the worker's configuration does) is
//! given back with the next usage report, so that the counters end up counting what was
//! spent.
//!
//! Bounded: at most [`MAX_HELD`] descriptors are held (the one expiring first is given back
//! to make room), and at most one ask for allowances is in flight per set of descriptors.

use std::collections::HashMap;

use gateway_common::proto::{Allowance, CounterAdjustment, DescriptorEntry};
use gateway_common::ratelimit::Entry;

use super::Reservation;

/// Descriptors held at most.
pub const MAX_HELD: usize = 4096;

/// One descriptor's allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    entries: Vec<DescriptorEntry>,
    /// Anything may be spent (the descriptor is not counted).
    uncounted: bool,
    window: String,
    remaining: u64,
    /// The units of the last grant: a refill is asked for once less than half of it is left.
    granted: u64,
    /// Valid until (worker milliseconds).
    until_ms: u64,
}

impl Held {
    fn give_back(self) -> Option<CounterAdjustment> {
        (!self.uncounted && self.remaining > 0).then(|| CounterAdjustment {
            entries: self.entries,
            delta: -i64::try_from(self.remaining).unwrap_or(i64::MAX),
            window: self.window,
        })
    }
}

/// What admitting a request here did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// Ask for more now (a refill): some allowance the request spent from runs low.
    pub refill: bool,
}

#[derive(Debug, Default)]
pub struct Allowances {
    held: HashMap<String, Held>,
    /// Sets of descriptors (their keys joined) whose allowances are being asked for, until
    /// when (worker milliseconds).
    asking: HashMap<String, u64>,
    /// Requests admitted here, ever.
    admitted: u64,
}

/// A descriptor's identity: its entries, each length-prefixed so that no two lists of
/// entries meet.
fn key<'a>(entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut key = String::new();
    for (k, v) in entries {
        key.push_str(&k.len().to_string());
        key.push(':');
        key.push_str(k);
        key.push_str(&v.len().to_string());
        key.push(':');
        key.push_str(v);
    }
    key
}

fn entry_key(entries: &[Entry]) -> String {
    key(entries.iter().map(|e| (e.key.as_str(), e.value.as_str())))
}

impl Allowances {
    /// Whether any allowance is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Descriptors held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Admits a request here at `now_ms` when every reservation is covered by a valid
    /// allowance: spends them, and notes on each reservation the window it was charged in
    /// (none where the descriptor is not counted). `None` (nothing spent) otherwise.
    pub fn spend(&mut self, reservations: &mut [Reservation], now_ms: u64) -> Option<Spent> {
        if self.held.is_empty() || reservations.is_empty() {
            return None;
        }
        let keys: Vec<String> = reservations.iter().map(|r| entry_key(&r.entries)).collect();
        // A descriptor sent twice spends twice.
        let mut needed: HashMap<&str, u64> = HashMap::new();
        for (key, reservation) in keys.iter().zip(reservations.iter()) {
            let need = needed.entry(key.as_str()).or_default();
            *need = need.saturating_add(reservation.reserved);
            let held = self.held.get(key.as_str())?;
            // A pre-check (0 reserved) passes while something of the allowance is left: what
            // was spent is then below the limit.
            if held.until_ms <= now_ms || (!held.uncounted && held.remaining < (*need).max(1)) {
                return None;
            }
        }
        let mut refill = false;
        for (key, reservation) in keys.iter().zip(reservations.iter_mut()) {
            let Some(held) = self.held.get_mut(key.as_str()) else {
                continue;
            };
            if held.uncounted {
                reservation.window = None;
                continue;
            }
            held.remaining -= reservation.reserved;
            reservation.window = Some(held.window.clone());
            refill |= held.remaining.saturating_mul(2) < held.granted;
        }
        self.admitted = self.admitted.wrapping_add(1);
        Some(Spent { refill })
    }

    /// Requests admitted here so far (wrapping).
    pub fn admitted(&self) -> u64 {
        self.admitted
    }

    /// Whether to ask for allowances for these reservations now (with a decision, or as a
    /// refill), at most one ask being in flight per set of descriptors; if so the ask counts
    /// as in flight for `wait_ms`.
    pub fn ask(&mut self, reservations: &[Reservation], now_ms: u64, wait_ms: u64) -> bool {
        let set: String = reservations.iter().map(|r| entry_key(&r.entries)).collect();
        if self.asking.get(&set).is_some_and(|&until| until > now_ms) {
            return false;
        }
        if self.asking.len() >= MAX_HELD {
            self.asking.retain(|_, until| *until > now_ms);
            if self.asking.len() >= MAX_HELD {
                return false;
            }
        }
        self.asking.insert(set, now_ms.saturating_add(wait_ms));
        true
    }

    /// Takes the allowances of an answer received at `now_ms`; returns what is given back:
    /// what was left of an allowance in another window, and allowances expiring first that
    /// made room.
    pub fn grant(&mut self, allowances: &[Allowance], now_ms: u64) -> Vec<CounterAdjustment> {
        let mut returned = Vec::new();
        if allowances.is_empty() {
            return returned;
        }
        // The asks in flight are answered (or soon will be): the next one may go.
        self.asking.clear();
        for allowance in allowances {
            let until_ms = now_ms.saturating_add(u64::from(allowance.valid_for_ms));
            if until_ms <= now_ms || (!allowance.uncounted && allowance.units == 0) {
                continue;
            }
            let key = key(allowance
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str())));
            let fresh = Held {
                entries: allowance.entries.clone(),
                uncounted: allowance.uncounted,
                window: allowance.window.clone(),
                remaining: allowance.units,
                granted: allowance.units,
                until_ms,
            };
            match self.held.get_mut(&key) {
                Some(held)
                    if held.uncounted == fresh.uncounted
                        && held.window == fresh.window
                        && held.until_ms > now_ms =>
                {
                    held.remaining = held.remaining.saturating_add(fresh.remaining);
                    held.granted = fresh.granted;
                    held.until_ms = held.until_ms.max(until_ms);
                }
                Some(held) => {
                    let old = std::mem::replace(held, fresh);
                    returned.extend(old.give_back());
                }
                None => {
                    if self.held.len() >= MAX_HELD {
                        returned.extend(self.evict_first());
                    }
                    self.held.insert(key, fresh);
                }
            }
        }
        returned
    }

    /// Gives back the allowances that expired by `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<CounterAdjustment> {
        let expired: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| held.until_ms <= now_ms)
            .map(|(key, _)| key.clone())
            .collect();
        self.asking.retain(|_, until| *until > now_ms);
        expired
            .iter()
            .filter_map(|key| self.held.remove(key))
            .filter_map(Held::give_back)
            .collect()
    }

    /// Gives back every allowance (the worker's configuration is replaced).
    pub fn drain(&mut self) -> Vec<CounterAdjustment> {
        self.asking.clear();
        self.held
            .drain()
            .filter_map(|(_, held)| held.give_back())
            .collect()
    }

    fn evict_first(&mut self) -> Option<CounterAdjustment> {
        let first = self
            .held
            .iter()
            .min_by_key(|(_, held)| held.until_ms)
            .map(|(key, _)| key.clone())?;
        self.held.remove(&first).and_then(Held::give_back)
    }
}

#[cfg(test)]
mod tests;
