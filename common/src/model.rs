//! What a model reference means: the names access patterns are matched against, and the one
//! key that quota counters and the usage ledger use, so that a model reached through an
//! inference profile, an ARN or another spelling is still one model. Shared by the filter
//! (which builds descriptors and usage records) and xds-server (which reads `key: model`
//! values of the limit tree through the same function).

/// Longest model reference accepted (botocore's `modelId` maximum).
pub const MAX_MODEL_ID_BYTES: usize = 2048;

/// Geography prefixes of system-defined cross-region inference profiles
/// (`us.anthropic.claude-3-5-haiku-20241022-v1:0`).
pub const CROSS_REGION_PREFIXES: [&str; 8] =
    ["us", "eu", "apac", "us-gov", "global", "jp", "au", "ca"];

/// Whether `model` can be a Bedrock model reference: a model id, inference profile id,
/// provisioned throughput name or an ARN. Anything else (spaces, control characters, quotes,
/// overlong values) is refused before it reaches a policy, a counter or a log.
pub fn is_valid(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= MAX_MODEL_ID_BYTES
        && model.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-' | b'+')
        })
}

/// The names a model reference goes by, for matching access patterns: the reference as sent;
/// for a `foundation-model/` or `inference-profile/` ARN also the id inside it; and for a
/// cross-region inference profile also the model id without its geography prefix.
pub fn aliases(model: &str) -> Vec<&str> {
    let mut names = vec![model];
    if let Some(inner) = arn_model_id(model) {
        names.push(inner);
    }
    for i in 0..names.len() {
        if let Some(rest) = strip_geography(names[i]) {
            names.push(rest);
        }
    }
    names
}

/// The counter and ledger key of a model reference: lower case; the model id inside a
/// foundation-model or inference-profile ARN; without a cross-region geography prefix. Other
/// ARNs (application inference profiles, provisioned, custom and imported models, prompts)
/// are their own key. Idempotent: `key(&key(m)) == key(m)`.
pub fn key(model: &str) -> String {
    let lower = model.to_ascii_lowercase();
    let mut id = arn_model_id(&lower).unwrap_or(&lower);
    while let Some(rest) = strip_geography(id) {
        id = rest;
    }
    id.to_string()
}

/// The model id inside `arn:PARTITION:bedrock:REGION:ACCOUNT:foundation-model/ID` or
/// `...:inference-profile/ID`.
fn arn_model_id(model: &str) -> Option<&str> {
    let mut parts = model.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("bedrock"), Some(_), Some(_), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if !partition.starts_with("aws") {
        return None;
    }
    ["foundation-model/", "inference-profile/"]
        .iter()
        .find_map(|kind| resource.strip_prefix(kind))
        .filter(|id| !id.is_empty())
}

/// `rest` of `GEO.rest` when GEO is a cross-region prefix and `rest` still looks like
/// `provider.model`.
fn strip_geography(model: &str) -> Option<&str> {
    let (geo, rest) = model.split_once('.')?;
    (CROSS_REGION_PREFIXES.contains(&geo) && rest.contains('.')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

    #[test]
    fn every_spelling_of_a_model_has_one_key() {
        for spelling in [
            HAIKU,
            "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "eu.anthropic.claude-3-5-haiku-20241022-v1:0",
            "global.anthropic.claude-3-5-haiku-20241022-v1:0",
            "apac.anthropic.claude-3-5-haiku-20241022-v1:0",
            "US.Anthropic.Claude-3-5-Haiku-20241022-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.anthropic.claude-3-5-haiku-20241022-v1:0",
            "us.us.anthropic.claude-3-5-haiku-20241022-v1:0",
        ] {
            assert_eq!(key(spelling), HAIKU, "{spelling}");
            assert_eq!(key(&key(spelling)), key(spelling), "idempotent: {spelling}");
        }
    }

    #[test]
    fn other_references_are_their_own_key() {
        let app =
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6";
        assert_eq!(key(app), app);
        assert_eq!(
            key("my-provisioned-throughput"),
            "my-provisioned-throughput"
        );
        // Not a cross-region profile: no provider after the prefix.
        assert_eq!(key("us.model"), "us.model");
        // Not a Bedrock ARN.
        assert_eq!(
            key("arn:aws:sagemaker:us-east-1:1:foundation-model/x.y"),
            "arn:aws:sagemaker:us-east-1:1:foundation-model/x.y"
        );
        assert_eq!(
            key("arn:aws:bedrock:us-east-1::foundation-model/"),
            "arn:aws:bedrock:us-east-1::foundation-model/"
        );
    }

    #[test]
    fn aliases_cover_arns_and_profiles() {
        assert_eq!(aliases("anthropic.claude-v2"), ["anthropic.claude-v2"]);
        assert_eq!(
            aliases("us.anthropic.claude-v2"),
            ["us.anthropic.claude-v2", "anthropic.claude-v2"]
        );
        assert_eq!(
            aliases("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2"),
            [
                "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
                "anthropic.claude-v2"
            ]
        );
        assert_eq!(
            aliases("arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.llama3"),
            [
                "arn:aws:bedrock:us-east-1:1:inference-profile/eu.meta.llama3",
                "eu.meta.llama3",
                "meta.llama3"
            ]
        );
    }

    #[test]
    fn validity() {
        for ok in [
            HAIKU,
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
            "my_throughput-1",
            "arn:aws:bedrock:us-east-1:123:prompt/P1:1",
        ] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "a b", "a\"b", "a\nb", "é", "a;b", "a%2Fb", "a\\b"] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(!is_valid(&"a".repeat(MAX_MODEL_ID_BYTES + 1)));
    }
}
