use super::*;
use gateway_common::filter_config::UpstreamService;
use gateway_common::filter_config::{Authentication, ControlConfig};

fn config(services: &[&str], rules: Vec<PathRule>) -> FilterConfig {
    FilterConfig {
        region: "us-east-1".into(),
        services: services
            .iter()
            .map(|name| UpstreamService {
                name: name.to_string(),
                host: format!("{name}.us-east-1.amazonaws.com"),
                cluster: format!("cluster-{name}"),
                signing_name: "bedrock".into(),
            })
            .collect(),
        path_rules: rules,
        control: ControlConfig::default(),
        authentication: Authentication::None,
        max_request_body_bytes: 1024,
        quota: None,
    }
}

const ALL: [&str; 4] = [
    "bedrock-runtime",
    "bedrock-agent-runtime",
    "bedrock",
    "bedrock-agent",
];

fn route(
    config: &FilterConfig,
    method: &str,
    path: &str,
    prefix: Option<&str>,
) -> Result<String, RouteError> {
    let path = crate::core::path::canonical(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    ServiceRouter::new(config)
        .select(config, method, &path.segments, prefix)
        .map(|i| config.services[i].name.clone())
}

#[test]
fn header_wins_over_path_and_is_case_insensitive() {
    let c = config(&ALL, vec![]);
    assert_eq!(
        route(
            &c,
            "POST",
            "/model/m/converse",
            Some("bedrock-agent-runtime")
        )
        .unwrap(),
        "bedrock-agent-runtime"
    );
    assert_eq!(
        route(&c, "POST", "/anything", Some(" Bedrock-Runtime ")).unwrap(),
        "bedrock-runtime"
    );
    assert_eq!(
        route(&c, "POST", "/model/m/converse", Some("s3")).unwrap_err(),
        RouteError::UnknownService("s3".into())
    );
}

#[test]
fn paths_of_each_service() {
    let c = config(&ALL, vec![]);
    let cases = [
        (
            "POST",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "bedrock-runtime",
        ),
        ("POST", "/model/m/converse-stream", "bedrock-runtime"),
        (
            "POST",
            "/model/m/invoke-with-response-stream",
            "bedrock-runtime",
        ),
        ("POST", "/model/m/a-future-operation?x=1", "bedrock-runtime"),
        ("POST", "/guardrail/g/version/1/apply", "bedrock-runtime"),
        ("GET", "/async-invoke", "bedrock-runtime"),
        (
            "GET",
            "/async-invoke/arn%3Aaws%3Abedrock",
            "bedrock-runtime",
        ),
        (
            "POST",
            "/knowledgebases/KB123/retrieve",
            "bedrock-agent-runtime",
        ),
        (
            "POST",
            "/retrieveAndGenerateStream",
            "bedrock-agent-runtime",
        ),
        (
            "POST",
            "/agents/A/agentAliases/B/sessions/S/text",
            "bedrock-agent-runtime",
        ),
        ("POST", "/agents/session-1", "bedrock-agent-runtime"),
        ("POST", "/flows/F/aliases/A", "bedrock-agent-runtime"),
        ("PUT", "/sessions/", "bedrock-agent-runtime"),
        ("GET", "/flows/F/aliases/A", "bedrock-agent"),
        ("POST", "/agents/A/", "bedrock-agent"),
        ("GET", "/agents/A/agentaliases/B/", "bedrock-agent"),
        ("PUT", "/knowledgebases/", "bedrock-agent"),
        ("GET", "/knowledgebases/KB123", "bedrock-agent"),
        ("GET", "/foundation-models", "bedrock"),
        ("GET", "/foundation-models/anthropic.claude-v2", "bedrock"),
        ("POST", "/guardrails", "bedrock"),
        ("POST", "/tagResource", "bedrock"),
    ];
    for (method, path, expected) in cases {
        assert_eq!(
            route(&c, method, path, None).as_deref(),
            Ok(expected),
            "{method} {path}"
        );
    }
}

#[test]
fn unknown_and_disabled() {
    let c = config(&["bedrock-runtime"], vec![]);
    assert_eq!(
        route(&c, "GET", "/", None).unwrap_err(),
        RouteError::Unresolvable
    );
    assert_eq!(
        route(&c, "GET", "/nothing/here", None).unwrap_err(),
        RouteError::Unresolvable
    );
    assert_eq!(
        route(&c, "POST", "/knowledgebases/KB/retrieve", None).unwrap_err(),
        RouteError::ServiceNotEnabled("bedrock-agent-runtime".into())
    );
    assert_eq!(
        route(&c, "POST", "/model/m/converse", Some("bedrock")).unwrap_err(),
        RouteError::UnknownService("bedrock".into())
    );
}

#[test]
fn configured_rules_come_first() {
    let rule = PathRule {
        method: Some("POST".into()),
        path: "/model/*/special".into(),
        service: "bedrock-agent-runtime".into(),
    };
    let c = config(&ALL, vec![rule]);
    assert_eq!(
        route(&c, "POST", "/model/m/special", None).unwrap(),
        "bedrock-agent-runtime"
    );
    assert_eq!(
        route(&c, "GET", "/model/m/special", None).unwrap(),
        "bedrock-runtime"
    );
}

#[test]
fn pattern_matching() {
    let cases = [
        ("/a/*/c", "a/b/c", true),
        ("/a/*/c", "a//c", false),
        ("/a/*/c", "a/b/c/d", false),
        ("/a/**", "a", true),
        ("/a/**", "a/", true),
        ("/a/**", "a/b/c", true),
        ("/a/**", "ab", false),
        ("/a", "a/", false),
        ("/a/*", "a/b", true),
        ("/a/*", "a/b/", false),
    ];
    for (pattern, path, expected) in cases {
        let segments: Vec<&str> = path.split('/').collect();
        assert_eq!(
            matches(&compile(pattern), &segments),
            expected,
            "{pattern} vs /{path}"
        );
    }
}
