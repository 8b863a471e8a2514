//! The `xds-server` binary: `serve`'s startup line and signals, `check-credentials`.

mod support;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use gateway_common::proto::GetSigningCredentialsRequest;
use xds_server::control_api::gateway_control_client::GatewayControlClient;

const BINARY: &str = env!("CARGO_BIN_EXE_xds-server");
const KEY_ID: &str = "AKIDCLITESTKEY";
const SECRET: &str = "cli-test-secret-access-key";

/// A command with no AWS configuration from the machine: only what the test sets.
fn isolated(home: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "warn");
    command
}

#[test]
fn check_credentials_reports_the_provider_and_a_key_prefix_only() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path())
        .args(["check-credentials", "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "ok: credentials from EnvironmentVariable (access key id AKID…), do not expire\n"
    );
    for text in [&stdout, &stderr] {
        assert!(!text.contains(KEY_ID) && !text.contains(SECRET), "{text}");
    }
}

#[test]
fn check_credentials_fails_without_any() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path())
        .args([
            "check-credentials",
            "--region",
            "us-east-1",
            "--timeout-seconds",
            "20",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
}

#[tokio::test]
async fn serve_prints_its_addresses_and_hands_out_the_chain_s_credentials() {
    let home = tempfile::tempdir().unwrap();
    let mut child = isolated(home.path())
        .args(["serve", "--config"])
        .arg(support::fixture("valid/minimal.yaml"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--wasm-path", "filter.wasm", "--watch-interval-ms", "100"])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addresses: serde_json::Value = serde_json::from_str(&line).unwrap();
    let grpc: SocketAddr = addresses["grpc"].as_str().unwrap().parse().unwrap();
    let http: SocketAddr = addresses["http"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        line,
        format!("{{\"grpc\":\"{grpc}\",\"http\":\"{http}\"}}\n")
    );
    assert!(grpc.ip().is_loopback() && grpc.port() != 0 && http.port() != 0);

    assert_eq!(
        support::http_get(http, "/healthz").await,
        (200, "ok\n".into())
    );
    let (client, credentials) = signing_credentials(grpc).await;
    let credentials = credentials.expect("credentials from the environment provider");
    assert_eq!(credentials.access_key_id, KEY_ID);
    assert_eq!(credentials.secret_access_key, SECRET);
    assert_eq!(credentials.expires_at_unix_seconds, 0);

    // SIGTERM: a clean stop, even with a client still connected.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + support::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not stop on SIGTERM"
        );
        // Async: the connected client must keep answering HTTP/2 pings meanwhile.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    drop(client);
    // Nothing after the one line.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "");
}

#[test]
fn serve_refuses_a_bad_file_before_binding() {
    let home = tempfile::tempdir().unwrap();
    let output = isolated(home.path())
        .args(["serve", "--config"])
        .arg(support::fixture("invalid/region.yaml"))
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "no address line for a server that never ran"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "upstream.region: expected an AWS region name such as us-east-1, found \"moon\""
        ),
        "{stderr}"
    );
}

/// Starts `serve` on `config` with `env` (and nothing of the machine's AWS configuration);
/// returns the child, its gRPC and HTTP addresses.
fn serve_isolated(
    home: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, SocketAddr, SocketAddr) {
    let mut command = isolated(home);
    command
        .args(["serve", "--config"])
        .arg(config)
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--wasm-path", "filter.wasm", "--watch-interval-ms", "100"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: serde_json::Value = serde_json::from_str(&line).unwrap();
    let grpc = addresses["grpc"].as_str().unwrap().parse().unwrap();
    let http = addresses["http"].as_str().unwrap().parse().unwrap();
    (child, grpc, http)
}

/// Stops `child` with SIGTERM and returns what it logged.
fn stop(child: std::process::Child) -> String {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The first credentials `GetSigningCredentials` hands out within 5 seconds, and the client
/// that asked (kept connected while the caller needs it).
async fn signing_credentials(
    grpc: SocketAddr,
) -> (
    GatewayControlClient<tonic::transport::Channel>,
    Option<gateway_common::proto::SigningCredentials>,
) {
    let mut client = GatewayControlClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    for _ in 0..200 {
        if let Ok(answer) = client
            .get_signing_credentials(GetSigningCredentialsRequest::default())
            .await
        {
            return (client, Some(answer.into_inner()));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (client, None)
}

#[tokio::test]
async fn serve_signs_with_the_env_source_without_any_aws_credentials() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "upstream:\n  region: us-east-1\n  endpoint_url: http://127.0.0.1:4566\n  credentials: {source: env, access_key_id_env: EMU_KEY, secret_access_key_env: EMU_SECRET}\nauth: {mode: none}\n",
    )
    .unwrap();
    let (child, grpc, _http) = serve_isolated(
        home.path(),
        &config,
        &[("EMU_KEY", KEY_ID), ("EMU_SECRET", SECRET)],
    );
    let (client, credentials) = signing_credentials(grpc).await;
    let credentials = credentials.expect("credentials from upstream.credentials");
    assert_eq!(credentials.access_key_id, KEY_ID);
    assert_eq!(credentials.secret_access_key, SECRET);
    drop(client);

    // A reload that changes upstream.credentials applies the rest and says the source stays
    // until a restart: the env credentials keep being handed out.
    std::fs::write(
        &config,
        "upstream:\n  region: us-east-1\n  endpoint_url: http://127.0.0.1:4566\n  credentials: {source: aws_chain}\nauth: {mode: none}\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (client, again) = signing_credentials(grpc).await;
    assert_eq!(again.map(|c| c.access_key_id).as_deref(), Some(KEY_ID));
    drop(client);
    let log = stop(child);
    assert!(!log.contains(SECRET) && !log.contains(KEY_ID), "{log}");
    assert!(
        log.contains("upstream.credentials changed: it applies only when xds-server restarts"),
        "{log}"
    );
}

#[tokio::test]
async fn serve_without_aws_credentials_starts_and_reports_them_unavailable() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "upstream: {region: us-east-1, credentials: {source: aws_chain}}\nauth: {mode: none}\n",
    )
    .unwrap();
    let (child, grpc, http) = serve_isolated(home.path(), &config, &[]);
    let mut report = serde_json::Value::Null;
    for _ in 0..400 {
        let (code, body) = support::http_get(http, "/status").await;
        assert_eq!(code, 200, "{body}");
        report = serde_json::from_str(&body).unwrap();
        if !report["credentials"]["last_refresh_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let credentials = &report["credentials"];
    assert_eq!(credentials["available"], false, "{report}");
    let error = credentials["last_refresh_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.starts_with("no AWS credentials: "), "{report}");

    let mut client = GatewayControlClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let refused = client
        .get_signing_credentials(GetSigningCredentialsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(
        refused.message().contains("no AWS credentials"),
        "{refused:?}"
    );
    drop(client);
    let log = stop(child);
    assert!(log.contains("no AWS credentials"), "{log}");
}
