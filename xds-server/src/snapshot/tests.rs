//! The listener, the routes and the versions; clusters and the bootstrap in [`clusters`].

use std::path::Path;

use envoy_types::pb::{
    envoy::{
        config::{
            core::v3::{TypedExtensionConfig, address, config_source, data_source, socket_address},
            listener::v3::{Listener, filter},
            route::v3::{RouteConfiguration, route as envoy_route, route_action, route_match},
        },
        extensions::{
            filters::{
                http::{router::v3::Router, wasm::v3::Wasm},
                network::http_connection_manager::v3::{
                    HttpConnectionManager, http_connection_manager,
                    http_connection_manager::PathWithEscapedSlashesAction, http_filter,
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
    // Envoy hands the path over as sent: the filter reads it once, for every decision.
    assert_eq!(
        manager.normalize_path.as_ref().map(|b| b.value),
        Some(false)
    );
    assert!(!manager.merge_slashes);
    assert_eq!(
        manager.path_with_escaped_slashes_action,
        PathWithEscapedSlashesAction::KeepUnchanged as i32
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

    // The gateway filter's configuration comes by ECDS, by name, and the listener waits for it.
    let Some(http_filter::ConfigType::ConfigDiscovery(discovery)) =
        &manager.http_filters[0].config_type
    else {
        panic!("the gateway filter must come over ECDS");
    };
    assert_eq!(discovery.type_urls, [Wasm::type_url()]);
    assert!(discovery.default_config.is_none());
    assert!(!discovery.apply_default_config_without_warming);
    assert!(matches!(
        discovery
            .config_source
            .as_ref()
            .and_then(|s| s.config_source_specifier.as_ref()),
        Some(config_source::ConfigSourceSpecifier::Ads(_))
    ));
    let extensions: Vec<TypedExtensionConfig> = decoded(&snapshot, type_url::EXTENSION_CONFIG);
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].name, manager.http_filters[0].name);
    let wasm: Wasm = unpack(extensions[0].typed_config.as_ref().unwrap());
    let plugin = wasm.config.unwrap();
    assert_eq!(plugin.name, "bedrock_gateway");
    assert_eq!(plugin.root_id, names::ROOT_ID);
    assert_eq!(plugin.failure_policy, FailurePolicy::FailReload as i32);
    assert!(plugin.reload_config.is_some());
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
            "x-request-id",
            "x-bedrock-gateway-tenant",
            "x-bedrock-gateway-subject",
            "x-bedrock-gateway-role",
            "x-bedrock-gateway-tier",
            "x-bedrock-gateway-issuer"
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

    // The filter's configuration changes only its ECDS resource: connections are kept, and
    // their next requests run the new configuration.
    let filter_only = Snapshot::build(&gateway(
        &BASE.replace("/opt/filter.wasm", "/opt/other.wasm"),
    ));
    assert_ne!(
        version(&filter_only, type_url::EXTENSION_CONFIG),
        version(&base, type_url::EXTENSION_CONFIG)
    );
    for unchanged in [
        type_url::LISTENER,
        type_url::CLUSTER,
        type_url::ROUTE_CONFIGURATION,
    ] {
        assert_eq!(version(&filter_only, unchanged), version(&base, unchanged));
    }
    assert_ne!(filter_only.version(), base.version());

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

#[test]
fn the_audit_log_records_only_requests_the_filter_saw() {
    use envoy_types::pb::envoy::{
        config::accesslog::v3::{access_log, access_log_filter, extension_filter},
        config::core::v3::substitution_format_string,
        extensions::access_loggers::{
            file::v3::{FileAccessLog, file_access_log},
            filters::cel::v3::ExpressionFilter,
        },
    };
    let jwt = BASE.replace(
        "auth: {mode: none}\n",
        "auth:\n  issuers: [{name: dev, issuer: http://127.0.0.1/dev, audiences: [gw], dev_signing_key: dev.pem}]\n  audit_log: /var/log/gateway/audit.log\n",
    );
    for (text, path) in [
        (BASE.to_string(), "/dev/stdout"),
        (jwt, "/var/log/gateway/audit.log"),
    ] {
        let listener = listener::listener(&gateway(&text), "{}", listener::RouteSource::Ads);
        let manager = connection_manager(&listener);
        assert_eq!(manager.access_log.len(), 1);
        let log = &manager.access_log[0];
        assert_eq!(log.name, "envoy.access_loggers.file");
        let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            panic!("no access log config");
        };
        let file: FileAccessLog = unpack(any);
        assert_eq!(file.path, path);
        let Some(file_access_log::AccessLogFormat::LogFormat(format)) = file.access_log_format
        else {
            panic!("no log format");
        };
        let Some(substitution_format_string::Format::TextFormatSource(source)) = format.format
        else {
            panic!("not a text format");
        };
        assert_eq!(
            source.specifier,
            Some(data_source::Specifier::InlineString(
                "{\"time\":\"%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%\",%FILTER_STATE(wasm.bedrock_gateway.audit:PLAIN)%,\"status\":%RESPONSE_CODE%,\"duration_ms\":%DURATION%,\"bytes_received\":%BYTES_RECEIVED%,\"bytes_sent\":%BYTES_SENT%}\n".into()
            ))
        );
        let Some(access_log_filter::FilterSpecifier::ExtensionFilter(filter)) =
            log.filter.as_ref().and_then(|f| f.filter_specifier.clone())
        else {
            panic!("no access log filter");
        };
        assert_eq!(filter.name, "envoy.access_loggers.extension_filters.cel");
        let Some(extension_filter::ConfigType::TypedConfig(any)) = &filter.config_type else {
            panic!("no CEL config");
        };
        let cel: ExpressionFilter = unpack(any);
        assert_eq!(
            cel.expression,
            "'wasm.bedrock_gateway.audit' in filter_state"
        );
    }
    let off = BASE.replace(
        "auth: {mode: none}\n",
        "auth: {mode: none, audit_log: off}\n",
    );
    let listener = listener::listener(&gateway(&off), "{}", listener::RouteSource::Ads);
    assert!(connection_manager(&listener).access_log.is_empty());
}

#[test]
fn jwt_authentication_reaches_the_filter_without_secrets() {
    let text = BASE.replace(
        "auth: {mode: none}\n",
        "auth:\n  issuers: [{name: dev, issuer: http://127.0.0.1/dev, audiences: [gw], algorithms: [HS256], hs256_secret_env: PATH}]\n",
    );
    let config = config::parse_with_env(
        "gateway.yaml",
        &text,
        Path::new("/etc/gateway"),
        &Overrides::default(),
        &|_| Some("a-development-secret-of-at-least-32-bytes".to_string()),
    )
    .unwrap();
    let json = filter_json(&config);
    assert!(json.contains("\"mode\":\"jwt\""), "{json}");
    assert!(!json.contains("a-development-secret"), "{json}");
    assert_eq!(
        FilterConfig::from_json(json.as_bytes()).unwrap(),
        config.filter
    );
}

#[test]
fn listener_tls_uses_the_files_with_alpn() {
    use envoy_types::pb::envoy::config::core::v3::{DataSource, transport_socket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
    let config = gateway(
        "listener:\n  tls:\n    certificate_file: certs/gateway.pem\n    private_key_file: /etc/gw/key.pem\nupstream:\n  region: us-east-1\nfilter:\n  wasm_path: /opt/filter.wasm\nauth:\n  mode: none\n",
    );
    let listeners: Vec<Listener> = decoded(&Snapshot::build(&config), type_url::LISTENER);
    let socket = listeners[0].filter_chains[0]
        .transport_socket
        .clone()
        .expect("tls");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = socket.config_type else {
        panic!("typed config")
    };
    let context: DownstreamTlsContext = unpack(&any);
    let common = context.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    let certificate = &common.tls_certificates[0];
    let file = |d: &Option<DataSource>| match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(data_source::Specifier::Filename(f)) => f,
        other => panic!("{other:?}"),
    };
    assert!(file(&certificate.certificate_chain).ends_with("certs/gateway.pem"));
    assert!(Path::new(&file(&certificate.certificate_chain)).is_absolute());
    assert_eq!(file(&certificate.private_key), "/etc/gw/key.pem");
    // Plain HTTP by default.
    let plain: Vec<Listener> = decoded(&Snapshot::build(&with_upstream("")), type_url::LISTENER);
    assert!(plain[0].filter_chains[0].transport_socket.is_none());
}
