use super::*;

fn record(tenant: &str, model: &str, operation: &str) -> UsageRecord {
    UsageRecord {
        tenant: tenant.into(),
        model: model.into(),
        operation: operation.into(),
        service: "bedrock-runtime".into(),
        status_code: 200,
        ..Default::default()
    }
}

fn sample(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_known_sequence_gives_known_histograms() {
    let metrics = GenAiMetrics::default();
    let stream = UsageRecord {
        input_tokens: 10,
        output_tokens: 101,
        cache_read_input_tokens: 300,
        duration_us: 1_250_000,
        time_to_first_output_us: 250_000,
        ..record("team-a", "anthropic.claude-3-haiku", "ConverseStream")
    };
    let plain = UsageRecord {
        input_tokens: 5,
        output_tokens: 7,
        duration_us: 30_000,
        ..record("team-a", "anthropic.claude-3-haiku", "Converse")
    };
    let refused = UsageRecord {
        refused: true,
        duration_us: 2_000,
        ..record("team-b", "amazon.nova-pro-v1:0", "Converse")
    };
    let failed = UsageRecord {
        status_code: 400,
        duration_us: 5_000,
        ..record("team-b", "amazon.nova-pro-v1:0", "Converse")
    };
    metrics.record(&[stream, plain, refused, failed]);
    let text = metrics.encode();
    let labels = r#"gen_ai_system="aws.bedrock",gen_ai_operation_name="ConverseStream",gen_ai_request_model="anthropic.claude-3-haiku",tenant="team-a""#;
    assert!(
        text.contains(&format!(
            "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"output\"}} 101.0"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"cache_read\"}} 300.0"
    )));
    assert!(
        !text.contains(&format!("{labels},gen_ai_token_type=\"cache_write\"")),
        "no cache write: no series"
    );
    assert!(text.contains(&format!(
        "gen_ai_server_time_to_first_token_seconds_sum{{{labels}}} 0.25"
    )));
    // (1.25 - 0.25) s over the 100 tokens after the first.
    assert!(text.contains(&format!(
        "gen_ai_server_time_per_output_token_seconds_sum{{{labels}}} 0.01"
    )));
    assert!(text.contains(&format!(
        "gen_ai_client_operation_duration_seconds_count{{{labels},outcome=\"ok\"}} 1"
    )));
    let nova = r#"gen_ai_system="aws.bedrock",gen_ai_operation_name="Converse",gen_ai_request_model="amazon.nova-pro-v1:0",tenant="team-b""#;
    for outcome in ["refused_quota", "error"] {
        assert!(text.contains(&format!(
            "gen_ai_client_operation_duration_seconds_count{{{nova},outcome=\"{outcome}\"}} 1"
        )));
    }
    assert!(
        !text.contains(&format!("gen_ai_client_token_usage_count{{{nova}")),
        "refused and failed requests used no tokens"
    );
    assert!(
        sample(&text, "gen_ai_server_time_to_first_token_seconds_count").len() == 1,
        "only the stream has a first token"
    );
    assert!(!text.contains("# EOF"));
}

#[test]
fn label_values_are_bounded_and_escaped() {
    let metrics = GenAiMetrics::with_bounds(2, 1);
    let records: Vec<_> = ["a", "b", "c", "d\"\n"]
        .iter()
        .map(|tenant| UsageRecord {
            output_tokens: 1,
            ..record(tenant, &format!("model-{tenant}"), "Converse")
        })
        .collect();
    metrics.record(&records);
    let text = metrics.encode();
    let tenants: HashSet<&str> = text
        .lines()
        .filter_map(|line| line.split("tenant=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(tenants, HashSet::from(["a", "b", "other"]), "{text}");
    assert!(text.contains("gen_ai_request_model=\"model-a\""));
    assert!(text.contains("gen_ai_request_model=\"other\""));
    assert!(!text.contains("model-b"));
    // A value beyond the bounds never reaches the text; one within is escaped.
    let metrics = GenAiMetrics::with_bounds(5, 5);
    metrics.record(&[UsageRecord {
        output_tokens: 1,
        ..record("x\"} 1\nfake_metric 2", "m", "Converse")
    }]);
    let text = metrics.encode();
    assert!(text.contains(r#"tenant="x\"} 1\nfake_metric 2""#), "{text}");
    assert!(!text.lines().any(|line| line.starts_with("fake_metric")));
}
