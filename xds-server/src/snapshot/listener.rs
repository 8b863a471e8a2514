//! The listener: one HTTP connection manager running the Wasm filter, then the router, with
//! the audit access log.

use std::net::{IpAddr, Ipv6Addr};

use envoy_types::{
    pb::{
        envoy::{
            config::{
                accesslog::v3::{
                    AccessLog, AccessLogFilter, ExtensionFilter, access_log,
                    access_log_filter::FilterSpecifier, extension_filter,
                },
                core::v3::{
                    Address, AggregatedConfigSource, ApiVersion, AsyncDataSource, ConfigSource,
                    DataSource, ExtensionConfigSource, SocketAddress, SubstitutionFormatString,
                    TransportSocket, address, async_data_source,
                    config_source::ConfigSourceSpecifier, data_source, socket_address,
                    substitution_format_string, transport_socket,
                },
                listener::v3::{Filter, FilterChain, Listener, filter},
                route::v3::RouteConfiguration,
            },
            extensions::{
                access_loggers::{
                    file::v3::{FileAccessLog, file_access_log},
                    filters::cel::v3::ExpressionFilter,
                },
                filters::{
                    http::{router::v3::Router, wasm::v3::Wasm},
                    network::http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, Rds,
                        http_connection_manager::{
                            CodecType, PathWithEscapedSlashesAction, RouteSpecifier,
                        },
                        http_filter,
                    },
                },
                transport_sockets::tls::v3::{
                    CommonTlsContext, DownstreamTlsContext, TlsCertificate,
                },
                wasm::v3::{FailurePolicy, PluginConfig, ReloadConfig, VmConfig, plugin_config},
            },
        },
        google::protobuf::{BoolValue, StringValue},
    },
    util::pack_any,
};
use gateway_common::names;

use super::common::{LISTENER_NAME, ROUTE_CONFIG_NAME, duration};
use crate::config::{GatewayConfig, ListenerTls};

/// Name of the Wasm HTTP filter in the chain (also its stats prefix).
pub const WASM_FILTER_NAME: &str = "bedrock_gateway";
/// The Wasm runtime Envoy's official builds ship.
pub const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
const ROUTER_FILTER: &str = "envoy.filters.http.router";
const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
const FILE_ACCESS_LOG: &str = "envoy.access_loggers.file";
const CEL_ACCESS_LOG_FILTER: &str = "envoy.access_loggers.extension_filters.cel";

/// Where the connection manager gets its routes and the gateway filter's configuration.
pub enum RouteSource {
    /// Over the ADS stream (the normal, dynamic case): routes by RDS, the filter by ECDS
    /// (its resource is `snapshot::EnvoyResources::filter`).
    Ads,
    /// Inline, for a static bootstrap.
    Inline(Box<RouteConfiguration>),
}

pub fn listener(config: &GatewayConfig, filter_json: &str, routes: RouteSource) -> Listener {
    let gateway_filter = match &routes {
        RouteSource::Ads => http_filter::ConfigType::ConfigDiscovery(ExtensionConfigSource {
            config_source: Some(ads_config_source()),
            // No default: the listener waits (warms) until the filter's configuration is
            // there, so no request passes unfiltered.
            default_config: None,
            apply_default_config_without_warming: false,
            type_urls: vec![WASM_TYPE_URL.to_string()],
        }),
        RouteSource::Inline(_) => {
            http_filter::ConfigType::TypedConfig(pack_any(wasm_filter(config, filter_json)))
        }
    };
    let route_specifier = match routes {
        RouteSource::Ads => RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: ROUTE_CONFIG_NAME.to_string(),
        }),
        RouteSource::Inline(route_config) => RouteSpecifier::RouteConfig(*route_config),
    };
    let manager = HttpConnectionManager {
        stat_prefix: LISTENER_NAME.to_string(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        stream_idle_timeout: Some(duration(config.upstream.stream_idle_timeout)),
        // The route's timeout bounds requests; this one would also cut long response streams.
        request_timeout: Some(duration(std::time::Duration::ZERO)),
        generate_request_id: Some(BoolValue { value: true }),
        // The path reaches the filter as the client sent it, and leaves as the filter saw
        // it: the filter reads it once, refuses what could be read two ways, and every
        // decision and the signature use that one reading (filter/src/core/path.rs).
        // Normalizing here would hide from the filter what Bedrock receives (and unescaping
        // %2F would break model ARNs); these are Envoy's defaults, set so that no runtime
        // override can change them.
        normalize_path: Some(BoolValue { value: false }),
        merge_slashes: false,
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::KeepUnchanged as i32,
        local_reply_config: Some(super::local_reply::local_reply_config()),
        access_log: config
            .audit_log
            .as_deref()
            .map(audit_log)
            .into_iter()
            .collect(),
        http_filters: vec![
            HttpFilter {
                name: WASM_FILTER_NAME.to_string(),
                config_type: Some(gateway_filter),
                ..Default::default()
            },
            HttpFilter {
                name: ROUTER_FILTER.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(Router {
                    suppress_envoy_headers: true,
                    ..Default::default()
                }))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name: LISTENER_NAME.to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: config.listener.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    config.listener.port(),
                ))),
                // `::` means every address, IPv4 included.
                ipv4_compat: config.listener.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(manager))),
            }],
            transport_socket: config.listener_tls.as_ref().map(downstream_tls),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// HTTPS on the listener: the certificate and key are files Envoy reads (their content never
