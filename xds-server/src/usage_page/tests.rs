//! The CSV of the ledger, `/usage.csv`, `/usage/budgets` and `/usage.html` over the memory
//! store with a hand-set clock.

use std::{
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use envoy_types::pb::{
    envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry},
        service::ratelimit::v3::RateLimitRequest,
    },
    google::protobuf::UInt64Value,
};
use gateway_common::proto::UsageRecord;
use http::Method;

use super::*;
use crate::{
    admin::{from_store, respond},
    quota::testing::{ManualClock, quotas},
};

/// 2026-02-10T12:00:00Z (13:00 in Berlin).
const T0: i64 = 1_770_724_800;

const SECTION: &str = r#"
quotas:
  failure_mode: open
  time_zone: Europe/Berlin
  prices:
    models:
      - {model: "anthropic.*", input: 3, output: 15}
  descriptors:
    - key: tenant
      rate_limit: {unit: hour, requests_per_unit: 100}
      descriptors:
        - {key: tokens, value: cost, rate_limit: {unit: month, requests_per_unit: 5000000, name: monthly}}
        - {key: tokens, value: total, shadow_mode: true, rate_limit: {unit: day, requests_per_unit: 100000}}
    - key: tenant
      value: platform
      unlimited: true
    - key: tokens
      value: total
      rate_limit: {unit: month, requests_per_unit: 10000000}
"#;

const EVIL: &str = "=HYPERLINK(\"http://x\",\"a,b\")";

fn row(day: &str, tenant: &str, model: &str, n: u64) -> UsageRow {
    UsageRow {
        day: day.into(),
        tenant: tenant.into(),
        model: model.into(),
        requests: n,
        input_tokens: 10 * n,
        output_tokens: 20 * n,
        refusals: 3,
        gateway_refusals: 4,
        cache_read_tokens: 5,
        cache_write_tokens: 6,
        cost_nano_usd: 1_000_000_007,
        cost_usd: "1.000000007".into(),
    }
}

#[test]
fn csv_has_the_columns_in_order_and_escapes_callers_names() {
    let csv = usage_csv(&[
        row(
            "2026-02-01",
            "team-a",
            "anthropic.claude-3-haiku-20240307-v1:0",
            1,
        ),
        row("2026-02-02", EVIL, "model, with \"quotes\"\nand a line", 2),
        row("2026-02-03", "-1+2", "@cmd", 3),
        row("2026-02-04", "<img src=x onerror=alert(1)>", "", 4),
    ]);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "day,tenant,model,requests,input_tokens,output_tokens,cache_read_tokens,\
         cache_write_tokens,cost_usd,refusals,gateway_refusals"
    );
    assert_eq!(
        lines[1],
        "2026-02-01,team-a,anthropic.claude-3-haiku-20240307-v1:0,1,10,20,5,6,1.000000007,3,4"
    );
    // The quoted line break stays inside its field: the record spans two lines of text.
    assert_eq!(
        lines[2],
        "2026-02-02,\"'=HYPERLINK(\"\"http://x\"\",\"\"a,b\"\")\",\"model, with \"\"quotes\"\"\nand a line\",2,20,40,5,6,1.000000007,3,4"
    );
    assert_eq!(
        lines[3],
        "2026-02-03,'-1+2,'@cmd,3,30,60,5,6,1.000000007,3,4"
    );
    assert_eq!(
        lines[4],
        "2026-02-04,<img src=x onerror=alert(1)>,,4,40,80,5,6,1.000000007,3,4"
    );
    assert_eq!(lines[5], "");
    assert_eq!(lines.len(), 6);
    // An empty ledger is the header alone.
    assert_eq!(usage_csv(&[]), format!("{}\r\n", CSV_COLUMNS.join(",")));
}

fn engine() -> (Arc<ManualClock>, QuotaEngine) {
    let clock = ManualClock::at(T0);
    let engine = QuotaEngine::new(clock.clone());
    engine.apply(Some(&quotas(SECTION).0)).unwrap();
    (clock, engine)
}

fn at(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs())
}

fn descriptor(entries: &[(&str, &str)], hits: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        hits_addend: Some(UInt64Value { value: hits }),
        ..Default::default()
    }
}

fn record(tenant: &str, model: &str, cost_nano_usd: u64, refused: bool) -> UsageRecord {
    UsageRecord {
        tenant: tenant.into(),
        model: model.into(),
        operation: "Converse".into(),
        service: "bedrock-runtime".into(),
        admitted_at_unix_seconds: T0,
        input_tokens: if refused { 0 } else { 100 },
        output_tokens: if refused { 0 } else { 40 },
        cost_nano_usd: if refused { 0 } else { cost_nano_usd },
        refused,
        ..Default::default()
    }
}

