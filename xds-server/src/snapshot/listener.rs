//! The listener: one HTTP connection manager running the Wasm filter, then the router.

use std::net::{IpAddr, Ipv6Addr};

use envoy_types::{
    pb::{
        envoy::{
            config::{
                core::v3::{
                    Address, AggregatedConfigSource, ApiVersion, AsyncDataSource, ConfigSource,
                    DataSource, SocketAddress, address, async_data_source,
                    config_source::ConfigSourceSpecifier, data_source, socket_address,
                },
                listener::v3::{Filter, FilterChain, Listener, filter},
                route::v3::RouteConfiguration,
            },
            extensions::{
                filters::{
                    http::{router::v3::Router, wasm::v3::Wasm},
                    network::http_connection_manager::v3::{
                        HttpConnectionManager, HttpFilter, Rds,
                        http_connection_manager::{CodecType, RouteSpecifier},
                        http_filter,
                    },
                },
                wasm::v3::{FailurePolicy, PluginConfig, VmConfig, plugin_config},
            },
        },
        google::protobuf::{BoolValue, StringValue},
    },
    util::pack_any,
};
use gateway_common::names;

use super::{LISTENER_NAME, ROUTE_CONFIG_NAME, duration};
use crate::config::GatewayConfig;

/// Name of the Wasm HTTP filter in the chain (also its stats prefix).
pub const WASM_FILTER_NAME: &str = "bedrock_gateway";
/// The Wasm runtime Envoy's official builds ship.
pub const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// Where the connection manager gets its routes.
pub enum RouteSource {
    /// RDS over the ADS stream (the normal, dynamic case).
    Ads,
    /// Inline, for a static bootstrap.
    Inline(Box<RouteConfiguration>),
}

pub fn listener(config: &GatewayConfig, filter_json: &str, routes: RouteSource) -> Listener {
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
        local_reply_config: Some(super::local_reply::local_reply_config()),
        http_filters: vec![
            HttpFilter {
                name: WASM_FILTER_NAME.to_string(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(wasm_filter(
                    config,
                    filter_json,
                )))),
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
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The Wasm filter, configured with the filter's JSON. Fails closed: a request must never
/// leave unsigned or unchecked because the plugin could not run.
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
            failure_policy: FailurePolicy::FailClosed as i32,
            // The filter pauses the headers until the whole body is there to sign it; without
            // this Envoy turns that pause into StopAllIteration and never calls on_body.
            allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
            ..Default::default()
        }),
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
