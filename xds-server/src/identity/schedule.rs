//! When an issuer's keys are fetched: at startup, then every `jwks_refresh_seconds`; after a
//! failure sooner, with capped exponential backoff; and on demand (a token with an unknown
//! key id) at most once per `jwks_min_refresh_seconds`. Pure: every decision takes `now`.

use std::time::{Duration, SystemTime};

use crate::util::Backoff;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    refresh: Duration,
    min_refresh: Duration,
    /// When the last fetch (good or bad) finished.
    last_attempt: Option<SystemTime>,
    next_at: SystemTime,
    backoff: Backoff,
}

impl Schedule {
    /// A schedule whose first fetch is due at once.
    pub fn new(now: SystemTime, refresh: Duration, min_refresh: Duration) -> Self {
        Self {
            refresh,
            min_refresh,
            last_attempt: None,
            next_at: now,
            backoff: Backoff::default(),
        }
    }

    /// When the next scheduled fetch is due.
    pub fn next_at(&self) -> SystemTime {
        self.next_at
    }

    pub fn last_attempt(&self) -> Option<SystemTime> {
        self.last_attempt
    }

    pub fn is_due(&self, now: SystemTime) -> bool {
        now >= self.next_at
    }

    /// How long until the next scheduled fetch (zero when it is due).
    pub fn until_next(&self, now: SystemTime) -> Duration {
        self.next_at.duration_since(now).unwrap_or(Duration::ZERO)
    }

    /// Whether a token with an unknown key id may cause a fetch now. A clock that went
    /// backwards does not block it.
    pub fn on_demand_allowed(&self, now: SystemTime) -> bool {
        self.last_attempt.is_none_or(|last| {
            now.duration_since(last)
                .map_or(true, |elapsed| elapsed >= self.min_refresh)
        })
    }

    pub fn succeeded(&mut self, now: SystemTime) {
        self.last_attempt = Some(now);
        self.backoff.reset();
        self.next_at = now + self.refresh;
    }

    /// Retries after 1, 2, 4 ... 30 seconds, but never later than a regular refresh would.
    pub fn failed(&mut self, now: SystemTime) {
        self.last_attempt = Some(now);
        self.next_at = now + self.backoff.next_delay().min(self.refresh);
    }

    /// New intervals from a reloaded configuration; a next fetch further away than the new
    /// interval allows is brought forward.
    pub fn set_intervals(&mut self, refresh: Duration, min_refresh: Duration) {
        self.refresh = refresh;
        self.min_refresh = min_refresh;
        if let Some(last) = self.last_attempt {
            self.next_at = self.next_at.min(last + refresh);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        T0 + Duration::from_secs(seconds)
    }

    fn schedule() -> Schedule {
        Schedule::new(at(1000), Duration::from_secs(300), Duration::from_secs(30))
    }

    #[test]
    fn first_fetch_at_once_then_every_interval() {
        let mut s = schedule();
        assert!(s.is_due(at(1000)));
        assert!(s.on_demand_allowed(at(1000)));
        s.succeeded(at(1001));
        assert_eq!(s.next_at(), at(1301));
        assert!(!s.is_due(at(1300)));
        assert!(s.is_due(at(1301)));
        assert_eq!(s.until_next(at(1201)), Duration::from_secs(100));
        assert_eq!(s.until_next(at(2000)), Duration::ZERO);
    }

    #[test]
    fn failures_back_off_up_to_the_interval() {
        let mut s = schedule();
        let mut now = at(1000);
        let mut delays = Vec::new();
        for _ in 0..7 {
            s.failed(now);
            delays.push(s.next_at().duration_since(now).unwrap().as_secs());
            now = s.next_at();
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        s.succeeded(now);
        s.failed(now);
        assert_eq!(
            s.until_next(now),
            Duration::from_secs(1),
            "success resets the backoff"
        );

        let mut short = Schedule::new(at(0), Duration::from_secs(5), Duration::from_secs(1));
        for _ in 0..5 {
            short.failed(at(0));
        }
        assert_eq!(short.until_next(at(0)), Duration::from_secs(5));
    }

    #[test]
    fn on_demand_fetches_are_rate_limited() {
        let mut s = schedule();
        s.succeeded(at(1000));
        assert!(!s.on_demand_allowed(at(1000)));
        assert!(!s.on_demand_allowed(at(1029)));
        assert!(s.on_demand_allowed(at(1030)));
        s.failed(at(1030));
        assert!(!s.on_demand_allowed(at(1031)), "a failed fetch counts too");
        assert!(s.on_demand_allowed(at(1060)));
        assert!(s.on_demand_allowed(at(900)), "the clock went backwards");
    }

    #[test]
    fn shorter_intervals_apply_at_once() {
        let mut s = schedule();
        s.succeeded(at(1000));
        s.set_intervals(Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(s.next_at(), at(1060));
        assert!(s.on_demand_allowed(at(1005)));
        s.set_intervals(Duration::from_secs(600), Duration::from_secs(5));
        assert_eq!(
            s.next_at(),
            at(1060),
            "a longer interval waits for the next fetch"
        );
    }
}
