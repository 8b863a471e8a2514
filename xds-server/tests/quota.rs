//! Quotas through the real server on 127.0.0.1:0 with the memory store: Envoy's rate limit
//! service over gRPC, reloads, usage reports, the ledger over gRPC and HTTP.

mod support;

use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use gateway_common::proto::{
    GetUsageRequest, RateLimitStreamRequest, ReportUsageRequest, UsageRecord,
};
use prost::Message as _;
use support::{
    Server, eventually,
    quota::{
        MEMORY, OK, OVER, ask, config, control_client, decision_facts, filter_request,
        filter_request_windows, now, rate_limit_client, record, summary,
    },
};
use tonic::Code as GrpcCode;

#[tokio::test]
async fn limits_are_enforced_with_full_statuses_and_survive_reloads() {
    let server = Server::start(&config(3, MEMORY)).await;
    let mut client = rate_limit_client(server.grpc).await;
    for remaining in [2, 1, 0] {
        let response = ask(&mut client, filter_request("team-a", 10)).await;
        assert_eq!(response.overall_code, OK);
        assert_eq!(response.statuses[0].limit_remaining, remaining);
    }
    let refused = ask(&mut client, filter_request("team-a", 10)).await;
    assert_eq!(summary(&refused), (OVER, vec![(OVER, 0), (OK, 970)]));
    let status = &refused.statuses[0];
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.name.as_str(), limit.requests_per_unit, limit.unit),
        ("daily", 3, 4)
    );
    let reset = status.duration_until_reset.unwrap();
    assert!((0..=86_400).contains(&reset.seconds), "{reset:?}");
    let month = refused.statuses[1].current_limit.as_ref().unwrap();
    assert_eq!((month.requests_per_unit, month.unit), (1000, 5));
    // Another tenant has its own counters.
    assert_eq!(
        summary(&ask(&mut client, filter_request("team-b", 10)).await),
        (OK, vec![(OK, 2), (OK, 990)])
    );
    // Another domain is not this service's business.
    let other = ask(
        &mut client,
        RateLimitRequest {
            domain: "elsewhere".into(),
            ..filter_request("team-a", 10)
        },
    )
    .await;
    assert_eq!((other.overall_code, other.statuses.len()), (OK, 0));

    // Raise the limit: the three requests already made still count. (Envoy's resources do
    // not change, so the snapshot version stays: the reload shows in the counter.)
    let version = server.status().await["config_version"].clone();
    server.write_config(&config(5, MEMORY));
    eventually("the reload", || async {
        server
            .get("/metrics")
            .await
            .1
            .contains("xds_server_config_reloads_total 1\n")
    })
    .await;
    assert_eq!(server.status().await["config_version"], version);
    assert_eq!(
        summary(&ask(&mut client, filter_request("team-a", 10)).await),
        (OK, vec![(OK, 1), (OK, 960)])
    );

    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "xds_server_quota_decisions_total 6\n",
        "xds_server_quota_over_limit_total 1\n",
        "xds_server_quota_store_errors_total 0\n",
        "xds_server_quota_store_healthy 1\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    let status = server.status().await;
    assert_eq!(
        status["quotas"],
        serde_json::json!({"domain": "bedrock-gateway", "store": "memory", "redis_url": null,
            "healthy": true, "last_store_error": null, "time_zone": "UTC",
            "store_clock_offset_ms": null})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn usage_reports_settle_reservations_and_fill_the_ledger() {
    let server = Server::start(&config(100, MEMORY)).await;
    let mut limits = rate_limit_client(server.grpc).await;
    let mut control = control_client(server.grpc).await;

    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 600)).await),
        (OK, vec![(OK, 99), (OK, 400)])
    );
    let refused = UsageRecord {
        refused: true,
        input_tokens: 0,
        output_tokens: 0,
        adjustments: vec![],
        ..record("team-a", 0, 0, 0)
    };
    control
        .report_usage(ReportUsageRequest {
            node_id: "test-envoy".into(),
            report_id: String::new(),
            records: vec![
                record("team-a", 600, 150, 50),
                refused,
                record("team b", 0, 7, 3),
            ],
            returned: Vec::new(),
        })
        .await
        .unwrap();
    // 600 reserved, 200 used: 400 given back.
    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 0)).await),
        (OK, vec![(OK, 98), (OK, 800)])
    );

    let rows = control
        .get_usage(GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    let today = rows[0].day.clone();
    assert_eq!(today.len(), 10, "{today}");
    let summarized: Vec<(&str, &str, u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.tenant.as_str(),
                r.model.as_str(),
                r.requests,
                r.input_tokens,
                r.output_tokens,
                r.refusals,
            )
        })
        .collect();
    assert_eq!(
        summarized,
        [
            ("team b", "anthropic.claude-3-haiku", 1, 7, 3, 0),
            ("team-a", "anthropic.claude-3-haiku", 1, 150, 50, 1),
        ]
    );
    let only = control
        .get_usage(GetUsageRequest {
            tenant: "team-a".into(),
            from_day: today.clone(),
            to_day: today.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only.rows.len(), 1);
    assert_eq!(
        (
            only.rows[0].cache_read_input_tokens,
            only.rows[0].cache_write_input_tokens
        ),
        (75, 1),
        "the prompt-cache counts reach the ledger"
    );
    let bad = control
        .get_usage(GetUsageRequest {
            from_day: "yesterday".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), GrpcCode::InvalidArgument);
    assert_eq!(
        bad.message(),
        "from: expected a day as YYYY-MM-DD, found \"yesterday\""
    );

    let (code, body) = server
        .get(&format!("/usage?tenant=team%20b&from={today}&to={today}"))
        .await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"rows": [{"day": today, "tenant": "team b",
            "model": "anthropic.claude-3-haiku", "requests": 1, "input_tokens": 7,
            "output_tokens": 3, "refusals": 0, "gateway_refusals": 0,
            "cache_read_tokens": 3, "cache_write_tokens": 1, "cost_nano_usd": 3_000_000,
            "cost_usd": "0.003000000"}]})
    );
    let (code, body) = server.get("/usage?to=2026-13-01").await;
    assert_eq!(
        (code, body.as_str()),
        (
            400,
            "to: expected a day as YYYY-MM-DD, found \"2026-13-01\"\n"
        )
    );
    let (code, _) = server.get("/usage?tenant=a&since=2026-01-01").await;
    assert_eq!(code, 400);

    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "xds_server_quota_usage_records_total 3\n",
        "xds_server_quota_refusals_reported_total 1\n",
        // `team b` reserved nothing: what it used is charged to its (new) counter.
        "xds_server_quota_adjustments_total 2\n",
        "xds_server_quota_adjustments_dropped_total 0\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn without_quotas_everything_is_allowed_and_there_is_no_ledger() {
    let server = Server::start(&support::config_text("")).await;
    let response = ask(
        &mut rate_limit_client(server.grpc).await,
        filter_request("team-a", 10),
    )
    .await;
    assert_eq!((response.overall_code, response.statuses.len()), (OK, 0));
    let error = control_client(server.grpc)
        .await
        .report_usage(ReportUsageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), GrpcCode::FailedPrecondition);
    let (code, _) = server.get("/usage").await;
    assert_eq!(code, 404);
    assert_eq!(server.status().await["quotas"], serde_json::Value::Null);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_decision_stream_answers_as_should_rate_limit_does_on_the_same_counters() {
    let server = Server::start(&config(3, MEMORY)).await;
    let (requests, inbound) = tokio::sync::mpsc::channel(16);
    let mut answers = control_client(server.grpc)
        .await
        .stream_rate_limit(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    let mut decide = async |id: u64, request: Vec<u8>| {
        requests
            .send(RateLimitStreamRequest {
                id,
                request,
                allowances: false,
            })
            .await
            .unwrap();
        answers.message().await.unwrap().unwrap()
    };
    for (id, remaining) in [(10, 2), (11, 1)] {
        let answer = decide(id, filter_request("team-a", 10).encode_to_vec()).await;
        assert_eq!((answer.id, answer.status_code), (id, 0), "{answer:?}");
        let response = RateLimitResponse::decode(answer.response.as_slice()).unwrap();
        assert_eq!(response.overall_code, OK);
        assert_eq!(response.statuses[0].limit_remaining, remaining);
    }
    // The unary call and the stream count on the same counters.
    let unary = ask(
        &mut rate_limit_client(server.grpc).await,
        filter_request("team-a", 10),
    )
    .await;
    assert_eq!(summary(&unary), (OK, vec![(OK, 0), (OK, 970)]));
    let answer = decide(12, filter_request("team-a", 10).encode_to_vec()).await;
    let refused = RateLimitResponse::decode(answer.response.as_slice()).unwrap();
    assert_eq!(
        (answer.id, summary(&refused)),
        (12, (OVER, vec![(OVER, 0), (OK, 970)]))
    );
    // A request that is not a RateLimitRequest fails alone; the stream goes on.
    let bad = decide(13, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(
        (bad.id, bad.status_code),
        (13, GrpcCode::InvalidArgument as u32)
    );
    assert!(bad.status_message.contains("RateLimitRequest"), "{bad:?}");
    let answer = decide(14, filter_request("team-b", 10).encode_to_vec()).await;
    assert_eq!((answer.id, answer.status_code), (14, 0));
    // Ending our side ends the stream once everything is answered.
    drop(requests);
    assert!(answers.message().await.unwrap().is_none());
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("xds_server_quota_streams_opened_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("xds_server_quota_stream_requests_total 5\n"),
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn decisions_name_the_windows_they_counted_in_on_both_transports() {
    let server = Server::start(&config(1, MEMORY)).await;
    let mut client = rate_limit_client(server.grpc).await;
    let before = now();
    let admitted = ask(&mut client, filter_request("team-a", 10)).await;
    let (windows, decided_at) = decision_facts(&admitted);
    let decided_at = decided_at.expect("decided_at");
    assert!((before..=now()).contains(&decided_at), "{decided_at}");
    assert_eq!(windows, filter_request_windows(decided_at));

    // Refused, on the stream: the same facts.
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    let mut answers = control_client(server.grpc)
        .await
        .stream_rate_limit(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(RateLimitStreamRequest {
            id: 1,
            request: filter_request("team-a", 10).encode_to_vec(),
            allowances: false,
        })
        .await
        .unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    let refused = RateLimitResponse::decode(answer.response.as_slice()).unwrap();
    assert_eq!(refused.overall_code, OVER);
    let (windows, decided_at) = decision_facts(&refused);
    assert_eq!(windows, filter_request_windows(decided_at.unwrap()));

    // Nothing is counted for another domain.
    let other = ask(
        &mut client,
        RateLimitRequest {
            domain: "elsewhere".into(),
            ..filter_request("team-a", 10)
        },
    )
    .await;
    let (windows, decided_at) = decision_facts(&other);
    assert_eq!(windows, [None, None]);
    assert!(decided_at.is_some());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_usage_report_is_applied_once_per_id() {
    let server = Server::start(&config(100, MEMORY)).await;
    let mut limits = rate_limit_client(server.grpc).await;
    let mut control = control_client(server.grpc).await;
    let decision = ask(&mut limits, filter_request("team-a", 600)).await;
    assert_eq!(summary(&decision), (OK, vec![(OK, 99), (OK, 400)]));
    let (windows, _) = decision_facts(&decision);

    // Used 200 of 600; a second request was admitted and refused by the gateway.
    let mut used = record("team-a", 600, 150, 50);
    used.adjustments[0].window = windows[1].clone().unwrap();
    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 400)).await),
        (OK, vec![(OK, 98), (OK, 0)])
    );
    let mut refused = record("team-a", 400, 0, 0);
    refused.refused_by_gateway = true;
    refused.adjustments[0].window = windows[1].clone().unwrap();
    refused
        .adjustments
        .push(gateway_common::proto::CounterAdjustment {
            entries: vec![gateway_common::proto::DescriptorEntry {
                key: "tenant".into(),
                value: "team-a".into(),
            }],
            delta: -1,
            window: windows[0].clone().unwrap(),
        });
    let batch = ReportUsageRequest {
        node_id: "test-envoy".into(),
        report_id: "worker-1:0001".into(),
        records: vec![used, refused],
        returned: Vec::new(),
    };
    // Delivered twice (the first answer was lost, say): applied once.
    control.report_usage(batch.clone()).await.unwrap();
    control.report_usage(batch.clone()).await.unwrap();
    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 0)).await),
        (OK, vec![(OK, 98), (OK, 800)])
    );
    let rows = control
        .get_usage(GetUsageRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].requests,
            rows[0].input_tokens,
            rows[0].refusals,
            rows[0].gateway_refusals
        ),
        (1, 150, 0, 1)
    );

    let too_long = control
        .report_usage(ReportUsageRequest {
            report_id: "x".repeat(129),
            ..batch
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), GrpcCode::InvalidArgument);
    assert_eq!(
        too_long.message(),
        "report_id: expected at most 128 bytes, found 129"
    );
    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "xds_server_quota_duplicate_reports_total 1\n",
        "xds_server_quota_usage_records_total 2\n",
        "xds_server_quota_gateway_refusals_reported_total 1\n",
        "xds_server_quota_adjustments_total 2\n",
        "xds_server_quota_ledger_rows_collapsed_total 0\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_decision_stream_grants_allowances_and_reports_give_them_back_once() {
    let section = config(1000, MEMORY).replace(
        "failure_mode: closed",
        "failure_mode: closed\n  allowances: {share: 0.0625, lifetime_ms: 1000}",
    );
    let server = Server::start(&section).await;
    let mut limits = rate_limit_client(server.grpc).await;
    let mut control = control_client(server.grpc).await;
    let (requests, inbound) = tokio::sync::mpsc::channel(4);
    let mut answers = control
        .stream_rate_limit(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(RateLimitStreamRequest {
            id: 7,
            request: filter_request("team-a", 10).encode_to_vec(),
            allowances: true,
        })
        .await
        .unwrap();
    let answer = answers.message().await.unwrap().unwrap();
    assert_eq!((answer.id, answer.status_code), (7, 0), "{answer:?}");
    let response = RateLimitResponse::decode(answer.response.as_slice()).unwrap();
    let (windows, _) = decision_facts(&response);
    // 999 requests left: 62; 990 tokens left: 61 (at least twice the 10 reserved).
    let granted: Vec<(u64, Option<String>, bool)> = answer
        .allowances
        .iter()
        .map(|a| (a.units, Some(a.window.clone()), a.uncounted))
        .collect();
    assert_eq!(
        granted,
        [
            (62, windows[0].clone(), false),
            (61, windows[1].clone(), false)
        ]
    );
    assert!(
        answer
            .allowances
            .iter()
            .all(|a| (1..=1000).contains(&a.valid_for_ms)),
        "{answer:?}"
    );
    // Charged ahead: the unary call (which never grants) sees them counted.
    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 0)).await),
        (OK, vec![(OK, 1000 - 1 - 62 - 1), (OK, 1000 - 10 - 61)])
    );

    // What was not spent goes back, once however often the batch is delivered.
    let returned = answer
        .allowances
        .iter()
        .map(|a| gateway_common::proto::CounterAdjustment {
            entries: a.entries.clone(),
            delta: -i64::try_from(a.units).unwrap(),
            window: a.window.clone(),
        })
        .collect();
    let batch = ReportUsageRequest {
        node_id: "test-envoy".into(),
        report_id: "worker-1:0009".into(),
        records: Vec::new(),
        returned,
    };
    control.report_usage(batch.clone()).await.unwrap();
    control.report_usage(batch).await.unwrap();
    assert_eq!(
        summary(&ask(&mut limits, filter_request("team-a", 0)).await),
        (OK, vec![(OK, 1000 - 3), (OK, 1000 - 10)])
    );
    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "xds_server_quota_allowances_granted_total 2\n",
        "xds_server_quota_allowance_units_granted_total 123\n",
        "xds_server_quota_allowance_units_returned_total 123\n",
        "xds_server_quota_allowances_withdrawn_total 0\n",
        "xds_server_quota_usage_records_total 0\n",
    ] {
        assert!(metrics.contains(line), "{line}{metrics}");
    }
    drop(requests);
    server.stop().await.unwrap();
}
