//! The worker's rate limit decision stream (`GatewayControl/StreamRateLimit`, a
//! [`TaggedStream`]): every request of this Envoy worker sends its admission request on it,
//! instead of opening an HTTP/2 stream of its own for a `ShouldRateLimit` call. While none is
//! open, requests make the unary call; a decision that does not come within the quota timeout
//! fails like a call that timed out.

use gateway_common::names::STREAM_RATE_LIMIT;
use gateway_common::proto::RateLimitStreamRequest;
use gateway_common::ratelimit::RateLimitResponse;
use prost::Message;

use super::tagged::{Closed, TaggedStream};

pub(super) type Decisions<W> = TaggedStream<W>;

pub(super) fn decisions<W>() -> Decisions<W> {
    TaggedStream::new(STREAM_RATE_LIMIT, "rate limit decision")
}

/// The stream message asking for the decision of this `RateLimitRequest`, and for
/// allowances when `allowances`.
pub(super) fn message(request: &[u8], allowances: bool) -> impl FnOnce(u64) -> Vec<u8> + '_ {
    move |id| {
        RateLimitStreamRequest {
            id,
            request: request.to_vec(),
            allowances,
        }
        .encode_to_vec()
    }
}

/// What became of a quota decision asked for on the stream.
#[derive(Clone)]
pub(super) enum StreamAnswer {
    Decided(Result<RateLimitResponse, String>),
    /// Nothing was decided (or counted): ask again with the unary call.
    AskAgain,
}

impl StreamAnswer {
    /// For the requests a stream left waiting: ask again with a call when the service has no
    /// stream, or when it ended the stream itself with OK (a server that stops answers every
    /// request it read, then ends its streams: the requests left were not read, so not
    /// decided); else the quota failure mode.
    pub(super) fn after(closed: Closed) -> Self {
        match closed {
            Closed::Unimplemented | Closed::ByService => StreamAnswer::AskAgain,
            Closed::Failed(error) => StreamAnswer::Decided(Err(error)),
        }
    }
}
