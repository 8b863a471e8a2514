//! The Wasm floor: two reference HTTP filters the `jwt` benchmark runs beside the gateway, built
//! with the same SDK and loaded with the same VM settings, so that what the gateway costs above
//! them is its own work and not the price of running a proxy-wasm filter at all.
//!
//! The plugin configuration picks one:
//! - `empty`: a filter that does nothing in any callback. Envoy still creates its context
//!   and calls into the VM for every callback of every request.
//! - `minimal`: only the host work a signing gateway cannot avoid: read every request header,
//!   hold the headers, buffer the body and read it whole, then write four headers (the host,
//!   the route's cluster, `x-amz-date` and `authorization`, with values as long as the
//!   gateway's) and let the request go.
//! - `minimal+sigv4`: `minimal`, plus the hashing SigV4 cannot do without, with the gateway's
//!   crates: the body's SHA-256, the SHA-256 of a canonical request as long as the gateway's,
//!   and the HMAC of a string to sign (keyed once), in hex. Not host work, but the part of
//!   the gateway's own work no implementation avoids.
//! - the gateway filter's own JSON configuration: `minimal`, with the host and cluster of its
//!   first service, so that it can stand in for the gateway's filter in the gateway's own
//!   Envoy (what the gateway's Envoy configuration costs, without the filter's work).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { minimal: false, sigv4: false, host: HOST.into(), cluster: CLUSTER.into() }) });
}}

struct Root {
    minimal: bool,
    sigv4: bool,
    host: String,
    cluster: String,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        match configuration.as_slice() {
            b"empty" => self.minimal = false,
            b"minimal" => self.minimal = true,
            b"minimal+sigv4" => (self.minimal, self.sigv4) = (true, true),
            json if json.starts_with(b"{") => {
                let service = serde_json::from_slice::<serde_json::Value>(json)
                    .ok()
                    .and_then(|config| config["services"].get(0).cloned());
                let field = |name: &str| service.as_ref()?[name].as_str().map(str::to_string);
                let (Some(host), Some(cluster)) = (field("host"), field("cluster")) else {
                    log::error!("the gateway configuration has no services[0].host and cluster");
                    return false;
                };
                (self.minimal, self.host, self.cluster) = (true, host, cluster);
            }
            other => {
                log::error!(
                    "plugin configuration {:?}: expected \"empty\", \"minimal\" or the gateway's JSON",
                    String::from_utf8_lossy(other)
                );
                return false;
            }
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.minimal {
            Some(Box::new(Minimal {
                host: self.host.clone(),
                cluster: self.cluster.clone(),
                sigv4: self.sigv4.then(|| Box::new(SigV4Work::default())),
            }))
        } else {
            Some(Box::new(Empty))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Empty;

impl Context for Empty {}

impl HttpContext for Empty {}

struct Minimal {
    host: String,
    cluster: String,
    sigv4: Option<Box<SigV4Work>>,
}

/// SigV4's hashing for one request.
#[derive(Default)]
struct SigV4Work {
    body: sha2::Sha256,
}

thread_local! {
    /// The HMAC keyed with a signing key, as the gateway keeps it for a day.
    static MAC: hmac::Hmac<sha2::Sha256> =
        <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&[7u8; 32])
            .unwrap_or_else(|_| <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new(&Default::default()));
}

/// A canonical request and a string to sign of the gateway's lengths for the benchmark's
/// request.
const CANONICAL: &str = "POST\n/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse\n\ncontent-type:application/json\nhost:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-date:20261207T120000Z\nx-amz-security-token:bench-session-token-0123456789\n\ncontent-type;host;x-amz-date;x-amz-security-token\n";
const SCOPE: &str = "AWS4-HMAC-SHA256\n20261207T120000Z\n20261207/us-east-1/bedrock/aws4_request\n";

impl SigV4Work {
    /// The signature's hex, from the body's hash on.
    fn finish(self) -> String {
        use hmac::Mac;
        use sha2::Digest;
        let body = hex(&self.body.finalize().into());
        let mut canonical = String::with_capacity(CANONICAL.len() + 64);
        canonical.push_str(CANONICAL);
        canonical.push_str(&body);
        let mut string_to_sign = String::with_capacity(SCOPE.len() + 64);
        string_to_sign.push_str(SCOPE);
        string_to_sign.push_str(&hex(&sha2::Sha256::digest(canonical.as_bytes()).into()));
        let mut mac = MAC.with(Clone::clone);
        mac.update(string_to_sign.as_bytes());
        hex(&mac.finalize().into_bytes().into())
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

impl Context for Minimal {}

const HOST: &str = "bedrock-runtime.us-east-1.amazonaws.com";
const CLUSTER: &str = "bedrock-runtime.us-east-1";
/// Values of the length the gateway writes (a SigV4 date and an authorization header with a
/// scope, three signed headers and a signature).
const DATE: &str = "20261207T120000Z";
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLEEXAMPLE12/20261207/us-east-1/bedrock/aws4_request, \
     SignedHeaders=content-type;host;x-amz-date, \
     Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

impl Minimal {
    fn write_headers(&mut self) {
        self.set_http_request_header(":authority", Some(&self.host));
        self.set_http_request_header("x-bedrock-gateway-cluster", Some(&self.cluster));
        self.set_http_request_header("x-amz-date", Some(DATE));
        match self.sigv4.take() {
            Some(work) => {
                let mut authorization = AUTHORIZATION[..AUTHORIZATION.len() - 64].to_string();
                authorization.push_str(&work.finish());
                self.set_http_request_header("authorization", Some(&authorization));
            }
            None => self.set_http_request_header("authorization", Some(AUTHORIZATION)),
        }
    }
}

impl HttpContext for Minimal {
    fn on_http_request_headers(&mut self, _count: usize, end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers_bytes();
        std::hint::black_box(headers);
        if end_of_stream {
            self.write_headers();
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size);
        if let (Some(work), Some(body)) = (self.sigv4.as_mut(), body.as_deref()) {
            sha2::Digest::update(&mut work.body, body);
        }
        std::hint::black_box(body);
        self.write_headers();
        Action::Continue
    }
}
