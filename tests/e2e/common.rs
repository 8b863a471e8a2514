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
