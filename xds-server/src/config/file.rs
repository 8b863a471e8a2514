//! The YAML file as written by the operator: serde structs that only parse (unknown keys are
//! rejected). [`super::validate`] turns a [`ConfigFile`] into a checked
//! [`GatewayConfig`](super::GatewayConfig). The doc comment of each field is its reference
//! documentation: meaning, default and unit.

mod auth;
mod quota;

use std::path::PathBuf;

pub use auth::*;
use gateway_common::{filter_config::DEFAULT_MAX_REQUEST_BODY_BYTES, names};
pub use quota::*;
use serde::Deserialize;

/// The whole file. Required: `upstream.region`, `filter.wasm_path` (unless given on the command
/// line), and either `auth.issuers` or `auth.mode: none`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where Envoy accepts the gateway's clients.
    #[serde(default)]
    pub listener: ListenerSection,
    /// The Bedrock endpoints requests are forwarded to.
    pub upstream: UpstreamSection,
    /// The Wasm filter that routes and signs requests.
    #[serde(default)]
    pub filter: FilterSection,
    /// Who may call the gateway, and the audit log. When absent, the mode is `jwt` (which
    /// needs `auth.issuers`).
    #[serde(default)]
    pub auth: Option<AuthSection>,
    /// Request and token quotas through this server's rate limit service, and the usage
    /// ledger. Default: none (no quotas).
    #[serde(default)]
    pub quotas: Option<QuotaSection>,
}

/// Envoy's listener for the gateway's clients (plain HTTP/1.1 and HTTP/2).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// IP address Envoy listens on, IPv4 or IPv6; `0.0.0.0` is every IPv4 address, `::` every
    /// IPv6 and IPv4 address. Default `0.0.0.0`.
    #[serde(default = "default_listener_address")]
    pub address: String,
    /// TCP port Envoy listens on, 1 to 65535. Default `8080`.
    #[serde(default = "default_listener_port")]
    pub port: u16,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with this certificate instead of plain HTTP.
    /// Needed by clients that send bearer tokens only over TLS (boto3 with
    /// `AWS_BEARER_TOKEN_BEDROCK`). Default: none (plain HTTP).
    #[serde(default)]
    pub tls: Option<ListenerTlsSection>,
}

/// The listener's TLS certificate, as files on the machine where Envoy runs (relative paths
/// are relative to this file's directory). Envoy reads them when the listener is (re)built;
/// after replacing the files, touch this config file to apply them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSection {
    /// PEM certificate chain, leaf first. Required.
    pub certificate_file: PathBuf,
    /// PEM private key of the certificate. Required.
    pub private_key_file: PathBuf,
}

impl Default for ListenerSection {
    fn default() -> Self {
        Self {
            address: default_listener_address(),
            port: default_listener_port(),
            tls: None,
        }
    }
}

