use std::path::Path;

use super::*;

const TAIL: &str = "filter: {wasm_path: filter.wasm}\nauth: {mode: none}\n";

fn parse_text(text: &str) -> Result<GatewayConfig, ConfigError> {
    parse(
        "gateway.yaml",
        text,
        Path::new("/etc/gateway"),
        &Overrides::default(),
    )
}

#[test]
fn relative_paths_resolve_against_the_file_directory() {
    let config = parse_text(&format!(
        "upstream: {{region: us-east-1, ca_file: tls/ca.pem}}\n{TAIL}"
    ))
    .unwrap();
    assert_eq!(
        config.upstream.ca_file,
        Path::new("/etc/gateway/tls/ca.pem")
    );
    assert_eq!(config.wasm_path, Path::new("/etc/gateway/filter.wasm"));
}

#[test]
fn clusters_are_per_service_or_shared() {
    let own = parse_text(&format!("upstream: {{region: ap-south-1}}\n{TAIL}")).unwrap();
    assert_eq!(own.upstream.cluster_for("bedrock"), "bedrock.ap-south-1");
    let shared = parse_text(&format!(
        "upstream: {{region: ap-south-1, endpoint_url: 'https://[::1]:9443'}}\n{TAIL}"
    ))
    .unwrap();
    assert_eq!(
        shared.upstream.cluster_for("bedrock"),
        SHARED_UPSTREAM_CLUSTER
    );
    let endpoint = shared.upstream.endpoint.unwrap();
    assert_eq!(endpoint.host.as_address(), "::1");
    assert_eq!((endpoint.tls, endpoint.port), (true, 9443));
}

#[test]
fn china_regions_get_their_own_domain() {
    let config = parse_text(&format!("upstream: {{region: cn-north-1}}\n{TAIL}")).unwrap();
    assert_eq!(
        config.filter.services[0].host,
        "bedrock-runtime.cn-north-1.amazonaws.com.cn"
    );
}

#[test]
fn error_display() {
    let invalid = ConfigError::Invalid {
        file: "f.yaml".into(),
        key: "a.b".into(),
        expected: "x".into(),
        found: None,
    };
    assert_eq!(invalid.to_string(), "f.yaml: a.b: expected x");
    assert_eq!(invalid.kind(), "invalid");
    let parse_error = ConfigError::Parse {
        file: "f.yaml".into(),
        key: "a".into(),
        message: "bad".into(),
        line: Some(3),
        column: Some(7),
    };
    assert_eq!(parse_error.to_string(), "f.yaml: a: bad (line 3, column 7)");
    assert_eq!(parse_error.kind(), "parse");
}

#[test]
fn serde_yaml_path_prefixes_are_removed() {
    assert_eq!(
        strip_key_prefix("upstream: unknown field", "upstream.bogus"),
        Some("unknown field")
    );
    assert_eq!(
        strip_key_prefix(
            "upstream.path_rules[1]: unknown field",
            "upstream.path_rules[1].x"
        ),
        Some("unknown field")
    );
    assert_eq!(
        strip_key_prefix("listener.port: invalid", "listener.port"),
        Some("invalid")
    );
    assert_eq!(strip_key_prefix("invalid type", "listener.port"), None);
}

#[test]
fn serde_messages_are_reworded_in_file_terms() {
    assert_eq!(
        reword("upstream".into(), "missing field `region`".into()),
        (
            "upstream.region".into(),
            "expected a value: the key is required".into()
        )
    );
    assert_eq!(
        reword(ROOT_KEY.into(), "missing field `upstream`".into()).0,
        "upstream"
    );
    assert_eq!(
        reword(
            "upstream".into(),
            "invalid type: sequence, expected struct UpstreamSection".into()
        )
        .1,
        "invalid type: sequence, expected a mapping"
    );
    assert_eq!(
        reword(
            "listener.port".into(),
            "invalid type: string \"x\", expected u16".into()
        )
        .1,
        "invalid type: string \"x\", expected a whole number from 0 to 65535"
    );
}

#[test]
fn load_names_unreadable_files() {
    let error = load(
        Path::new("/nonexistent/gateway.yaml"),
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&error, ConfigError::Read { file, .. } if file == "/nonexistent/gateway.yaml"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/gateway.yaml: cannot read the file: ")
    );
}
