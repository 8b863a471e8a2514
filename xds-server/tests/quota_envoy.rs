//! Envoy's own HTTP rate limit filter (`envoy.filters.http.ratelimit`) against this server's
//! rate limit service: request-level hits, descriptors from route actions, and the
//! `x-ratelimit-*` headers Envoy builds from the statuses. Needs Envoy (`ENVOY_BIN`, or the
//! project's `.venv/bin/envoy`, which scripts/test.sh installs).

mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use support::{
    Server, WAIT,
    quota::{MEMORY, config},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `ENVOY_BIN`, else the project's `.venv/bin/envoy` (scripts/test.sh installs it): without
/// Envoy the test fails, it never passes unchecked.
fn envoy() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/envoy");
    assert!(
        venv.exists(),
        "no Envoy: set ENVOY_BIN, or run scripts/test.sh (it installs Envoy into .venv)"
    );
    venv
}

/// A listener whose requests for `/healthz` go to the server's admin port, limited per
/// `x-tenant` header by Envoy's rate limit filter asking the server's gRPC port.
fn bootstrap(grpc: SocketAddr, http: SocketAddr) -> String {
    format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: gateway
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route:
                  cluster: admin
                  rate_limits:
                  - actions:
                    - request_headers: {{header_name: x-tenant, descriptor_key: tenant}}
          http_filters:
          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: bedrock-gateway
              failure_mode_deny: true
              # Envoy's default, 20 ms, is too short for a debug build on a busy machine.
              timeout: 2s
              enable_x_ratelimit_headers: DRAFT_VERSION_03
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {{envoy_grpc: {{cluster_name: gateway_control}}}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: gateway_control
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: gateway_control
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {grpc_port}}}}}}}
  - name: admin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: admin
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {http_port}}}}}}}
"#,
        grpc_port = grpc.port(),
        http_port = http.port(),
    )
}

struct Envoy {
    child: Child,
    listener: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Envoy {
    async fn start(binary: &Path, bootstrap: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let admin_path = dir.path().join("admin.txt");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--disable-hot-restart", "-l", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        let admin: SocketAddr = loop {
            if let Some(address) = std::fs::read_to_string(&admin_path)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                break address;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Envoy did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // `/listeners` answers `gateway::127.0.0.1:PORT` once the listener is bound.
        let listener = loop {
            let (_, _, body) = get(admin, "/listeners", &[]).await;
            if let Some(address) = body
                .lines()
                .find_map(|line| line.strip_prefix("gateway::"))
                .and_then(|address| address.trim().parse().ok())
            {
                break address;
            }
            assert!(tokio::time::Instant::now() < deadline, "no listener");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            listener,
            _dir: dir,
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 GET: status, headers (lower-case names) and body.
async fn get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|status| status.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (code, headers, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoys_native_rate_limit_filter_is_served() {
    let binary = envoy();
    let server = Server::start(&config(2, MEMORY)).await;
    let envoy = Envoy::start(&binary, &bootstrap(server.grpc, server.http)).await;
    let team_a = [("x-tenant", "team-a")];

    for expected_remaining in ["1", "0"] {
        let (code, headers, body) = get(envoy.listener, "/healthz", &team_a).await;
        assert_eq!((code, body.as_str()), (200, "ok\n"), "{headers:?}");
        assert_eq!(
            headers.get("x-ratelimit-remaining").map(String::as_str),
            Some(expected_remaining),
            "{headers:?}"
        );
    }
    let (code, headers, _) = get(envoy.listener, "/healthz", &team_a).await;
    assert_eq!(code, 429, "{headers:?}");
    assert_eq!(
        headers.get("x-envoy-ratelimited").map(String::as_str),
        Some("true")
    );
    let limit = headers
        .get("x-ratelimit-limit")
        .cloned()
        .unwrap_or_default();
    assert!(limit.starts_with("2, 2;w=86400"), "{headers:?}");
    assert!(limit.contains("name=\"daily\""), "{headers:?}");
    let reset: u64 = headers
        .get("x-ratelimit-reset")
        .and_then(|r| r.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(reset <= 86_400, "{headers:?}");

    // Other tenants have their own counters; requests without the header are not limited.
    assert_eq!(
        get(envoy.listener, "/healthz", &[("x-tenant", "team-b")])
            .await
            .0,
        200
    );
    for _ in 0..3 {
        assert_eq!(get(envoy.listener, "/healthz", &[]).await.0, 200);
    }
    drop(envoy);
    server.stop().await.unwrap();
}
