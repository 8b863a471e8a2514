use super::*;
use serde_json::json;

fn valid() -> serde_json::Value {
    json!({
        "region": "us-east-1",
        "services": [
            {"name": "bedrock-runtime", "host": "bedrock-runtime.us-east-1.amazonaws.com", "cluster": "bedrock-runtime"},
            {"name": "bedrock-agent-runtime", "host": "bedrock-agent-runtime.us-east-1.amazonaws.com", "cluster": "bedrock-agent-runtime"}
        ],
        "path_rules": [{"method": "POST", "path": "/custom/*/invoke/**", "service": "bedrock-runtime"}],
        "authentication": {"mode": "none"}
    })
}

fn parse(value: serde_json::Value) -> Result<FilterConfig, String> {
    FilterConfig::from_json(value.to_string().as_bytes())
}

#[test]
fn parses_with_defaults() {
    let config = parse(valid()).unwrap();
    assert_eq!(config.control, ControlConfig::default());
    assert_eq!(
        config.max_request_body_bytes,
        DEFAULT_MAX_REQUEST_BODY_BYTES
    );
    assert_eq!(config.services[0].signing_name, "bedrock");
    assert_eq!(config.authentication, Authentication::None);
}

#[test]
fn round_trips() {
    let config = parse(valid()).unwrap();
    let again = FilterConfig::from_json(&serde_json::to_vec(&config).unwrap()).unwrap();
    assert_eq!(config, again);
}

type Mutation = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn rejects_each_bad_key_with_its_name() {
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "bad region",
            Box::new(|v| v["region"] = json!("moon")),
            "filter configuration: region: expected an AWS region name such as us-east-1",
        ),
        (
            "no services",
            Box::new(|v| v["services"] = json!([])),
            "filter configuration: services: expected at least one service",
        ),
        (
            "duplicate service",
            Box::new(|v| v["services"][1]["name"] = json!("bedrock-runtime")),
            "filter configuration: services[1].name: expected each service only once",
        ),
        (
            "empty cluster",
            Box::new(|v| v["services"][0]["cluster"] = json!("")),
            "filter configuration: services[0].cluster: expected an Envoy cluster name",
        ),
        (
            "bad host",
            Box::new(|v| v["services"][0]["host"] = json!("a b")),
            "filter configuration: services[0].host: expected a host name",
        ),
        (
            "lower-case method",
            Box::new(|v| v["path_rules"][0]["method"] = json!("post")),
            "filter configuration: path_rules[0].method: expected an HTTP method in upper case, such as POST",
        ),
        (
            "relative path",
            Box::new(|v| v["path_rules"][0]["path"] = json!("model/*")),
            "filter configuration: path_rules[0].path: expected a path starting with / whose segments are literals or *, with ** only last",
        ),
        (
            "inner **",
            Box::new(|v| v["path_rules"][0]["path"] = json!("/a/**/b")),
            "filter configuration: path_rules[0].path: expected a path starting with / whose segments are literals or *, with ** only last",
        ),
        (
            "unknown rule service",
            Box::new(|v| v["path_rules"][0]["service"] = json!("bedrock")),
            "filter configuration: path_rules[0].service: expected one of the configured services",
        ),
        (
            "zero timeout",
            Box::new(|v| {
                v["control"] =
                    json!({"cluster": "c", "timeout_ms": 0, "credentials_refresh_seconds": 1})
            }),
            "filter configuration: control.timeout_ms: expected a timeout above 0",
        ),
        (
            "zero body",
            Box::new(|v| v["max_request_body_bytes"] = json!(0)),
            "filter configuration: max_request_body_bytes: expected a size above 0",
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut value = valid();
        mutate(&mut value);
        assert_eq!(parse(value).unwrap_err(), expected, "{name}");
    }
}

#[test]
fn rejects_unknown_keys_and_modes() {
    let mut value = valid();
    value["regoin"] = json!("us-east-1");
    assert!(parse(value).unwrap_err().contains("unknown field `regoin`"));
    let mut value = valid();
    value["authentication"] = json!({"mode": "maybe"});
    assert!(
        parse(value)
            .unwrap_err()
            .contains("unknown variant `maybe`")
    );
    assert!(FilterConfig::from_json(b"{not json").is_err());
}

#[test]
fn quota_section() {
    let mut value = valid();
    value["quota"] = json!({
        "domain": "bedrock-gateway",
        "failure_mode": "closed",
        "request_descriptors": [["tenant"], ["tenant", "model"]],
        "token_descriptors": [{"keys": ["tenant"], "kind": "total"}, {"keys": [], "kind": "output"}]
    });
    let config = parse(value.clone()).unwrap();
    let quota = config.quota.unwrap();
    assert_eq!(quota.cluster, "gateway_quota");
    assert_eq!(quota.timeout_ms, 200);
    assert!(quota.counts_tokens());
    value["quota"]["request_descriptors"] = json!([[]]);
    assert_eq!(
        parse(value.clone()).unwrap_err(),
        "filter configuration: quota.request_descriptors[0]: expected at least one context key"
    );
    value["quota"]["request_descriptors"] = json!([["tenant", "colour"]]);
    assert!(
        parse(value)
            .unwrap_err()
            .contains("unknown variant `colour`")
    );
}
