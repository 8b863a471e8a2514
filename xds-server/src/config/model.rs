//! What a checked configuration is ([`GatewayConfig`] and its parts) and why a file is
//! rejected ([`ConfigError`]). Kept apart from the loader in `config` so the checks that
//! build these values do not import the module that calls them.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use gateway_common::filter_config::FilterConfig;

use crate::{credentials::source::Credentials, identity::IssuerKeySource, quota::QuotaSettings};

/// How the configuration reads environment variables (`hs256_secret_env`): the process
/// environment in production, a map in tests.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Name of the one cluster every service goes to when `upstream.endpoint_url` is set.
pub const SHARED_UPSTREAM_CLUSTER: &str = "bedrock_upstream";

/// A checked configuration: everything the Envoy resources are rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Where Envoy listens for clients.
    pub listener: SocketAddr,
    /// HTTPS instead of plain HTTP on the listener.
    pub listener_tls: Option<ListenerTls>,
    pub upstream: Upstream,
    /// Absolute path of the filter's `.wasm` file on Envoy's machine.
    pub wasm_path: PathBuf,
    /// The filter's configuration, validated with [`FilterConfig::validate`].
    pub filter: FilterConfig,
    /// Absolute path of the audit access log on Envoy's machine; `None` when it is off.
    pub audit_log: Option<PathBuf>,
    /// The `jwt` issuers' key sources, for the key manager; empty in mode `none`.
    pub identity: Vec<IssuerKeySource>,
    /// The rate limit service's settings; `None` without a `quotas` section.
    pub quotas: Option<QuotaSettings>,
}

/// Absolute paths of the listener's certificate and key on Envoy's machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    pub certificate_file: PathBuf,
    pub private_key_file: PathBuf,
}

/// Where requests go and the limits on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub region: String,
    /// Set when every service goes to one URL instead of the AWS endpoints.
    pub endpoint: Option<EndpointUrl>,
    /// Endpoint prefixes, in the file's order.
    pub services: Vec<String>,
    /// Absolute path of the trusted CA bundle on Envoy's machine.
    pub ca_file: PathBuf,
    pub connect_timeout: Duration,
    /// Zero means no limit.
    pub request_timeout: Duration,
    /// Zero disables the idle check.
    pub stream_idle_timeout: Duration,
    pub max_request_body_bytes: u64,
    /// Where the signing credentials come from. xds-server builds its credential source
    /// from this once, at start.
    pub credentials: CredentialSettings,
}

/// A checked `upstream.credentials`. `Debug` shows no secret (see [`Credentials`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CredentialSettings {
    /// The AWS SDK's standard credential chain.
    #[default]
    AwsChain,
    /// Fixed credentials, read from xds-server's environment when the file was loaded.
    Static(Credentials),
}

impl CredentialSettings {
    /// The `upstream.credentials.source` value this came from, for logs.
    pub fn source_name(&self) -> &'static str {
        match self {
            CredentialSettings::AwsChain => "aws_chain",
            CredentialSettings::Static(_) => "env",
        }
    }
}

impl Upstream {
    /// The Envoy cluster that carries requests for `service`.
    pub fn cluster_for(&self, service: &str) -> String {
        cluster_name(self.endpoint.is_some(), service, &self.region)
    }
}

pub(crate) fn cluster_name(shared: bool, service: &str, region: &str) -> String {
    if shared {
        SHARED_UPSTREAM_CLUSTER.to_string()
    } else {
        format!("{service}.{region}")
    }
}

/// A parsed `upstream.endpoint_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    /// `https`: TLS to the endpoint, verified against `upstream.ca_file`.
    pub tls: bool,
    pub host: EndpointHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointHost {
    Ip(IpAddr),
    Name(String),
}

impl EndpointHost {
    /// The host as Envoy's socket address wants it (no IPv6 brackets).
    pub fn as_address(&self) -> String {
        match self {
            EndpointHost::Ip(ip) => ip.to_string(),
            EndpointHost::Name(name) => name.clone(),
        }
    }
}

/// Values given on the command line that take precedence over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `filter.wasm_path`; relative paths are relative to the current directory.
    pub wasm_path: Option<PathBuf>,
}

/// Why a configuration was rejected. Every variant names the file; [`ConfigError::Invalid`]
/// and [`ConfigError::Parse`] also name the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the file: {reason}")]
    Read { file: String, reason: String },
    /// YAML syntax, a wrong type, an unknown or missing key.
    #[error("{file}: {key}: {message}{}", location(*.line, *.column))]
    Parse {
        file: String,
        key: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// A value of the right type that is not acceptable.
    #[error("{file}: {key}: expected {expected}{}", found.as_ref().map(|f| format!(", found {f}")).unwrap_or_default())]
    Invalid {
        file: String,
        key: String,
        expected: String,
        found: Option<String>,
    },
}

impl ConfigError {
    /// Short stable label of the kind of error, usable as a metric tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse { .. } => "parse",
            ConfigError::Invalid { .. } => "invalid",
        }
    }
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}
