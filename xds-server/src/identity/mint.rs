//! Development tokens (`xds-server mint-token`): claims laid out as the issuer's claim mapping
//! expects them, signed with its development key. Pure apart from the key.

use std::{fmt, time::Duration};

use gateway_common::auth_config::{Issuer, glob_matches};
use jwt_simple::prelude::{
    Audiences, EdDSAKeyPairLike as _, HS256Key, JWTClaims, MACLike as _, UnixTimeStamp,
};
use serde_json::{Map, Value};

use super::dev_key::DevKey;
use crate::util::Secret;

/// Claims the minting sets itself; a claim mapping or `--claim` may not name them.
const REGISTERED: [&str; 5] = ["iss", "aud", "exp", "nbf", "iat"];

/// A development issuer's signing key. `Debug` shows no key material.
pub enum SigningKey {
    Ed25519(Box<DevKey>),
    Hs256(Secret),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigningKey::Ed25519(key) => f.debug_tuple("Ed25519").field(key).finish(),
            SigningKey::Hs256(secret) => f.debug_tuple("Hs256").field(secret).finish(),
        }
    }
}

/// What goes into the token besides the issuer's fixed claims.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRequest {
    pub tenant: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    pub ttl: Duration,
    /// Extra claims by path (`key=value` on the command line).
    pub extra: Vec<(String, Value)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    #[error(
        "issuer {issuer}: its claim mapping has no `{field}` claim (auth.issuers[].claims.{field}), so --{field} cannot be used"
    )]
    Unmapped { issuer: String, field: &'static str },
    #[error("claim {0:?} is set by mint-token itself")]
    Registered(String),
    #[error("claim {0:?} is given twice or inside a value that is not an object")]
    Conflict(String),
    #[error("cannot sign the token: {0}")]
    Sign(String),
    #[error(
        "issuer {issuer} may not assert tenant {tenant:?} (auth.issuers[].tenants): the gateway would refuse the token"
    )]
    TenantNotAllowed { issuer: String, tenant: String },
}

/// The claims of a token for `issuer` issued at `now` (Unix seconds).
pub fn claims(
    issuer: &Issuer,
    request: &TokenRequest,
    now: u64,
) -> Result<JWTClaims<Map<String, Value>>, MintError> {
    let unmapped = |field| MintError::Unmapped {
        issuer: issuer.name.clone(),
        field,
    };
    if let Some(patterns) = &issuer.tenants
        && !patterns.iter().any(|p| glob_matches(p, &request.tenant))
    {
        return Err(MintError::TenantNotAllowed {
            issuer: issuer.name.clone(),
            tenant: request.tenant.clone(),
        });
    }
    let mut custom = Map::new();
    set_claim(
        &mut custom,
        &issuer.claims.tenant,
        Value::String(request.tenant.clone()),
    )?;
    set_claim(
        &mut custom,
        &issuer.claims.subject,
        Value::String(request.subject.clone()),
    )?;
    if !request.roles.is_empty() {
        let path = issuer
            .claims
            .role
            .as_deref()
            .ok_or_else(|| unmapped("role"))?;
        let roles = request.roles.iter().cloned().map(Value::String).collect();
        set_claim(&mut custom, path, Value::Array(roles))?;
    }
    if let Some(tier) = &request.tier {
        let path = issuer
            .claims
            .tier
            .as_deref()
            .ok_or_else(|| unmapped("tier"))?;
        set_claim(&mut custom, path, Value::String(tier.clone()))?;
    }
    for (path, value) in &request.extra {
        set_claim(&mut custom, path, value.clone())?;
    }
    let mut claims = JWTClaims::new();
    claims.custom = custom;
    claims.issuer = Some(issuer.issuer.clone());
    claims.audiences = issuer.audiences.first().cloned().map(Audiences::AsString);
    claims.issued_at = Some(UnixTimeStamp::from_secs(now));
    claims.invalid_before = Some(UnixTimeStamp::from_secs(now));
    claims.expires_at = Some(UnixTimeStamp::from_secs(
        now.saturating_add(request.ttl.as_secs()),
    ));
    Ok(claims)
}

/// Sets `value` at `path`: a name with `:` or without `.` is a top-level claim, a dotted path
/// goes into nested objects (made as needed).
pub fn set_claim(
    claims: &mut Map<String, Value>,
    path: &str,
    value: Value,
) -> Result<(), MintError> {
    let segments: Vec<&str> = if path.contains(':') || !path.contains('.') {
        vec![path]
    } else {
        path.split('.').collect()
    };
    if REGISTERED.contains(&segments[0]) {
        return Err(MintError::Registered(path.to_string()));
    }
    let conflict = || MintError::Conflict(path.to_string());
    let (leaf, parents) = segments.split_last().ok_or_else(conflict)?;
    let mut object = claims;
    for segment in parents {
        object = object
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(conflict)?;
    }
    if object.contains_key(*leaf) {
        return Err(conflict());
    }
    object.insert(leaf.to_string(), value);
    Ok(())
}

/// Signs `claims`: EdDSA with the key id of the development key, or HS256 without one.
pub fn sign(key: &SigningKey, claims: JWTClaims<Map<String, Value>>) -> Result<String, MintError> {
    let signed = match key {
        SigningKey::Ed25519(key) => key.key_pair().sign(claims),
        SigningKey::Hs256(secret) => {
            HS256Key::from_bytes(secret.expose().as_bytes()).authenticate(claims)
        }
    };
    signed.map_err(|e| MintError::Sign(e.to_string()))
}

/// `90`, `90s`, `15m`, `1h`, `7d`: a lifetime above zero.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let expected = || format!("expected a lifetime such as 90s, 15m, 1h or 7d, found {text:?}");
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let count: u64 = digits.parse().map_err(|_| expected())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(expected()),
    };
    match count.checked_mul(seconds) {
        Some(0) | None => Err(expected()),
        Some(total) => Ok(Duration::from_secs(total)),
    }
}

/// `key=value`; the value is JSON when it parses as JSON (`3`, `true`, `["a"]`), else text.
pub fn parse_claim(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, found {text:?}"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests;
