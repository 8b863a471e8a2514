//! The real server on 127.0.0.1:0: ADS over gRPC, config file edits, the admin port and
//! the control API.

mod support;

use std::time::Duration;

use envoy_types::pb::{
    envoy::service::discovery::v3::DiscoveryRequest, google::rpc::Status as RpcStatus,
};
use gateway_common::proto::GetSigningCredentialsRequest;
use support::{Ads, Server, WATCH_INTERVAL, config_text, eventually, static_credentials};
use xds_server::{
    ServeError,
    control_api::gateway_control_client::GatewayControlClient,
    xds::type_url::{CLUSTER, LISTENER, ROUTE_CONFIGURATION},
};

const ROUTES: &[&str] = &["bedrock_gateway"];

#[tokio::test]
async fn ads_pushes_edits_and_keeps_the_last_good_config_through_bad_ones() {
    let server = Server::start(&config_text("")).await;
    let mut ads = Ads::connect(server.grpc).await;

    let clusters = ads.subscribe(CLUSTER, &[]).await;
    assert_eq!(clusters.resources.len(), 4);
    let listeners = ads.subscribe(LISTENER, &[]).await;
    assert_eq!(listeners.resources.len(), 1);
    let routes = ads.subscribe(ROUTE_CONFIGURATION, ROUTES).await;
    assert_eq!(routes.resources.len(), 1);
    let status = server.status().await;
    assert_eq!(status["xds_streams"], 1);
    let first_version = status["config_version"].clone();

    // A route-only edit re-sends RDS and nothing else.
    server.write_config(&config_text("  request_timeout_seconds: 120\n"));
    let pushed = ads.recv().await;
    assert_eq!(pushed.type_url, ROUTE_CONFIGURATION);
    assert_ne!(pushed.version_info, routes.version_info);
    ads.ack(&pushed, ROUTES).await;
    ads.expect_silence(WATCH_INTERVAL * 6).await;
    let edited_version = server.status().await["config_version"].clone();
    assert_ne!(edited_version, first_version);

    // A broken edit: nothing is pushed, the error is reported with file and key.
    server.write_config(
        &config_text("  request_timeout_seconds: 120\n").replace("us-east-1", "moon"),
    );
    eventually("the rejected reload", || async {
        server.status().await["rejected_reloads"] == 1
    })
    .await;
    ads.expect_silence(WATCH_INTERVAL * 6).await;
    let status = server.status().await;
    let message = status["last_error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "{}: upstream.region: expected an AWS region name such as us-east-1, found \"moon\"",
            server.config_path.display()
        )
    );
    assert!(status["last_error"]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        status["config_version"], edited_version,
        "the last good config still serves"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_config_rejected_reloads_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("xds_server_config_last_reload_failed 1\n"),
        "{metrics}"
    );

    // Fixed, with a cluster change: pushes resume.
    server.write_config(&config_text(
        "  request_timeout_seconds: 120\n  connect_timeout_ms: 750\n",
    ));
    let pushed = ads.recv().await;
    assert_eq!(pushed.type_url, CLUSTER);
    assert_ne!(pushed.version_info, clusters.version_info);
    ads.ack(&pushed, &[]).await;
    ads.expect_silence(WATCH_INTERVAL * 6).await;
    let status = server.status().await;
    assert_eq!(status["last_error"], serde_json::Value::Null);
    assert_eq!(status["rejected_reloads"], 1);

    drop(ads);
    eventually("the stream to close", || async {
        server.status().await["xds_streams"] == 0
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_nack_is_counted_and_not_answered() {
    let server = Server::start(&config_text("")).await;
    let mut ads = Ads::connect(server.grpc).await;
    ads.send(LISTENER, "", "", &[]).await;
    let listeners = ads.recv().await;
    ads.send_request(DiscoveryRequest {
        type_url: LISTENER.into(),
        response_nonce: listeners.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "Failed to load Wasm code".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    eventually("the NACK to be counted", || async {
        server.status().await["nacks"] == 1
    })
    .await;
    ads.expect_silence(WATCH_INTERVAL * 4).await;
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_xds_nacks_total 1\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn delta_xds_is_refused() {
    let server = Server::start(&config_text("")).await;
    let mut client = envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::connect(
        format!("http://{}", server.grpc),
    )
    .await
    .unwrap();
    let error = client
        .delta_aggregated_resources(tokio_stream::empty())
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unimplemented);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn signing_credentials_come_from_the_source() {
    let server = Server::start(&config_text("")).await;
    let mut client = GatewayControlClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let expected = static_credentials();
    let mut answer = None;
    for _ in 0..100 {
        match client
            .get_signing_credentials(GetSigningCredentialsRequest {
                node_id: "test-envoy".into(),
                current_access_key_id: String::new(),
            })
            .await
        {
            Ok(response) => {
                answer = Some(response.into_inner());
                break;
            }
            // Before the refresher's first fetch.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(status) => panic!("{status}"),
        }
    }
    let answer = answer.expect("credentials within 2 seconds");
    assert_eq!(answer.access_key_id, expected.access_key_id);
    assert_eq!(
        answer.secret_access_key,
        expected.secret_access_key.expose()
    );
    assert_eq!(answer.session_token, "static-session-token");
    assert_eq!(answer.expires_at_unix_seconds, 4_000_000_000);
    // The server next refreshes long before 4e9: capped by credentials_refresh_seconds.
    assert_eq!(answer.refresh_after_seconds, 60);

    let status = server.status().await;
    assert_eq!(status["credentials"]["available"], true);
    assert_eq!(status["credentials"]["access_key_id_prefix"], "AKID");
    assert_eq!(status["credentials"]["expires_at"], "2096-10-02T07:06:40Z");
    let (_, body) = server.get("/status").await;
    assert!(!body.contains("static-secret-key") && !body.contains("AKIDSTATICTEST"));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admin_endpoints() {
    let server = Server::start(&config_text("")).await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(server.get("/nothing").await.0, 404);
    let status = server.status().await;
    assert_eq!(
        status["config_file"],
        server.config_path.display().to_string()
    );
    assert_eq!(status["config_version"].as_str().unwrap().len(), 16);
    assert!(status["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(status["rejected_reloads"], 0);
    let (code, metrics) = server.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE xds_server_xds_streams gauge\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_file_at_startup_is_fatal() {
    let server = Server::start(&config_text("").replace("us-east-1", "moon")).await;
    let path = server.config_path.clone();
    match server.stop().await {
        Err(ServeError::Config(error)) => assert_eq!(
            error.to_string(),
            format!(
                "{}: upstream.region: expected an AWS region name such as us-east-1, found \"moon\"",
                path.display()
            )
        ),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
