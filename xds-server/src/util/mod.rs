//! Helpers every part of the server uses: the clock and time formats, retry backoff, secret
//! strings, the Prometheus writer and lock handling. A leaf: nothing here imports from the rest
//! of the crate, so any module can use it without depending on the modules that report on or
//! wire the others.

pub mod backoff;
pub mod metrics;
pub mod secret;
pub mod time;

use std::sync::{Mutex, MutexGuard};

pub use backoff::Backoff;
pub use secret::Secret;
pub use time::{Clock, SystemClock, rfc3339, unix_seconds};

/// A poisoned lock only means another thread panicked mid-update of plain data: keep going.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
