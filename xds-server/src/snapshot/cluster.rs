//! Upstream clusters: one per Bedrock service and region, or one shared cluster when every
//! service goes to `upstream.endpoint_url`.

use std::collections::HashMap;

use envoy_types::{
    pb::{
        envoy::{
            config::{
                cluster::v3::{
                    CircuitBreakers, Cluster,
                    circuit_breakers::Thresholds,
                    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily},
                },
                core::v3::{
                    Address, DataSource, Http1ProtocolOptions, Http2ProtocolOptions,
                    RoutingPriority, SocketAddress, TransportSocket, address, data_source,
                    socket_address, transport_socket,
                },
                endpoint::v3::{
                    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
                },
            },
            extensions::{
                transport_sockets::tls::v3::{
                    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher,
                    UpstreamTlsContext, common_tls_context::ValidationContextType,
                    subject_alt_name_matcher::SanType,
                },
                upstreams::http::v3::{
                    HttpProtocolOptions,
                    http_protocol_options::{
                        AutoHttpConfig, ExplicitHttpConfig, UpstreamProtocolOptions,
                        explicit_http_config::ProtocolConfig,
                    },
                },
            },
            r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern},
        },
        google::protobuf::UInt32Value,
    },
    util::pack_any,
};
use gateway_common::names;

use super::common::duration;
use crate::config::{EndpointHost, GatewayConfig, SHARED_UPSTREAM_CLUSTER};

/// Key of `typed_extension_protocol_options` for upstream HTTP settings.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// Connections, pending and active requests per cluster. Envoy's default of 1024 is low for a
/// gateway whose model calls and streams hold a request open for minutes.
pub const CIRCUIT_BREAKER_LIMIT: u32 = 10_000;
const HTTPS_PORT: u32 = 443;

/// The upstream clusters for `config`, in a stable order.
pub fn clusters(config: &GatewayConfig) -> Vec<Cluster> {
    let upstream = &config.upstream;
    match &upstream.endpoint {
        Some(endpoint) => {
            let address = endpoint.host.as_address();
            let tls = endpoint.tls.then(|| {
                // SNI carries host names only (RFC 6066), never an IP address.
                let (sni, san_type) = match &endpoint.host {
                    EndpointHost::Ip(_) => ("", SanType::IpAddress),
                    EndpointHost::Name(_) => (address.as_str(), SanType::Dns),
                };
                tls_context(sni, &address, san_type, config)
            });
            let discovery = match endpoint.host {
                EndpointHost::Ip(_) => DiscoveryType::Static,
                EndpointHost::Name(_) => DiscoveryType::StrictDns,
            };
            vec![cluster(
                SHARED_UPSTREAM_CLUSTER,
                discovery,
                &address,
                u32::from(endpoint.port),
                tls,
                config,
            )]
        }
        None => upstream
            .services
            .iter()
            .map(|service| {
                let host = names::aws_host(service, &upstream.region);
                let tls = tls_context(&host, &host, SanType::Dns, config);
                cluster(
                    &upstream.cluster_for(service),
                    DiscoveryType::LogicalDns,
                    &host,
                    HTTPS_PORT,
                    Some(tls),
                    config,
                )
            })
            .collect(),
    }
}

fn cluster(
    name: &str,
    discovery: DiscoveryType,
    host: &str,
    port: u32,
    tls: Option<UpstreamTlsContext>,
    config: &GatewayConfig,
) -> Cluster {
    // With TLS, HTTP/2 or HTTP/1.1 by ALPN; in clear text (an emulator) HTTP/1.1.
    let protocol = match &tls {
        Some(_) => UpstreamProtocolOptions::AutoConfig(AutoHttpConfig {
            http_protocol_options: Some(Http1ProtocolOptions::default()),
            http2_protocol_options: Some(Http2ProtocolOptions::default()),
            ..Default::default()
        }),
        None => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            )),
        }),
    };
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        dns_lookup_family: DnsLookupFamily::V4Preferred as i32,
        connect_timeout: Some(duration(config.upstream.connect_timeout)),
        load_assignment: Some(load_assignment(name, host, port)),
        transport_socket: tls.map(|tls| TransportSocket {
            name: TLS_TRANSPORT_SOCKET.to_string(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(tls))),
        }),
        // A single entry: prost encodes maps in iteration order, and one entry keeps the
        // encoding (and so the resource version) deterministic.
        typed_extension_protocol_options: HashMap::from([(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            pack_any(HttpProtocolOptions {
                upstream_protocol_options: Some(protocol),
                ..Default::default()
            }),
        )]),
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: RoutingPriority::Default as i32,
                max_connections: Some(UInt32Value {
                    value: CIRCUIT_BREAKER_LIMIT,
                }),
                max_pending_requests: Some(UInt32Value {
                    value: CIRCUIT_BREAKER_LIMIT,
                }),
                max_requests: Some(UInt32Value {
                    value: CIRCUIT_BREAKER_LIMIT,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One endpoint at `host:port`.
pub fn load_assignment(cluster_name: &str, host: &str, port: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: host.to_string(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// TLS that sends `sni` and accepts only a certificate for `san` signed by `upstream.ca_file`.
fn tls_context(
    sni: &str,
    san: &str,
    san_type: SanType,
    config: &GatewayConfig,
) -> UpstreamTlsContext {
    UpstreamTlsContext {
        sni: sni.to_string(),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".to_string(), "http/1.1".to_string()],
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(data_source::Specifier::Filename(
                            config.upstream.ca_file.display().to_string(),
                        )),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: san_type as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(san.to_string())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}
