//! SigV4 signature of the upstream request, with aws-sigv4. The body is hashed by the caller as
//! it streams through (see `BodyHasher`), so signing only needs the digest.

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use sha2::{Digest, Sha256};

use super::headers::{AUTHORITY, is_signed};

/// What the signature covers besides the headers.
pub struct SigningInput<'a> {
    pub method: &'a str,
    /// Path and query exactly as they will be sent.
    pub path: &'a str,
    /// The upstream headers; the host is taken from `:authority`.
    pub headers: &'a [(String, Vec<u8>)],
    pub payload_sha256_hex: &'a str,
    pub region: &'a str,
    pub signing_name: &'a str,
    pub now: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// A header that must be signed is not visible ASCII.
    UnsignableHeader(String),
    /// aws-sigv4 refused the request (malformed path, for instance).
    Signer(String),
}

/// Headers to add to the request: `authorization`, `x-amz-date` and, for temporary
/// credentials, `x-amz-security-token`.
pub fn signature_headers(
    input: &SigningInput<'_>,
    identity: &Identity,
) -> Result<Vec<(String, String)>, SignError> {
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(8);
    for (name, value) in input.headers {
        let name = if name == AUTHORITY {
            "host"
        } else if is_signed(name) {
            name.as_str()
        } else {
            continue;
        };
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
            .ok_or_else(|| SignError::UnsignableHeader(name.to_string()))?;
        signed.push((name, value));
    }
    let request = SignableRequest::new(
        input.method,
        input.path,
        signed.into_iter(),
        SignableBody::Precomputed(input.payload_sha256_hex.to_string()),
    )
    .map_err(|e| SignError::Signer(e.to_string()))?;
    let params = v4::SigningParams::builder()
        .identity(identity)
        .region(input.region)
        .name(input.signing_name)
        .time(input.now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into();
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

/// SHA-256 of a body fed in pieces as Envoy buffers it, so each byte is read from the host once.
#[derive(Default)]
pub struct BodyHasher {
    hasher: Sha256,
    consumed: usize,
}

/// Hex SHA-256 of the empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl BodyHasher {
    /// How many bytes have been hashed; the next piece starts here.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.hasher.update(piece);
        self.consumed += piece.len();
    }

    pub fn finish_hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests;
