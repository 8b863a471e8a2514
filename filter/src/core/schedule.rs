//! When to ask the control service again: one call at a time, at the time the last answer
//! asked for, or with capped exponential backoff after failures. Time is passed in.

/// Retry delays after failed calls: 1, 2, 4, ... seconds, capped here.
const MAX_BACKOFF_SECS: u64 = 30;

#[derive(Debug, Default, Clone)]
pub struct Schedule {
    next_at: u64,
    consecutive_failures: u32,
    in_flight: bool,
}

impl Schedule {
    /// Whether a call is due now (and none is under way).
    pub fn due(&self, now: u64) -> bool {
        !self.in_flight && now >= self.next_at
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    pub fn started(&mut self) {
        self.in_flight = true;
    }

    /// A good answer: next call after `after` seconds (at least one).
    pub fn succeeded(&mut self, now: u64, after: u64) {
        self.in_flight = false;
        self.consecutive_failures = 0;
        self.next_at = now + after.max(1);
    }

    pub fn failed(&mut self, now: u64) {
        self.in_flight = false;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let delay = 1u64
            .checked_shl(self.consecutive_failures - 1)
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS);
        self.next_at = now + delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_at_a_time_then_backoff() {
        let mut s = Schedule::default();
        assert!(s.due(0));
        s.started();
        assert!(!s.due(100));
        s.succeeded(100, 60);
        assert!(!s.due(159) && s.due(160));
        for (i, delay) in [1, 2, 4, 8, 16, 30, 30].into_iter().enumerate() {
            let now = 200 + i as u64;
            s.started();
            s.failed(now);
            assert!(!s.due(now + delay - 1) && s.due(now + delay), "failure {i}");
        }
        s.succeeded(300, 0);
        assert!(s.due(301));
    }
}
