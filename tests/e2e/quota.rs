//! Quotas through real Envoy: per-tenant request limits with boto3-compatible throttling,
//! token budgets charged from streamed and non-streamed responses with reservations that
//! prevent overshoot, counters shared by two gateways through Redis, failure modes when the
//! rate limit service is away, and the usage ledger.

use std::time::{Duration, Instant};

use gateway_e2e::redis::Redis;
use gateway_e2e::{Stack, StackOptions};
use jwt_simple::prelude::{Claims, Duration as JwtDuration, HS256Key, MACLike};
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

use crate::common::{fresh_window, post, start};

const SECRET: &str = "a-quota-test-secret-of-at-least-32-bytes";

fn token(tenant: &str) -> String {
    let claims = Claims::with_custom_claims(json!({"tenant": tenant}), JwtDuration::from_mins(30))
        .with_issuer("local-dev")
        .with_audience("bedrock-gateway")
        .with_subject(format!("{tenant}-user"));
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims)
        .unwrap()
}

/// A gateway with tokens of a development issuer and the given `quotas` section.
fn stack(quotas: &str) -> Stack {
    let quotas: Yaml = serde_norway::from_str(quotas).unwrap();
    start(StackOptions {
        configure: Box::new(move |c| {
            let audit = c["auth"]["audit_log"].clone();
            c["auth"] = serde_norway::from_str(
                r#"
mode: jwt
issuers:
  - name: dev
    issuer: local-dev
    audiences: [bedrock-gateway]
    algorithms: [HS256]
    hs256_secret_env: GATEWAY_TEST_HS_SECRET
access:
  default: [{services: [bedrock-runtime, bedrock-agent-runtime]}]
"#,
            )
            .unwrap();
            c["auth"]["audit_log"] = audit;
            c["quotas"] = quotas.clone();
        }),
        xds_env: vec![("GATEWAY_TEST_HS_SECRET".into(), SECRET.into())],
        ..StackOptions::default()
    })
}

fn converse_body(text: &str, output_tokens: u64, max_tokens: u64) -> String {
    json!({
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
        "additionalModelRequestFields": {"emulator": {"output_tokens": output_tokens}}
    })
    .to_string()
}

