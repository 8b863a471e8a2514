//! The config file is the single source: edits reach Envoy without a restart, bad edits are
//! refused and the last good config keeps serving.

use std::time::Duration;

use serde_norway::Value as Yaml;

use crate::common::{post, start_default};

const RETRIEVE: &str = "/knowledgebases/KB1/retrieve";
const RETRIEVE_BODY: &str = r#"{"retrievalQuery":{"text":"what is a gateway"}}"#;

async fn retrieve_status(stack: &gateway_e2e::Stack) -> (u16, String) {
    let (status, _, body) = post(
        stack,
        RETRIEVE,
        &[("content-type", "application/json")],
        RETRIEVE_BODY,
    )
    .await;
    (status, body)
}

async fn wait_for_status(stack: &gateway_e2e::Stack, expected: u16) {
    for _ in 0..100 {
        if retrieve_status(stack).await.0 == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "retrieve never answered {expected}; last: {:?}",
        retrieve_status(stack).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_apply_without_restart_and_bad_edits_are_refused() {
    let stack = start_default();
    let envoy_pid = stack.envoy_pid();
    assert_eq!(retrieve_status(&stack).await.0, 200);

    // Disable bedrock-agent-runtime: Retrieve is now refused by the gateway itself.
    let mut config = stack.config().unwrap();
    config["upstream"]["services"] = serde_norway::from_str("[bedrock-runtime, bedrock]").unwrap();
    stack.write_config(&config).unwrap();
    wait_for_status(&stack, 400).await;
    let (_, body) = retrieve_status(&stack).await;
    assert!(body.contains("not enabled"), "{body}");

    // A bad edit: a typo in a key, then a bad value. Each is refused with file, key and
    // expectation, and the gateway keeps serving the last good config.
    let good = serde_norway::to_string(&config).unwrap();
    let rejected_before = stack.xds_status().unwrap()["rejected_reloads"]
        .as_u64()
        .unwrap_or(0);
    let cases = [
        (good.replace("upstream:", "upstreem:"), "upstreem"),
        (
            good.replace("region: us-east-1", "region: moon-1"),
            "upstream.region",
        ),
        ("listener: [unclosed".to_string(), "gateway.yaml"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        stack.write_config_text(text).unwrap();
        stack
            .wait_until(
                "the bad edit to be rejected",
                Duration::from_secs(10),
                || {
                    stack.xds_status().unwrap()["rejected_reloads"]
                        .as_u64()
                        .unwrap_or(0)
                        > rejected_before + i as u64
                },
            )
            .unwrap();
        let status = stack.xds_status().unwrap();
        let message = status["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("gateway.yaml") && message.contains(key),
            "{message}"
        );
        let (code, body) = retrieve_status(&stack).await;
        assert_eq!(code, 400, "still the last good config: {body}");
        let (code, _, body) = post(
            &stack,
            "/model/m/converse",
            &[],
            r#"{"messages":[{"role":"user","content":[{"text":"a"}]}]}"#,
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }

    // Fixing the file applies it.
    let mut fixed: Yaml = serde_norway::from_str(&good).unwrap();
    fixed["upstream"]["services"] =
        serde_norway::from_str("[bedrock-runtime, bedrock-agent-runtime]").unwrap();
    stack.write_config(&fixed).unwrap();
    wait_for_status(&stack, 200).await;
    assert_eq!(stack.envoy_pid(), envoy_pid, "Envoy was not restarted");
}

/// A change to the filter's configuration reaches requests on a connection that was open
/// before it (the filter comes by ECDS; a change inside the listener would apply only to new
/// connections while Envoy drains the old ones for up to its drain time).
#[tokio::test(flavor = "multi_thread")]
async fn edits_apply_to_connections_already_open() {
    let stack = start_default();
    let client = crate::common::http();
    let send = || async {
        client
            .post(format!("{}{RETRIEVE}", stack.gateway_url()))
            .header("content-type", "application/json")
            .body(RETRIEVE_BODY)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    };
    let connections = || {
        let stats = stack
            .envoy_admin_get("/stats?filter=^http.bedrock_gateway.downstream_cx_total$")
            .unwrap();
        stats
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(send().await, 200);
    let opened = connections();

    let mut config = stack.config().unwrap();
    config["upstream"]["services"] = serde_norway::from_str("[bedrock-runtime, bedrock]").unwrap();
    stack.write_config(&config).unwrap();
    let mut status = 200;
    for _ in 0..100 {
        status = send().await;
        if status == 400 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 400,
        "the open connection kept the old configuration"
    );
    assert_eq!(
        connections(),
        opened,
        "every request went on the first connection"
    );
}
