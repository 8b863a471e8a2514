//! The listener, the routes and the versions; clusters and the bootstrap in [`clusters`].

use std::path::Path;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{address, config_source, data_source, socket_address},
            listener::v3::{Listener, filter},
            route::v3::{RouteConfiguration, route as envoy_route, route_action, route_match},
        },
        extensions::{
            filters::{
                http::{router::v3::Router, wasm::v3::Wasm},
                network::http_connection_manager::v3::{
                    HttpConnectionManager, http_connection_manager, http_filter,
                },
            },
            wasm::v3::{FailurePolicy, plugin_config},
        },
    },
    google::protobuf::{Any, StringValue},
};
use gateway_common::{filter_config::FilterConfig, names};
use prost::{Message, Name};

use super::*;
use crate::config::{self, Overrides};

const BASE: &str =
    "upstream:\n  region: us-east-1\nfilter: {wasm_path: /opt/filter.wasm}\nauth: {mode: none}\n";

fn gateway(text: &str) -> GatewayConfig {
    config::parse(
        "gateway.yaml",
        text,
        Path::new("/etc/gateway"),
        &Overrides::default(),
    )
    .unwrap()
}

fn with_upstream(extra: &str) -> GatewayConfig {
    gateway(&BASE.replace(
        "  region: us-east-1\n",
        &format!("  region: us-east-1\n{extra}"),
    ))
}

fn unpack<T: Message + Name + Default>(any: &Any) -> T {
    assert_eq!(any.type_url, T::type_url());
    T::decode(any.value.as_slice()).unwrap()
}

fn connection_manager(listener: &Listener) -> HttpConnectionManager {
    let filter = &listener.filter_chains[0].filters[0];
    assert_eq!(filter.name, "envoy.filters.network.http_connection_manager");
    let Some(filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
        panic!("no typed config");
    };
    unpack(any)
}

fn http_filter_config(manager: &HttpConnectionManager, index: usize) -> &Any {
    match &manager.http_filters[index].config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => any,
        other => panic!("filter {index}: {other:?}"),
    }
}

fn decoded<T: Message + Name + Default>(snapshot: &Snapshot, type_url: &str) -> Vec<T> {
    snapshot
        .get(type_url)
        .unwrap()
        .resources
        .iter()
        .map(|r| unpack(&r.body))
        .collect()
}

#[test]
fn listener_runs_the_wasm_filter_then_the_router() {
    let config = gateway(BASE);
    let snapshot = Snapshot::build(&config);
    let listeners: Vec<Listener> = decoded(&snapshot, type_url::LISTENER);
    assert_eq!(listeners.len(), 1);
    let listener = &listeners[0];
    assert_eq!(listener.name, LISTENER_NAME);
    let Some(address::Address::SocketAddress(socket)) =
        listener.address.as_ref().and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address");
    };
    assert_eq!(socket.address, "0.0.0.0");
    assert!(!socket.ipv4_compat);
    assert_eq!(
        socket.port_specifier,
        Some(socket_address::PortSpecifier::PortValue(8080))
    );

    let manager = connection_manager(listener);
    assert_eq!(manager.stat_prefix, "bedrock_gateway");
    assert_eq!(
        manager.codec_type,
        http_connection_manager::CodecType::Auto as i32
    );
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &manager.route_specifier else {
        panic!("routes must come over RDS");
    };
    assert_eq!(rds.route_config_name, ROUTE_CONFIG_NAME);
    assert!(matches!(
        rds.config_source
            .as_ref()
            .and_then(|s| s.config_source_specifier.as_ref()),
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    assert_eq!(
        manager.stream_idle_timeout.as_ref().map(|d| d.seconds),
        Some(300)
    );
    assert_eq!(
        manager
            .request_timeout
            .as_ref()
            .map(|d| (d.seconds, d.nanos)),
        Some((0, 0))
    );
    assert_eq!(
        manager.generate_request_id.as_ref().map(|b| b.value),
        Some(true)
    );
    let filter_names: Vec<&str> = manager
        .http_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filter_names,
        ["bedrock_gateway", "envoy.filters.http.router"]
    );
    let router: Router = unpack(http_filter_config(&manager, 1));
    assert!(router.suppress_envoy_headers);

    let wasm: Wasm = unpack(http_filter_config(&manager, 0));
    let plugin = wasm.config.unwrap();
    assert_eq!(plugin.name, "bedrock_gateway");
    assert_eq!(plugin.root_id, names::ROOT_ID);
    assert_eq!(plugin.failure_policy, FailurePolicy::FailClosed as i32);
    assert_eq!(
        plugin.allow_on_headers_stop_iteration.map(|b| b.value),
        Some(true)
    );
    let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else {
        panic!("no vm config");
    };
    assert_eq!(vm.vm_id, names::VM_ID);
    assert_eq!(vm.runtime, "envoy.wasm.runtime.v8");
    let code = vm.code.and_then(|c| c.specifier);
    let Some(envoy_types::pb::envoy::config::core::v3::async_data_source::Specifier::Local(local)) =
        code
    else {
        panic!("wasm code must be a local file");
    };
    assert_eq!(
        local.specifier,
        Some(data_source::Specifier::Filename("/opt/filter.wasm".into()))
    );
    let json: StringValue = unpack(&plugin.configuration.unwrap());
    let filter = FilterConfig::from_json(json.value.as_bytes()).unwrap();
    assert_eq!(filter, config.filter);
}

