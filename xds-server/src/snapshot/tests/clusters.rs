//! The clusters and the static bootstrap.

use envoy_types::pb::envoy::{
    config::{
        cluster::v3::{Cluster, cluster as envoy_cluster},
        core::v3::{address, data_source, socket_address, transport_socket},
        endpoint::v3::lb_endpoint,
    },
    extensions::{
        filters::network::http_connection_manager::v3::http_connection_manager,
        transport_sockets::tls::v3::{
            UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
        },
        upstreams::http::v3::{HttpProtocolOptions, http_protocol_options},
    },
    r#type::matcher::v3::string_matcher,
};
use gateway_common::names;

use super::{BASE, connection_manager, decoded, gateway, unpack, with_upstream};
use crate::{
    snapshot::{Snapshot, bootstrap, cluster, route},
    xds::type_url,
};

fn endpoint_of(cluster: &Cluster) -> (String, u32) {
    let endpoint = &cluster.load_assignment.as_ref().unwrap().endpoints[0].lb_endpoints[0];
    let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &endpoint.host_identifier else {
        panic!("no endpoint");
    };
    let Some(address::Address::SocketAddress(socket)) =
        endpoint.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address");
    };
    let Some(socket_address::PortSpecifier::PortValue(port)) = socket.port_specifier else {
        panic!("no port");
    };
    (socket.address.clone(), port)
}

fn tls_of(cluster: &Cluster) -> Option<UpstreamTlsContext> {
    let socket = cluster.transport_socket.as_ref()?;
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    socket.config_type.as_ref().map(|config| match config {
        transport_socket::ConfigType::TypedConfig(any) => unpack(any),
    })
}

fn protocol_of(cluster: &Cluster) -> http_protocol_options::UpstreamProtocolOptions {
    let options: HttpProtocolOptions =
        unpack(&cluster.typed_extension_protocol_options[cluster::HTTP_PROTOCOL_OPTIONS]);
    options.upstream_protocol_options.unwrap()
}

#[test]
fn one_tls_cluster_per_service_by_default() {
    let config = with_upstream("  connect_timeout_ms: 1500\n");
    let clusters: Vec<Cluster> = decoded(&Snapshot::build(&config), type_url::CLUSTER);
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "bedrock-runtime.us-east-1",
            "bedrock-agent-runtime.us-east-1",
            "bedrock.us-east-1",
            "bedrock-agent.us-east-1"
        ]
    );
    // Every cluster the filter names exists.
    for service in &config.filter.services {
        assert!(
            names.contains(&service.cluster.as_str()),
            "{}",
            service.cluster
        );
    }
    let runtime = &clusters[0];
    assert_eq!(
        runtime.cluster_discovery_type,
        Some(envoy_cluster::ClusterDiscoveryType::Type(
            envoy_cluster::DiscoveryType::LogicalDns as i32
        ))
    );
    assert_eq!(
        runtime.dns_lookup_family,
        envoy_cluster::DnsLookupFamily::V4Preferred as i32
    );
    assert_eq!(
        runtime
            .connect_timeout
            .as_ref()
            .map(|d| (d.seconds, d.nanos)),
        Some((1, 500_000_000))
    );
    assert_eq!(
        endpoint_of(runtime),
        ("bedrock-runtime.us-east-1.amazonaws.com".into(), 443)
    );

    let tls = tls_of(runtime).expect("TLS to AWS");
    assert_eq!(tls.sni, "bedrock-runtime.us-east-1.amazonaws.com");
    let common = tls.common_tls_context.unwrap();
    let Some(common_tls_context::ValidationContextType::ValidationContext(validation)) =
        common.validation_context_type
    else {
        panic!("no validation context");
    };
    assert_eq!(
        validation.trusted_ca.and_then(|ca| ca.specifier),
        Some(data_source::Specifier::Filename(
            "/etc/ssl/certs/ca-certificates.crt".into()
        ))
    );
    let san = &validation.match_typed_subject_alt_names[0];
    assert_eq!(san.san_type, subject_alt_name_matcher::SanType::Dns as i32);
    assert_eq!(
        san.matcher.as_ref().and_then(|m| m.match_pattern.clone()),
        Some(string_matcher::MatchPattern::Exact(
            "bedrock-runtime.us-east-1.amazonaws.com".into()
        ))
    );
    assert!(matches!(
        protocol_of(runtime),
        http_protocol_options::UpstreamProtocolOptions::AutoConfig(auto)
            if auto.http_protocol_options.is_some() && auto.http2_protocol_options.is_some()
    ));
    let thresholds = &runtime.circuit_breakers.as_ref().unwrap().thresholds[0];
    for limit in [
        &thresholds.max_connections,
        &thresholds.max_pending_requests,
        &thresholds.max_requests,
    ] {
        assert_eq!(limit.as_ref().map(|v| v.value), Some(10_000));
    }
}

