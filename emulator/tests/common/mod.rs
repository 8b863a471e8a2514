//! Shared by the integration tests: a running emulator, requests signed with the `aws-sigv4`
//! crate (the signer the gateway uses, independent of the emulator's verifier) and a plain
//! HTTP client for HTTP/1.1 and h2c.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bedrock_emulator::{Emulator, EmulatorConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub const REGION: &str = "us-east-1";
pub const AKID: &str = "AKIDEMULATORTEST";
pub const SECRET: &str = "emulator/Test+Secret/KEY0123456789abcdef";
pub const MODEL: &str = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";
pub const MODEL_IN_PATH: &str = "us.anthropic.claude-3-5-sonnet-20240620-v1%3A0";

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn config(any_host: bool) -> EmulatorConfig {
    EmulatorConfig {
        any_host,
        ..EmulatorConfig::new(REGION).with_static_credentials(AKID, SECRET, None)
    }
}

pub async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config, loopback(), Some(loopback()))
        .await
        .expect("the emulator starts on loopback")
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client(http2: bool) -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

pub async fn send(request: http::Request<Full<Bytes>>, http2: bool) -> Reply {
    let response = client(http2)
        .request(request)
        .await
        .expect("the request is answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body arrives")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Who signs, for which region and service, at what time.
#[derive(Debug, Clone)]
pub struct Signing {
    pub access_key_id: String,
    pub secret: String,
    pub token: Option<String>,
    pub region: String,
    pub service: String,
    pub time: SystemTime,
}

impl Default for Signing {
    fn default() -> Self {
        Self {
            access_key_id: AKID.into(),
            secret: SECRET.into(),
            token: None,
            region: REGION.into(),
            service: "bedrock".into(),
            time: SystemTime::now(),
        }
    }
}

/// A POST to `addr` + `path` with `host` as its Host header (`None`: the address itself),
/// signed by aws-sigv4 when `signing` is given.
pub fn request(
    addr: SocketAddr,
    host: Option<&str>,
    path: &str,
    body: &[u8],
    signing: Option<&Signing>,
) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    if let Some(host) = host {
        request
            .headers_mut()
            .insert("host", http::HeaderValue::from_str(host).unwrap());
    }
    if let Some(signing) = signing {
        sign_request(&mut request, body, signing);
    }
    request
}

pub fn sign_request(request: &mut http::Request<Full<Bytes>>, body: &[u8], signing: &Signing) {
    let identity = Credentials::new(
        &signing.access_key_id,
        &signing.secret,
        signing.token.clone(),
        None,
        "emulator-tests",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&signing.region)
        .name(&signing.service)
        .time(signing.time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(request);
}

pub async fn control(emulator: &Emulator, method: &str, path: &str) -> Reply {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", emulator.control_url().unwrap()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(request, false).await
}

pub fn converse_body(text: &str) -> Vec<u8> {
    serde_json::json!({"messages": [{"role": "user", "content": [{"text": text}]}]})
        .to_string()
        .into_bytes()
}

pub const SECOND: Duration = Duration::from_secs(1);
