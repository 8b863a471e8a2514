//! How many tokens a request may use, known before it is forwarded: its prompt text (by
//! length) and the output cap it sets. The estimate is what a token quota reserves; the real
//! count settles it when the response ends.

use serde_json::Value;

/// Tokens a request may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
}

/// Operations that generate tokens (the others reserve nothing and are only pre-checked).
pub fn generates_tokens(operation: &str) -> bool {
    matches!(
        operation,
        "Converse" | "ConverseStream" | "InvokeModel" | "InvokeModelWithResponseStream"
    )
}

/// Fields holding media (base64) rather than text; their length says nothing about tokens.
const MEDIA_FIELDS: [&str; 3] = ["bytes", "data", "image"];

/// Output caps by the field names the Bedrock APIs and model families use, in order.
const OUTPUT_CAPS: [&[&str]; 7] = [
    &["inferenceConfig", "maxTokens"],          // Converse
    &["max_tokens"],                            // Anthropic, Mistral, Cohere, OpenAI-style
    &["max_tokens_to_sample"],                  // Anthropic text completions
    &["max_gen_len"],                           // Meta Llama
    &["textGenerationConfig", "maxTokenCount"], // Amazon Titan
    &["inferenceConfig", "max_new_tokens"],     // Amazon Nova
    &["maxTokens"],                             // AI21
];

/// Estimates a request's tokens from its JSON body. Input: characters of text in the body
/// (media excluded) divided by `chars_per_token`, rounded up. Output: the request's own cap,
/// else `default_output`. A body that is not JSON is all input.
pub fn estimate(
    operation: &str,
    body: &[u8],
    chars_per_token: u64,
    default_output: u64,
) -> Estimate {
    if !generates_tokens(operation) {
        return Estimate::default();
    }
    let chars_per_token = chars_per_token.max(1);
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Estimate {
            input: (body.len() as u64).div_ceil(chars_per_token),
            output: default_output,
        };
    };
    let output = OUTPUT_CAPS
        .iter()
        .find_map(|path| lookup(&json, path).and_then(Value::as_u64))
        .unwrap_or(default_output);
    Estimate {
        input: text_chars(&json).div_ceil(chars_per_token),
        output,
    }
}

fn lookup<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// Characters of every string in the document except media fields.
fn text_chars(value: &Value) -> u64 {
    match value {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| !MEDIA_FIELDS.contains(&k.as_str()))
            .map(|(_, v)| text_chars(v))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converse_uses_text_and_max_tokens() {
        let body = br#"{"messages":[{"role":"user","content":[{"text":"12345678"},{"image":{"format":"png","source":{"bytes":"QUFBQUFBQUFBQUFBQUFBQUFB"}}}]}],"system":[{"text":"abcd"}],"inferenceConfig":{"maxTokens":50}}"#;
        // "user" (4) + "12345678" (8) + "abcd" (4) = 16 characters -> 4 tokens; the image is
        // media, not text.
        assert_eq!(
            estimate("ConverseStream", body, 4, 1000),
            Estimate {
                input: 4,
                output: 50
            }
        );
    }

    #[test]
    fn model_families_output_caps() {
        let cases = [
            (r#"{"max_tokens":7,"messages":[]}"#, 7),
            (r#"{"max_gen_len":8,"prompt":""}"#, 8),
            (
                r#"{"inputText":"","textGenerationConfig":{"maxTokenCount":9}}"#,
                9,
            ),
            (r#"{"inferenceConfig":{"max_new_tokens":10}}"#, 10),
            (r#"{"prompt":"x"}"#, 1000),
        ];
        for (body, output) in cases {
            assert_eq!(
                estimate("InvokeModel", body.as_bytes(), 4, 1000).output,
                output,
                "{body}"
            );
        }
    }

    #[test]
    fn other_operations_reserve_nothing_and_non_json_is_input() {
        assert_eq!(
            estimate("CountTokens", b"{\"input\":{}}", 4, 1000),
            Estimate::default()
        );
        assert_eq!(estimate("Retrieve", b"{}", 4, 1000), Estimate::default());
        assert_eq!(
            estimate("InvokeModel", b"not json at all!", 4, 1000),
            Estimate {
                input: 4,
                output: 1000
            }
        );
    }
}