async fn filled() -> (Arc<ManualClock>, QuotaEngine) {
    let (clock, engine) = engine();
    let request = RateLimitRequest {
        domain: "bedrock-gateway".into(),
        descriptors: vec![
            descriptor(&[("tenant", "team-a")], 1),
            descriptor(&[("tenant", "team-a"), ("tokens", "cost")], 1234),
            descriptor(&[("tenant", "team-a"), ("tokens", "total")], 0),
            descriptor(&[("tokens", "total")], 500),
        ],
        hits_addend: 0,
    };
    let response = engine.should_rate_limit(&request).await.unwrap();
    assert_eq!(response.overall_code, 1, "{response:?}");
    engine
        .report_usage(
            "r1",
            &[
                record("team-a", "anthropic.claude-3-haiku", 2_100_000, false),
                record(EVIL, "anthropic.claude-3-haiku", 7, false),
                record(EVIL, "anthropic.claude-3-haiku", 0, true),
            ],
            &[],
        )
        .await
        .unwrap();
    (clock, engine)
}

#[tokio::test]
async fn csv_answers_the_ledger_as_an_attachment() {
    let (_clock, engine) = filled().await;
    let answer = csv(&engine, Some("from=2026-02-01&to=2026-02-10")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.content_type, "text/csv; charset=utf-8");
    assert_eq!(
        answer.headers,
        vec![
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"usage-2026-02-01-2026-02-10.csv\"".to_string()
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ]
    );
    let rows = engine
        .usage(&UsageQuery::new("", "2026-02-01", "2026-02-10", engine.today()).unwrap())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(answer.body, usage_csv(&rows));
    assert!(
        answer.body.contains(
            "2026-02-10,\"'=HYPERLINK(\"\"http://x\"\",\"\"a,b\"\")\",anthropic.claude-3-haiku,1,100,40,0,0,0.000000007,1,0\r\n"
        ),
        "{}",
        answer.body
    );

    // Without parameters: today, as /usage.
    let today = csv(&engine, None).await;
    assert_eq!(today.body, answer.body);
    assert!(
        today.headers[0]
            .1
            .contains("usage-2026-02-10-2026-02-10.csv")
    );

    // /usage's errors.
    for bad in [
        "from=2026-02-31",
        "to=2026-02-01&from=2026-02-02",
        "page=2",
        "tenant=a&tenant=b",
    ] {
        let answer = csv(&engine, Some(bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.content_type, "text/plain; charset=utf-8");
        assert!(answer.headers.is_empty());
    }
    let without = QuotaEngine::for_tests();
    let answer = csv(&without, None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.body,
        "quotas are not configured (no `quotas` section)\n"
    );
}

#[tokio::test]
async fn budgets_show_each_tenants_limits_and_counters() {
    let (_clock, engine) = filled().await;
    // One second later: the counters are read, not charged.
    let answer = budgets(&engine, None, at(T0 + 1)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.content_type, "application/json");
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["time_zone"], "Europe/Berlin");
    assert_eq!(json["now"], "2026-02-10T12:00:01Z");
    assert_eq!(json["today"], "2026-02-10");
    assert_eq!(
        json["month"],
        serde_json::json!({"from": "2026-02-01", "to": "2026-02-10"})
    );
    let tenants: Vec<&str> = json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    // Sorted as strings: `=` before `t`.
    assert_eq!(tenants, [EVIL, "team-a"]);
    let team_a = &json["tenants"][1]["budgets"];
    assert_eq!(
        team_a[0],
        serde_json::json!({
            "kind": "requests", "measure": "requests", "unlimited": false, "unit": "hour",
            "limit": 100, "name": null, "shadow_mode": false,
            "window_start": "2026-02-10T12:00:00Z", "window_end": "2026-02-10T13:00:00Z",
            "used": 1,
        })
    );
    assert_eq!(
        team_a[1],
        serde_json::json!({
            "kind": "total", "measure": "tokens", "unlimited": false, "unit": "day",
            "limit": 100000, "name": null, "shadow_mode": true,
            // Berlin's day.
            "window_start": "2026-02-09T23:00:00Z", "window_end": "2026-02-10T23:00:00Z",
            "used": 0,
        })
    );
    assert_eq!(
        team_a[2],
        serde_json::json!({
            "kind": "cost", "measure": "micro_usd", "unlimited": false, "unit": "month",
            "limit": 5000000, "name": "monthly", "shadow_mode": false,
            "window_start": "2026-01-31T23:00:00Z", "window_end": "2026-02-28T23:00:00Z",
            "used": 1234,
        })
    );
    assert_eq!(team_a.as_array().unwrap().len(), 3);
    // The other tenant has the same limits, its own counters.
    let evil = &json["tenants"][0]["budgets"];
    assert_eq!(
        evil.as_array()
            .unwrap()
            .iter()
            .map(|b| (b["kind"].as_str().unwrap(), b["used"].as_u64().unwrap()))
            .collect::<Vec<_>>(),
        [("requests", 0), ("total", 0), ("cost", 0)]
    );
    assert_eq!(
        json["everyone"],
        serde_json::json!([{
            "kind": "total", "measure": "tokens", "unlimited": false, "unit": "month",
            "limit": 10000000, "name": null, "shadow_mode": false,
            "window_start": "2026-01-31T23:00:00Z", "window_end": "2026-02-28T23:00:00Z",
            "used": 500,
        }])
    );

    // One tenant, even without usage: here an unlimited one.
    let answer = budgets(&engine, Some("tenant=platform"), at(T0)).await;
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        json["tenants"],
        serde_json::json!([{"tenant": "platform", "budgets": [{
            "kind": "requests", "measure": "requests", "unlimited": true, "unit": null,
            "limit": null, "name": null, "shadow_mode": false, "window_start": null,
            "window_end": null, "used": null,
        }]}])
    );

    // Reading counted nothing: the next admission sees the same counts.
    let again = budgets(&engine, Some("tenant=team-a"), at(T0 + 2)).await;
    let json: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(json["tenants"][0]["budgets"][0]["used"], 1);
    assert_eq!(json["tenants"][0]["budgets"][2]["used"], 1234);

    for bad in ["from=2026-02-01", "tenant=a&tenant=b"] {
        let answer = budgets(&engine, Some(bad), at(T0)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let without = QuotaEngine::for_tests();
    let answer = budgets(&without, None, at(T0)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.content_type, "text/plain; charset=utf-8");
}

#[tokio::test]
async fn budgets_of_an_empty_ledger_list_no_tenant() {
    let (_clock, engine) = engine();
    let answer = budgets(&engine, None, at(T0)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(json["tenants"], serde_json::json!([]));
    assert_eq!(json["everyone"][0]["used"], 0);
}

#[test]
fn the_page_is_self_contained_and_its_script_allowed_by_hash() {
    let answer = page();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "text/html; charset=utf-8");
    let header = |name: HeaderName| {
        answer
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    let csp = header(header::CONTENT_SECURITY_POLICY);
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // The hashes are those of the page's one script and one style.
    let script = PAGE
        .split("<script>")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
    assert!(
        csp.contains(&format!("script-src 'sha256-{digest}'")),
        "{csp}"
    );
    assert!(script.contains("textContent"));
    assert_eq!(PAGE.matches("<script").count(), 1);
    assert_eq!(PAGE.matches("<style").count(), 1);
    // Nothing from elsewhere, and never data as markup.
    for banned in [
        "<link",
        " src=",
        "https://",
        "@import",
        "url(",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!PAGE.contains(banned), "{banned}");
    }
    // The only absolute URL is SVG's namespace name, never fetched.
    assert_eq!(PAGE.matches("http://").count(), 1);
    assert!(PAGE.contains("\"http://www.w3.org/2000/svg\""));
    // Its requests are relative, so the page works behind a path prefix too.
    for relative in ["\"usage/budgets\"", "\"usage?\"", "\"usage.csv?\""] {
        assert!(PAGE.contains(relative), "{relative}");
    }
}

#[tokio::test]
async fn the_admin_port_routes_the_new_paths() {
    let status = crate::status::ServerStatus::new(
        "gateway.yaml".into(),
        "abc".into(),
        UNIX_EPOCH,
        Arc::new(crate::credentials::CredentialStore::default()),
        crate::identity::KeyManager::for_tests(),
        crate::quota::QuotaEngine::for_tests(),
    );
    let page = respond(&Method::GET, "/usage.html", &status, UNIX_EPOCH).unwrap();
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert_eq!(page.body, PAGE);
    assert_eq!(
        respond(&Method::HEAD, "/usage.html", &status, UNIX_EPOCH).map(|a| a.status),
        Some(StatusCode::OK)
    );
    for path in ["/usage.csv", "/usage/budgets"] {
        assert_eq!(
            respond(&Method::GET, path, &status, UNIX_EPOCH),
            None,
            "{path}"
        );
        assert_eq!(
            respond(&Method::POST, path, &status, UNIX_EPOCH).map(|a| a.status),
            Some(StatusCode::METHOD_NOT_ALLOWED),
            "{path}"
        );
    }
    for path in ["/usage/page", "/usage.json", "/usage/", "/usage.html/x"] {
        assert_eq!(
            respond(&Method::GET, path, &status, UNIX_EPOCH).map(|a| a.status),
            Some(StatusCode::NOT_FOUND),
            "{path}"
        );
    }

    let (_clock, engine) = filled().await;
    let answer = from_store("/usage.csv", None, &engine, at(T0)).await;
    assert_eq!(answer.content_type, "text/csv; charset=utf-8");
    let answer = from_store("/usage/budgets", Some("tenant=team-a"), &engine, at(T0)).await;
    assert_eq!(answer.content_type, "application/json");
    assert!(answer.body.contains("\"used\":1234"), "{}", answer.body);
    let answer = from_store("/usage", None, &engine, at(T0)).await;
    assert_eq!(answer.content_type, "application/json");
    assert!(answer.body.starts_with("{\"rows\":["), "{}", answer.body);
}
