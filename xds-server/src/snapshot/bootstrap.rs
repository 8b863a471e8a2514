//! A complete static Envoy bootstrap with the snapshot's resources inline (routes included in
//! the listener) plus the `gateway_control` and `gateway_quota` clusters, so that `envoy --mode
//! validate` can check the generated resources and an operator can run without ADS. The filter
//! still fetches its signing credentials from xds-server through `gateway_control`, and asks
//! for rate limit decisions through `gateway_quota`.

use std::{collections::HashMap, net::IpAddr};

use envoy_types::{
    pb::envoy::{
        config::{
            bootstrap::v3::{Bootstrap, bootstrap::StaticResources},
            cluster::v3::{
                CircuitBreakers, Cluster,
                circuit_breakers::Thresholds,
                cluster::{ClusterDiscoveryType, DiscoveryType},
            },
            core::v3::{Http2ProtocolOptions, Node},
        },
        extensions::upstreams::http::v3::{
            HttpProtocolOptions,
            http_protocol_options::{
                ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
            },
        },
    },
    pb::google::protobuf::UInt32Value,
    util::pack_any,
};
use gateway_common::names;

use super::{cluster, common::duration, filter_json, listener, route};
use crate::config::GatewayConfig;

/// Node id and cluster of the rendered bootstrap.
pub const STATIC_NODE: &str = "bedrock-gateway";
const CONTROL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Where Envoy reaches xds-server: `host:port`, the host a name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlAddress {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for ControlAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expected = || format!("expected HOST:PORT such as 127.0.0.1:18000, found {s:?}");
        let (host, port) = s.rsplit_once(':').ok_or_else(expected)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| expected())?;
        if host.is_empty() || port == 0 {
            return Err(expected());
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

/// The static bootstrap for `config`.
pub fn render(config: &GatewayConfig, control: &ControlAddress) -> Bootstrap {
    let listener = listener::listener(
        config,
        &filter_json(config),
        listener::RouteSource::Inline(Box::new(route::route_configuration(config))),
    );
    let mut clusters = cluster::clusters(config);
    clusters.push(control_cluster(
        names::CONTROL_CLUSTER,
        control,
        CONTROL_MAX_REQUESTS,
    ));
    clusters.push(control_cluster(
        names::QUOTA_CLUSTER,
        control,
        QUOTA_MAX_REQUESTS,
    ));
    Bootstrap {
        node: Some(Node {
            id: STATIC_NODE.to_string(),
            cluster: STATIC_NODE.to_string(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners: vec![listener],
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Concurrent requests (and requests waiting for a connection) on `gateway_control`: ADS, and
/// per Envoy worker at most one credentials lookup, one key lookup per issuer and one usage
/// report at a time.
pub const CONTROL_MAX_REQUESTS: u32 = 1024;
/// The same on `gateway_quota`: a decision stream per worker, and one `ShouldRateLimit` call
/// per request while a worker has no stream (or with `transport: unary`).
pub const QUOTA_MAX_REQUESTS: u32 = 4096;

/// A cluster the filter calls xds-server through: gRPC, so HTTP/2 in clear text, with circuit
/// breakers of its own.
pub fn control_cluster(name: &str, control: &ControlAddress, max_requests: u32) -> Cluster {
    let discovery = if control.host.parse::<IpAddr>().is_ok() {
        DiscoveryType::Static
    } else {
        DiscoveryType::StrictDns
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration(CONTROL_CONNECT_TIMEOUT)),
        load_assignment: Some(cluster::load_assignment(
            name,
            &control.host,
            u32::from(control.port),
        )),
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_pending_requests: Some(UInt32Value {
                    value: CONTROL_MAX_REQUESTS,
                }),
                max_requests: Some(UInt32Value {
                    value: max_requests,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: HashMap::from([(
            cluster::HTTP_PROTOCOL_OPTIONS.to_string(),
            pack_any(HttpProtocolOptions {
                upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                    ExplicitHttpConfig {
                        protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions::default(),
                        )),
                    },
                )),
                ..Default::default()
            }),
        )]),
        ..Default::default()
    }
}
