//! A token issuer on 127.0.0.1:0: serves a JWKS that tests change while it runs, and an
//! OpenID discovery document pointing at it; counts the requests per path.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use jwt_simple::prelude::Ed25519KeyPair;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

/// Where the JWKS is served.
pub const JWKS_PATH: &str = "/jwks.json";
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The JWKS the discovery document names.
pub const DISCOVERED_JWKS_PATH: &str = "/discovered/keys";

/// An Ed25519 signing key with its key id.
pub struct TestKey {
    pub kid: String,
    pub pair: Ed25519KeyPair,
}

impl TestKey {
    pub fn new(kid: &str) -> Self {
        Self {
            kid: kid.to_string(),
            pair: Ed25519KeyPair::generate().with_key_id(kid),
        }
    }

    pub fn jwk(&self) -> Value {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(self.pair.public_key().to_bytes());
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid, "x": x})
    }
}

/// A JWKS document with `keys`.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

#[derive(Default)]
struct State {
    jwks: String,
    hits: HashMap<String, usize>,
}

pub struct Issuer {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Issuer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let base = format!("http://{address}");
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let state = Arc::clone(&state);
                    let base = base.clone();
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let path = request.uri().path().to_string();
                        let mut state = state.lock().unwrap();
                        *state.hits.entry(path.clone()).or_default() += 1;
                        let (status, body) = match path.as_str() {
                            JWKS_PATH | DISCOVERED_JWKS_PATH => (200, state.jwks.clone()),
                            DISCOVERY_PATH => (
                                200,
                                json!({"issuer": base, "jwks_uri": format!("{base}{DISCOVERED_JWKS_PATH}")})
                                    .to_string(),
                            ),
                            _ => (404, "not found".to_string()),
                        };
                        let response = Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            address,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the issuer's `iss`.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn publish(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().jwks = jwks(keys);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
