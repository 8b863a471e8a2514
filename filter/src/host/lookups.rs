//! Control-service lookups that many requests of a worker may need at once: signing
//! credentials, an issuer's keys (a token names a key id it does not know), keys at all (a
//! fresh worker). One call per kind is in flight at a time; requests that need the same thing
//! wait for it instead of calling too, so a burst of requests, or a flood of forged tokens,
//! costs the control service one call. The root context wakes the waiting requests when their
//! lookup is answered or gives up (its deadline is the control timeout).

use std::collections::HashMap;

/// What a lookup fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// The keys of issuer `n` (by index), asked for because of an unknown key id.
    IssuerKeys(usize),
    /// Any keys: the worker has none yet.
    AnyKeys,
    Credentials,
}

/// Lookups in flight and who waits for them (`W`: a handle on a waiting request).
pub(super) struct Lookups<W> {
    /// Call token -> what it fetches and when it gives up (ms).
    in_flight: HashMap<u32, (Want, u64)>,
    waiters: Vec<(Want, W)>,
}

impl<W> Default for Lookups<W> {
    fn default() -> Self {
        Self {
            in_flight: HashMap::new(),
            waiters: Vec::new(),
        }
    }
}

impl<W> Lookups<W> {
    pub fn in_flight(&self, want: Want) -> bool {
        self.in_flight.values().any(|(w, _)| *w == want)
    }

    pub fn started(&mut self, token: u32, want: Want, deadline_ms: u64) {
        self.in_flight.insert(token, (want, deadline_ms));
    }

    /// The lookup of `token` is answered: what it was for (`None` when it had given up).
    pub fn answered(&mut self, token: u32) -> Option<Want> {
        self.in_flight.remove(&token).map(|(want, _)| want)
    }

    pub fn wait(&mut self, want: Want, waiter: W) {
        self.waiters.push((want, waiter));
    }

    /// Gives up lookups whose deadline has passed (returned first), and takes the waiters
    /// whose lookup is over (answered or given up); waiters that are gone are dropped.
    pub fn due(&mut self, now_ms: u64, alive: impl Fn(&W) -> bool) -> (Vec<Want>, Vec<W>) {
        let mut expired = Vec::new();
        self.in_flight.retain(|_, (want, deadline)| {
            let keep = *deadline > now_ms;
            if !keep {
                expired.push(*want);
            }
            keep
        });
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for (want, waiter) in self.waiters.drain(..) {
            if !alive(&waiter) {
                continue;
            }
            if self.in_flight.values().any(|(w, _)| *w == want) {
                waiting.push((want, waiter));
            } else {
                ready.push(waiter);
            }
        }
        self.waiters = waiting;
        (expired, ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lookup_per_kind_and_its_waiters_wake_when_it_is_over() {
        let mut lookups: Lookups<u32> = Lookups::default();
        assert!(!lookups.in_flight(Want::IssuerKeys(0)));
        lookups.started(7, Want::IssuerKeys(0), 1_000);
        lookups.started(8, Want::Credentials, 2_000);
        assert!(lookups.in_flight(Want::IssuerKeys(0)));
        assert!(!lookups.in_flight(Want::IssuerKeys(1)));
        for request in [1, 2, 3] {
            lookups.wait(Want::IssuerKeys(0), request);
        }
        lookups.wait(Want::Credentials, 4);
        lookups.wait(Want::AnyKeys, 5);
        // Nothing fetches "any keys": that waiter is woken at once (to decide again).
        let (expired, ready) = lookups.due(0, |_| true);
        assert_eq!((expired, ready), (vec![], vec![5]));
        assert_eq!(lookups.answered(7), Some(Want::IssuerKeys(0)));
        assert_eq!(lookups.answered(7), None);
        // Request 2 is gone.
        let (expired, ready) = lookups.due(0, |r| *r != 2);
        assert_eq!((expired, ready), (vec![], vec![1, 3]));
        // The credentials lookup gives up at its deadline.
        let (expired, ready) = lookups.due(2_000, |_| true);
        assert_eq!((expired, ready), (vec![Want::Credentials], vec![4]));
        assert_eq!(lookups.answered(8), None, "a late answer after giving up");
        assert!(lookups.waiters.is_empty() && lookups.in_flight.is_empty());
    }
}
