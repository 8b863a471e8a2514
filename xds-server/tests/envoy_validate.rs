//! `xds-server render` writes a static bootstrap that Envoy itself accepts
//! (`envoy --mode validate`). Envoy comes from `ENVOY_BIN` or the project's `.venv/bin/envoy`
//! (scripts/test.sh installs it): without it these tests fail, they never pass unchecked.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const BINARY: &str = env!("CARGO_BIN_EXE_xds-server");

fn envoy() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    assert!(
        venv.exists(),
        "no Envoy to validate with: set ENVOY_BIN, or run scripts/test.sh (it installs Envoy into .venv)"
    );
    venv
}

/// The smallest module Envoy's V8 runtime loads as a proxy-wasm plugin: memory, the ABI
/// version marker and an allocator. Lets the generated resources be validated without the
/// real filter being built.
fn stub_filter() -> Vec<u8> {
    fn section(id: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![id, u8::try_from(content.len()).unwrap()];
        out.extend_from_slice(content);
        out
    }
    fn name(n: &str) -> Vec<u8> {
        let mut out = vec![u8::try_from(n.len()).unwrap()];
        out.extend_from_slice(n.as_bytes());
        out
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: () -> () and (i32) -> i32.
    module.extend(section(1, &[2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f]));
    module.extend(section(3, &[2, 0, 1]));
    module.extend(section(5, &[1, 0, 1]));
    let mut exports = vec![3];
    exports.extend(name("memory"));
    exports.extend([2, 0]);
    exports.extend(name("proxy_abi_version_0_2_1"));
    exports.extend([0, 0]);
    exports.extend(name("proxy_on_memory_allocate"));
    exports.extend([0, 1]);
    module.extend(section(7, &exports));
    // Bodies: `end`, and `i32.const 1024; end`.
    module.extend(section(10, &[2, 2, 0, 0x0b, 5, 0, 0x41, 0x80, 0x08, 0x0b]));
    module
}

fn render_and_validate(envoy: &Path, config_text: &str, wasm: &Path, control: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, config_text).unwrap();
    let out = dir.path().join("bootstrap.pb");
    let rendered = Command::new(BINARY)
        .args(["render", "--config"])
        .arg(&config)
        .args(["--control-address", control, "--out"])
        .arg(&out)
        .arg("--wasm-path")
        .arg(wasm)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&rendered.stdout),
        format!("ok: {}\n", out.display())
    );

    let validated = Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&validated.stdout);
    let stderr = String::from_utf8_lossy(&validated.stderr);
    assert!(
        validated.status.success(),
        "envoy rejected the bootstrap for\n{config_text}\n{stdout}{stderr}"
    );
    assert!(stdout.contains("OK"), "{stdout}");
}

fn configs() -> Vec<String> {
    let tail = "filter:\n  wasm_path: unused.wasm\nauth:\n  mode: none\n";
    vec![
        // AWS endpoints, one TLS cluster per service, every default.
        format!("upstream:\n  region: us-east-1\n{tail}"),
        // An emulator over plain HTTP, on an IP address.
        format!(
            "listener:\n  address: 127.0.0.1\n  port: 18080\nupstream:\n  region: us-west-2\n  endpoint_url: http://127.0.0.1:4566\n{tail}"
        ),
        // Every key set; a named TLS endpoint.
        // Token authentication: the filter's JSON grows an `authentication` section, the
        // listener writes its audit log to a file.
        "upstream:\n  region: us-east-1\nfilter:\n  wasm_path: unused.wasm\nauth:\n  issuers:\n    - name: local-dev\n      issuer: http://127.0.0.1/local-dev\n      audiences: [bedrock-gateway]\n      dev_signing_key: dev-issuer.pem\n      claims: {role: groups}\n      token_header: {name: x-api-token}\n      tenants: [\"dev-*\"]\n      roles: [admin]\n    - name: corp\n      issuer: https://idp.example.com/\n      audiences: [bedrock-gateway]\n      jwks_uri: https://idp.example.com/jwks\n      tenants: [\"team-*\"]\n  access:\n    default: [{services: [bedrock-runtime, bedrock-agent-runtime], operations: [\"*\"], models: [\"*\"]}]\n    roles: {admin: [{services: [\"*\"]}]}\n  audit_log: /tmp/bedrock-gateway-audit.log\n".to_string(),
        format!(
            "listener:\n  address: \"::\"\n  port: 10000\nupstream:\n  region: eu-central-1\n  endpoint_url: https://bedrock.internal.example:8443\n  services: [bedrock-runtime, bedrock-agent-runtime]\n  ca_file: /etc/ssl/certs/ca-certificates.crt\n  connect_timeout_ms: 2500\n  request_timeout_seconds: 600\n  stream_idle_timeout_seconds: 120\n  max_request_body_bytes: 52428800\n  path_rules:\n    - method: POST\n      path: /model/*/invoke\n      service: bedrock-runtime\n    - path: /knowledgebases/**\n      service: bedrock-agent-runtime\nfilter:\n  wasm_path: unused.wasm\n  credentials_refresh_seconds: 30\n  control_timeout_ms: 500\nauth:\n  mode: none\n"
        ),
    ]
}

#[test]
fn envoy_accepts_the_rendered_bootstrap() {
    let envoy = envoy();
    assert!(
        Path::new("/etc/ssl/certs/ca-certificates.crt").exists(),
        "/etc/ssl/certs/ca-certificates.crt (the default ca_file) is missing: install ca-certificates"
    );
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("stub.wasm");
    std::fs::write(&stub, stub_filter()).unwrap();
    for config in configs() {
        render_and_validate(&envoy, &config, &stub, "127.0.0.1:18000");
    }
    // A control address by name (STRICT_DNS).
    render_and_validate(&envoy, &configs()[0], &stub, "xds-server.gateway.svc:18000");
}

#[test]
fn envoy_and_the_real_filter_accept_the_rendered_bootstrap() {
    let envoy = envoy();
    let filter = std::env::var_os("FILTER_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip1/release/bedrock_gateway_filter.wasm")
        });
    assert!(
        filter.exists(),
        "the filter is not built ({}): run scripts/test.sh, or build it and set FILTER_WASM",
        filter.display()
    );
    // The filter parses its JSON configuration while Envoy validates: a schema mismatch
    // between this server and the filter fails here.
    for config in configs() {
        render_and_validate(&envoy, &config, &filter, "127.0.0.1:18000");
    }
}
