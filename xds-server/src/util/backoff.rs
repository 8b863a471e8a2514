//! Capped exponential backoff between failed attempts (credential fetches, key reads).

use std::time::Duration;

/// The wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two failed attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// 1 s, 2 s, 4 s ... 30 s after consecutive failures; back to 1 s after a success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let delay = FIRST_DELAY
            .checked_mul(1u32 << self.failures.min(16))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), MAX_DELAY);
        backoff.reset();
        assert_eq!(backoff.next_delay(), FIRST_DELAY);
    }
}
