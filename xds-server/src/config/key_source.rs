//! An issuer's key source: which one it names (exactly one) and its checked form for the key
//! manager (URLs fetchable, paths resolved, inline keys usable, the HS256 secret present).

use std::path::Path;

use super::{
    check::{Checker, quoted, resolve},
    file::IssuerSection,
    model::{ConfigError, Env},
};
use crate::{
    identity::{KeySource, fetch, jwk},
    util::Secret,
};

/// Shortest HS256 secret accepted: as long as the SHA-256 output (RFC 7518, 3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

const KEY_SOURCES: &str = "exactly one key source: jwks_uri, discovery: true, jwks_file, jwks, dev_signing_key or hs256_secret_env";

/// The key source an issuer names, borrowed from its section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum SourceKind<'a> {
    JwksUri(&'a str),
    Discovery,
    JwksFile(&'a Path),
    Jwks(&'a serde_json::Value),
    DevSigningKey(&'a Path),
    Hs256Secret(&'a str),
}

/// The one key source of `raw`, or an error naming what it has instead.
pub(super) fn source_kind<'a>(
    check: &Checker<'_>,
    i: usize,
    raw: &'a IssuerSection,
) -> Result<SourceKind<'a>, ConfigError> {
    let present = [
        ("jwks_uri", raw.jwks_uri.as_deref().map(SourceKind::JwksUri)),
        ("discovery", raw.discovery.then_some(SourceKind::Discovery)),
        (
            "jwks_file",
            raw.jwks_file.as_deref().map(SourceKind::JwksFile),
        ),
        ("jwks", raw.jwks.as_ref().map(SourceKind::Jwks)),
        (
            "dev_signing_key",
            raw.dev_signing_key
                .as_deref()
                .map(SourceKind::DevSigningKey),
        ),
        (
            "hs256_secret_env",
            raw.hs256_secret_env.as_deref().map(SourceKind::Hs256Secret),
        ),
    ];
    let chosen: Vec<(&str, SourceKind<'a>)> = present
        .into_iter()
        .filter_map(|(name, kind)| Some((name, kind?)))
        .collect();
    match chosen.as_slice() {
        [(_, kind)] => Ok(*kind),
        _ => {
            let found = if chosen.is_empty() {
                "none".to_string()
            } else {
                chosen
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            Err(check.invalid(&format!("auth.issuers[{i}]"), KEY_SOURCES, Some(found)))
        }
    }
}

/// The checked key source: URLs fetchable, paths resolved against `base_dir`, inline keys
/// usable, the HS256 secret present and long enough.
pub(super) fn key_source(
    check: &Checker<'_>,
    i: usize,
    raw: &IssuerSection,
    kind: SourceKind<'_>,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<KeySource, ConfigError> {
    let key = |field: &str| format!("auth.issuers[{i}].{field}");
    let path = |field: &str, path: &Path| {
        if path.as_os_str().is_empty() {
            Err(check.invalid(&key(field), "a file path", Some(quoted(""))))
        } else {
            Ok(resolve(base_dir, path))
        }
    };
    Ok(match kind {
        SourceKind::JwksUri(url) => {
            if !fetch::is_fetchable_url(url) {
                return Err(check.invalid(
                    &key("jwks_uri"),
                    "an https:// URL (http:// only to a loopback address such as 127.0.0.1)",
                    Some(quoted(url)),
                ));
            }
            KeySource::JwksUri(url.to_string())
        }
        SourceKind::Discovery => {
            let url = fetch::discovery_url(&raw.issuer);
            if !fetch::is_fetchable_url(&url) || raw.issuer.contains(['?', '#']) {
                return Err(check.invalid(
                    &key("discovery"),
                    "an `issuer` that is an https:// URL (http:// only to a loopback address) to discover the keys from",
                    Some(quoted(&raw.issuer)),
                ));
            }
            KeySource::Discovery {
                issuer: raw.issuer.clone(),
                url,
            }
        }
        SourceKind::JwksFile(file) => KeySource::JwksFile(path("jwks_file", file)?),
        SourceKind::DevSigningKey(file) => KeySource::DevSigningKey(path("dev_signing_key", file)?),
        SourceKind::Jwks(value) => {
            let parsed = jwk::parse_jwks_value(value).map_err(|_| {
                check.invalid(
                    &key("jwks"),
                    "a JWKS: a mapping with a list of keys, {keys: [...]}",
                    None,
                )
            })?;
            if let Some(skipped) = parsed.skipped.first() {
                return Err(check.invalid(
                    &key(&format!("jwks.keys[{}]", skipped.index)),
                    "a signing key the gateway supports",
                    Some(format!("a key whose {}", skipped.reason)),
                ));
            }
            if parsed.keys.is_empty() {
                return Err(check.invalid(
                    &key("jwks.keys"),
                    "at least one key",
                    Some("none".into()),
                ));
            }
            KeySource::Inline(parsed.keys)
        }
        SourceKind::Hs256Secret(name) => {
            let expected = "the name of an environment variable of xds-server holding the HS256 secret (at least 32 bytes)";
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(check.invalid(&key("hs256_secret_env"), expected, Some(quoted(name))));
            }
            let secret = env(name).ok_or_else(|| {
                check.invalid(
                    &key("hs256_secret_env"),
                    expected,
                    Some(format!("{}, which is not set", quoted(name))),
                )
            })?;
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(check.invalid(
                    &key("hs256_secret_env"),
                    expected,
                    Some(format!(
                        "{}, whose value has only {} bytes",
                        quoted(name),
                        secret.len()
                    )),
                ));
            }
            KeySource::SharedSecret(Secret::new(secret))
        }
    })
}