async fn call(
    stack: &Stack,
    tenant: &str,
    path: &str,
    body: String,
) -> (u16, Option<String>, String) {
    let auth = format!("Bearer {}", token(tenant));
    post(
        stack,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

async fn converse(stack: &Stack, tenant: &str) -> u16 {
    call(
        stack,
        tenant,
        "/model/anthropic.claude-3-haiku/converse",
        converse_body("hi", 1, 10),
    )
    .await
    .0
}

/// The ledger rows of a tenant, once they add up to `requests` requests (reports are sent
/// asynchronously).
fn ledger(stack: &Stack, tenant: &str, requests: u64) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: Vec<Value> = stack.usage(&format!("tenant={tenant}")).unwrap()["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let seen: u64 = rows
            .iter()
            .map(|r| r["requests"].as_u64().unwrap_or(0) + r["refusals"].as_u64().unwrap_or(0))
            .sum();
        if seen >= requests || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_noisy_tenant_is_throttled_and_the_others_are_not() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: open\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 5}\n",
    );
    for i in 0..5 {
        assert_eq!(
            converse(&stack, "team-a").await,
            200,
            "request {i} within the limit"
        );
    }
    let auth = format!("Bearer {}", token("team-a"));
    let response = crate::common::http()
        .post(format!(
            "{}/model/anthropic.claude-3-haiku/converse",
            stack.gateway_url()
        ))
        .header("authorization", auth)
        .body(converse_body("hi", 1, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let headers = response.headers().clone();
    assert_eq!(headers["x-amzn-errortype"], "ThrottlingException");
    assert_eq!(headers["x-ratelimit-limit"], "5");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "retry-after {retry_after}"
    );
    for _ in 0..5 {
        assert_eq!(
            converse(&stack, "team-b").await,
            200,
            "another tenant is not affected"
        );
    }
    assert_eq!(converse(&stack, "team-a").await, 429);
    let rows = ledger(&stack, "team-a", 7);
    let (requests, refusals): (u64, u64) = rows.iter().fold((0, 0), |(r, f), row| {
        (
            r + row["requests"].as_u64().unwrap(),
            f + row["refusals"].as_u64().unwrap(),
        )
    });
    assert_eq!((requests, refusals), (5, 2), "{rows:?}");
    // The decisions went on the workers' decision streams, not a call each.
    let on_streams = stack.xds_metric("quota_stream_requests_total").unwrap();
    assert!(on_streams >= 10, "{on_streams} of 12 decisions on a stream");
    assert!(stack.xds_metric("quota_streams_opened_total").unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unary_transport_enforces_the_same_limits_with_a_call_per_request() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: closed\ntransport: unary\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 3}\n",
    );
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(converse(&stack, "team-a").await);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(converse(&stack, "team-b").await, 200);
    assert_eq!(stack.xds_metric("quota_decisions_total").unwrap(), 5);
    assert_eq!(stack.xds_metric("quota_stream_requests_total").unwrap(), 0);
    assert_eq!(stack.xds_metric("quota_streams_opened_total").unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_rate_limit_service_times_out_into_the_failure_mode() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: closed\ntimeout_ms: 300\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 100}\n",
    );
    assert_eq!(converse(&stack, "team-a").await, 200);
    // The service still holds its connections but answers nothing.
    let xds = stack.xds_pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &xds])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    let started = Instant::now();
    let (status, error_type, _) = call(
        &stack,
        "team-a",
        "/model/anthropic.claude-3-haiku/converse",
        converse_body("hi", 1, 10),
    )
    .await;
    let waited = started.elapsed();
    signal("-CONT");
    assert_eq!(
        (status, error_type.as_deref()),
        (503, Some("ServiceUnavailableException"))
    );
    // The timeout, give or take the tick that finds overdue decisions (a quarter of it).
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "refused after {waited:?}"
    );
    assert_eq!(converse(&stack, "team-a").await, 200);
    let stats = stack
        .envoy_admin_get("/stats?filter=quota_failures_closed")
        .unwrap();
    assert!(stats.contains("quota_failures_closed: 1"), "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_budget_is_spent_by_streamed_and_plain_responses_and_the_ledger_is_exact() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: closed\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: tokens\n        value: total\n        rate_limit: {unit: month, requests_per_unit: 100}\n",
    );
    let haiku = "/model/anthropic.claude-3-haiku";
    // Each request reserves its estimate (prompt characters / 4 + its output cap) and is
    // settled to the real count when its response ends; wait for that before the next one.
    // Converse: reserves 5 + 25, uses 3 + 20.
    let (status, _, body) = call(
        &stack,
        "team-a",
        &format!("{haiku}/converse"),
        converse_body("one two three", 20, 25),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    ledger(&stack, "team-a", 1);
    // ConverseStream: reserves 4 + 35, uses 2 + 30, read from the stream's metadata event.
    assert_eq!(
        call(
            &stack,
            "team-a",
            &format!("{haiku}/converse-stream"),
            converse_body("four five", 30, 35)
        )
        .await
        .0,
        200
    );
    ledger(&stack, "team-a", 2);
    // InvokeModel: reserves 7 + 10, uses 1 + 10, read from the token-count headers.
    let invoke = json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": [{"role": "user", "content": "six"}], "emulator": {"output_tokens": 20}});
    assert_eq!(
        call(
            &stack,
            "team-a",
            &format!("{haiku}/invoke"),
            invoke.to_string()
        )
        .await
        .0,
        200
    );
    ledger(&stack, "team-a", 3);
    // 23 + 32 + 11 = 66 used. Reserving 3 + 40 would go past 100: refused before it runs.
    let (status, error_type, _) = call(
        &stack,
        "team-a",
        &format!("{haiku}/converse"),
        converse_body("seven", 30, 40),
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (429, Some("ThrottlingException"))
    );
    // Reserving 3 + 30 fits; it uses 1 + 30: 97 used.
    assert_eq!(
        call(
            &stack,
            "team-a",
            &format!("{haiku}/converse-stream"),
            converse_body("eight", 30, 30)
        )
        .await
        .0,
        200
    );
    ledger(&stack, "team-a", 5);
    // CountTokens reserves nothing: it passes while the budget is not used up.
    let count = json!({"input": {"converse": {"messages": [{"role": "user", "content": [{"text": "x"}]}]}}}).to_string();
    assert_eq!(
        call(&stack, "team-a", &format!("{haiku}/count-tokens"), count)
            .await
            .0,
        200
    );
    // 2 + 3 more would exceed 100.
    assert_eq!(
        call(
            &stack,
            "team-a",
            &format!("{haiku}/converse"),
            converse_body("nine", 3, 3)
        )
        .await
        .0,
        429
    );

    let rows = ledger(&stack, "team-a", 7);
    let model = rows
        .iter()
        .find(|r| r["model"] == "anthropic.claude-3-haiku")
        .expect("a row for the model");
    assert_eq!(
        (model["requests"].as_u64(), model["refusals"].as_u64()),
        (Some(5), Some(2)),
        "{rows:?}"
    );
    assert_eq!(
        (
            model["input_tokens"].as_u64(),
            model["output_tokens"].as_u64()
        ),
        (Some(3 + 2 + 1 + 1), Some(20 + 30 + 10 + 30)),
        "the ledger has the emulator's exact counts: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_streams_cannot_overshoot_the_budget() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: closed\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: tokens\n        value: total\n        rate_limit: {unit: day, requests_per_unit: 100}\n",
    );
    // Ten streams start at once, each able to produce 30 tokens (and reserving 2 + 30):
    // charged after the fact, all ten would run and spend 310.
    let body = json!({
        "messages": [{"role": "user", "content": [{"text": "go"}]}],
        "inferenceConfig": {"maxTokens": 30},
        "additionalModelRequestFields": {"emulator": {"output_tokens": 30, "chunk_delay_ms": 100}}
    })
    .to_string();
    let requests = (0..10).map(|_| {
        call(
            &stack,
            "team-a",
            "/model/anthropic.claude-3-haiku/converse-stream",
            body.clone(),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, 10, "{statuses:?}");
    assert_eq!(
        admitted, 3,
        "three reservations of 32 fit in 100: {statuses:?}"
    );
    let rows = ledger(&stack, "team-a", 10);
    let used: u64 = rows
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
        .sum();
    assert!(used <= 100, "spent {used} of a budget of 100");
    assert_eq!(used, 3 * 31, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_enforce_one_limit() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let redis = Redis::start().unwrap();
    let quotas = format!(
        "failure_mode: closed\nstore: {{type: redis, url: \"{}\"}}\ndescriptors:\n  - key: tenant\n    rate_limit: {{unit: hour, requests_per_unit: 6}}\n",
        redis.url()
    );
    let first = stack(&quotas);
    let second = stack(&quotas);
    let mut statuses = Vec::new();
    for i in 0..10 {
        let gateway = if i % 2 == 0 { &first } else { &second };
        statuses.push(converse(gateway, "team-shared").await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(&statuses[6..], [429, 429, 429, 429]);
    // The ledger lives in Redis too: one xds-server sees what both gateways reported, and
    // still does after a restart.
    let rows = ledger(&first, "team-shared", 10);
    let totals = |rows: &[Value]| -> (u64, u64) {
        rows.iter().fold((0, 0), |(r, f), row| {
            (
                r + row["requests"].as_u64().unwrap(),
                f + row["refusals"].as_u64().unwrap(),
            )
        })
    };
    assert_eq!(totals(&rows), (6, 4), "{rows:?}");
    drop(second);
    let mut first = first;
    first.stop_xds();
    first.start_xds().unwrap();
    assert_eq!(totals(&ledger(&first, "team-shared", 10)), (6, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_modes_when_the_rate_limit_service_is_away() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 120);
    let limit =
        "descriptors:\n  - key: tenant\n    rate_limit: {unit: hour, requests_per_unit: 3}\n";
    let mut open = stack(&format!("failure_mode: open\n{limit}"));
    let mut closed = stack(&format!("failure_mode: closed\ntimeout_ms: 300\n{limit}"));
    assert_eq!(converse(&open, "team-a").await, 200);
    assert_eq!(converse(&closed, "team-a").await, 200);
    open.stop_xds();
    closed.stop_xds();
    // Open: served (credentials are cached), beyond the limit even, and counted.
    for _ in 0..4 {
        assert_eq!(converse(&open, "team-a").await, 200);
    }
    let stats = open
        .envoy_admin_get("/stats?filter=quota_failures")
        .unwrap();
    let failures: u64 = stats
        .lines()
        .find(|l| l.contains("quota_failures_open"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= 4, "{stats}");
    // Closed: refused with Bedrock's error.
    let (status, error_type, _) = call(
        &closed,
        "team-a",
        "/model/anthropic.claude-3-haiku/converse",
        converse_body("hi", 1, 10),
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (503, Some("ServiceUnavailableException"))
    );
    // Back: counting resumes (the in-memory counters started over).
    closed.start_xds().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while converse(&closed, "team-a").await != 200 {
        assert!(Instant::now() < deadline, "the gateway did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(converse(&closed, "team-a").await);
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_resent_while_redis_is_slow_is_counted_once() {
    fresh_window(3600, 120);
    let redis = Redis::start().unwrap();
    let quotas = format!(
        "failure_mode: open\nstore: {{type: redis, url: \"{}\"}}\ndescriptors:\n  - key: tenant\n    rate_limit: {{unit: hour, requests_per_unit: 1000}}\n",
        redis.url()
    );
    let quotas: Yaml = serde_norway::from_str(&quotas).unwrap();
    let stack = start(StackOptions {
        configure: Box::new(move |c| {
            let audit = c["auth"]["audit_log"].clone();
            c["auth"] = serde_norway::from_str(
                "mode: jwt\nissuers: [{name: dev, issuer: local-dev, audiences: [bedrock-gateway], algorithms: [HS256], hs256_secret_env: GATEWAY_TEST_HS_SECRET}]\naccess: {default: [{}]}",
            )
            .unwrap();
            c["auth"]["audit_log"] = audit;
            c["quotas"] = quotas.clone();
            // Reports time out quickly, and are sent again while Redis sleeps.
            c["filter"]["control_timeout_ms"] = 200.into();
        }),
        xds_env: vec![("GATEWAY_TEST_HS_SECRET".into(), SECRET.into())],
        ..StackOptions::default()
    });
    assert_eq!(converse(&stack, "team-warm").await, 200);
    // Redis answers every command half a second late, for about four seconds: decisions fail
    // open, and every report the workers send times out at the filter (200 ms) while
    // xds-server's script waits in Redis' queue and then runs. The filter sends the same batch
    // again, under the same id, until one attempt is confirmed.
    let stall = redis.stall(0.5, 8).unwrap();
    for _ in 0..3 {
        assert_eq!(converse(&stack, "team-once").await, 200);
    }
    stall.join().unwrap();
    let rows = ledger(&stack, "team-once", 3);
    // Give resent batches time to arrive (and be recognized).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows_after = ledger(&stack, "team-once", 3);
    assert_eq!(rows, rows_after);
    let requests: u64 = rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
    assert_eq!(requests, 3, "{rows:?}");
    assert!(
        stack.xds_metric("quota_duplicate_reports_total").unwrap() >= 1,
        "no batch was sent twice: the test did not test\n{}",
        stack.all_logs()
    );
}

/// A system prompt of `words` tokens (the emulator counts a word as a token) marked for
/// Bedrock's prompt cache, in Converse's form and in an Anthropic body's.
fn cached_system(words: usize) -> String {
    vec!["cacheable"; words].join(" ")
}

fn cached_converse(system: &str, text: &str) -> String {
    json!({
        "system": [{"text": system}, {"cachePoint": {"type": "default"}}],
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": 10},
        "additionalModelRequestFields": {"emulator": {"output_tokens": 5}}
    })
    .to_string()
}

fn cached_invoke(system: &str, text: &str) -> String {
    json!({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
        "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": text}],
        "emulator": {"output_tokens": 5}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_cache_tokens_reach_the_ledger_and_count_against_limits() {
    fresh_window(3600, 120);
    // A month's budget of tokens read from the cache, and one of every token billed.
    let stack = stack(
        "failure_mode: closed\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: tokens\n        value: cache_read\n        rate_limit: {unit: month, requests_per_unit: 320}\n      - key: tokens\n        value: total\n        rate_limit: {unit: month, requests_per_unit: 100000}\n",
    );
    let haiku = "/model/anthropic.claude-3-haiku";
    // Each API twice with one cached prefix of its own: the first call writes it, the second
    // reads it. Every answer's usage is read from where that API reports it (Converse body,
    // ConverseStream metadata event, InvokeModel headers, the stream's invocation metrics).
    let calls = [
        ("converse", cached_converse(&cached_system(10), "first")),
        (
            "converse-stream",
            cached_converse(&cached_system(11), "second"),
        ),
        ("invoke", cached_invoke(&cached_system(12), "third")),
        (
            "invoke-with-response-stream",
            cached_invoke(&cached_system(13), "fourth"),
        ),
    ];
    stack.clear_emulator_requests().unwrap();
    let mut done = 0;
    for (operation, body) in &calls {
        for _ in 0..2 {
            let (status, _, answer) = call(
                &stack,
                "team-a",
                &format!("{haiku}/{operation}"),
                body.clone(),
            )
            .await;
            assert_eq!(status, 200, "{operation}: {answer}");
            done += 1;
            ledger(&stack, "team-a", done);
        }
    }
    let seen = stack.emulator_requests().unwrap();
    assert_eq!(seen.len(), 8);
    let mut upstream = gateway_e2e::RecordedUsage::default();
    for (i, record) in seen.iter().enumerate() {
        let usage = record.usage.expect("the emulator reported usage");
        let (write, read) = (usage.cache_write_tokens, usage.cache_read_tokens);
        let prefix = 10 + (i as u64) / 2;
        assert_eq!(
            (write, read),
            if i % 2 == 0 { (prefix, 0) } else { (0, prefix) },
            "request {i} ({}): the first call writes, the second reads",
            record.path
        );
        upstream.input_tokens += usage.input_tokens;
        upstream.output_tokens += usage.output_tokens;
        upstream.cache_read_tokens += read;
        upstream.cache_write_tokens += write;
    }
    let rows = ledger(&stack, "team-a", 8);
    let row = rows
        .iter()
        .find(|r| r["model"] == "anthropic.claude-3-haiku")
        .expect("a row for the model");
    let column = |name: &str| row[name].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        (
            column("requests"),
            column("input_tokens"),
            column("output_tokens"),
            column("cache_read_tokens"),
            column("cache_write_tokens")
        ),
        (
            8,
            upstream.input_tokens,
            upstream.output_tokens,
            upstream.cache_read_tokens,
            upstream.cache_write_tokens
        ),
        "the ledger has what the upstream reported: {rows:?}"
    );

    // The cache_read budget: 10 + 11 + 12 + 13 = 46 read so far. A request reserves its
    // whole prompt estimate (at 4 characters a token, ~250 for 100 words) and settles to what
    // it read, so reads of 100 words fit until the counter plus the reservation passes 320.
    stack.clear_emulator_requests().unwrap();
    let big = cached_converse(&cached_system(100), "again");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _, _) =
            call(&stack, "team-a", &format!("{haiku}/converse"), big.clone()).await;
        statuses.push(status);
        if status == 200 {
            done += 1;
            ledger(&stack, "team-a", done);
        }
    }
    // Written (0 read), read (46 + 100), then 146 + ~250 > 320: refused, and refused again.
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "cache reads count against the budget"
    );
    assert_eq!(stack.emulator_requests().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_money_budget_refuses_what_it_cannot_cover_and_the_ledger_cost_is_exact() {
    fresh_window(3600, 120);
    // Claude 3 Haiku's list prices (USD per million tokens) as an example; a budget of 5000
    // micro-dollars ($0.005) a month; models without a price are refused.
    let stack = stack(
        "failure_mode: closed
prices:
  models:
    - {model: 'anthropic.claude-3-haiku*', input: 0.25, output: 1.25, cache_read: 0.025, cache_write: 0.3}
descriptors:
  - key: tenant
    descriptors:
      - key: tokens
        value: cost
        rate_limit: {unit: month, requests_per_unit: 5000}
",
    );
    const NANO: [u64; 4] = [250, 1250, 25, 300];
    let body = |max_tokens: u64, output: u64, delay: u64| {
        json!({
            "messages": [{"role": "user", "content": [{"text": "go"}]}],
            "inferenceConfig": {"maxTokens": max_tokens},
            "additionalModelRequestFields": {"emulator": {
                "output_tokens": output, "words_per_chunk": 100, "chunk_delay_ms": delay}}
        })
        .to_string()
    };
    let haiku = "/model/anthropic.claude-3-haiku-20240307-v1:0";

    // Eight streams at once, each able to cost 1000 output tokens x 1250 + its prompt at the
    // dearest prompt price: ~1251 micro-dollars reserved each, so three fit in 5000.
    let stream_path = format!("{haiku}/converse-stream");
    let streams = (0..8).map(|_| call(&stack, "team-a", &stream_path, body(1000, 800, 150)));
    let statuses: Vec<u16> = futures::future::join_all(streams)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        (
            statuses.iter().filter(|s| **s == 200).count(),
            statuses.iter().filter(|s| **s == 429).count()
        ),
        (3, 5),
        "{statuses:?}"
    );
    ledger(&stack, "team-a", 8);
    // Each stream cost 1 x 250 + 800 x 1250 = 1 000 250 nano, counted as 1001 micro: 3003.
    // Reserving 1251 more fits (4254); the next 1251 would not (5255), a smaller cap does.
    let mut sequence = Vec::new();
    for (max_tokens, output) in [(1000, 800), (1000, 800), (700, 500), (1000, 1)] {
        let (status, error_type, answer) = call(
            &stack,
            "team-a",
            &format!("{haiku}/converse"),
            body(max_tokens, output, 0),
        )
        .await;
        sequence.push((status, error_type));
        if status == 200 {
            ledger(&stack, "team-a", 9 + sequence.len() as u64 - 1);
        } else {
            assert_eq!(status, 429, "{answer}");
        }
    }
    let throttled = Some("ThrottlingException".to_string());
    assert_eq!(
        sequence,
        [
            (200, None),
            (429, throttled.clone()),
            (200, None),
            (429, throttled)
        ]
    );
    // A model without a price is refused, not counted as free.
    let (status, error_type, answer) = call(
        &stack,
        "team-a",
        "/model/amazon.nova-micro-v1:0/converse",
        body(10, 5, 0),
    )
    .await;
    assert_eq!(
        (status, error_type.as_deref()),
        (403, Some("AccessDeniedException")),
        "{answer}"
    );
    assert!(answer.contains("no price"), "{answer}");

    // The ledger's cost is the sum of price x tokens of what the upstream reported.
    let expected: u64 = stack
        .emulator_requests()
        .unwrap()
        .iter()
        .filter_map(|r| r.usage)
        .map(|u| {
            u.input_tokens * NANO[0]
                + u.output_tokens * NANO[1]
                + u.cache_read_tokens * NANO[2]
                + u.cache_write_tokens * NANO[3]
        })
        .sum();
    let rows = ledger(&stack, "team-a", 12);
    let row = rows
        .iter()
        .find(|r| r["model"] == "anthropic.claude-3-haiku-20240307-v1:0")
        .unwrap_or_else(|| panic!("a row for the model: {rows:?}"));
    assert_eq!(row["requests"].as_u64(), Some(5), "{rows:?}");
    assert_eq!(row["refusals"].as_u64(), Some(7), "{rows:?}");
    assert_eq!(row["cost_nano_usd"].as_u64(), Some(expected), "{rows:?}");
    assert_eq!(expected, 4 * 1_000_250 + 625_250);
    assert_eq!(row["cost_usd"], "0.004626250");
}

/// The value of the sample `name{labels}` in an OpenMetrics text (labels in their order).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn genai_metrics_count_a_known_sequence() {
    fresh_window(3600, 120);
    let stack = stack(
        "failure_mode: closed\ndescriptors:\n  - key: tenant\n    value: team-b\n    rate_limit: {unit: hour, requests_per_unit: 0}\n  - key: tenant\n    descriptors:\n      - key: tokens\n        value: total\n        rate_limit: {unit: month, requests_per_unit: 1000000}\n",
    );
    let haiku = "/model/anthropic.claude-3-haiku";
    for text in ["one two", "three four five"] {
        let (status, _, body) = call(
            &stack,
            "team-a",
            &format!("{haiku}/converse"),
            converse_body(text, 5, 10),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // A stream of 21 output tokens, one a chunk, 20 ms apart: the first token comes early,
    // the other 20 at about 20 ms each.
    let stream = json!({
        "messages": [{"role": "user", "content": [{"text": "go"}]}],
        "inferenceConfig": {"maxTokens": 30},
        "additionalModelRequestFields": {"emulator": {"output_tokens": 21, "words_per_chunk": 1, "chunk_delay_ms": 20}}
    });
    let (status, _, body) = call(
        &stack,
        "team-a",
        &format!("{haiku}/converse-stream"),
        stream.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // team-b's limit is 0: refused by the quota.
    let (status, _, _) = call(
        &stack,
        "team-b",
        &format!("{haiku}/converse"),
        converse_body("no", 1, 10),
    )
    .await;
    assert_eq!(status, 429);
    ledger(&stack, "team-a", 3);
    ledger(&stack, "team-b", 1);

    let model = r#"gen_ai_system="aws.bedrock",gen_ai_operation_name="Converse",gen_ai_request_model="anthropic.claude-3-haiku",tenant="team-a""#;
    let streamed = r#"gen_ai_system="aws.bedrock",gen_ai_operation_name="ConverseStream",gen_ai_request_model="anthropic.claude-3-haiku",tenant="team-a""#;
    let refused = r#"gen_ai_system="aws.bedrock",gen_ai_operation_name="Converse",gen_ai_request_model="anthropic.claude-3-haiku",tenant="team-b",outcome="refused_quota""#;
    let text = stack.xds_metrics_text().unwrap();
    let value = |name: &str, labels: &str| sample(&text, name, labels);
    // Two Converse calls: 2 + 3 input tokens, 5 + 5 output tokens.
    assert_eq!(
        value(
            "gen_ai_client_token_usage_sum",
            &format!(r#"{model},gen_ai_token_type="input""#)
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(
            "gen_ai_client_token_usage_count",
            &format!(r#"{model},gen_ai_token_type="output""#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            "gen_ai_client_token_usage_sum",
            &format!(r#"{model},gen_ai_token_type="output""#)
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            "gen_ai_client_token_usage_sum",
            &format!(r#"{streamed},gen_ai_token_type="output""#)
        ),
        Some(21.0)
    );
    assert_eq!(
        value(
            "gen_ai_client_operation_duration_seconds_count",
            &format!(r#"{model},outcome="ok""#)
        ),
        Some(2.0)
    );
    assert_eq!(
        value("gen_ai_client_operation_duration_seconds_count", refused),
        Some(1.0)
    );
    // The stream: one first token, early; the 20 after it about 20 ms apart.
    assert_eq!(
        value("gen_ai_server_time_to_first_token_seconds_count", streamed),
        Some(1.0)
    );
    let first = value("gen_ai_server_time_to_first_token_seconds_sum", streamed).unwrap();
    let duration = value(
        "gen_ai_client_operation_duration_seconds_sum",
        &format!(r#"{streamed},outcome="ok""#),
    )
    .unwrap();
    assert!(
        first > 0.0 && first < duration,
        "first {first} s, duration {duration} s"
    );
    assert!(duration >= 0.4, "21 chunks 20 ms apart: {duration} s");
    let per_token = value("gen_ai_server_time_per_output_token_seconds_sum", streamed).unwrap();
    assert!(
        (0.015..0.2).contains(&per_token),
        "about 20 ms a token: {per_token} s"
    );
    assert_eq!(
        value("gen_ai_server_time_to_first_token_seconds_count", model),
        None,
        "no first token without a stream"
    );
}

/// A counter of the gateway's Envoy (`wasmcustom.bedrock_gateway.NAME`), 0 before it counts.
fn filter_counter(stack: &Stack, name: &str) -> u64 {
    let stats = stack
        .envoy_admin_get(&format!("/stats?filter=bedrock_gateway.{name}$"))
        .unwrap();
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("wasmcustom.bedrock_gateway.{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn allowances_decide_in_the_workers_and_two_gateways_never_pass_one_limit() {
    // Counting in one window: never across an hour (or day, or month) boundary.
    fresh_window(3600, 180);
    let redis = Redis::start().unwrap();
    const LIMIT: usize = 48;
    let quotas = format!(
        "failure_mode: closed\nstore: {{type: redis, url: \"{}\"}}\nallowances: {{share: 0.25, lifetime_ms: 400}}\ndescriptors:\n  - key: tenant\n    rate_limit: {{unit: hour, requests_per_unit: {LIMIT}}}\n    descriptors:\n      - key: tokens\n        value: total\n        rate_limit: {{unit: month, requests_per_unit: 100000000}}\n",
        redis.url()
    );
    // Two gateways (two Envoy workers each) count in one Redis.
    let gateways = [stack(&quotas), stack(&quotas)];
    let admitted_locally = |gateways: &[Stack; 2]| -> u64 {
        gateways
            .iter()
            .map(|g| filter_counter(g, "quota_admitted_locally"))
            .sum()
    };

    // Far from the limit, most requests are decided in the workers, from allowances.
    let mut admitted = 0;
    for i in 0..16 {
        let status = converse(&gateways[i % 2], "team-lease").await;
        assert_eq!(status, 200, "request {i}");
        admitted += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while admitted_locally(&gateways) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let local = admitted_locally(&gateways);
    assert!(
        local >= 4,
        "{local} of 16 requests admitted from allowances"
    );
    let decisions: u64 = gateways
        .iter()
        .map(|g| g.xds_metric("quota_stream_requests_total").unwrap())
        .sum();
    assert!(
        decisions < 16 + 8,
        "{decisions} stream requests (decisions and refills) for 16 requests"
    );
    assert!(
        gateways[0]
            .xds_metric("quota_allowances_granted_total")
            .unwrap()
            >= 1
    );

    // A burst from many connections on both gateways: never more than the limit, whoever
    // holds allowances.
    let burst = (0..64).map(|i| {
        let gateway = &gateways[i % 2];
        async move { converse(gateway, "team-lease").await }
    });
    let statuses = futures::future::join_all(burst).await;
    let burst_admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    admitted += burst_admitted;
    eprintln!(
        "allowances: {local} of 16 admitted in the workers ({decisions} stream requests); burst: {burst_admitted} of 64 admitted"
    );
    assert!(admitted <= LIMIT, "{admitted} admitted, limit {LIMIT}");

    // What the workers held and did not spend goes back within the allowances' lifetime
    // and a report: the limit is reached exactly, and then refuses on both gateways.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while admitted < LIMIT && Instant::now() < deadline {
        if converse(&gateways[i % 2], "team-lease").await == 200 {
            admitted += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        i += 1;
    }
    assert_eq!(
        admitted, LIMIT,
        "every unit of the limit was spent in the end"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for gateway in &gateways {
        for _ in 0..3 {
            assert_eq!(converse(gateway, "team-lease").await, 429, "over the limit");
        }
    }
    // The ledger counts what was admitted, and the returns reached the counters once.
    let requests =
        |rows: &[Value]| -> u64 { rows.iter().map(|r| r["requests"].as_u64().unwrap()).sum() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rows = ledger(&gateways[0], "team-lease", LIMIT as u64);
    while requests(&rows) < LIMIT as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        rows = ledger(&gateways[0], "team-lease", LIMIT as u64);
    }
    assert_eq!(requests(&rows), LIMIT as u64, "{rows:?}");
    let returned: u64 = gateways
        .iter()
        .map(|g| {
            g.xds_metric("quota_allowance_units_returned_total")
                .unwrap()
        })
        .sum();
    assert!(returned > 0, "unspent units were given back");
    // Another tenant is not held back by this one's allowances.
    assert_eq!(converse(&gateways[1], "team-other").await, 200);
}