/// appears in the configuration), HTTP/2 or HTTP/1.1 by ALPN.
fn downstream_tls(tls: &ListenerTls) -> TransportSocket {
    let file = |path: &std::path::Path| DataSource {
        specifier: Some(data_source::Specifier::Filename(path.display().to_string())),
        ..Default::default()
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificates: vec![TlsCertificate {
                certificate_chain: Some(file(&tls.certificate_file)),
                private_key: Some(file(&tls.private_key_file)),
                ..Default::default()
            }],
            alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    }
}

/// The Wasm filter, configured with the filter's JSON. Never fails open: a request must never
/// leave unsigned or unchecked because the plugin could not run. A VM that fails at run time
/// (a trap) is replaced for the next request (`FAIL_RELOAD`, backing off from 1 s) instead of
/// answering 503 until the next configuration change; other failures fail closed.
pub fn wasm_filter(config: &GatewayConfig, filter_json: &str) -> Wasm {
    Wasm {
        config: Some(PluginConfig {
            name: WASM_FILTER_NAME.to_string(),
            root_id: names::ROOT_ID.to_string(),
            vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                vm_id: names::VM_ID.to_string(),
                runtime: WASM_RUNTIME.to_string(),
                code: Some(AsyncDataSource {
                    specifier: Some(async_data_source::Specifier::Local(DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            config.wasm_path.display().to_string(),
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            configuration: Some(pack_any(StringValue {
                value: filter_json.to_string(),
            })),
            failure_policy: FailurePolicy::FailReload as i32,
            reload_config: Some(ReloadConfig { backoff: None }),
            // The filter pauses the headers until the whole body is there to sign it; without
            // this Envoy turns that pause into StopAllIteration and never calls on_body.
            allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
            ..Default::default()
        }),
    }
}

/// The filter state the filter writes the audit record into, as Envoy names it.
pub fn audit_filter_state_key() -> String {
    format!("wasm.{}", names::AUDIT_PROPERTY)
}

/// One JSON object per line. The filter's state is a fragment of already escaped members
/// (`"tenant":"team-a","decision":"allow",...`); Envoy adds the time and the response facts.
pub fn audit_log_format() -> String {
    format!(
        concat!(
            r#"{{"time":"%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%",%FILTER_STATE({}:PLAIN)%,"#,
            r#""status":%RESPONSE_CODE%,"duration_ms":%DURATION%,"#,
            r#""bytes_received":%BYTES_RECEIVED%,"bytes_sent":%BYTES_SENT%}}"#,
            "\n"
        ),
        audit_filter_state_key()
    )
}

/// The CEL condition that keeps requests without an audit record out of the log: those
/// Envoy rejected before the filter ran would print `-` in place of the fragment, which is
/// not JSON.
pub fn audit_log_condition() -> String {
    format!("'{}' in filter_state", audit_filter_state_key())
}

/// The audit access log of `auth.audit_log`, written to `path`.
pub fn audit_log(path: &std::path::Path) -> AccessLog {
    let file = FileAccessLog {
        path: path.display().to_string(),
        access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(
            SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(audit_log_format())),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
    };
    AccessLog {
        name: FILE_ACCESS_LOG.to_string(),
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
                name: CEL_ACCESS_LOG_FILTER.to_string(),
                config_type: Some(extension_filter::ConfigType::TypedConfig(pack_any(
                    ExpressionFilter {
                        expression: audit_log_condition(),
                        ..Default::default()
                    },
                ))),
            })),
        }),
        config_type: Some(access_log::ConfigType::TypedConfig(pack_any(file))),
    }
}

/// RDS (and anything else) over the ADS stream of the bootstrap's `ads_config`.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}
