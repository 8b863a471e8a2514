//! A worker's long-lived gRPC stream to the control service on which its requests send
//! tagged messages (a rate limit decision's request, a signature check) instead of opening an
//! HTTP/2 stream each: answers carry the id of their message and are handed to the waiting
//! request by the root context. Used for quota decisions (`GatewayControl/StreamRateLimit`,
//! `decisions`) and signature checks (`GatewayControl/CheckSignatures`).
//!
//! The stream belongs to the root context (a stream opened in a request's callback would die
//! with that request), so it is opened at configuration and re-opened on the root's tick.
//! While none is open, requests do without it (a unary call, a check in the filter); an
//! answer that does not come within its timeout fails like a call that timed out.
//!
//! A stream is replaced once it is `max_age` old (less up to a quarter, at random, so that
//! workers do not all switch at once): new messages go to a fresh stream, which Envoy's load
//! balancing may send to another xds-server replica, and the old one is half-closed once every
//! answer owed on it has come (or timed out), so none is lost. Without this, streams would
//! stay where they were opened: a replica that restarts would get no work until the streams
//! elsewhere broke.
//!
//! `W` is a handle on a waiting request (`request::Handle`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use gateway_common::names::CONTROL_SERVICE;
use log::{debug, warn};
use proxy_wasm::hostcalls;

use super::grpc;

/// gRPC `OK`.
const OK: u32 = 0;
/// gRPC `UNIMPLEMENTED`: the service has no such stream.
const UNIMPLEMENTED: u32 = 12;
/// First wait before re-opening a stream that failed without answering, doubled up to
/// [`MAX_BACKOFF_MS`] while it keeps failing.
const MIN_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 5_000;

/// A request waiting for its answer (`None`: a message nothing waits on, such as a refill
/// of allowances).
pub(super) struct Waiter<W> {
    pub handle: Option<W>,
    stream: u32,
    deadline_ms: u64,
}

/// Why a stream ended for the requests still waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Closed {
    /// The service has no such stream (it is not asked again).
    Unimplemented,
    /// The service ended it itself, with OK: what was left unanswered was not read.
    ByService,
    /// It failed (gRPC status and message).
    Failed(String),
}

pub(super) struct TaggedStream<W> {
    /// The method (`GatewayControl/METHOD`) and what its messages are, for the log.
    method: &'static str,
    what: &'static str,
    /// The open stream's token.
    stream: Option<u32>,
    /// When the open stream is replaced by a fresh one.
    replace_at_ms: u64,
    /// Replaced streams still owing decisions: half-closed once they owe none.
    retiring: Vec<u32>,
    /// Whether the open stream has answered yet (a stream that fails before its first
    /// answer is re-opened with a growing delay).
    answered: bool,
    next_id: u64,
    waiting: HashMap<u64, Waiter<W>>,
    /// The service answered UNIMPLEMENTED: no stream from now on.
    unsupported: bool,
    reopen_at_ms: u64,
    backoff_ms: u64,
}

impl<W> TaggedStream<W> {
    pub fn new(method: &'static str, what: &'static str) -> Self {
        Self {
            method,
            what,
            stream: None,
            replace_at_ms: 0,
            retiring: Vec::new(),
            answered: false,
            next_id: 0,
            waiting: HashMap::new(),
            unsupported: false,
            reopen_at_ms: 0,
            backoff_ms: 0,
        }
    }
}

impl<W> TaggedStream<W> {
    /// Whether a stream is open to send on.
    pub fn is_open(&self) -> bool {
        self.stream.is_some()
    }
}

impl<W: Clone> TaggedStream<W> {
    /// Opens the stream if none is open and it is time to, or replaces the open one once it
    /// is `max_age_ms` old, and half-closes replaced streams that owe no decision any more.
    /// Only from a root context callback, so that the stream belongs to the root context.
    /// True when a stream opened.
    pub fn open_if_due(&mut self, cluster: &str, max_age_ms: u64, now_ms: u64) -> bool {
        self.close_retired();
        if self.unsupported {
            return false;
        }
        match self.stream {
            Some(stream) if now_ms >= self.replace_at_ms => {
                debug!(
                    "{} stream {stream} replaced after its maximum age",
                    self.what
                );
                self.retiring.push(stream);
                self.stream = None;
                self.close_retired();
            }
            Some(_) => return false,
            None if now_ms < self.reopen_at_ms => return false,
            None => {}
        }
        match grpc::open_stream(cluster, CONTROL_SERVICE, self.method) {
            Ok(token) => {
                debug!("{} stream opened ({token})", self.what);
                self.stream = Some(token);
                self.answered = false;
                let spread = RandomState::new().hash_one(token) % (max_age_ms / 4 + 1);
                self.replace_at_ms = now_ms.saturating_add(max_age_ms.saturating_sub(spread));
                true
            }
            Err(e) => {
                warn!("cannot open the {} stream: {e}", self.what);
                self.back_off(now_ms);
                false
            }
        }
    }

