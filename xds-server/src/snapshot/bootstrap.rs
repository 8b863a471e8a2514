//! A complete static Envoy bootstrap with the snapshot's resources inline (routes included in
//! the listener) plus the `gateway_control` cluster, so that `envoy --mode validate` can check
//! the generated resources and an operator can run without ADS. The filter still fetches its
//! signing credentials from xds-server through `gateway_control`.

use std::{collections::HashMap, net::IpAddr};

use envoy_types::{
    pb::envoy::{
        config::{
            bootstrap::v3::{Bootstrap, bootstrap::StaticResources},
            cluster::v3::{
                Cluster,
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
    clusters.push(control_cluster(control));
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

/// The cluster the filter calls the control API through: gRPC, so HTTP/2 in clear text.
pub fn control_cluster(control: &ControlAddress) -> Cluster {
    let discovery = if control.host.parse::<IpAddr>().is_ok() {
        DiscoveryType::Static
    } else {
        DiscoveryType::StrictDns
    };
    Cluster {
        name: names::CONTROL_CLUSTER.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(duration(CONTROL_CONNECT_TIMEOUT)),
        load_assignment: Some(cluster::load_assignment(
            names::CONTROL_CLUSTER,
            &control.host,
            u32::from(control.port),
        )),
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
