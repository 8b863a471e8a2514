//! What the API port received, for tests to inspect through the control port: every request,
//! its headers as sent, a hash of its body, the verdict and the tokens the answer reported.

use std::collections::VecDeque;

use serde::Serialize;

/// How many requests `GET /requests` returns at most (the most recent ones).
pub const MAX_RECORDS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub method: String,
    /// Raw path including the query string, as received.
    pub path: String,
    /// Every header as received: lowercase name and value, in order, repeated names repeated.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub body_sha256: String,
    pub access_key_id: Option<String>,
    pub signature_valid: bool,
    pub status: u16,
    pub error_code: Option<String>,
    /// The tokens the answer reported, as a client reads them from it; `None` for errors,
    /// streams that failed before their usage event, and operations without token usage
    /// (CountTokens, Retrieve).
    pub usage: Option<Usage>,
}

/// The token counts one answer reported, in Bedrock's billing split: `input_tokens` excludes the
/// prompt tokens read from (`cache_read_tokens`) or written to (`cache_write_tokens`) the prompt
/// cache, so the four add up to every token billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_read_tokens: u32,
    pub cache_write_tokens: u32,
}

#[derive(Debug)]
pub struct RecordLog {
    records: VecDeque<RequestRecord>,
    capacity: usize,
    total: u64,
}

impl Default for RecordLog {
    fn default() -> Self {
        Self::with_capacity(MAX_RECORDS)
    }
}

impl RecordLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            total: 0,
        }
    }

    pub fn push(&mut self, record: RequestRecord) {
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(record);
        self.total += 1;
    }

    /// Oldest first.
    pub fn snapshot(&self) -> Vec<RequestRecord> {
        self.records.iter().cloned().collect()
    }

    /// Forgets the records; the total keeps counting.
    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Requests received since start, including those no longer kept.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16) -> RequestRecord {
        RequestRecord {
            method: "POST".into(),
            path: "/model/m/converse?x=1".into(),
            headers: vec![("host".into(), "h".into()), ("x-a".into(), "1".into())],
            body_len: 2,
            body_sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into(),
            access_key_id: None,
            signature_valid: false,
            status,
            error_code: Some("MissingAuthenticationTokenException".into()),
            usage: None,
        }
    }

    #[test]
    fn keeps_the_most_recent_oldest_first() {
        let mut log = RecordLog::with_capacity(3);
        for status in 200..205 {
            log.push(record(status));
        }
        let statuses: Vec<u16> = log.snapshot().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [202, 203, 204]);
        assert_eq!(log.total(), 5);
        log.clear();
        assert!(log.snapshot().is_empty());
        assert_eq!(log.total(), 5);
    }

    #[test]
    fn json_shape() {
        let json = serde_json::to_value(record(403)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "method": "POST",
                "path": "/model/m/converse?x=1",
                "headers": [["host", "h"], ["x-a", "1"]],
                "body_len": 2,
                "body_sha256": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                "access_key_id": null,
                "signature_valid": false,
                "status": 403,
                "error_code": "MissingAuthenticationTokenException",
                "usage": null
            })
        );
        let answered = RequestRecord {
            status: 200,
            error_code: None,
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cache_read_tokens: 5,
                cache_write_tokens: 0,
            }),
            ..record(200)
        };
        assert_eq!(
            serde_json::to_value(answered).unwrap()["usage"],
            serde_json::json!({
                "input_tokens": 3,
                "output_tokens": 4,
                "cache_read_tokens": 5,
                "cache_write_tokens": 0
            })
        );
    }
}