    /// Sends the message `encode(id)` on the open stream for the request `handle` (if any
    /// waits on the answer); false when there is none (or it failed), and the caller does
    /// without.
    pub fn send(
        &mut self,
        encode: impl FnOnce(u64) -> Vec<u8>,
        handle: Option<&W>,
        timeout_ms: u64,
        now_ms: u64,
    ) -> bool {
        let Some(stream) = self.stream else {
            return false;
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let message = encode(id);
        match hostcalls::send_grpc_stream_message(stream, Some(&message), false) {
            Ok(()) => {
                self.waiting.insert(
                    id,
                    Waiter {
                        handle: handle.cloned(),
                        stream,
                        deadline_ms: now_ms.saturating_add(timeout_ms),
                    },
                );
                true
            }
            Err(e) => {
                warn!("the {} stream failed ({e:?}); re-opening it", self.what);
                // Its waiting requests time out; new ones make the call until it is back.
                let _ = hostcalls::cancel_grpc_stream(stream);
                self.stream = None;
                self.back_off(now_ms);
                false
            }
        }
    }

    /// The request an answer is for, if it still waits.
    pub fn answered(&mut self, id: u64) -> Option<Waiter<W>> {
        self.answered = true;
        self.backoff_ms = 0;
        self.waiting.remove(&id)
    }

    /// Whether `token` is this stream (the open one or one replaced).
    pub fn is_stream(&self, token: u32) -> bool {
        self.stream == Some(token)
            || self.retiring.contains(&token)
            || self.waiting.values().any(|w| w.stream == token)
    }

    /// Half-closes the replaced streams no request waits on: the service ends them.
    fn close_retired(&mut self) {
        let (waiting, what) = (&self.waiting, self.what);
        self.retiring.retain(|&token| {
            if waiting.values().any(|w| w.stream == token) {
                return true;
            }
            if let Err(e) = hostcalls::close_grpc_stream(token) {
                debug!("closing the replaced {what} stream {token}: {e:?}");
            }
            false
        });
    }

    /// The stream `token` ended with gRPC status `status`: the requests it leaves waiting,
    /// and why.
    pub fn closed(
        &mut self,
        token: u32,
        status: u32,
        detail: String,
        now_ms: u64,
    ) -> (Vec<Waiter<W>>, Closed) {
        if self.stream == Some(token) {
            self.stream = None;
            if !self.answered {
                self.back_off(now_ms);
            }
        }
        self.retiring.retain(|&t| t != token);
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.stream == token)
            .map(|(id, _)| *id)
            .collect();
        let left: Vec<Waiter<W>> = ids
            .iter()
            .filter_map(|id| self.waiting.remove(id))
            .collect();
        if status == UNIMPLEMENTED {
            warn!("the control service has no {} stream", self.what);
            self.unsupported = true;
            (left, Closed::Unimplemented)
        } else if status == OK && !left.is_empty() {
            debug!(
                "the control service ended the {} stream; {} requests left waiting",
                self.what,
                left.len()
            );
            (left, Closed::ByService)
        } else {
            if !left.is_empty() || status != 0 {
                warn!(
                    "the {} stream ended (gRPC status {status} {detail}); {} requests left waiting",
                    self.what,
                    left.len()
                );
            }
            (
                left,
                Closed::Failed(format!(
                    "{} stream ended: gRPC status {status} {detail}",
                    self.what
                )),
            )
        }
    }

    /// Requests whose answer is overdue.
    pub fn expired(&mut self, now_ms: u64) -> Vec<Waiter<W>> {
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| self.waiting.remove(id))
            .collect()
    }

    fn back_off(&mut self, now_ms: u64) {
        self.backoff_ms = (self.backoff_ms * 2).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
        self.reopen_at_ms = now_ms.saturating_add(self.backoff_ms);
    }
}
