//! Usage records on their way to the control service: queued as requests end (bounded:
//! beyond the capacity the oldest are dropped), sent one batch at a time, and a batch whose
//! delivery was not confirmed sent again unchanged under its id, before anything newer, so
//! that the server can apply it once. Allowance units given back unspent travel in the same
//! batches (`returned`), bounded the same way.

use std::collections::VecDeque;

use gateway_common::proto::{CounterAdjustment, ReportUsageRequest, UsageRecord};

/// Usage records per batch.
pub const BATCH: usize = 500;

pub struct Reports {
    queue: VecDeque<UsageRecord>,
    /// Allowance units to give back.
    returned: VecDeque<CounterAdjustment>,
    capacity: usize,
    /// The batch being delivered, or whose delivery failed.
    batch: Option<ReportUsageRequest>,
    in_flight: bool,
    /// Batch ids: `{nonce:016x}-{sequence}`, unique per worker (the nonce is random).
    nonce: u64,
    sequence: u64,
}

impl Reports {
    pub fn new(capacity: usize, nonce: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            returned: VecDeque::new(),
            capacity: capacity.max(1),
            batch: None,
            in_flight: false,
            nonce,
            sequence: 0,
        }
    }

    /// A new capacity (a configuration change); returns how many of the oldest records were
    /// dropped to fit it.
    pub fn set_capacity(&mut self, capacity: usize) -> usize {
        self.capacity = capacity.max(1);
        let excess = self.queue.len().saturating_sub(self.capacity);
        self.queue.drain(..excess);
        let returns = self.returned.len().saturating_sub(self.capacity);
        self.returned.drain(..returns);
        excess
    }

    /// Queues allowance units given back; beyond the capacity the oldest are dropped (their
    /// counters then count them as spent until their windows end).
    pub fn give_back(&mut self, returned: impl IntoIterator<Item = CounterAdjustment>) {
        self.returned.extend(returned);
        let excess = self.returned.len().saturating_sub(self.capacity);
        self.returned.drain(..excess);
    }

    /// Queues a record; returns how many of the oldest were dropped to make room.
    pub fn queue(&mut self, record: UsageRecord) -> usize {
        self.queue.push_back(record);
        let excess = self.queue.len().saturating_sub(self.capacity);
        self.queue.drain(..excess);
        excess
    }

    /// The batch to send now: none while one is in flight; the unconfirmed one first; else
    /// up to [`BATCH`] queued records under a new id. Marks it in flight.
    pub fn next(&mut self, node_id: &str) -> Option<&ReportUsageRequest> {
        if self.in_flight {
            return None;
        }
        if self.batch.is_none() {
            if self.queue.is_empty() && self.returned.is_empty() {
                return None;
            }
            let n = self.queue.len().min(BATCH);
            let records = self.queue.drain(..n).collect();
            let n = self.returned.len().min(BATCH);
            let returned = self.returned.drain(..n).collect();
            let report_id = format!("{:016x}-{}", self.nonce, self.sequence);
            self.sequence = self.sequence.wrapping_add(1);
            self.batch = Some(ReportUsageRequest {
                node_id: node_id.to_string(),
                records,
                report_id,
                returned,
            });
        }
        self.in_flight = true;
        self.batch.as_ref()
    }

    /// The batch in flight was applied: returns its number of records.
    pub fn confirmed(&mut self) -> usize {
        self.in_flight = false;
        self.batch.take().map_or(0, |b| b.records.len())
    }

    /// The batch in flight was not confirmed (or could not be sent): it goes again next.
    pub fn unconfirmed(&mut self) {
        self.in_flight = false;
    }

    pub fn waiting(&self) -> usize {
        self.queue.len() + self.batch.as_ref().map_or(0, |b| b.records.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str) -> UsageRecord {
        UsageRecord {
            tenant: tenant.into(),
            ..UsageRecord::default()
        }
    }

    #[test]
    fn returned_units_go_in_batches_of_their_own_or_with_records() {
        let mut reports = Reports::new(2, 1);
        let back = |delta| CounterAdjustment {
            delta,
            ..CounterAdjustment::default()
        };
        reports.give_back([back(-1), back(-2), back(-3)]);
        let batch = reports.next("node").unwrap();
        assert!(batch.records.is_empty());
        let deltas: Vec<i64> = batch.returned.iter().map(|a| a.delta).collect();
        assert_eq!(deltas, [-2, -3], "bounded: the oldest dropped");
        reports.unconfirmed();
        assert_eq!(reports.next("node").unwrap().returned.len(), 2, "unchanged");
        reports.confirmed();
        reports.queue(record("a"));
        reports.give_back([back(-4)]);
        let batch = reports.next("node").unwrap();
        assert_eq!((batch.records.len(), batch.returned.len()), (1, 1));
        reports.confirmed();
        assert!(reports.next("node").is_none());
    }

    #[test]
    fn a_smaller_capacity_drops_the_oldest() {
        let mut reports = Reports::new(10, 7);
        for tenant in ["a", "b", "c"] {
            reports.queue(record(tenant));
        }
        assert_eq!(reports.set_capacity(100), 0);
        assert_eq!(reports.set_capacity(2), 1);
        let batch = reports.next("node").unwrap();
        let tenants: Vec<&str> = batch.records.iter().map(|r| r.tenant.as_str()).collect();
        assert_eq!(tenants, ["b", "c"]);
    }

    #[test]
    fn bounded_queue_drops_the_oldest() {
        let mut reports = Reports::new(2, 1);
        assert_eq!(reports.queue(record("a")), 0);
        assert_eq!(reports.queue(record("b")), 0);
        assert_eq!(reports.queue(record("c")), 1);
        let batch = reports.next("node").unwrap();
        let tenants: Vec<&str> = batch.records.iter().map(|r| r.tenant.as_str()).collect();
        assert_eq!(tenants, ["b", "c"]);
    }

    #[test]
    fn an_unconfirmed_batch_goes_again_unchanged_before_anything_newer() {
        let mut reports = Reports::new(10_000, 0xab);
        for i in 0..(BATCH + 3) {
            reports.queue(record(&i.to_string()));
        }
        let first = reports.next("node").unwrap().clone();
        assert_eq!(
            (first.records.len(), first.report_id.as_str()),
            (BATCH, "00000000000000ab-0")
        );
        assert!(
            reports.next("node").is_none(),
            "one batch in flight at a time"
        );
        reports.queue(record("late"));
        reports.unconfirmed();
        assert_eq!(reports.next("node"), Some(&first));
        assert_eq!(reports.confirmed(), BATCH);
        let second = reports.next("node").unwrap();
        assert_eq!(
            (second.records.len(), second.report_id.as_str()),
            (4, "00000000000000ab-1")
        );
        assert_eq!(reports.waiting(), 4);
        reports.confirmed();
        assert!(reports.next("node").is_none());
        assert_eq!(reports.waiting(), 0);
    }
}
