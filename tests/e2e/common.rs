//! Helpers shared by the end-to-end tests.

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
use gateway_e2e::{Stack, StackOptions};

/// A model id with the characters that exercise SigV4's double encoding (`:`).
pub const MODEL: &str = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";

pub fn start(options: StackOptions) -> Stack {
    Stack::start(options).unwrap_or_else(|e| panic!("starting the gateway stack: {e:#}"))
}

pub fn start_default() -> Stack {
    start(StackOptions::default())
}

/// An SDK client pointed at the gateway. It signs its own requests with made-up credentials,
/// as a stock client does; the gateway must discard that signature and sign again.
pub fn runtime_client(stack: &Stack) -> aws_sdk_bedrockruntime::Client {
    let config = aws_sdk_bedrockruntime::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDCLIENTSIDE",
            "client-side-secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(stack.gateway_url())
        .build();
    aws_sdk_bedrockruntime::Client::from_conf(config)
}

pub fn user_message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_string()))
        .build()
        .expect("message")
}

pub fn http() -> reqwest::Client {
    // Needed when reqwest is built with rustls but no default crypto provider (see Cargo.toml).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().build().expect("http client")
}

/// Sends `body` to `path` on the gateway with the given headers; returns status, error type
/// header and body.
pub async fn post(
    stack: &Stack,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Option<String>, String) {
    let mut request = http()
        .post(format!("{}{path}", stack.gateway_url()))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (
        status,
        error_type,
        response.text().await.unwrap_or_default(),
    )
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The audit log once it has at least `count` lines (Envoy flushes it on a timer).
pub fn wait_for_audit(stack: &Stack, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let lines = stack.audit_lines().unwrap();
        if lines.len() >= count || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A response read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request exactly as given (path and header bytes untouched: no client
/// library normalizes `..` or percent-encoding away), and reads the response.
pub fn raw_http(
    stack: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> RawResponse {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(stack.gateway).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", stack.gateway).into_bytes();
    for (name, value) in headers {
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(b": ");
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    stream.write_all(&request).expect("send headers");
    // The gateway may answer (and close) before the whole body is sent.
    let _ = stream.write_all(body);
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let _ = reader.read_to_end(&mut body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// Waits, if need be, until at least `needed` seconds are left in the current fixed window
/// of `unit_seconds` (UTC-aligned): a test counting in one window never straddles two.
pub fn fresh_window(unit_seconds: u64, needed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = now.as_secs() % unit_seconds;
    if unit_seconds - into < needed {
        let wait = std::time::Duration::from_secs(unit_seconds - into)
            - std::time::Duration::from_nanos(u64::from(now.subsec_nanos()))
            + std::time::Duration::from_millis(200);
        std::thread::sleep(wait);
    }
}