#[test]
fn routes_follow_the_cluster_header() {
    let config = with_upstream("  request_timeout_seconds: 900\n  max_request_body_bytes: 1000\n");
    let routes: Vec<RouteConfiguration> =
        decoded(&Snapshot::build(&config), type_url::ROUTE_CONFIGURATION);
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, ROUTE_CONFIG_NAME);
    let host = &routes[0].virtual_hosts[0];
    assert_eq!(host.name, "bedrock");
    assert_eq!(host.domains, ["*"]);
    assert_eq!(
        host.request_body_buffer_limit.as_ref().map(|v| v.value),
        Some(1000 + super::route::BUFFER_HEADROOM_BYTES)
    );
    let route = &host.routes[0];
    assert_eq!(
        route
            .r#match
            .as_ref()
            .and_then(|m| m.path_specifier.clone()),
        Some(route_match::PathSpecifier::Prefix("/".into()))
    );
    let Some(envoy_route::Action::Route(action)) = &route.action else {
        panic!("not a forwarding route");
    };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::ClusterHeader(
            names::CLUSTER_HEADER.into()
        ))
    );
    assert_eq!(action.timeout.as_ref().map(|t| t.seconds), Some(900));
    assert_eq!(
        route.request_headers_to_remove,
        [
            "x-bedrock-gateway-cluster",
            "x-forwarded-proto",
            "x-request-id"
        ]
    );

    let unlimited: Vec<RouteConfiguration> = decoded(
        &Snapshot::build(&gateway(BASE)),
        type_url::ROUTE_CONFIGURATION,
    );
    let Some(envoy_route::Action::Route(action)) = &unlimited[0].virtual_hosts[0].routes[0].action
    else {
        panic!("not a forwarding route");
    };
    assert_eq!(
        action.timeout.as_ref().map(|t| (t.seconds, t.nanos)),
        Some((0, 0))
    );
}

#[test]
fn versions_are_stable_and_change_only_with_their_resources() {
    let base = Snapshot::build(&gateway(BASE));
    assert_eq!(
        base,
        Snapshot::build(&gateway(BASE)),
        "rendering must be deterministic"
    );
    let version = |s: &Snapshot, t: &str| s.get(t).unwrap().version.clone();

    let routes_only = Snapshot::build(&with_upstream("  request_timeout_seconds: 30\n"));
    assert_eq!(
        version(&routes_only, type_url::CLUSTER),
        version(&base, type_url::CLUSTER)
    );
    assert_eq!(
        version(&routes_only, type_url::LISTENER),
        version(&base, type_url::LISTENER)
    );
    assert_ne!(
        version(&routes_only, type_url::ROUTE_CONFIGURATION),
        version(&base, type_url::ROUTE_CONFIGURATION)
    );
    assert_ne!(routes_only.version(), base.version());

    let clusters_only = Snapshot::build(&with_upstream("  connect_timeout_ms: 100\n"));
    assert_ne!(
        version(&clusters_only, type_url::CLUSTER),
        version(&base, type_url::CLUSTER)
    );
    assert_eq!(
        version(&clusters_only, type_url::LISTENER),
        version(&base, type_url::LISTENER)
    );
    assert_eq!(
        version(&clusters_only, type_url::ROUTE_CONFIGURATION),
        version(&base, type_url::ROUTE_CONFIGURATION)
    );

    let listener_only = Snapshot::build(&gateway(
        &BASE.replace("/opt/filter.wasm", "/opt/other.wasm"),
    ));
    assert_ne!(
        version(&listener_only, type_url::LISTENER),
        version(&base, type_url::LISTENER)
    );
    assert_eq!(
        version(&listener_only, type_url::CLUSTER),
        version(&base, type_url::CLUSTER)
    );

    assert!(
        base.get("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment")
            .is_none()
    );
}

#[test]
fn named_resources_are_filtered() {
    let snapshot = Snapshot::build(&gateway(BASE));
    let routes = snapshot.get(type_url::ROUTE_CONFIGURATION).unwrap();
    assert_eq!(routes.named(&[ROUTE_CONFIG_NAME.to_string()]).count(), 1);
    assert_eq!(routes.named(&["other".to_string()]).count(), 0);
}

#[test]
fn listening_on_ipv6_any_includes_ipv4() {
    let config = gateway(&format!(
        "listener: {{address: \"::\", port: 9000}}\n{BASE}"
    ));
    let listeners: Vec<Listener> = decoded(&Snapshot::build(&config), type_url::LISTENER);
    let Some(address::Address::SocketAddress(socket)) = listeners[0]
        .address
        .as_ref()
        .and_then(|a| a.address.as_ref())
    else {
        panic!("no socket address");
    };
    assert_eq!(socket.address, "::");
    assert!(socket.ipv4_compat);
}

mod clusters;
