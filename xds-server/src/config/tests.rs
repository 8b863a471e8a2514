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

fn parse_credentials(
    credentials: &str,
    env: &[(&str, &str)],
) -> Result<GatewayConfig, ConfigError> {
    let text = format!("upstream: {{region: us-east-1, credentials: {credentials}}}\n{TAIL}");
    parse_with_env(
        "gateway.yaml",
        &text,
        Path::new("/etc/gateway"),
        &Overrides::default(),
        &|name| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        },
    )
}

#[test]
fn credentials_default_to_the_aws_chain() {
    let absent = parse_text(&format!("upstream: {{region: us-east-1}}\n{TAIL}")).unwrap();
    assert_eq!(absent.upstream.credentials, CredentialSettings::AwsChain);
    for written in ["{}", "{source: aws_chain}"] {
        let config = parse_credentials(written, &[]).unwrap();
        assert_eq!(config.upstream.credentials, CredentialSettings::AwsChain);
    }
}

#[test]
fn env_credentials_are_read_from_the_named_variables() {
    let env = [
        ("GW_KEY", "AKIAFROMENVIRONMENT"),
        ("GW_SECRET", "secret-from-the-environment"),
        ("GW_TOKEN", "token-from-the-environment"),
    ];
    let config = parse_credentials(
        "{source: env, access_key_id_env: GW_KEY, secret_access_key_env: GW_SECRET, session_token_env: GW_TOKEN}",
        &env,
    )
    .unwrap();
    let CredentialSettings::Static(credentials) = &config.upstream.credentials else {
        panic!(
            "expected static credentials: {:?}",
            config.upstream.credentials
        );
    };
    assert_eq!(credentials.access_key_id, "AKIAFROMENVIRONMENT");
    assert_eq!(
        credentials.secret_access_key.expose(),
        "secret-from-the-environment"
    );
    assert_eq!(
        credentials.session_token.as_ref().map(|t| t.expose()),
        Some("token-from-the-environment")
    );
    assert_eq!(credentials.expires_at, None);
    assert_eq!(credentials.provider, "env GW_KEY");
    assert_eq!(config.upstream.credentials.source_name(), "env");
    // Neither the settings nor the whole configuration show a secret.
    for debug in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!debug.contains("from-the-environment"), "{debug}");
        assert!(!debug.contains("AKIAFROM"), "{debug}");
    }

    let without_token = parse_credentials(
        "{source: env, access_key_id_env: GW_KEY, secret_access_key_env: GW_SECRET}",
        &env,
    )
    .unwrap();
    let CredentialSettings::Static(credentials) = &without_token.upstream.credentials else {
        panic!("expected static credentials");
    };
    assert_eq!(credentials.session_token, None);
}

#[test]
fn env_credentials_need_set_variables() {
    let error = |credentials: &str, env: &[(&str, &str)]| {
        let message = parse_credentials(credentials, env).unwrap_err().to_string();
        assert!(!message.contains("secret-value"), "{message}");
        message
    };
    let both = "{source: env, access_key_id_env: GW_KEY, secret_access_key_env: GW_SECRET}";
    assert_eq!(
        error(both, &[("GW_KEY", "AKIAKEY")]),
        "gateway.yaml: upstream.credentials.secret_access_key_env: expected the name of an environment variable of xds-server holding the AWS secret access key, found \"GW_SECRET\" (unset or empty)"
    );
    assert_eq!(
        error(both, &[("GW_KEY", ""), ("GW_SECRET", "secret-value")]),
        "gateway.yaml: upstream.credentials.access_key_id_env: expected the name of an environment variable of xds-server holding the AWS access key id, found \"GW_KEY\" (unset or empty)"
    );
    assert_eq!(
        error(
            "{source: env, access_key_id_env: GW_KEY, secret_access_key_env: GW_SECRET, session_token_env: GW_TOKEN}",
            &[("GW_KEY", "AKIAKEY"), ("GW_SECRET", "secret-value")]
        ),
        "gateway.yaml: upstream.credentials.session_token_env: expected the name of an environment variable of xds-server holding the AWS session token, found \"GW_TOKEN\" (unset or empty)"
    );
    assert_eq!(
        error("{source: env, secret_access_key_env: GW_SECRET}", &[]),
        "gateway.yaml: upstream.credentials.access_key_id_env: expected the name of an environment variable of xds-server holding the AWS access key id (required with source env)"
    );
    assert_eq!(
        error(
            "{source: env, access_key_id_env: 'A=B', secret_access_key_env: GW_SECRET}",
            &[]
        ),
        "gateway.yaml: upstream.credentials.access_key_id_env: expected the name of an environment variable of xds-server holding the AWS access key id, found \"A=B\""
    );
}

#[test]
fn credentials_source_is_aws_chain_or_env() {
    let error = |credentials: &str| parse_credentials(credentials, &[]).unwrap_err().to_string();
    assert_eq!(
        error("{source: profile}"),
        "gateway.yaml: upstream.credentials.source: expected aws_chain or env, found \"profile\""
    );
    assert_eq!(
        error("{access_key_id_env: GW_KEY}"),
        "gateway.yaml: upstream.credentials.access_key_id_env: expected no value with source aws_chain (it only applies to source env)"
    );
    assert_eq!(
        error("{source: env, access_key_env: GW_KEY}"),
        "gateway.yaml: upstream.credentials.access_key_env: unknown field `access_key_env`, expected one of `source`, `access_key_id_env`, `secret_access_key_env`, `session_token_env` (line 1, column 58)"
    );
}
