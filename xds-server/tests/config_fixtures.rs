//! One fixture per way a configuration file can be wrong, each with the whole message it must
//! produce (`NAME.yaml` + `NAME.expected`), and the valid fixtures with what they mean. A
//! fixture's environment (`hs256_secret_env`) is `NAME.env` (`KEY=VALUE` lines), else empty.
//! Paths are relative to the crate, as `cargo test` runs there.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use gateway_common::filter_config::{Authentication, FilterConfig, PathRule};
use xds_server::config::{
    self, ConfigError, EndpointHost, EndpointUrl, GatewayConfig, Overrides, SHARED_UPSTREAM_CLUSTER,
};

const INVALID: &str = "tests/fixtures/invalid";
const VALID: &str = "tests/fixtures/valid";

fn files_with_extension(dir: &str, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Loads a fixture with the environment of its `.env` file (empty when it has none).
fn load(fixture: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let env: HashMap<String, String> = std::fs::read_to_string(fixture.with_extension("env"))
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line.split_once('=').expect("KEY=VALUE");
            (key.to_string(), value.to_string())
        })
        .collect();
    config::load_with_env(fixture, overrides, &|name| env.get(name).cloned())
}

#[test]
fn every_invalid_fixture_fails_with_its_exact_message() {
    let fixtures = files_with_extension(INVALID, "yaml");
    assert!(
        fixtures.len() >= 30,
        "only {} fixtures found in {INVALID}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for fixture in &fixtures {
        let expected_file = fixture.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
        let expected = expected.trim_end();
        match load(fixture, &Overrides::default()) {
            Ok(_) => failures.push(format!(
                "{}: accepted, expected: {expected}",
                fixture.display()
            )),
            Err(error) if error.to_string() != expected => failures.push(format!(
                "{}:\n  got:      {error}\n  expected: {expected}",
                fixture.display()
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_expected_message_has_its_fixture() {
    for expected in files_with_extension(INVALID, "expected") {
        assert!(
            expected.with_extension("yaml").exists(),
            "{} has no .yaml fixture",
            expected.display()
        );
    }
}

#[test]
fn every_message_names_its_file() {
    for fixture in files_with_extension(INVALID, "yaml") {
        let message = std::fs::read_to_string(fixture.with_extension("expected")).unwrap();
        assert!(
            message.starts_with(&format!("{}: ", fixture.display())),
            "{}: {message}",
            fixture.display()
        );
    }
}

#[test]
fn every_valid_fixture_loads_and_its_filter_config_validates() {
    let fixtures = files_with_extension(VALID, "yaml");
    assert!(fixtures.len() >= 3, "valid fixtures missing");
    for fixture in fixtures {
        let config = load(&fixture, &Overrides::default())
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        let json = serde_json::to_vec(&config.filter).unwrap();
        FilterConfig::from_json(&json).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    }
}

fn fixture_dir() -> PathBuf {
    std::path::absolute(VALID).unwrap()
}

#[test]
fn minimal_fixture_takes_every_default() {
    let config = config::load(
        &Path::new(VALID).join("minimal.yaml"),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        config.listener,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    let upstream = &config.upstream;
    assert_eq!(upstream.region, "us-east-1");
    assert_eq!(upstream.endpoint, None);
    assert_eq!(
        upstream.services,
        [
            "bedrock-runtime",
            "bedrock-agent-runtime",
            "bedrock",
            "bedrock-agent"
        ]
    );
    assert_eq!(
        upstream.ca_file,
        Path::new("/etc/ssl/certs/ca-certificates.crt")
    );
    assert_eq!(upstream.connect_timeout, Duration::from_millis(5000));
    assert_eq!(upstream.request_timeout, Duration::ZERO);
    assert_eq!(upstream.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(upstream.max_request_body_bytes, 20 * 1024 * 1024);
    // Relative to the file's directory, made absolute.
    assert_eq!(
        config.wasm_path,
        fixture_dir().join("../wasm/bedrock_gateway_filter.wasm")
    );

    let filter = &config.filter;
    assert_eq!(filter.region, "us-east-1");
    assert_eq!(filter.services.len(), 4);
    let runtime = &filter.services[0];
    assert_eq!(runtime.name, "bedrock-runtime");
    assert_eq!(runtime.host, "bedrock-runtime.us-east-1.amazonaws.com");
    assert_eq!(runtime.cluster, "bedrock-runtime.us-east-1");
    assert_eq!(runtime.signing_name, "bedrock");
    assert_eq!(filter.services[3].cluster, "bedrock-agent.us-east-1");
    assert!(filter.path_rules.is_empty());
    assert_eq!(filter.control.cluster, "gateway_control");
    assert_eq!(filter.control.timeout_ms, 2000);
    assert_eq!(filter.control.credentials_refresh_seconds, 60);
    assert_eq!(filter.authentication, Authentication::None);
    assert_eq!(filter.max_request_body_bytes, 20 * 1024 * 1024);
}

#[test]
fn full_fixture_sets_every_key() {
    let config = config::load(&Path::new(VALID).join("full.yaml"), &Overrides::default()).unwrap();
    assert_eq!(config.listener, "[::]:10000".parse::<SocketAddr>().unwrap());
    let upstream = &config.upstream;
    assert_eq!(upstream.region, "eu-central-1");
    assert_eq!(
        upstream.endpoint,
        Some(EndpointUrl {
            tls: true,
            host: EndpointHost::Name(
                "vpce-0123.bedrock-runtime.eu-central-1.vpce.amazonaws.com".into()
            ),
            port: 8443,
        })
    );
    assert_eq!(
        upstream.services,
        ["bedrock-runtime", "bedrock-agent-runtime"]
    );
    assert_eq!(upstream.ca_file, fixture_dir().join("certs/ca.pem"));
    assert_eq!(upstream.connect_timeout, Duration::from_millis(2500));
    assert_eq!(upstream.request_timeout, Duration::from_secs(600));
    assert_eq!(upstream.stream_idle_timeout, Duration::from_secs(120));
    assert_eq!(upstream.max_request_body_bytes, 52_428_800);
    assert_eq!(
        config.wasm_path,
        Path::new("/opt/gateway/bedrock_gateway_filter.wasm")
    );

    let filter = &config.filter;
    // The Host header stays the real AWS host even though requests go to the VPC endpoint.
    assert_eq!(
        filter.services[1].host,
        "bedrock-agent-runtime.eu-central-1.amazonaws.com"
    );
    assert!(
        filter
            .services
            .iter()
            .all(|s| s.cluster == SHARED_UPSTREAM_CLUSTER)
    );
    assert_eq!(
        filter.path_rules,
        [
            PathRule {
                method: Some("POST".into()),
                path: "/model/*/invoke".into(),
                service: "bedrock-runtime".into()
            },
            PathRule {
                method: None,
                path: "/knowledgebases/**".into(),
                service: "bedrock-agent-runtime".into()
            },
        ]
    );
    assert_eq!(filter.control.timeout_ms, 500);
    assert_eq!(filter.control.credentials_refresh_seconds, 30);
    assert_eq!(filter.max_request_body_bytes, 52_428_800);
}

#[test]
fn wasm_path_from_the_command_line_wins() {
    let overrides = Overrides {
        wasm_path: Some(PathBuf::from("build/filter.wasm")),
    };
    let config = config::load(&Path::new(VALID).join("full.yaml"), &overrides).unwrap();
    assert_eq!(
        config.wasm_path,
        std::env::current_dir().unwrap().join("build/filter.wasm")
    );
    // And it makes a file without `filter.wasm_path` acceptable.
    let missing = Path::new(INVALID).join("wasm_path_missing.yaml");
    assert!(config::load(&missing, &Overrides::default()).is_err());
    assert!(config::load(&missing, &overrides).is_ok());
}

#[test]
fn validate_command_reports_like_the_library() {
    let binary = env!("CARGO_BIN_EXE_xds-server");
    let valid = Path::new(VALID).join("minimal.yaml");
    let output = std::process::Command::new(binary)
        .args(["validate", "--config"])
        .arg(&valid)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("ok: {}\n", valid.display())
    );

    let invalid = Path::new(INVALID).join("region.yaml");
    let output = std::process::Command::new(binary)
        .args(["validate", "--config"])
        .arg(&invalid)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        std::fs::read_to_string(invalid.with_extension("expected"))
            .unwrap()
            .trim_end()
    );
}

#[test]
fn jwt_fixture_names_every_key_source() {
    use gateway_common::auth_config::{Algorithm, ClaimMapping};
    use xds_server::identity::KeySource;

    let config = load(&Path::new(VALID).join("jwt.yaml"), &Overrides::default()).unwrap();
    let Authentication::Jwt(jwt) = &config.filter.authentication else {
        panic!("mode jwt");
    };
    let names: Vec<&str> = jwt.issuers.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "corp",
            "oidc",
            "air-gapped",
            "inline",
            "local-dev",
            "shared"
        ]
    );
    let corp = &jwt.issuers[0];
    assert_eq!(corp.algorithms, [Algorithm::RS256, Algorithm::ES256]);
    assert_eq!(
        corp.claims,
        ClaimMapping {
            tenant: "custom:tenant".into(),
            subject: "sub".into(),
            role: Some("groups".into()),
            tier: Some("tier".into())
        }
    );
    assert_eq!(jwt.issuers[1].algorithms, Algorithm::ASYMMETRIC);
    assert_eq!(jwt.issuers[4].algorithms, [Algorithm::EdDSA]);
    assert_eq!(jwt.issuers[5].algorithms, [Algorithm::HS256]);
    assert_eq!(
        (
            jwt.cache_max_entries,
            jwt.unknown_kid_refresh_seconds,
            jwt.keys_refresh_seconds
        ),
        (2000, 5, 120)
    );
    assert_eq!(jwt.access.tenants["team-a"][0].models, ["anthropic.*"]);
    assert_eq!(
        config.audit_log.as_deref(),
        Some(Path::new("/var/log/gateway/audit.log"))
    );

    let sources: Vec<&str> = config.identity.iter().map(|s| s.source.label()).collect();
    assert_eq!(
        sources,
        [
            "jwks_uri",
            "discovery",
            "jwks_file",
            "jwks",
            "dev_signing_key",
            "hs256_secret_env"
        ]
    );
    assert_eq!(
        config.identity[2].source,
        KeySource::JwksFile(fixture_dir().join("keys/internal.jwks.json"))
    );
    assert_eq!(
        config.identity[4].source,
        KeySource::DevSigningKey(fixture_dir().join("../.run/dev-issuer.pem"))
    );
    assert_eq!(config.identity[0].refresh, Duration::from_secs(600));
    assert_eq!(config.identity[0].min_refresh, Duration::from_secs(60));
    // The shared secret never reaches Envoy's configuration.
    let json = serde_json::to_string(&config.filter).unwrap();
    assert!(!json.contains("a-development-secret"), "{json}");
}

#[test]
fn quotas_fixture_sets_every_quota_key() {
    use gateway_common::quota_config::{ContextKey::*, FailureMode, TokenDescriptor, TokenKind};
    use xds_server::quota::{StoreSettings, tree::Limit, window::Unit};

    let config = load(&Path::new(VALID).join("quotas.yaml"), &Overrides::default()).unwrap();
    let settings = config.quotas.as_ref().unwrap();
    assert_eq!(settings.domain, "bedrock-gateway");
    assert_eq!(settings.time_zone.name(), "Europe/Berlin");
    let StoreSettings::Redis(redis) = &settings.store else {
        panic!("redis store");
    };
    assert_eq!(redis.display_url, "redis://127.0.0.1:6379/0");
    assert_eq!(redis.key_prefix, "bgw:");
    assert_eq!(settings.ledger_max_rows_per_day, 2500);
    assert_eq!(
        settings.allowances.map(|a| (a.share_ppm, a.lifetime_ms)),
        Some((125_000, 500))
    );
    assert_eq!(
        redis.password.as_ref().map(|p| p.expose()),
        Some("fixture-redis-password")
    );
    let limit = |entries: &[(&str, &str)]| match settings.descriptors.find(entries) {
        Some(Limit::Rate(rate)) => Some((rate.unit, rate.requests_per_unit, rate.shadow_mode)),
        Some(Limit::Unlimited) => Some((Unit::Year, u64::MAX, false)),
        None => None,
    };
    assert_eq!(
        limit(&[("tenant", "team-b")]),
        Some((Unit::Minute, 60, false))
    );
    assert_eq!(
        limit(&[("tenant", "team-a")]),
        Some((Unit::Minute, 600, false))
    );
    assert_eq!(
        limit(&[("tenant", "platform-team")]),
        Some((Unit::Year, u64::MAX, false)),
        "unlimited"
    );
    assert_eq!(limit(&[("tier", "trial")]), Some((Unit::Day, 100, true)));
    assert_eq!(
        limit(&[("service", "bedrock-runtime"), ("operation", "InvokeModel")]),
        Some((Unit::Second, 50, false))
    );
    assert_eq!(
        limit(&[("tokens", "input")]),
        Some((Unit::Week, 500_000_000, false))
    );

    let quota = config.filter.quota.as_ref().unwrap();
    assert_eq!(quota.cluster, "gateway_quota");
    assert_eq!(quota.failure_mode, FailureMode::Closed);
    assert_eq!(
        (
            quota.timeout_ms,
            quota.default_max_output_tokens,
            quota.chars_per_token,
            quota.media_bytes_per_token,
            quota.report_buffer
        ),
        (250, 2048, 3, 64, 5000)
    );
    assert_eq!(
        quota.request_descriptors,
        [
            vec![Service, Operation],
            vec![Tenant],
            vec![Tenant, Model],
            vec![Tier]
        ]
    );
    assert_eq!(
        quota.token_descriptors,
        [
            TokenDescriptor {
                keys: vec![Tenant],
                kind: TokenKind::Output
            },
            TokenDescriptor {
                keys: vec![Tenant],
                kind: TokenKind::Total
            },
            TokenDescriptor {
                keys: vec![],
                kind: TokenKind::Input
            },
        ]
    );
    // The Redis password reaches neither Envoy nor the debug output.
    let json = serde_json::to_string(&config.filter).unwrap();
    assert!(!json.contains("fixture-redis-password"), "{json}");
    assert!(!format!("{config:?}").contains("fixture-redis-password"));
}
