//! The route table: everything goes to the cluster the filter names in a request header.

use envoy_types::pb::{
    envoy::config::route::v3::{
        Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
        route_match,
    },
    google::protobuf::UInt64Value,
};
use gateway_common::names;

use super::common::{ROUTE_CONFIG_NAME, duration};
use crate::config::GatewayConfig;

/// The virtual host that takes every request.
pub const VIRTUAL_HOST_NAME: &str = "bedrock";

/// Removed before a request leaves Envoy: the routing header and the caller's identity
/// (`names::IDENTITY_HEADERS`, for later filters in the same Envoy) are internal, and the
/// other two are added by Envoy itself and mean nothing to Bedrock.
pub fn request_headers_to_remove() -> Vec<&'static str> {
    [names::CLUSTER_HEADER, "x-forwarded-proto", "x-request-id"]
        .into_iter()
        .chain(names::IDENTITY_HEADERS)
        .collect()
}

/// Envoy buffers this much more than the filter accepts. The filter checks the body size in
/// each body callback, but Envoy checks its own limit when it appends a piece to the buffer,
/// before the filter sees it: with equal limits a chunked body would hit Envoy's plain-text 413
/// instead of the filter's Bedrock-shaped one. One read is at most a few hundred KiB.
pub const BUFFER_HEADROOM_BYTES: u64 = 4 * 1024 * 1024;

pub fn route_configuration(config: &GatewayConfig) -> RouteConfiguration {
    RouteConfiguration {
        name: ROUTE_CONFIG_NAME.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: VIRTUAL_HOST_NAME.to_string(),
            domains: vec!["*".to_string()],
            // The filter buffers whole bodies to sign them; without this Envoy answers 413
            // above its default 1 MiB.
            request_body_buffer_limit: Some(UInt64Value {
                value: config
                    .upstream
                    .max_request_body_bytes
                    .saturating_add(BUFFER_HEADROOM_BYTES),
            }),
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::ClusterHeader(
                        names::CLUSTER_HEADER.to_string(),
                    )),
                    // Zero disables the timeout: model calls and streams can be long.
                    timeout: Some(duration(config.upstream.request_timeout)),
                    ..Default::default()
                })),
                request_headers_to_remove: request_headers_to_remove()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
