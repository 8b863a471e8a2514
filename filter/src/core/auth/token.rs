//! Finding the caller's token in the request and reading what must be known before its
//! signature can be checked: the algorithm and key id from the header, the issuer from the
//! payload. Nothing read here is trusted yet.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway_common::auth_config::{Algorithm, JwtAuthentication};
use serde::Deserialize;

use super::error::AuthError;
use crate::core::headers::find_str;

/// The token of a request: from `Authorization: Bearer`, else from an issuer's own header.
pub fn extract<'h>(
    config: &JwtAuthentication,
    headers: &'h [(String, Vec<u8>)],
) -> Option<&'h str> {
    if let Some(value) = find_str(headers, "authorization")
        && let Some(token) = strip_prefix_ignore_case(value.trim(), "bearer ")
    {
        return Some(token.trim());
    }
    config.issuers.iter().find_map(|issuer| {
        let header = issuer.token_header.as_ref()?;
        let value = find_str(headers, &header.name)?.trim();
        let token = if header.prefix.is_empty() {
            Some(value)
        } else {
            strip_prefix_ignore_case(value, &header.prefix)
        };
        token.map(str::trim).filter(|t| !t.is_empty())
    })
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The unverified parts of a token needed to choose the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub issuer: String,
    /// The header has jwt-simple's `salt` member (which only its MAC keys check).
    pub salted: bool,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    salt: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    iss: Option<String>,
}

/// Reads header and issuer. `max_bytes` bounds the work done on hostile input.
pub fn inspect(token: &str, max_bytes: usize) -> Result<Unverified, AuthError> {
    if token.len() > max_bytes {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(AuthError::Malformed);
    }
    let header: Header = decode_json(header)?;
    let algorithm = Algorithm::from_name(&header.alg).ok_or(AuthError::AlgorithmNotAllowed)?;
    let payload: Payload = decode_json(payload)?;
    Ok(Unverified {
        algorithm,
        kid: header.kid,
        issuer: payload.iss.ok_or(AuthError::UnknownIssuer)?,
        salted: header.salt.is_some(),
    })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::auth_config::{ClaimMapping, Issuer, TokenHeader};

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn config() -> JwtAuthentication {
        JwtAuthentication {
            issuers: vec![Issuer {
                name: "corp".into(),
                issuer: "https://idp".into(),
                audiences: vec!["gw".into()],
                algorithms: vec![Algorithm::RS256],
                token_header: Some(TokenHeader {
                    name: "x-corp-token".into(),
                    prefix: "Token ".into(),
                }),
                claims: ClaimMapping::default(),
                required_claims: vec![],
                clock_skew_seconds: 0,
                max_token_bytes: 100,
                tenants: None,
                roles: None,
            }],
            access: Default::default(),
            cache_max_entries: 10,
            unknown_kid_refresh_seconds: 10,
            keys_refresh_seconds: 60,
            max_verifications_per_second: 10,
            signature_checks: Default::default(),
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn finds_the_token() {
        let c = config();
        assert_eq!(
            extract(&c, &h(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            extract(&c, &h(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            extract(&c, &h(&[("x-corp-token", "Token xyz")])),
            Some("xyz")
        );
        assert_eq!(
            extract(&c, &h(&[("x-corp-token", "xyz")])),
            None,
            "prefix required"
        );
        assert_eq!(
            extract(
                &c,
                &h(&[("authorization", "AWS4-HMAC-SHA256 Credential=...")])
            ),
            None
        );
        assert_eq!(extract(&c, &h(&[("authorization", "Bearer")])), None);
        assert_eq!(extract(&c, &h(&[])), None);
    }

    #[test]
    fn inspects_header_and_issuer() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#),
            b64(r#"{"iss":"https://idp","sub":"a"}"#)
        );
        assert_eq!(
            inspect(&token, 1000),
            Ok(Unverified {
                algorithm: Algorithm::RS256,
                kid: Some("k1".into()),
                issuer: "https://idp".into(),
                salted: false,
            })
        );
    }

    #[test]
    fn refuses_hostile_shapes() {
        let payload = b64(r#"{"iss":"x"}"#);
        let cases = [
            (
                format!("{}.{payload}.c2ln", b64(r#"{"alg":"none"}"#)),
                AuthError::AlgorithmNotAllowed,
            ),
            (
                format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS512"}"#)),
                AuthError::AlgorithmNotAllowed,
            ),
            (
                format!("{}.{payload}.", b64(r#"{"alg":"RS256"}"#)),
                AuthError::Malformed,
            ),
            (
                format!("{}.{payload}", b64(r#"{"alg":"RS256"}"#)),
                AuthError::Malformed,
            ),
            (
                format!("{}.{payload}.a.b", b64(r#"{"alg":"RS256"}"#)),
                AuthError::Malformed,
            ),
            (format!("@@@.{payload}.c2ln"), AuthError::Malformed),
            (
                format!("{}.{payload}.c2ln", b64("not json")),
                AuthError::Malformed,
            ),
            (
                format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64("{}")),
                AuthError::UnknownIssuer,
            ),
            ("x".repeat(2000), AuthError::TooLarge),
        ];
        for (token, expected) in cases {
            assert_eq!(inspect(&token, 1000), Err(expected), "{token}");
        }
    }
}
