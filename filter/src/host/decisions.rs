//! The worker's rate limit decision stream (`GatewayControl/StreamRateLimit`): one long-lived
//! gRPC stream that every request of this Envoy worker sends its admission request on,
//! instead of opening an HTTP/2 stream of its own for a `ShouldRateLimit` call. Answers carry
//! the id of their request and are handed to the waiting request by the root context.
//!
//! The stream belongs to the root context (a stream opened in a request's callback would die
//! with that request), so it is opened at configuration and re-opened on the root's tick.
//! While none is open, requests make the unary call; a decision that does not come within
//! the quota timeout fails like a call that timed out.
//!
//! A stream is replaced once it is `stream_max_age_seconds` old (less up to a quarter, at
//! random, so that workers do not all switch at once): new requests go to a fresh stream,
//! which Envoy's load balancing may send to another xds-server replica, and the old one is
//! half-closed once every decision asked on it has come (or timed out), so none is lost.
//! Without this, streams would stay where they were opened: a replica that restarts would
//! get no decisions until the streams elsewhere broke.
//!
//! `W` is a handle on a waiting request (`request::Handle`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use gateway_common::names::{CONTROL_SERVICE, STREAM_RATE_LIMIT};
use gateway_common::proto::RateLimitStreamRequest;
use gateway_common::ratelimit::RateLimitResponse;
use log::{debug, warn};
use prost::Message;
use proxy_wasm::hostcalls;

use crate::core::upstream::grpc_target;

/// gRPC `OK`.
const OK: u32 = 0;
/// gRPC `UNIMPLEMENTED`: the service has no decision stream.
const UNIMPLEMENTED: u32 = 12;
/// First wait before re-opening a stream that failed without answering, doubled up to
/// [`MAX_BACKOFF_MS`] while it keeps failing.
const MIN_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 5_000;

/// A request waiting for its decision.
pub(super) struct Waiter<W> {
    pub handle: W,
    stream: u32,
    deadline_ms: u64,
}

/// What became of a quota decision asked for on the stream.
#[derive(Clone)]
pub(super) enum StreamAnswer {
    Decided(Result<RateLimitResponse, String>),
    /// The service has no stream: ask again with the unary call.
    AskAgain,
}

pub(super) struct Decisions<W> {
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
    /// The service answered UNIMPLEMENTED: unary calls from now on.
    unsupported: bool,
    reopen_at_ms: u64,
    backoff_ms: u64,
}

impl<W> Default for Decisions<W> {
    fn default() -> Self {
        Self {
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

impl<W: Clone> Decisions<W> {
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
                debug!("rate limit decision stream {stream} replaced after its maximum age");
                self.retiring.push(stream);
                self.stream = None;
                self.close_retired();
            }
            Some(_) => return false,
            None if now_ms < self.reopen_at_ms => return false,
            None => {}
        }
        match hostcalls::open_grpc_stream(
            &grpc_target(cluster),
            CONTROL_SERVICE,
            STREAM_RATE_LIMIT,
            Vec::new(),
        ) {
            Ok(token) => {
                debug!("rate limit decision stream opened ({token})");
                self.stream = Some(token);
                self.answered = false;
                let spread = RandomState::new().hash_one(token) % (max_age_ms / 4 + 1);
                self.replace_at_ms = now_ms.saturating_add(max_age_ms.saturating_sub(spread));
                true
            }
            Err(e) => {
                warn!("cannot open the rate limit decision stream: {e:?}");
                self.back_off(now_ms);
                false
            }
        }
    }

    /// Sends an admission request on the open stream; false when there is none (or it
    /// failed), and the caller makes the unary call instead.
    pub fn send(&mut self, request: &[u8], handle: &W, timeout_ms: u64, now_ms: u64) -> bool {
        let Some(stream) = self.stream else {
            return false;
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let message = RateLimitStreamRequest {
            id,
            request: request.to_vec(),
        }
        .encode_to_vec();
        match hostcalls::send_grpc_stream_message(stream, Some(&message), false) {
            Ok(()) => {
                self.waiting.insert(
                    id,
                    Waiter {
                        handle: handle.clone(),
                        stream,
                        deadline_ms: now_ms.saturating_add(timeout_ms),
                    },
                );
                true
            }
            Err(e) => {
                warn!("the rate limit decision stream failed ({e:?}); re-opening it");
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

    /// Whether `token` is the decision stream (the open one or one replaced).
    pub fn is_stream(&self, token: u32) -> bool {
        self.stream == Some(token)
            || self.retiring.contains(&token)
            || self.waiting.values().any(|w| w.stream == token)
    }

    /// Half-closes the replaced streams no request waits on: the service ends them.
    fn close_retired(&mut self) {
        let waiting = &self.waiting;
        self.retiring.retain(|&token| {
            if waiting.values().any(|w| w.stream == token) {
                return true;
            }
            if let Err(e) = hostcalls::close_grpc_stream(token) {
                debug!("closing the replaced decision stream {token}: {e:?}");
            }
            false
        });
    }

    /// The stream `token` ended with gRPC status `status`: the requests it leaves without a
    /// decision, and their answer: ask again with a call when the service has no stream, or
    /// when it ended the stream itself with OK (a server that stops answers every request it
    /// read, then ends its streams: the requests left were not read, so not decided); else
    /// the quota failure mode.
    pub fn closed(
        &mut self,
        token: u32,
        status: u32,
        detail: String,
        now_ms: u64,
    ) -> (Vec<Waiter<W>>, StreamAnswer) {
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
            warn!("the rate limit service has no decision stream: using ShouldRateLimit calls");
            self.unsupported = true;
            (left, StreamAnswer::AskAgain)
        } else if status == OK && !left.is_empty() {
            debug!(
                "the rate limit service ended the decision stream; asking again for {} requests",
                left.len()
            );
            (left, StreamAnswer::AskAgain)
        } else {
            if !left.is_empty() || status != 0 {
                warn!(
                    "the rate limit decision stream ended (gRPC status {status} {detail}); {} requests left without a decision",
                    left.len()
                );
            }
            let error = format!("decision stream ended: gRPC status {status} {detail}");
            (left, StreamAnswer::Decided(Err(error)))
        }
    }

    /// Requests whose decision is overdue.
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
