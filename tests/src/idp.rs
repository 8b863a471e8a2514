//! A minimal identity provider for tests: serves a JWKS (and an OIDC discovery document)
//! on a loopback port; the test replaces the key set while the gateway runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct TestIdp {
    pub address: SocketAddr,
    keys: Arc<Mutex<Vec<serde_json::Value>>>,
    jwks_hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestIdp {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let idp = Self {
            address,
            keys: Arc::default(),
            jwks_hits: Arc::default(),
            stop: Arc::default(),
        };
        let (keys, hits, stop) = (idp.keys.clone(), idp.jwks_hits.clone(), idp.stop.clone());
        let issuer = idp.issuer();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, &issuer, &keys, &hits);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(idp)
    }

    /// The `iss` of its tokens (also the base of its discovery document).
    pub fn issuer(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.issuer())
    }

    /// Replaces the published keys (JWK JSON objects).
    pub fn publish(&self, keys: Vec<serde_json::Value>) {
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    issuer: &str,
    keys: &Mutex<Vec<serde_json::Value>>,
    hits: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or_default();
    let (status, body) = match path {
        "/jwks.json" => {
            hits.fetch_add(1, Ordering::SeqCst);
            let keys = keys.lock().unwrap_or_else(|e| e.into_inner()).clone();
            ("200 OK", serde_json::json!({ "keys": keys }).to_string())
        }
        "/.well-known/openid-configuration" => (
            "200 OK",
            serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json")})
                .to_string(),
        ),
        _ => ("404 Not Found", "{}".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
