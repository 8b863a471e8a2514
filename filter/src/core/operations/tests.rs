use super::*;
use crate::core::path::canonical;

fn ident(service: &str, method: &str, path: &str) -> Operation {
    let path = canonical(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    identify(service, method, &path.segments)
}

#[test]
fn identifies_runtime_operations_and_models() {
    let cases = [
        (
            "POST",
            "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
            "Converse",
            Some("us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ),
        (
            "POST",
            "/model/m/converse-stream",
            "ConverseStream",
            Some("m"),
        ),
        ("POST", "/model/m/invoke?x=1", "InvokeModel", Some("m")),
        (
            "POST",
            "/model/m/invoke-with-response-stream",
            "InvokeModelWithResponseStream",
            Some("m"),
        ),
        ("POST", "/model/m/count-tokens", "CountTokens", Some("m")),
        (
            "POST",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.meta.llama3-2-1b-instruct-v1%3A0/converse",
            "Converse",
            Some(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-2-1b-instruct-v1:0",
            ),
        ),
        ("POST", "/model/m/a-future-operation", "Unknown", Some("m")),
        ("GET", "/model/m/converse", "Unknown", Some("m")),
        (
            "POST",
            "/guardrail/g/version/1/apply",
            "ApplyGuardrail",
            None,
        ),
        ("GET", "/async-invoke", "ListAsyncInvokes", None),
        ("POST", "/async-invoke", "StartAsyncInvoke", None),
        ("GET", "/async-invoke/abc", "GetAsyncInvoke", None),
        ("POST", "/model/", "Unknown", None),
    ];
    for (method, path, name, model) in cases {
        let op = ident("bedrock-runtime", method, path);
        assert_eq!(
            (op.name, op.path_model.as_deref()),
            (name, model),
            "{method} {path}"
        );
    }
}

#[test]
fn identifies_agent_runtime_operations() {
    let op = ident(
        "bedrock-agent-runtime",
        "POST",
        "/knowledgebases/KB1/retrieve",
    );
    assert_eq!((op.name, op.path_model), ("Retrieve", None));
    let op = ident(
        "bedrock-agent-runtime",
        "POST",
        "/agents/A/agentAliases/B/sessions/S/text",
    );
    assert_eq!(op.name, "InvokeAgent");
    // Same path, other service: not that operation.
    assert_eq!(
        ident("bedrock-agent", "POST", "/knowledgebases/KB1/retrieve").name,
        UNKNOWN
    );
}

#[test]
fn control_plane_labels_name_models() {
    // Labels other than `modelId` name a model too (foundation and custom models, inference
    // profiles, provisioned throughput, ...).
    let cases = [
        (
            "GET",
            "/foundation-models/anthropic.claude-v2",
            "GetFoundationModel",
            "anthropic.claude-v2",
        ),
        (
            "DELETE",
            "/custom-models/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Acustom-model%2Fx",
            "DeleteCustomModel",
            "arn:aws:bedrock:us-east-1:1:custom-model/x",
        ),
        (
            "GET",
            "/inference-profiles/us.anthropic.claude-v2",
            "GetInferenceProfile",
            "us.anthropic.claude-v2",
        ),
        (
            "PATCH",
            "/provisioned-model-throughput/p1",
            "UpdateProvisionedModelThroughput",
            "p1",
        ),
    ];
    for (method, path, name, model) in cases {
        let op = ident("bedrock", method, path);
        assert_eq!(
            (op.name, op.path_model.as_deref()),
            (name, Some(model)),
            "{path}"
        );
    }
    // A job is not a model, though its shape name says so.
    let op = ident("bedrock", "GET", "/model-customization-jobs/j1");
    assert_eq!((op.name, op.path_model), ("GetModelCustomizationJob", None));
}

#[test]
fn a_path_only_matches_patterns_of_its_length() {
    // Found by fuzzing: a path one segment shorter than a pattern listed before its own
    // matched it (POST /evaluation-jobs read as BatchDeleteEvaluationJob, whose body names no
    // models; POST /flows/F/aliases/A as StartFlowExecution).
    let op = ident("bedrock", "POST", "/evaluation-jobs");
    assert_eq!(op.name, "CreateEvaluationJob");
    assert!(op.models_in_body());
    assert_eq!(
        ident("bedrock-agent-runtime", "POST", "/flows/F/aliases/A").name,
        "InvokeFlow"
    );
    assert_eq!(
        ident("bedrock-agent", "POST", "/flows/validate-definition").name,
        "ValidateFlowDefinition"
    );
    assert_eq!(ident("bedrock-runtime", "POST", "/model/m").name, UNKNOWN);
    for rule in table::OPERATIONS {
        let segments: Vec<&str> = rule
            .path
            .trim_start_matches('/')
            .split('/')
            .map(|s| if s == "*" { "x" } else { s })
            .collect();
        assert!(matches(rule.path, &segments), "{}", rule.path);
        assert!(
            !matches(rule.path, &segments[..segments.len() - 1]),
            "{}",
            rule.path
        );
        let longer = [segments.as_slice(), &["x"]].concat();
        assert!(!matches(rule.path, &longer), "{}", rule.path);
        assert_eq!(
            identify(rule.service, rule.method, &segments).name,
            rule.name,
            "{} {} {}",
            rule.service,
            rule.method,
            rule.path
        );
    }
}

#[test]
fn body_model_paths_are_well_formed() {
    let rule = |service: &str, name: &str| {
        table::OPERATIONS
            .iter()
            .find(|r| r.service == service && r.name == name)
            .unwrap()
    };
    assert_eq!(
        rule("bedrock-runtime", "StartAsyncInvoke").body_models,
        [["modelId"].as_slice()]
    );
    assert_eq!(
        rule("bedrock-agent-runtime", "InvokeInlineAgent").body_models[0],
        ["foundationModel"]
    );
    assert!(rule("bedrock-runtime", "Converse").body_models.is_empty());
    for rule in table::OPERATIONS {
        for pair in rule.body_models.windows(2) {
            assert!(
                (pair[0].len(), pair[0]) < (pair[1].len(), pair[1]),
                "{}: {:?} before {:?}",
                rule.name,
                pair[0],
                pair[1]
            );
        }
        assert!(
            rule.body_models.iter().all(|p| !p.is_empty()),
            "{}",
            rule.name
        );
        // The body reader follows at most 121 paths per operation (128-bit masks, 7 caps).
        assert!(
            rule.body_models.len() + rule.undetermined.len() <= 121,
            "{}",
            rule.name
        );
    }
}
