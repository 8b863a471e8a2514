//! Reading one issuer's keys from its source: a JWKS over HTTP(S) (directly or through OIDC
//! discovery), a JWKS file, the development key, or what the configuration holds inline.
//! Documents are capped at 1 MiB and requests at 5 seconds.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use serde_json::Value;

use super::{
    dev_key::{self, DevKeyError},
    jwk::{self, JwksError, SkippedKey},
    key::VerifyingKey,
    source::KeySource,
};

/// Longest a single HTTP request (connect, headers and body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Redirects followed per request (each to an https:// or loopback http:// URL).
const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("bedrock-gateway-xds-server/", env!("CARGO_PKG_VERSION"));
/// Path of the OpenID Connect discovery document below the issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// Why an issuer's keys could not be read. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{location}: the document is larger than 1 MiB")]
    TooLarge { location: String },
    #[error("{path}: cannot read the JWKS file: {reason}")]
    File { path: String, reason: String },
    #[error("{location}: {error}")]
    Jwks { location: String, error: JwksError },
    #[error("{url}: OpenID discovery: {reason}")]
    Discovery { url: String, reason: String },
    #[error("{location}: no usable signing key{}", skipped_summary(skipped))]
    NoUsableKeys {
        location: String,
        skipped: Vec<SkippedKey>,
    },
    #[error(transparent)]
    DevKey(#[from] DevKeyError),
    #[error("reading the keys took longer than {0} seconds")]
    Timeout(u64),
}

impl FetchError {
    /// Short stable label, usable as a metric tag.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Http { .. } => "http",
            FetchError::Status { .. } => "status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::File { .. } => "file",
            FetchError::Jwks { .. } => "jwks",
            FetchError::Discovery { .. } => "discovery",
            FetchError::NoUsableKeys { .. } => "no_usable_keys",
            FetchError::DevKey(_) => "dev_key",
            FetchError::Timeout(_) => "timeout",
        }
    }
}

fn skipped_summary(skipped: &[SkippedKey]) -> String {
    let mut out = String::new();
    for (i, key) in skipped.iter().enumerate() {
        out.push_str(if i == 0 { " (" } else { "; " });
        let _ = write!(
            out,
            "keys[{}]{}: {}",
            key.index,
            key.kid
                .as_ref()
                .map(|k| format!(" kid {k:?}"))
                .unwrap_or_default(),
            key.reason
        );
    }
    if !out.is_empty() {
        out.push(')');
    }
    out
}

/// Whether the server may fetch keys from `url`: `https://`, or `http://` to a loopback
/// address (`127.0.0.0/8`, `::1`, `localhost`) so local test issuers work. No user
/// information: URLs show on the status page and in logs.
pub fn is_fetchable_url(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(name))) => name.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

/// Where the OpenID Connect discovery document of `issuer` is.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'))
}

/// The `jwks_uri` of a discovery document, after checking that it is `issuer`'s.
pub fn parse_discovery(body: &[u8], issuer: &str) -> Result<String, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("the document is not JSON: {e}"))?;
    let member = |name: &str| document.get(name).and_then(Value::as_str);
    let found = member("issuer").ok_or("the document has no `issuer`")?;
    // OpenID Connect Discovery 1.0, 4.3: identical to the issuer the document was fetched for.
    if found.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(format!(
            "the document is for issuer {found:?}, not {issuer:?}"
        ));
    }
    let jwks_uri = member("jwks_uri").ok_or("the document has no `jwks_uri`")?;
    if !is_fetchable_url(jwks_uri) {
        return Err(format!(
            "its jwks_uri {jwks_uri:?} is neither https:// nor http:// to a loopback address"
        ));
    }
    Ok(jwks_uri.to_string())
}

/// The keys read from a source, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub keys: Vec<VerifyingKey>,
    pub skipped: Vec<SkippedKey>,
    /// The JWKS URL a discovery source resolved to (kept for the next fetch).
    pub jwks_uri: Option<String>,
}

/// Reads the keys of `source`. `discovered` is the JWKS URL a previous discovery found.
pub async fn load(
    source: &KeySource,
    http: &dyn HttpGet,
    discovered: Option<String>,
) -> Result<Loaded, FetchError> {
    match source {
        KeySource::JwksUri(url) => {
            let body = http.get(url).await?;
            from_jwks(url, &body, None)
        }
        KeySource::Discovery { issuer, url } => {
            let jwks_uri = match discovered {
                Some(jwks_uri) => jwks_uri,
                None => {
                    let body = http.get(url).await?;
                    parse_discovery(&body, issuer).map_err(|reason| FetchError::Discovery {
                        url: url.clone(),
                        reason,
                    })?
                }
            };
            let body = http.get(&jwks_uri).await?;
            from_jwks(&jwks_uri, &body, Some(jwks_uri.clone()))
        }
        KeySource::JwksFile(path) => {
            let location = path.display().to_string();
            let body = read_file(path).await?;
            from_jwks(&location, &body, None)
        }
        KeySource::Inline(keys) => Ok(Loaded {
            keys: keys.clone(),
            skipped: Vec::new(),
            jwks_uri: None,
        }),
        KeySource::DevSigningKey(path) => {
            let owned = path.clone();
            let key = tokio::task::spawn_blocking(move || dev_key::load_or_create(&owned))
                .await
                .map_err(|e| DevKeyError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })??;
            Ok(Loaded {
                keys: vec![key.verifying_key()],
                skipped: Vec::new(),
                jwks_uri: None,
            })
        }
        KeySource::SharedSecret(secret) => Ok(Loaded {
            keys: vec![VerifyingKey::shared_secret(secret)],
            skipped: Vec::new(),
            jwks_uri: None,
        }),
    }
}

fn from_jwks(location: &str, body: &[u8], jwks_uri: Option<String>) -> Result<Loaded, FetchError> {
    let parsed = jwk::parse_jwks(body).map_err(|error| FetchError::Jwks {
        location: location.to_string(),
        error,
    })?;
    if parsed.keys.is_empty() {
        return Err(FetchError::NoUsableKeys {
            location: location.to_string(),
            skipped: parsed.skipped,
        });
    }
    Ok(Loaded {
        keys: parsed.keys,
        skipped: parsed.skipped,
        jwks_uri,
    })
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, FetchError> {
    let error = |e: std::io::Error| FetchError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let metadata = tokio::fs::metadata(path).await.map_err(error)?;
    if metadata.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(FetchError::TooLarge {
            location: path.display().to_string(),
        });
    }
    tokio::fs::read(path).await.map_err(error)
}

/// An HTTP GET of a small document; a trait so the schedule can be tested without a network.
pub trait HttpGet: Send + Sync {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>>;
}

/// The real client: rustls with the system's trusted roots, 5 s per request, 1 MiB per
/// document, redirects only to fetchable URLs.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(errors = ?native.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "no trusted root certificates found (SSL_CERT_FILE, SSL_CERT_DIR or the system store): https key fetches will fail");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !is_fetchable_url(attempt.url().as_str()) {
                attempt.error("redirected to a URL that is neither https:// nor loopback http://")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(redirects)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("HTTP client: {}", error_chain(&e)))?;
        Ok(Self { client })
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let http_error = |e: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            reason: if e.is_timeout() {
                format!("no answer within {} seconds", FETCH_TIMEOUT.as_secs())
            } else {
                error_chain(&e)
            },
        };
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http_error)?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            location: url.to_string(),
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl HttpGet for HttpClient {
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, FetchError>> + Send + 'a>> {
        Box::pin(self.fetch(url))
    }
}

/// An error with its causes: reqwest's own message rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests;
