//! The worker's signature check stream (`GatewayControl/CheckSignatures`, a
//! [`TaggedStream`]): the signatures of tokens this worker has not verified yet go to the
//! control service, which checks them natively (`core::auth::remote`). Without an open
//! stream, or when a verdict does not come within [`CHECK_TIMEOUT_MS`], the filter checks
//! the signature itself.

use gateway_common::names::CHECK_SIGNATURES;
use gateway_common::proto::{SignatureCheck, SignatureVerdict, signature_verdict};
use prost::Message;

use super::tagged::TaggedStream;
use crate::core::auth::Verdict;

/// How long a request waits for a verdict before its token is checked here.
pub(super) const CHECK_TIMEOUT_MS: u64 = 1_000;
/// Streams are replaced after this long (see [`TaggedStream`]).
pub(super) const STREAM_MAX_AGE_MS: u64 = 300_000;

pub(super) type Checks<W> = TaggedStream<W>;

pub(super) fn checks<W>() -> Checks<W> {
    TaggedStream::new(CHECK_SIGNATURES, "signature check")
}

/// The stream message for `check`.
pub(super) fn message(check: SignatureCheck) -> impl FnOnce(u64) -> Vec<u8> {
    move |id| SignatureCheck { id, ..check }.encode_to_vec()
}

/// The verdict a stream message carries.
pub(super) fn verdict(message: &SignatureVerdict) -> Verdict {
    match signature_verdict::Verdict::try_from(message.verdict) {
        Ok(signature_verdict::Verdict::Valid) => Verdict::Valid,
        Ok(signature_verdict::Verdict::Invalid) => Verdict::Invalid,
        Ok(signature_verdict::Verdict::Busy) => Verdict::Busy,
        Ok(signature_verdict::Verdict::Unsupported) => Verdict::Unsupported,
        // A verdict this filter does not know: it checks the token itself.
        Ok(signature_verdict::Verdict::Unspecified) | Err(_) => Verdict::Unsupported,
    }
}
