use super::*;

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
        let op = identify("bedrock-runtime", method, path);
        assert_eq!(
            (op.name, op.model.as_deref()),
            (name, model),
            "{method} {path}"
        );
    }
}

#[test]
fn identifies_agent_runtime_operations() {
    let op = identify(
        "bedrock-agent-runtime",
        "POST",
        "/knowledgebases/KB1/retrieve",
    );
    assert_eq!((op.name, op.model), ("Retrieve", None));
    let op = identify(
        "bedrock-agent-runtime",
        "POST",
        "/agents/A/agentAliases/B/sessions/S/text",
    );
    assert_eq!(op.name, "InvokeAgent");
    // Same path, other service: not that operation.
    assert_eq!(
        identify("bedrock-agent", "POST", "/knowledgebases/KB1/retrieve").name,
        UNKNOWN
    );
}

#[test]
fn percent_decoding() {
    assert_eq!(decode("a%3Ab%2Fc"), "a:b/c");
    assert_eq!(decode("100%"), "100%");
    assert_eq!(decode("%zz%4"), "%zz%4");
    assert_eq!(decode("%C3%A9"), "é");
}

#[test]
fn model_aliases_cover_arns_and_profiles() {
    assert_eq!(
        model_aliases("anthropic.claude-v2"),
        ["anthropic.claude-v2"]
    );
    assert_eq!(
        model_aliases("us.anthropic.claude-v2"),
        ["us.anthropic.claude-v2", "anthropic.claude-v2"]
    );
    assert_eq!(
        model_aliases("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2"),
        [
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
            "anthropic.claude-v2"
        ]
    );
    assert_eq!(
        model_aliases("arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.llama"),
        [
            "arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.llama",
            "eu.meta.llama",
            "meta.llama"
        ]
    );
    // Application inference profiles and custom models hide the model: only the ARN itself.
    assert_eq!(
        model_aliases("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc").len(),
        1
    );
    // "us.x" is not a profile of model "x" when x has no provider prefix.
    assert_eq!(model_aliases("us.titan"), ["us.titan"]);
}
