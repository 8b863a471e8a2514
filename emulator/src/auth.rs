//! Which requests the API port accepts: the checks AWS makes before an operation runs, in the
//! order it makes them, with the error codes and messages the SDKs know. The cryptography is in
//! [`crate::sigv4`]; this module is the policy around it (host, credentials, scope, clock).

use std::time::{Duration, SystemTime};

use gateway_common::names;

use crate::credentials::Lookup;
use crate::operations::{ApiError, ErrorCode};
use crate::sigv4::{self, RequestParts};

pub const AUTHORIZATION: &str = "authorization";
pub const HOST: &str = "host";
pub const X_AMZ_DATE: &str = "x-amz-date";
pub const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
pub const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";

pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";
pub const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
pub const EXPIRED_TOKEN: &str = "The security token included in the request is expired";

#[derive(Debug, Clone, Copy)]
pub struct AuthSettings<'a> {
    pub region: &'a str,
    pub any_host: bool,
    pub max_clock_skew: Duration,
}

/// The verdict on one request, with what the request log records either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOutcome {
    /// From the `Authorization` header, when it could be parsed.
    pub access_key_id: Option<String>,
    /// On success, the Bedrock service the `Host` names (`None` when any host is accepted and
    /// this one names none).
    pub result: Result<Option<&'static str>, ApiError>,
    /// On a signature mismatch: the canonical request the emulator computed (session token
    /// redacted), for a debug log.
    pub diagnostic: Option<String>,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `host[:port]` without the port; IPv6 literals keep their brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// The Bedrock service whose endpoint in `region` is `host` (port ignored).
pub fn service_for_host(host: &str, region: &str) -> Option<&'static str> {
    let host = strip_port(host.trim()).to_ascii_lowercase();
    names::BEDROCK_SERVICES
        .into_iter()
        .find(|service| names::aws_host(service, region) == host)
}

fn unexpected_host(host: Option<&str>, region: &str) -> ApiError {
    let guessed = host
        .and_then(|h| h.split('.').next())
        .and_then(|label| names::BEDROCK_SERVICES.into_iter().find(|s| *s == label));
    let expected = match guessed {
        Some(service) => names::aws_host(service, region),
        None => names::BEDROCK_SERVICES
            .iter()
            .map(|s| names::aws_host(s, region))
            .collect::<Vec<_>>()
            .join(", or "),
    };
    let message = match host {
        Some(host) => {
            format!("Host '{host}' is not an endpoint of this service: expected {expected}.")
        }
        None => format!("The request has no Host header: expected {expected}."),
    };
    ApiError::invalid_signature(message)
}

fn skew_text(skew: Duration) -> String {
    let secs = skew.as_secs();
    if secs.is_multiple_of(60) {
        format!("{} min.", secs / 60)
    } else {
        format!("{secs} s")
    }
}

fn check_clock(
    amz_date: &str,
    signed_at: SystemTime,
    now: SystemTime,
    skew: Duration,
) -> Result<(), ApiError> {
    if sigv4::distance(signed_at, now) <= skew {
        return Ok(());
    }
    let now_text = sigv4::format_amz_date(now);
    let message = if signed_at < now {
        format!(
            "Signature expired: {amz_date} is now earlier than {} ({now_text} - {})",
            sigv4::format_amz_date(now - skew),
            skew_text(skew)
        )
    } else {
        format!(
            "Signature not yet current: {amz_date} is still later than {} ({now_text} + {})",
            sigv4::format_amz_date(now + skew),
            skew_text(skew)
        )
    };
    Err(ApiError::invalid_signature(message))
}

