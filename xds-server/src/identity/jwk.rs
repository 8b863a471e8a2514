//! JWKS documents (RFC 7517) into [`VerifyingKey`]s. Pure: a key the filter could not use is
//! skipped with a [`SkipReason`], so one odd key in an issuer's set never hides the others.

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use gateway_common::auth_config::Algorithm;
use serde_json::{Map, Value};

use super::key::{Curve, KeyMaterial, VerifyingKey};

/// base64url as JWKs use it; tolerates the padding some issuers add anyway.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Smallest RSA modulus accepted (NIST SP 800-131A); the filter's library refuses smaller.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the filter's library accepts.
pub const MAX_RSA_BITS: usize = 4096;

/// Why a document is not a JWKS at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JWKS: expected a JSON object with a `keys` array")]
    NotAJwks,
}

/// Why one JWK of a set is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("member `{0}` is missing")]
    Missing(&'static str),
    #[error("member `{0}` is not a string")]
    NotAString(&'static str),
    #[error("member `{0}` is not base64url")]
    BadBase64(&'static str),
    #[error("`use` is {0:?}, not \"sig\"")]
    NotForSignatures(String),
    #[error("`key_ops` does not include \"verify\"")]
    NotForVerification,
    #[error("`alg` {0:?} is not a supported JWS algorithm")]
    UnsupportedAlgorithm(String),
    #[error("`alg` {alg} does not fit a key of type {kty}")]
    AlgorithmMismatch {
        alg: &'static str,
        kty: &'static str,
    },
    #[error("key type {0:?} is not supported (RSA, EC, OKP)")]
    UnsupportedKeyType(String),
    #[error("shared-secret (oct) keys are only accepted from hs256_secret_env")]
    SymmetricKey,
    #[error("curve {0:?} is not supported (P-256, P-384, Ed25519)")]
    UnsupportedCurve(String),
    #[error("RSA modulus of {0} bits is shorter than 2048")]
    ShortRsaModulus(usize),
    #[error("RSA modulus of {0} bits is longer than 4096")]
    LongRsaModulus(usize),
    #[error("RSA public exponent is not 65537")]
    UnsupportedRsaExponent,
    #[error("member `{0}` has the wrong length for the curve")]
    WrongLength(&'static str),
    #[error("not a valid public key")]
    InvalidKey,
}

impl SkipReason {
    /// Short stable label, usable as a metric tag.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipReason::NotAnObject
            | SkipReason::Missing(_)
            | SkipReason::NotAString(_)
            | SkipReason::BadBase64(_)
            | SkipReason::WrongLength(_) => "malformed",
            SkipReason::NotForSignatures(_) | SkipReason::NotForVerification => {
                "not_for_signatures"
            }
            SkipReason::UnsupportedAlgorithm(_) | SkipReason::AlgorithmMismatch { .. } => {
                "unsupported_algorithm"
            }
            SkipReason::UnsupportedKeyType(_)
            | SkipReason::SymmetricKey
            | SkipReason::UnsupportedCurve(_) => "unsupported_key_type",
            SkipReason::ShortRsaModulus(_)
            | SkipReason::LongRsaModulus(_)
            | SkipReason::UnsupportedRsaExponent
            | SkipReason::InvalidKey => "invalid_key",
        }
    }
}

/// A key of the set that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the `keys` array.
    pub index: usize,
    /// Its `kid` when it has a readable one.
    pub kid: Option<String>,
    pub reason: SkipReason,
}

/// The usable keys of a JWKS, in document order, and the ones left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedJwks {
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<SkippedKey>,
}

/// Parses a JWKS document.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, JwksError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| JwksError::NotJson(e.to_string()))?;
    parse_jwks_value(&value)
}

/// Converts an already parsed JWKS (an inline `jwks` of the configuration).
pub fn parse_jwks_value(value: &Value) -> Result<ParsedJwks, JwksError> {
    let keys = value
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or(JwksError::NotAJwks)?;
    let mut parsed = ParsedJwks::default();
    for (index, jwk) in keys.iter().enumerate() {
        match convert_jwk(jwk) {
            Ok(key) => parsed.keys.push(key),
            Err(reason) => parsed.skipped.push(SkippedKey {
                index,
                kid: jwk.get("kid").and_then(Value::as_str).map(str::to_string),
                reason,
            }),
        }
    }
    Ok(parsed)
}