#[test]
fn endpoint_url_makes_one_shared_cluster() {
    let plain = with_upstream("  endpoint_url: http://127.0.0.1:4566\n");
    let clusters: Vec<Cluster> = decoded(&Snapshot::build(&plain), type_url::CLUSTER);
    assert_eq!(clusters.len(), 1);
    let shared = &clusters[0];
    assert_eq!(shared.name, "bedrock_upstream");
    assert_eq!(
        shared.cluster_discovery_type,
        Some(envoy_cluster::ClusterDiscoveryType::Type(
            envoy_cluster::DiscoveryType::Static as i32
        ))
    );
    assert_eq!(endpoint_of(shared), ("127.0.0.1".into(), 4566));
    assert!(tls_of(shared).is_none());
    assert!(matches!(
        protocol_of(shared),
        http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(_)
    ));
    // Still signed for (and sent with) the real AWS host.
    assert_eq!(
        plain.filter.services[0].host,
        "bedrock-runtime.us-east-1.amazonaws.com"
    );
    assert!(
        plain
            .filter
            .services
            .iter()
            .all(|s| s.cluster == "bedrock_upstream")
    );

    let named = with_upstream("  endpoint_url: https://bedrock.internal.example\n");
    let clusters: Vec<Cluster> = decoded(&Snapshot::build(&named), type_url::CLUSTER);
    let shared = &clusters[0];
    assert_eq!(
        shared.cluster_discovery_type,
        Some(envoy_cluster::ClusterDiscoveryType::Type(
            envoy_cluster::DiscoveryType::StrictDns as i32
        ))
    );
    assert_eq!(
        endpoint_of(shared),
        ("bedrock.internal.example".into(), 443)
    );
    assert_eq!(tls_of(shared).unwrap().sni, "bedrock.internal.example");

    let ip_tls = with_upstream("  endpoint_url: https://10.0.0.7:8443\n");
    let clusters: Vec<Cluster> = decoded(&Snapshot::build(&ip_tls), type_url::CLUSTER);
    let tls = tls_of(&clusters[0]).unwrap();
    assert_eq!(tls.sni, "", "no SNI for an IP address");
}

#[test]
fn bootstrap_is_static_and_includes_the_control_clusters() {
    let config = gateway(BASE);
    let control: bootstrap::ControlAddress = "127.0.0.1:18000".parse().unwrap();
    let rendered = bootstrap::render(&config, &control);
    let resources = rendered.static_resources.unwrap();
    let names: Vec<&str> = resources.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 6);
    assert_eq!(names[4..], [names::CONTROL_CLUSTER, names::QUOTA_CLUSTER]);
    // Each with its own circuit breakers: decisions cannot starve ADS, credentials and keys.
    for (cluster, max_requests) in [
        (&resources.clusters[4], bootstrap::CONTROL_MAX_REQUESTS),
        (&resources.clusters[5], bootstrap::QUOTA_MAX_REQUESTS),
    ] {
        assert_eq!(endpoint_of(cluster), ("127.0.0.1".into(), 18000));
        assert!(matches!(
            protocol_of(cluster),
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(explicit)
                if matches!(explicit.protocol_config, Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)))
        ));
        let thresholds = &cluster.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(
            thresholds.max_requests.as_ref().map(|v| v.value),
            Some(max_requests)
        );
    }
    let manager = connection_manager(&resources.listeners[0]);
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)) =
        manager.route_specifier
    else {
        panic!("a static bootstrap carries its routes inline");
    };
    assert_eq!(routes, route::route_configuration(&config));
    assert!(rendered.dynamic_resources.is_none());

    let named: bootstrap::ControlAddress = "xds-server.gateway.svc:18000".parse().unwrap();
    assert_eq!(
        bootstrap::control_cluster("c", &named, 1).cluster_discovery_type,
        Some(envoy_cluster::ClusterDiscoveryType::Type(
            envoy_cluster::DiscoveryType::StrictDns as i32
        ))
    );
    for bad in ["127.0.0.1", "host:0", ":80", "host:http"] {
        assert!(bad.parse::<bootstrap::ControlAddress>().is_err(), "{bad}");
    }
    assert_eq!(
        "[::1]:18000"
            .parse::<bootstrap::ControlAddress>()
            .unwrap()
            .host,
        "::1"
    );
}