/// Verifies `request` as Bedrock would. `lookup` resolves an access key id to its secret.
pub fn authenticate(
    request: &RequestParts<'_>,
    settings: &AuthSettings<'_>,
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Lookup,
) -> AuthOutcome {
    let mut outcome = AuthOutcome {
        access_key_id: None,
        result: Ok(None),
        diagnostic: None,
    };
    let Some(authorization) = header(request.headers, AUTHORIZATION) else {
        outcome.result = Err(ApiError::new(
            ErrorCode::MissingAuthenticationToken,
            "Missing Authentication Token",
        ));
        return outcome;
    };
    let parsed = match sigv4::parse_authorization(authorization) {
        Ok(parsed) => parsed,
        Err(err) => {
            outcome.result = Err(ApiError::new(
                ErrorCode::IncompleteSignature,
                err.to_string(),
            ));
            return outcome;
        }
    };
    outcome.access_key_id = Some(parsed.access_key_id.clone());
    outcome.result = verify(
        request,
        settings,
        now,
        lookup,
        &parsed,
        &mut outcome.diagnostic,
    );
    outcome
}

fn verify(
    request: &RequestParts<'_>,
    settings: &AuthSettings<'_>,
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Lookup,
    parsed: &sigv4::Authorization,
    diagnostic: &mut Option<String>,
) -> Result<Option<&'static str>, ApiError> {
    let host = header(request.headers, HOST);
    let service = host.and_then(|h| service_for_host(h, settings.region));
    if service.is_none() && !settings.any_host {
        return Err(unexpected_host(host, settings.region));
    }

    let amz_date = header(request.headers, X_AMZ_DATE).ok_or_else(|| {
        ApiError::invalid_signature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    })?;
    let signed_at = sigv4::parse_amz_date(amz_date).ok_or_else(|| {
        ApiError::invalid_signature(format!(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\", got '{amz_date}'."
        ))
    })?;

    let (secret, session_token) = match lookup(&parsed.access_key_id) {
        Lookup::Valid {
            secret_access_key,
            session_token,
        } => (secret_access_key, session_token),
        Lookup::Expired => return Err(ApiError::new(ErrorCode::ExpiredToken, EXPIRED_TOKEN)),
        Lookup::Unknown => return Err(ApiError::new(ErrorCode::UnrecognizedClient, INVALID_TOKEN)),
    };
    if let Some(token) = &session_token
        && header(request.headers, X_AMZ_SECURITY_TOKEN) != Some(token.expose())
    {
        return Err(ApiError::new(ErrorCode::UnrecognizedClient, INVALID_TOKEN));
    }

    let scope = &parsed.scope;
    if scope.service != names::SIGNING_NAME {
        return Err(ApiError::invalid_signature(format!(
            "Credential should be scoped to correct service: '{}'.",
            names::SIGNING_NAME
        )));
    }
    if scope.region != settings.region {
        return Err(ApiError::invalid_signature(format!(
            "Credential should be scoped to a valid region, not '{}'. Expected '{}'.",
            scope.region, settings.region
        )));
    }
    if !amz_date.starts_with(&scope.date) {
        return Err(ApiError::invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            scope.date,
            &amz_date[..8]
        )));
    }
    check_clock(amz_date, signed_at, now, settings.max_clock_skew)?;

    if !parsed.signed_headers.iter().any(|h| h == HOST) {
        return Err(ApiError::invalid_signature(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let body_hash = sigv4::sha256_hex(request.body);
    if let Some(claimed) = header(request.headers, X_AMZ_CONTENT_SHA256)
        && claimed != body_hash
    {
        return Err(ApiError::invalid_signature(format!(
            "The provided 'x-amz-content-sha256' header does not match what was computed: \
             got '{claimed}', the body hashes to '{body_hash}'."
        )));
    }

    let canonical = sigv4::canonical_request(request, &parsed.signed_headers);
    let string_to_sign = sigv4::string_to_sign(amz_date, scope, &canonical);
    let key = sigv4::signing_key(secret.expose(), scope);
    if !sigv4::signature_matches(&key, &string_to_sign, &parsed.signature) {
        *diagnostic = Some(redact_token(&canonical));
        return Err(ApiError::invalid_signature(SIGNATURE_MISMATCH));
    }
    Ok(service)
}

fn redact_token(canonical: &str) -> String {
    canonical
        .lines()
        .map(|line| match line.split_once(':') {
            Some((X_AMZ_SECURITY_TOKEN, _)) => format!("{X_AMZ_SECURITY_TOKEN}:<redacted>"),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