/// Converts one JWK, or says why it cannot verify tokens for the filter.
pub fn convert_jwk(jwk: &Value) -> Result<VerifyingKey, SkipReason> {
    let jwk = jwk.as_object().ok_or(SkipReason::NotAnObject)?;
    let kid = optional_string(jwk, "kid")?.unwrap_or_default().to_string();
    if let Some(key_use) = optional_string(jwk, "use")?
        && key_use != "sig"
    {
        return Err(SkipReason::NotForSignatures(key_use.to_string()));
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops.as_array().ok_or(SkipReason::NotForVerification)?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err(SkipReason::NotForVerification);
        }
    }
    let alg = optional_string(jwk, "alg")?
        .map(|name| {
            Algorithm::from_name(name)
                .ok_or_else(|| SkipReason::UnsupportedAlgorithm(name.to_string()))
        })
        .transpose()?;
    let kty = optional_string(jwk, "kty")?.ok_or(SkipReason::Missing("kty"))?;
    let material = match kty {
        "RSA" => rsa(jwk)?,
        "EC" => ec(jwk)?,
        "OKP" => okp(jwk)?,
        "oct" => return Err(SkipReason::SymmetricKey),
        other => return Err(SkipReason::UnsupportedKeyType(other.to_string())),
    };
    if let Some(alg) = alg
        && !material.fits(alg)
    {
        return Err(SkipReason::AlgorithmMismatch {
            alg: alg.name(),
            kty: material.kty(),
        });
    }
    Ok(VerifyingKey { kid, alg, material })
}

fn rsa(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let n = strip_leading_zeros(binary(jwk, "n")?);
    let e = strip_leading_zeros(binary(jwk, "e")?);
    let bits = bit_length(&n);
    if bits < MIN_RSA_BITS {
        return Err(SkipReason::ShortRsaModulus(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(SkipReason::LongRsaModulus(bits));
    }
    if e != [1, 0, 1] {
        return Err(SkipReason::UnsupportedRsaExponent);
    }
    // The filter builds the key with the same library: what it refuses is refused here.
    jwt_simple::algorithms::RS256PublicKey::from_components(&n, &e)
        .map_err(|_| SkipReason::InvalidKey)?;
    Ok(KeyMaterial::Rsa { n, e })
}

fn ec(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    let curve = match optional_string(jwk, "crv")?.ok_or(SkipReason::Missing("crv"))? {
        "P-256" => Curve::P256,
        "P-384" => Curve::P384,
        other => return Err(SkipReason::UnsupportedCurve(other.to_string())),
    };
    let x = coordinate(binary(jwk, "x")?, curve.coordinate_len(), "x")?;
    let y = coordinate(binary(jwk, "y")?, curve.coordinate_len(), "y")?;
    let mut sec1 = Vec::with_capacity(1 + x.len() + y.len());
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    let valid = match curve {
        Curve::P256 => jwt_simple::algorithms::ES256PublicKey::from_bytes(&sec1).is_ok(),
        Curve::P384 => jwt_simple::algorithms::ES384PublicKey::from_bytes(&sec1).is_ok(),
    };
    if !valid {
        return Err(SkipReason::InvalidKey);
    }
    Ok(KeyMaterial::Ec { curve, x, y })
}

fn okp(jwk: &Map<String, Value>) -> Result<KeyMaterial, SkipReason> {
    match optional_string(jwk, "crv")?.ok_or(SkipReason::Missing("crv"))? {
        "Ed25519" => {}
        other => return Err(SkipReason::UnsupportedCurve(other.to_string())),
    }
    let x = binary(jwk, "x")?;
    if x.len() != 32 {
        return Err(SkipReason::WrongLength("x"));
    }
    jwt_simple::algorithms::Ed25519PublicKey::from_bytes(&x).map_err(|_| SkipReason::InvalidKey)?;
    Ok(KeyMaterial::Ed25519 { x })
}

fn optional_string<'a>(
    jwk: &'a Map<String, Value>,
    member: &'static str,
) -> Result<Option<&'a str>, SkipReason> {
    match jwk.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SkipReason::NotAString(member)),
    }
}

fn binary(jwk: &Map<String, Value>, member: &'static str) -> Result<Vec<u8>, SkipReason> {
    let text = optional_string(jwk, member)?.ok_or(SkipReason::Missing(member))?;
    BASE64URL
        .decode(text)
        .map_err(|_| SkipReason::BadBase64(member))
}

/// A coordinate at its full length: some issuers drop leading zero bytes, none may add any.
fn coordinate(mut value: Vec<u8>, len: usize, member: &'static str) -> Result<Vec<u8>, SkipReason> {
    if value.is_empty() || value.len() > len {
        return Err(SkipReason::WrongLength(member));
    }
    if value.len() < len {
        let mut padded = vec![0; len - value.len()];
        padded.append(&mut value);
        value = padded;
    }
    Ok(value)
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

fn bit_length(unsigned: &[u8]) -> usize {
    match unsigned.first() {
        None => 0,
        Some(first) => unsigned.len() * 8 - first.leading_zeros() as usize,
    }
}

#[cfg(test)]
mod tests;
