//! AWS Signature Version 4, written from the specification
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>) for
//! verification. The gateway signs with the `aws-sigv4` crate; this module deliberately does not
//! use it, so that a bug shared by signer and verifier cannot hide.
//!
//! Everything here is pure: the caller passes the request as received, the secret and the time.
//! Rules that are specific to non-S3 services apply: the path is normalized and percent-encoded
//! a second time, and the payload hash is always that of the actual body.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const TERMINATOR: &str = "aws4_request";

type HmacSha256 = Hmac<Sha256>;

/// `DATE/REGION/SERVICE/aws4_request` of a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    /// `YYYYMMDD`.
    pub date: String,
    pub region: String,
    pub service: String,
}

impl CredentialScope {
    pub fn new(date: &str, region: &str, service: &str) -> Self {
        Self {
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        }
    }
}

impl std::fmt::Display for CredentialScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub scope: CredentialScope,
    /// Lowercase header names in the order the signer listed them.
    pub signed_headers: Vec<String>,
    /// Hex as sent (not validated: a malformed one simply does not match).
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error(
        "Unsupported authorization scheme {0:?}: the emulator only accepts {ALGORITHM} signatures."
    )]
    UnsupportedScheme(String),
    #[error("Authorization header requires '{0}' parameter.")]
    MissingParameter(&'static str),
    #[error("Authorization header contains an invalid key=value pair: {0:?}.")]
    InvalidPair(String),
    #[error(
        "Credential should be of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, got {0:?}."
    )]
    MalformedCredential(String),
    #[error("SignedHeaders must be a ';'-separated list of lowercase header names, got {0:?}.")]
    MalformedSignedHeaders(String),
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<hex>` (spaces after the commas are optional).
pub fn parse_authorization(value: &str) -> Result<Authorization, AuthorizationError> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme != ALGORITHM {
        return Err(AuthorizationError::UnsupportedScheme(scheme.to_string()));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for pair in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, val) = pair
            .split_once('=')
            .ok_or_else(|| AuthorizationError::InvalidPair(pair.to_string()))?;
        match key.trim() {
            "Credential" => credential = Some(val.trim()),
            "SignedHeaders" => signed_headers = Some(val.trim()),
            "Signature" => signature = Some(val.trim()),
            _ => return Err(AuthorizationError::InvalidPair(pair.to_string())),
        }
    }
    let credential = credential.ok_or(AuthorizationError::MissingParameter("Credential"))?;
    let signed_headers =
        signed_headers.ok_or(AuthorizationError::MissingParameter("SignedHeaders"))?;
    let signature = signature.ok_or(AuthorizationError::MissingParameter("Signature"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let well_formed = parts.len() == 5
        && !parts[0].is_empty()
        && parts[1].len() == 8
        && parts[1].bytes().all(|b| b.is_ascii_digit())
        && !parts[2].is_empty()
        && !parts[3].is_empty()
        && parts[4] == TERMINATOR;
    if !well_formed {
        return Err(AuthorizationError::MalformedCredential(
            credential.to_string(),
        ));
    }
    let names: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    let names_ok = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase() && b != b':')
    });
    if !names_ok {
        return Err(AuthorizationError::MalformedSignedHeaders(
            signed_headers.to_string(),
        ));
    }
    Ok(Authorization {
        access_key_id: parts[0].to_string(),
        scope: CredentialScope::new(parts[1], parts[2], parts[3]),
        signed_headers: names,
        signature: signature.to_string(),
    })
}

/// A request as the verifier needs it: exactly as received.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent on the wire, still percent-encoded.
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: Option<&'a str>,
    /// Every header line, names lowercase, in the order received (repeated names repeat).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// `hex(sha256(data))`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Percent-encodes every byte except RFC 3986's unreserved characters (and `/` when asked).
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is. `+` is not a
/// space in SigV4.
pub fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex_digit = |at: usize| bytes.get(at).and_then(|c| char::from(*c).to_digit(16));
    while i < bytes.len() {
        match (bytes[i], hex_digit(i + 1), hex_digit(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                // Two hex digits make at most 0xFF, so the cast cannot truncate.
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (other, _, _) => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

/// Removes `.` and `..` segments and merges repeated slashes (RFC 3986 section 5.2.4, as AWS
/// applies it to every service but S3).
fn normalize_path(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    let absolute = if raw_path.starts_with('/') {
        raw_path.to_string()
    } else {
        format!("/{raw_path}")
    };
    if !absolute.contains("/.") && !absolute.contains("//") {
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
    let trailing = ["/", "/.", "/.."].iter().any(|end| absolute.ends_with(end));
    if trailing && !result.ends_with('/') {
        result.push('/');
    }
    result
}

/// The canonical URI: the normalized raw path with every byte but unreserved ones and `/`
/// percent-encoded again, so `%3A` becomes `%253A`.
pub fn canonical_uri(raw_path: &str) -> String {
    let mut out = String::with_capacity(raw_path.len() + 8);
    uri_encode(normalize_path(raw_path).as_bytes(), true, &mut out);
    out
}

/// The canonical query string: parameters decoded, re-encoded RFC 3986-style, sorted by name
/// then value, `=` always present.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut params: Vec<(String, String)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let (mut n, mut v) = (String::new(), String::new());
            uri_encode(&percent_decode(name), false, &mut n);
            uri_encode(&percent_decode(value), false, &mut v);
            (n, v)
        })
        .collect();
    params.sort();
    params
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses each inner run of spaces (and line folds) to one space.
fn normalize_header_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// `name:value\n` for each signed header in the order given; repeated headers are joined with
/// `,` in the order received. A signed header that is absent contributes an empty value (and so,
/// in practice, a signature mismatch).
pub fn canonical_headers(signed_headers: &[String], headers: &[(String, String)]) -> String {
    let mut out = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| normalize_header_value(v))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// The canonical request, the hash of which the string to sign carries.
pub fn canonical_request(request: &RequestParts<'_>, signed_headers: &[String]) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.raw_path),
        canonical_query(request.raw_query),
        canonical_headers(signed_headers, request.headers),
        signed_headers.join(";"),
        sha256_hex(request.body),
    )
}

pub fn string_to_sign(amz_date: &str, scope: &CredentialScope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").
pub fn signing_key(secret_access_key: &str, scope: &CredentialScope) -> [u8; 32] {
    let k_date = hmac(
        format!("AWS4{secret_access_key}").as_bytes(),
        scope.date.as_bytes(),
    );
    let k_region = hmac(&k_date, scope.region.as_bytes());
    let k_service = hmac(&k_region, scope.service.as_bytes());
    hmac(&k_service, TERMINATOR.as_bytes())
}

/// The expected signature, as lowercase hex.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(signing_key, string_to_sign.as_bytes()))
}

/// Whether `provided` (hex) is the signature of `string_to_sign`; compared in constant time.
pub fn signature_matches(signing_key: &[u8; 32], string_to_sign: &str, provided: &str) -> bool {
    // AWS signatures are lowercase hex; anything else cannot match.
    if provided.len() != 64
        || !provided
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return false;
    }
    let Ok(provided) = hex::decode(provided) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(signing_key).expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

const AMZ_DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// Parses `x-amz-date` (`20150830T123600Z`, UTC).
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    if value.len() != 16 {
        return None;
    }
    let parsed = time::PrimitiveDateTime::parse(value, AMZ_DATE_FORMAT).ok()?;
    Some(parsed.assume_utc().into())
}

/// Formats a time as `x-amz-date` does.
pub fn format_amz_date(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    at.format(AMZ_DATE_FORMAT)
        .expect("a SystemTime formats as an x-amz-date")
}

/// How far apart two instants are, whichever comes first.
pub fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
