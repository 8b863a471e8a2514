//! Helpers every part of the server uses. A leaf: it imports nothing from the crate, so any
//! module can use it without depending on the modules that report on or wire the others.

use std::{
    sync::{Mutex, MutexGuard},
    time::{SystemTime, UNIX_EPOCH},
};

/// A poisoned lock only means another thread panicked mid-update of plain data: keep going.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2026-11-21T10:00:00Z` (whole seconds, UTC).
pub fn rfc3339(at: SystemTime) -> String {
    aws_smithy_types::DateTime::from_secs(unix_seconds(at))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("@{}", unix_seconds(at)))
}
