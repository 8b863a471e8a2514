//! Signing credentials: they come from xds-server's AWS credential chain, rotate without a
//! restart, survive a short absence of xds-server, and never leak.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gateway_e2e::{Credentials, StackOptions};

use crate::common::{MODEL, runtime_client, start, start_default, user_message};

async fn converse_ok(client: &aws_sdk_bedrockruntime::Client) {
    client
        .converse()
        .model_id(MODEL)
        .messages(user_message("ping"))
        .send()
        .await
        .expect("converse through the gateway");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_config_dump_logs_or_clients() {
    let stack = start_default();
    let client = runtime_client(&stack);
    converse_ok(&client).await;
    let dump = stack.envoy_admin_get("/config_dump?include_eds").unwrap();
    assert!(
        dump.contains("bedrock_gateway"),
        "the dump has the gateway config"
    );
    assert!(
        !dump.contains(&stack.secret_access_key),
        "the secret access key is in /config_dump"
    );
    let logs = stack.all_logs();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains(&stack.secret_access_key),
        "the secret access key is in a log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn temporary_credentials_rotate_without_interruption() {
    // The emulator issues credentials valid for 16 s through the ECS container endpoint that
    // aws-config's standard chain reads; requests keep succeeding across several rotations.
    let stack = start(StackOptions {
        credentials: Credentials::Temporary { ttl_seconds: 16 },
        ..StackOptions::default()
    });
    let client = runtime_client(&stack);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        converse_ok(&client).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen = stack.emulator_requests().unwrap();
    assert!(seen.iter().all(|r| r.signature_valid && r.status == 200));
    let keys: BTreeSet<_> = seen
        .iter()
        .filter_map(|r| r.access_key_id.clone())
        .collect();
    assert!(keys.len() >= 3, "expected rotations, saw keys {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("ASIA")), "{keys:?}");
    assert!(
        seen.iter()
            .all(|r| r.header("x-amz-security-token").is_some())
    );
    let dump = stack.envoy_admin_get("/config_dump").unwrap();
    for request in &seen {
        let token = request.header("x-amz-security-token").unwrap();
        assert!(!dump.contains(token), "a session token is in /config_dump");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_continues_while_xds_server_is_away() {
    let mut stack = start_default();
    let client = runtime_client(&stack);
    converse_ok(&client).await;
    stack.stop_xds();
    for _ in 0..5 {
        converse_ok(&client).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Back on the same port: Envoy reconnects and config changes flow again.
    stack.start_xds().unwrap();
    let mut config = stack.config().unwrap();
    config["upstream"]["services"] = serde_norway::from_str("[bedrock-runtime]").unwrap();
    stack.write_config(&config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) =
            crate::common::post(&stack, "/knowledgebases/K/retrieve", &[], "{}").await;
        if status == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not get the new config from the restarted xds-server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    converse_ok(&client).await;
}
