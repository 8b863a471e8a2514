//! What the ADS service counts: streams open now and opened, and responses Envoy rejected.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use serde::Serialize;

use crate::util::metrics::{Collect, MetricWriter};

#[derive(Debug, Default)]
pub struct StreamCounters {
    open: AtomicU64,
    opened: AtomicU64,
    nacks: AtomicU64,
}

/// The ADS part of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// ADS streams open now.
    pub xds_streams: u64,
    pub nacks: u64,
}

impl StreamCounters {
    /// Counts an open ADS stream until the guard is dropped.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        StreamGuard(Arc::clone(self))
    }

    pub fn nack_received(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self) -> StreamReport {
        StreamReport {
            xds_streams: self.open.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
        }
    }
}

impl Collect for StreamCounters {
    fn collect(&self, metrics: &mut MetricWriter<'_>, _now: SystemTime) -> fmt::Result {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        metrics.gauge(
            "xds_streams",
            "ADS streams open now.",
            i64::try_from(read(&self.open)).unwrap_or(i64::MAX),
        )?;
        metrics.counter(
            "xds_streams_opened",
            "ADS streams opened.",
            read(&self.opened),
        )?;
        metrics.counter(
            "xds_nacks",
            "xDS responses rejected by Envoy.",
            read(&self.nacks),
        )
    }
}

/// Decrements the open-stream gauge when an ADS stream ends.
pub struct StreamGuard(Arc<StreamCounters>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