/// Where requests go and the limits applied on the way.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// AWS region requests are signed for and sent to, such as `us-east-1`. Required.
    pub region: String,
    /// Sends every service to this base URL instead of the AWS endpoints, for example an
    /// emulator (`http://127.0.0.1:4566`), a VPC interface endpoint or a corporate proxy:
    /// `http://` or `https://`, a host (name or IP address) and an optional port (default 80 or
    /// 443), no path. Requests still carry, and are signed for, the real AWS `Host` header.
    /// Default: none (each service goes to `https://{service}.{region}.amazonaws.com`).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Endpoint prefixes of the Bedrock services the gateway forwards to; each gets its own
    /// Envoy cluster unless `endpoint_url` is set. Default: `bedrock-runtime`,
    /// `bedrock-agent-runtime`, `bedrock`, `bedrock-agent`.
    #[serde(default = "default_services")]
    pub services: Vec<String>,
    /// PEM file of the certificate authorities trusted for `https` upstreams, as a path on the
    /// machine where Envoy runs; a relative path is relative to this file's directory.
    /// Default `/etc/ssl/certs/ca-certificates.crt` (Debian and Ubuntu).
    #[serde(default = "default_ca_file")]
    pub ca_file: PathBuf,
    /// Milliseconds Envoy waits for a TCP (and TLS) connection to an upstream. Default `5000`.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Seconds a whole request may take, from its first byte to the end of the response;
    /// `0` means no limit, since model calls and response streams can run for minutes.
    /// Default `0`.
    #[serde(default)]
    pub request_timeout_seconds: u64,
    /// Seconds a request or response stream may stay without any byte in either direction
    /// before Envoy resets it; `0` disables the check. Default `300`.
    #[serde(default = "default_stream_idle_timeout_seconds")]
    pub stream_idle_timeout_seconds: u64,
    /// Largest request body, in bytes, the gateway accepts: the filter buffers whole bodies to
    /// sign them and larger ones are refused with 413. Default `20971520` (20 MiB).
    #[serde(default = "default_max_request_body_bytes")]
    pub max_request_body_bytes: u64,
    /// Extra rules that pick the service from the request's method and path when the client
    /// does not name it (with the `aws-endpoint-prefix` header); tried in order, before the
    /// filter's built-in rules. Default: none.
    #[serde(default)]
    pub path_rules: Vec<PathRuleSection>,
    /// Where xds-server gets the AWS credentials the filter signs with. Read once, when
    /// xds-server starts: a changed value needs a restart. Default: the standard AWS chain.
    #[serde(default)]
    pub credentials: Option<CredentialsSection>,
}

/// `upstream.credentials`: the source of the signing credentials.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    /// `aws_chain`: the AWS SDK's standard chain (environment variables, shared config and
    /// credentials files, web identity, container and instance metadata). `env`: static
    /// credentials from the environment variables of xds-server named below. Default
    /// `aws_chain`.
    #[serde(default)]
    pub source: Option<String>,
    /// `env` only: the variable holding the access key id. Required with `env`.
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// `env` only: the variable holding the secret access key. Required with `env`.
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// `env` only: the variable holding the session token of temporary credentials.
    /// Default: none (long-term credentials).
    #[serde(default)]
    pub session_token_env: Option<String>,
}

/// One rule of `upstream.path_rules`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRuleSection {
    /// HTTP method the rule applies to, in upper case (`POST`). Default: any method.
    #[serde(default)]
    pub method: Option<String>,
    /// Path pattern starting with `/`, matched segment by segment: `*` matches one segment, a
    /// final `**` any rest (including nothing), anything else matches literally and
    /// case-sensitively. Required.
    pub path: String,
    /// The service (one of `upstream.services`) matching requests go to. Required.
    pub service: String,
}

/// The Wasm filter and how it reaches this server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    /// The filter's compiled `.wasm` file, as a path on the machine where Envoy runs; a
    /// relative path is relative to this file's directory. `xds-server serve --wasm-path`
    /// overrides it. Required unless given on the command line.
    #[serde(default)]
    pub wasm_path: Option<PathBuf>,
    /// Seconds between the filter's requests for fresh signing credentials when the server
    /// gives no earlier hint; above 0. Default `60`.
    #[serde(default = "default_credentials_refresh_seconds")]
    pub credentials_refresh_seconds: u64,
    /// Milliseconds the filter waits for an answer from this server's control API; above 0.
    /// Default `2000`.
    #[serde(default = "default_control_timeout_ms")]
    pub control_timeout_ms: u64,
}

impl Default for FilterSection {
    fn default() -> Self {
        Self {
            wasm_path: None,
            credentials_refresh_seconds: default_credentials_refresh_seconds(),
            control_timeout_ms: default_control_timeout_ms(),
        }
    }
}

fn default_listener_address() -> String {
    "0.0.0.0".to_string()
}

fn default_listener_port() -> u16 {
    8080
}

fn default_services() -> Vec<String> {
    names::BEDROCK_SERVICES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Default of `upstream.ca_file`.
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn default_ca_file() -> PathBuf {
    PathBuf::from(DEFAULT_CA_FILE)
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_stream_idle_timeout_seconds() -> u64 {
    300
}

fn default_max_request_body_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BODY_BYTES
}

fn default_credentials_refresh_seconds() -> u64 {
    60
}

fn default_control_timeout_ms() -> u64 {
    2_000
}
