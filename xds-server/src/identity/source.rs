//! Where each issuer's keys come from ([`KeySource`]), as the configuration names it: the
//! type the identity modules share, apart from them so they import it one way.

use std::{path::PathBuf, time::Duration};

use super::key::VerifyingKey;
use crate::util::Secret;

/// One issuer as the key manager sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerKeySource {
    /// The configuration's label, for logs and the status page.
    pub name: String,
    /// The `iss` value: what the filter and `GetIdentityKeys` know the issuer by.
    pub issuer: String,
    pub source: KeySource,
    /// Scheduled re-reads (remote and file sources).
    pub refresh: Duration,
    /// Shortest spacing of re-reads caused by tokens with an unknown key id.
    pub min_refresh: Duration,
}

/// Where an issuer's keys come from. `Debug` never shows the shared secret.
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    /// A JWKS URL.
    JwksUri(String),
    /// OpenID Connect discovery: the document at `url` names the JWKS URL.
    Discovery { issuer: String, url: String },
    /// A JWKS file on this server's machine (absolute), re-read when it changes.
    JwksFile(PathBuf),
    /// Keys written into the configuration, already checked.
    Inline(Vec<VerifyingKey>),
    /// The development Ed25519 key (absolute path), created if missing.
    DevSigningKey(PathBuf),
    /// The HS256 development secret.
    SharedSecret(Secret),
}

impl KeySource {
    /// The configuration key that selects this source.
    pub fn label(&self) -> &'static str {
        match self {
            KeySource::JwksUri(_) => "jwks_uri",
            KeySource::Discovery { .. } => "discovery",
            KeySource::JwksFile(_) => "jwks_file",
            KeySource::Inline(_) => "jwks",
            KeySource::DevSigningKey(_) => "dev_signing_key",
            KeySource::SharedSecret(_) => "hs256_secret_env",
        }
    }

    /// Keys that never change while the configuration does not: no fetching, no schedule.
    pub fn static_keys(&self) -> Option<Vec<VerifyingKey>> {
        match self {
            KeySource::Inline(keys) => Some(keys.clone()),
            KeySource::SharedSecret(secret) => Some(vec![VerifyingKey::shared_secret(secret)]),
            _ => None,
        }
    }

    /// A local file whose changes trigger a re-read.
    pub fn watched_file(&self) -> Option<&std::path::Path> {
        match self {
            KeySource::JwksFile(path) | KeySource::DevSigningKey(path) => Some(path),
            _ => None,
        }
    }

    /// Where the keys are read from, for the status page (no secret).
    pub fn location(&self) -> Option<String> {
        match self {
            KeySource::JwksUri(url) | KeySource::Discovery { url, .. } => Some(url.clone()),
            KeySource::JwksFile(path) | KeySource::DevSigningKey(path) => {
                Some(path.display().to_string())
            }
            KeySource::Inline(_) | KeySource::SharedSecret(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_shared_secret() {
        let source = KeySource::SharedSecret(Secret::new("a-development-secret-of-32-bytes!"));
        let text = format!("{source:?} {:?}", source.static_keys());
        assert!(!text.contains("development-secret"), "{text}");
        assert_eq!(source.location(), None);
        assert_eq!(source.label(), "hs256_secret_env");
    }
}
