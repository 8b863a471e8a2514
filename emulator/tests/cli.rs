//! The `bedrock-emulator` binary: the startup line, logs on stderr without secrets, a clean
//! exit on SIGTERM, and configuration errors that name the option.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BINARY: &str = env!("CARGO_BIN_EXE_bedrock-emulator");

/// Kills the child on drop if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(args: &[&str]) -> (Running, serde_json::Value) {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("EMULATOR_ACCESS_KEY_ID", AKID)
        .env("EMULATOR_SECRET_ACCESS_KEY", SECRET)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a startup line");
    let startup = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
    (Running(child), startup)
}

fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn startup_line_logs_and_sigterm() {
    let (mut running, startup) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--control-listen",
        "127.0.0.1:0",
        "--region",
        "us-east-1",
        "--any-host",
    ]);
    let object = startup.as_object().unwrap();
    assert_eq!(object.len(), 2, "{startup}");
    let api: SocketAddr = startup["listen"].as_str().unwrap().parse().unwrap();
    let control: SocketAddr = startup["control"].as_str().unwrap().parse().unwrap();
    assert!(api.ip().is_loopback() && api.port() != 0);
    assert!(control.ip().is_loopback() && control.port() != 0);

    let path = format!("/model/{MODEL_IN_PATH}/converse");
    let reply = send(
        request(
            api,
            None,
            &path,
            &converse_body("cli"),
            Some(&Signing::default()),
        ),
        false,
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let health = http::Request::get(format!("http://{control}/health"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(send(health, false).await.body, "ok");

    let pid = running.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = wait_for_exit(&mut running.0, Duration::from_secs(10));
    assert!(status.success(), "{status}");

    let mut stderr = String::new();
    running
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("api request"), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("Converse"), "{stderr}");
    assert!(
        !stderr.contains(SECRET),
        "the secret leaked into the logs: {stderr}"
    );
}

#[test]
fn control_is_null_without_control_listen() {
    let (mut running, startup) = spawn(&["--listen", "127.0.0.1:0"]);
    assert_eq!(startup["control"], serde_json::Value::Null);
    running.0.kill().unwrap();
    running.0.wait().unwrap();
}

#[test]
fn bad_configuration_is_reported() {
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--region", "moon-1a"])
        .env_remove("EMULATOR_ACCESS_KEY_ID")
        .env_remove("EMULATOR_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "nothing is announced before the configuration is valid"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--region: expected an AWS region name such as us-east-1, got \"moon-1a\""),
        "{stderr}"
    );

    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--access-key-id", "AKID"])
        .env_remove("EMULATOR_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--secret-access-key"));
}
