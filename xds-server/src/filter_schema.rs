//! The filter's configuration as a public interface: the JSON a mesh operator writes into an
//! Istio `WasmPlugin` (`pluginConfig`) or an Envoy Gateway `EnvoyExtensionPolicy`, which
//! xds-server otherwise renders from the gateway's YAML file. Its JSON Schema is generated
//! from the Rust types the filter parses (`gateway_common::filter_config`), committed as
//! `docs/filter-config.schema.json`, and a test keeps the two the same. The schema says the
//! shape; `FilterConfig::from_json`, the filter's own parser, also checks the values
//! (`xds-server validate-filter-config`).

use gateway_common::filter_config::FilterConfig;

/// Where the committed schema lives, from the repository's root.
pub const SCHEMA_PATH: &str = "docs/filter-config.schema.json";

/// The JSON Schema (draft 2020-12) of the filter's configuration, pretty-printed.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(FilterConfig);
    schema.insert(
        "title".into(),
        "Bedrock gateway filter configuration".into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

/// Parses and checks a hand-written configuration exactly as the filter will.
pub fn check(json: &[u8]) -> Result<FilterConfig, String> {
    FilterConfig::from_json(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCHEMA_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema_json(),
            "{SCHEMA_PATH} is stale: run `cargo run -p xds-server -- filter-config-schema > {SCHEMA_PATH}`"
        );
    }

    #[test]
    fn the_schema_names_every_top_level_key() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        for key in [
            "region",
            "services",
            "path_rules",
            "control",
            "authentication",
            "max_request_body_bytes",
            "quota",
        ] {
            assert!(properties.contains_key(key), "{key}");
        }
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn check_names_the_key_and_the_expectation() {
        let error =
            check(br#"{"region": "moon", "services": [], "authentication": {"mode": "none"}}"#)
                .unwrap_err();
        assert!(error.starts_with("filter configuration: region"), "{error}");
        let error = check(br#"{"region": "us-east-1", "services": [], "authentication": {"mode": "none"}, "extra": 1}"#)
            .unwrap_err();
        assert!(error.contains("unknown field `extra`"), "{error}");
    }
}
