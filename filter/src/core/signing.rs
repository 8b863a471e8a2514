//! SigV4 signature of the upstream request.
//!
//! The canonical request is built here, in one pass over the headers the filter already holds,
//! and the key derivation (four HMACs) is done once per day and credential instead of on every
//! request, as is keying the HMAC that signs (the key's inner and outer blocks, and the string to
//! sign's first block, the same for a second); the key is
//! aws-sigv4's (`generate_signing_key`), the HMAC the `hmac` crate's that aws-sigv4 uses. The canonical form follows aws-sigv4's default settings exactly
//! (path normalized and double-encoded, query decoded and re-encoded, header values trimmed),
//! and a property test checks every signature against aws-sigv4's own `sign()`. The body is
//! hashed by the caller as it streams through (see `BodyHasher`). The canonical request's hash
//! starts from the SHA-256 state of an earlier one that began with the same bytes, when there
//! is one (`super::prefix::PrefixStates`): with temporary credentials, most of what is hashed
//! is the session token.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use super::credentials::SigningIdentity;
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
}

/// Everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`) is percent-encoded.
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same for paths, which keep their `/`.
const ENCODED_PATH: &AsciiSet = &ENCODED.remove(b'/');

/// Headers to add to the request: `x-amz-date`, `authorization` and, for temporary
/// credentials, `x-amz-security-token`.
pub fn signature_headers(
    input: &SigningInput<'_>,
    credentials: &SigningIdentity,
) -> Result<Vec<(String, String)>, SignError> {
    let (date, amz_date) = timestamps(input.now);
    let (date, amz_date) = (text(&date), text(&amz_date));
    let token = credentials.session_token();

    let mut signed: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(8);
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
        signed.push((name, trim_spaces(value)));
    }
    signed.push(("x-amz-date", Cow::Borrowed(amz_date)));
    if let Some(token) = token {
        signed.push(("x-amz-security-token", Cow::Borrowed(token)));
    }
    // Stable: several values of one header keep their order, and are joined with commas.
    signed.sort_by(|a, b| a.0.cmp(b.0));

    let (path, query) = input.path.split_once('?').unwrap_or((input.path, ""));
    let mut canonical = String::with_capacity(512);
    canonical.push_str(input.method);
    canonical.push('\n');
    canonical.extend(utf8_percent_encode(&normalize_path(path), ENCODED_PATH));
    canonical.push('\n');
    if !query.is_empty() {
        canonical.push_str(&canonical_query(query));
    }
    canonical.push('\n');
    let names_start = canonical.len();
    let mut names = String::with_capacity(96);
    for (i, (name, value)) in signed.iter().enumerate() {
        let continues = i > 0 && signed[i - 1].0 == *name;
        if continues {
            canonical.push(',');
        } else {
            if i > 0 {
                canonical.push('\n');
                names.push(';');
            }
            canonical.push_str(name);
            canonical.push(':');
            names.push_str(name);
        }
        canonical.push_str(value);
    }
    debug_assert!(canonical.len() > names_start);
    canonical.push_str("\n\n");
    canonical.push_str(&names);
    canonical.push('\n');
    canonical.push_str(input.payload_sha256_hex);

    // The scope, then the string to sign that contains it.
    let mut string_to_sign = String::with_capacity(160);
    string_to_sign.push_str("AWS4-HMAC-SHA256\n");
    string_to_sign.push_str(amz_date);
    string_to_sign.push('\n');
    let scope_start = string_to_sign.len();
    for part in [
        date,
        "/",
        input.region,
        "/",
        input.signing_name,
        "/aws4_request",
    ] {
        string_to_sign.push_str(part);
    }
    let scope_end = string_to_sign.len();
    string_to_sign.push('\n');
    string_to_sign.push_str(text(&hex32(
        &credentials.canonical_digest(canonical.as_bytes()),
    )));
    let signature = hex32(&credentials.sign_string(
        date,
        input.region,
        input.signing_name,
        input.now,
        string_to_sign.as_bytes(),
    ));
    let scope = &string_to_sign[scope_start..scope_end];

    let mut authorization = String::with_capacity(
        64 + credentials.access_key_id.len() + scope.len() + names.len() + 64,
    );
    for part in [
        "AWS4-HMAC-SHA256 Credential=",
        &credentials.access_key_id,
        "/",
        scope,
        ", SignedHeaders=",
        &names,
        ", Signature=",
        text(&signature),
    ] {
        authorization.push_str(part);
    }
    let mut out = Vec::with_capacity(3);
    out.push(("x-amz-date".to_string(), amz_date.to_string()));
    if let Some(token) = token {
        out.push(("x-amz-security-token".to_string(), token.to_string()));
    }
    out.push(("authorization".to_string(), authorization));
    Ok(out)
}

/// Lower-case hex of a SHA-256 digest (or an HMAC-SHA256 tag).
pub fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(byte >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

/// ASCII bytes this module wrote as text.
fn text(ascii: &[u8]) -> &str {
    std::str::from_utf8(ascii).unwrap_or_default()
}

/// Removes leading and trailing spaces and collapses runs of spaces; other whitespace (tabs)
/// is kept, as AWS does. Borrowed when there is nothing to remove (the usual case).
fn trim_spaces(value: &str) -> Cow<'_, str> {
    let clean = !value.starts_with(' ') && !value.ends_with(' ') && !value.contains("  ");
    if clean {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

/// RFC 3986 §5.2.4 dot-segment removal (and empty segments dropped), as SigV4 specifies for
/// every service but S3.
fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute: Cow<'_, str> = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !(absolute.contains('.') || absolute.contains("//")) {
        return absolute;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in absolute.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut result = format!("/{}", segments.join("/"));
    let trailing = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|s| absolute.ends_with(s));
    if trailing && !result.ends_with('/') {
        result.push('/');
    }
    Cow::Owned(result)
}

/// Query parameters decoded, re-encoded and sorted by name, then value.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            (
                utf8_percent_encode(&k, ENCODED).to_string(),
                utf8_percent_encode(&v, ENCODED).to_string(),
            )
        })
        .collect();
    params.sort();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` in UTC, as ASCII.
fn timestamps(now: SystemTime) -> ([u8; 8], [u8; 16]) {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let digits = |out: &mut [u8], value: u64| {
        let mut value = value;
        for slot in out.iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    let mut date = [0u8; 8];
    digits(&mut date[..4], y.clamp(0, 9999) as u64);
    digits(&mut date[4..6], u64::from(m));
    digits(&mut date[6..], u64::from(d));
    let mut time = [0u8; 16];
    time[..8].copy_from_slice(&date);
    time[8] = b'T';
    digits(&mut time[9..11], rem / 3600);
    digits(&mut time[11..13], rem % 3600 / 60);
    digits(&mut time[13..15], rem % 60);
    time[15] = b'Z';
    (date, time)
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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
        text(&hex32(&self.hasher.finalize().into())).to_string()
    }
}

#[cfg(test)]
mod tests;
