//! How many tokens a request may use, known before it is forwarded: its prompt (text by
//! length, media by size) and the output cap it sets. The estimate is what a token quota
//! reserves; the real count settles it when the response ends.

use gateway_common::quota_config::QuotaConfig;

use crate::core::body::BodyFacts;

/// Largest count a counter holds exactly (a Lua number in Redis scripts), and so the most a
/// request can reserve: client-chosen caps beyond it are the same as it.
pub const MAX_TOKENS: u64 = (1 << 53) - 1;

/// Tokens a request may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
}

impl Estimate {
    /// Input plus output, saturating at [`MAX_TOKENS`].
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output).min(MAX_TOKENS)
    }
}

/// Operations that generate tokens (the others reserve nothing and are only pre-checked).
pub fn generates_tokens(operation: &str) -> bool {
    matches!(
        operation,
        "Converse" | "ConverseStream" | "InvokeModel" | "InvokeModelWithResponseStream"
    )
}

/// Estimates a request's tokens from what its body held. Input: characters of text divided
/// by `chars_per_token` plus bytes of media (images, documents, video: Bedrock counts them)
/// divided by `media_bytes_per_token`, each rounded up. Output: the request's own cap (the
/// largest it sets), else `default_max_output_tokens`. Every number saturates at
/// [`MAX_TOKENS`], whatever the client wrote.
pub fn estimate(operation: &str, body: &BodyFacts, config: &QuotaConfig) -> Estimate {
    if !generates_tokens(operation) {
        return Estimate::default();
    }
    let text = body.text_chars.div_ceil(config.chars_per_token.max(1));
    let media = body
        .media_bytes
        .div_ceil(config.media_bytes_per_token.max(1));
    Estimate {
        input: text.saturating_add(media).min(MAX_TOKENS),
        output: body
            .output_cap
            .unwrap_or(config.default_max_output_tokens)
            .min(MAX_TOKENS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::body::BodyReader;

    fn config() -> QuotaConfig {
        serde_json::from_value(serde_json::json!({
            "domain": "d", "failure_mode": "open", "chars_per_token": 4,
            "media_bytes_per_token": 10, "default_max_output_tokens": 1000
        }))
        .unwrap()
    }

    fn facts(body: &str) -> BodyFacts {
        let mut reader = BodyReader::new(&[], &[]);
        reader.feed(body.as_bytes());
        reader.finish(false).unwrap()
    }

    #[test]
    fn converse_counts_text_media_and_max_tokens() {
        let body = r#"{"messages":[{"role":"user","content":[{"text":"12345678"},{"image":{"format":"png","source":{"bytes":"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"}}}]}],"system":[{"text":"abcd"}],"inferenceConfig":{"maxTokens":50}}"#;
        // Text: "user" (4) + "12345678" (8) + "png" (3) + "abcd" (4) = 19 characters -> 5
        // tokens; media: 40 base64 characters are 30 bytes -> 3 tokens.
        assert_eq!(
            estimate("ConverseStream", &facts(body), &config()),
            Estimate {
                input: 8,
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
                estimate("InvokeModel", &facts(body), &config()).output,
                output,
                "{body}"
            );
        }
    }

    #[test]
    fn client_numbers_cannot_overflow_a_reservation() {
        let huge = facts(r#"{"max_tokens":18446744073709551615,"prompt":"abcd"}"#);
        let e = estimate("InvokeModel", &huge, &config());
        assert_eq!((e.input, e.output, e.total()), (1, MAX_TOKENS, MAX_TOKENS));
        let mut config = config();
        config.chars_per_token = 0;
        config.media_bytes_per_token = 0;
        assert_eq!(
            estimate("InvokeModel", &facts(r#"{"prompt":"abcd"}"#), &config).input,
            4
        );
    }

    #[test]
    fn other_operations_reserve_nothing_and_non_json_is_input() {
        assert_eq!(
            estimate("CountTokens", &facts("{\"input\":{}}"), &config()),
            Estimate::default()
        );
        assert_eq!(
            estimate("Retrieve", &facts("{}"), &config()),
            Estimate::default()
        );
        assert_eq!(
            estimate("InvokeModel", &facts("not json at all!"), &config()),
            Estimate {
                input: 4,
                output: 1000
            }
        );
    }
}
