//! Quotas through the real server with a real `redis-server` on a free port: one limit shared
//! by two servers, counters and ledger that outlive a restart, a Redis outage.

mod support;

use gateway_common::proto::{GetUsageRequest, ReportUsageRequest};
use support::{
    Server, eventually,
    quota::{
        OK, OVER, ask, config, control_client, filter_request, rate_limit_client, record,
        redis_store, summary,
    },
    redis::RedisServer,
};
use tonic::Code as GrpcCode;

#[tokio::test]
async fn two_servers_on_one_redis_enforce_one_limit() {
    let redis = RedisServer::start().await;
    let config = config(5, &redis_store(&redis));
    let first = Server::start(&config).await;
    let second = Server::start(&config).await;
    let mut clients = [
        rate_limit_client(first.grpc).await,
        rate_limit_client(second.grpc).await,
    ];
    let mut admitted = 0;
    for i in 0..10 {
        let response = ask(&mut clients[i % 2], filter_request("team-a", 10)).await;
        if response.overall_code == OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    for client in &mut clients {
        let response = ask(client, filter_request("team-a", 0)).await;
        assert_eq!(summary(&response), (OVER, vec![(OVER, 0), (OK, 950)]));
    }
    let status = first.status().await;
    assert_eq!(status["quotas"]["store"], "redis");
    assert_eq!(status["quotas"]["redis_url"], redis.url());
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test]
async fn the_ledger_and_counters_outlive_a_restart_of_the_server() {
    let redis = RedisServer::start().await;
    let config = config(5, &redis_store(&redis));
    let server = Server::start(&config).await;
    assert_eq!(
        ask(
            &mut rate_limit_client(server.grpc).await,
            filter_request("team-a", 100)
        )
        .await
        .overall_code,
        OK
    );
    control_client(server.grpc)
        .await
        .report_usage(ReportUsageRequest {
            node_id: "test-envoy".into(),
            report_id: String::new(),
            records: vec![record("team-a", 100, 30, 20)],
            returned: Vec::new(),
        })
        .await
        .unwrap();
    server.stop().await.unwrap();

    let restarted = Server::start(&config).await;
    let rows = control_client(restarted.grpc)
        .await
        .get_usage(GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].tenant.as_str(),
            rows[0].requests,
            rows[0].input_tokens,
            rows[0].output_tokens
        ),
        ("team-a", 1, 30, 20)
    );
    assert_eq!(
        summary(
            &ask(
                &mut rate_limit_client(restarted.grpc).await,
                filter_request("team-a", 0)
            )
            .await
        ),
        (OK, vec![(OK, 3), (OK, 950)])
    );
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn redis_down_answers_unavailable_until_it_is_back() {
    let mut redis = RedisServer::start().await;
    let server = Server::start(&config(5, &redis_store(&redis))).await;
    let mut client = rate_limit_client(server.grpc).await;
    assert_eq!(
        ask(&mut client, filter_request("team-a", 1))
            .await
            .overall_code,
        OK
    );

    redis.stop();
    let error = client
        .should_rate_limit(filter_request("team-a", 1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), GrpcCode::Unavailable);
    assert!(
        error
            .message()
            .starts_with("quota store unavailable: redis: admit: "),
        "{}",
        error.message()
    );
    let status = server.status().await;
    assert_eq!(status["quotas"]["healthy"], false);
    assert!(status["quotas"]["last_store_error"].as_str().is_some());
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_quota_store_healthy 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("xds_server_quota_store_errors_total 0\n"),
        "{metrics}"
    );
    let (code, _) = server.get("/usage").await;
    assert_eq!(code, 503);

    redis.restart().await;
    eventually("decisions to come back", || async {
        client
            .clone()
            .should_rate_limit(filter_request("team-a", 1))
            .await
            .is_ok_and(|r| r.into_inner().overall_code == OK)
    })
    .await;
    assert_eq!(server.status().await["quotas"]["healthy"], true);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_report_resent_after_a_redis_outage_is_applied_once() {
    let mut redis = RedisServer::start().await;
    let server = Server::start(&config(5, &redis_store(&redis))).await;
    let mut control = control_client(server.grpc).await;
    let batch = ReportUsageRequest {
        node_id: "test-envoy".into(),
        report_id: "worker-2:0042".into(),
        records: vec![record("team-a", 0, 30, 20)],
        returned: Vec::new(),
    };
    redis.stop();
    let error = control.report_usage(batch.clone()).await.unwrap_err();
    assert_eq!(error.code(), GrpcCode::Unavailable);
    assert!(
        error
            .message()
            .starts_with("quota store unavailable: redis: report: "),
        "{}",
        error.message()
    );

    redis.restart().await;
    // The filter resends the batch, unchanged, until one delivery is confirmed; a confirmation
    // it never saw makes it send once more.
    eventually("the batch to be accepted", || async {
        control.clone().report_usage(batch.clone()).await.is_ok()
    })
    .await;
    control.report_usage(batch.clone()).await.unwrap();
    let rows = control
        .get_usage(GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        rows.iter()
            .map(|r| (r.tenant.as_str(), r.requests, r.input_tokens))
            .collect::<Vec<_>>(),
        [("team-a", 1, 30)]
    );
    // The 50 tokens it used are charged once.
    assert_eq!(
        summary(
            &ask(
                &mut rate_limit_client(server.grpc).await,
                filter_request("team-a", 0)
            )
            .await
        ),
        (OK, vec![(OK, 4), (OK, 950)])
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_quota_duplicate_reports_total 1\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_admission_redis_runs_after_the_server_gave_up_on_it_is_not_counted() {
    let redis = RedisServer::start().await;
    let server = Server::start(&config(5, &redis_store(&redis))).await;
    let mut client = rate_limit_client(server.grpc).await;
    // The health check (at start, then every 10 s) has measured the clocks.
    eventually("the clock offset measured", || async {
        server.status().await["quotas"]["store_clock_offset_ms"].is_i64()
    })
    .await;
    assert_eq!(
        ask(&mut client, filter_request("team-a", 0))
            .await
            .overall_code,
        OK
    );

    // Redis stalls: the admission waits in the connection, the server gives up after 2 s.
    redis.pause();
    let error = client
        .should_rate_limit(filter_request("team-a", 0))
        .await
        .unwrap_err();
    assert_eq!(error.code(), GrpcCode::Unavailable);
    // Redis runs it once it is back, past its deadline: it must not count.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    redis.resume();
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(
            ask(&mut client, filter_request("team-a", 0))
                .await
                .overall_code,
        );
    }
    assert_eq!(
        codes,
        [OK, OK, OK, OK, OVER],
        "limit 5: one counted before the stall, 4 after"
    );
    server.stop().await.unwrap();
}
