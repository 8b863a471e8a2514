//! The emulated model: what it answers, how many tokens that is and how the answer is cut into
//! streamed chunks. Deterministic, and steerable per request through the `emulator` knobs.

use std::time::Duration;

use serde::Deserialize;

use super::error::ApiError;

/// The words `output_tokens` replies cycle through.
pub const WORDS: [&str; 26] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
];

/// Longest pause `chunk_delay_ms` may ask for.
pub const MAX_CHUNK_DELAY_MS: u64 = 60_000;
/// Longest reply `output_tokens` may ask for.
pub const MAX_OUTPUT_TOKENS: u32 = 1_000_000;

/// The token rule of the emulator: one token per whitespace-separated word.
pub fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

/// Per-request controls, read from `additionalModelRequestFields.emulator` (Converse) or the
/// body's top-level `emulator` object (InvokeModel).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// The exact reply text.
    pub reply: Option<String>,
    /// Reply with this many words of [`WORDS`] instead.
    pub output_tokens: Option<u32>,
    /// Pause before each streamed event after the first.
    pub chunk_delay_ms: Option<u64>,
    /// Words per streamed text delta (at least 1; default 1).
    pub words_per_chunk: Option<u32>,
    /// Fail the stream with `modelStreamErrorException` after this many text deltas.
    pub fail_after_chunks: Option<u32>,
}

impl Knobs {
    /// Parses the knob object at `location` (named in errors), absent meaning all defaults.
    pub fn from_value(value: Option<&serde_json::Value>, location: &str) -> Result<Self, ApiError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let knobs: Self = serde_json::from_value(value.clone())
            .map_err(|err| ApiError::validation(format!("{location}: {err}")))?;
        if knobs.reply.is_some() && knobs.output_tokens.is_some() {
            return Err(ApiError::validation(format!(
                "{location}: set either reply or output_tokens, not both"
            )));
        }
        if knobs.words_per_chunk == Some(0) {
            return Err(ApiError::validation(format!(
                "{location}.words_per_chunk: expected at least 1"
            )));
        }
        if knobs
            .chunk_delay_ms
            .is_some_and(|ms| ms > MAX_CHUNK_DELAY_MS)
        {
            return Err(ApiError::validation(format!(
                "{location}.chunk_delay_ms: expected at most {MAX_CHUNK_DELAY_MS}"
            )));
        }
        if knobs.output_tokens.is_some_and(|n| n > MAX_OUTPUT_TOKENS) {
            return Err(ApiError::validation(format!(
                "{location}.output_tokens: expected at most {MAX_OUTPUT_TOKENS}"
            )));
        }
        Ok(knobs)
    }

    pub fn chunk_delay(&self) -> Duration {
        Duration::from_millis(self.chunk_delay_ms.unwrap_or(0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
}

impl StopReason {
    /// As Converse and Anthropic's Messages API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
        }
    }

    /// As Titan Text spells it.
    pub fn titan(self) -> &'static str {
        match self {
            Self::EndTurn => "FINISH",
            Self::MaxTokens => "LENGTH",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub output_tokens: u32,
    pub stop: StopReason,
}

/// Byte offset where the `n`th word (0-based) starts, or the text's length if there are fewer.
fn word_start(text: &str, n: usize) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for (at, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_word {
            if words == n {
                return at;
            }
            words += 1;
        }
        in_word = !space;
    }
    text.len()
}

/// Byte offset just past the `n`th word (1-based count), or the text's length.
fn end_of_words(text: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let start = word_start(text, n - 1);
    text[start..]
        .find(char::is_whitespace)
        .map_or(text.len(), |len| start + len)
}

/// The reply to a request whose default answer is `default_text`, cut to `max_tokens` words.
pub fn generate(default_text: &str, knobs: &Knobs, max_tokens: Option<u32>) -> Reply {
    let text = match (&knobs.reply, knobs.output_tokens) {
        (Some(reply), _) => reply.clone(),
        (None, Some(n)) => (0..n as usize)
            .map(|i| WORDS[i % WORDS.len()])
            .collect::<Vec<_>>()
            .join(" "),
        (None, None) => default_text.to_string(),
    };
    match max_tokens {
        Some(max) if count_tokens(&text) > max => {
            let cut = text[..end_of_words(&text, max as usize)].to_string();
            Reply {
                output_tokens: count_tokens(&cut),
                text: cut,
                stop: StopReason::MaxTokens,
            }
        }
        _ => Reply {
            output_tokens: count_tokens(&text),
            text,
            stop: StopReason::EndTurn,
        },
    }
}

/// Cuts `text` into deltas of `words_per_chunk` words; a chunk carries the whitespace before
/// its first word, so the chunks concatenate to `text` exactly. Never empty: a text without
/// words is one chunk.
pub fn chunks(text: &str, words_per_chunk: u32) -> Vec<String> {
    let per = words_per_chunk.max(1) as usize;
    let words = count_tokens(text) as usize;
    let mut out = Vec::with_capacity(words.div_ceil(per).max(1));
    let mut from = 0;
    let mut next_word = per;
    while next_word < words {
        let to = end_of_words(text, next_word);
        out.push(text[from..to].to_string());
        from = to;
        next_word += per;
    }
    out.push(text[from..].to_string());
    out
}

/// The text the default reply echoes: `Echo: <last user message>`.
pub fn echo(last_user_text: &str) -> String {
    format!("Echo: {last_user_text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_words() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("  \n "), 0);
        assert_eq!(count_tokens("one"), 1);
        assert_eq!(count_tokens(" one  two\tthree\nfour "), 4);
    }

    #[test]
    fn knobs_parse_and_validate() {
        let loc = "additionalModelRequestFields.emulator";
        assert_eq!(Knobs::from_value(None, loc), Ok(Knobs::default()));
        let knobs = Knobs::from_value(
            Some(&json!({"output_tokens": 3, "chunk_delay_ms": 5, "words_per_chunk": 2, "fail_after_chunks": 1})),
            loc,
        )
        .unwrap();
        assert_eq!(knobs.chunk_delay(), Duration::from_millis(5));
        let errors = [
            (
                json!({"reply": "x", "output_tokens": 1}),
                "additionalModelRequestFields.emulator: set either reply or output_tokens, not both",
            ),
            (
                json!({"words_per_chunk": 0}),
                "additionalModelRequestFields.emulator.words_per_chunk: expected at least 1",
            ),
            (
                json!({"chunk_delay_ms": 60_001}),
                "additionalModelRequestFields.emulator.chunk_delay_ms: expected at most 60000",
            ),
            (
                json!({"output_tokens": 1_000_001}),
                "additionalModelRequestFields.emulator.output_tokens: expected at most 1000000",
            ),
        ];
        for (value, message) in errors {
            let err = Knobs::from_value(Some(&value), loc).unwrap_err();
            assert_eq!(err.message, message);
            assert_eq!(err.status, 400);
        }
        let typo = Knobs::from_value(Some(&json!({"replay": "x"})), loc).unwrap_err();
        assert!(
            typo.message
                .starts_with("additionalModelRequestFields.emulator: unknown field `replay`"),
            "{}",
            typo.message
        );
        let negative = Knobs::from_value(Some(&json!({"output_tokens": -1})), loc).unwrap_err();
        assert!(
            negative.message.contains("invalid value"),
            "{}",
            negative.message
        );
    }

    #[test]
    fn replies() {
        let none = Knobs::default();
        assert_eq!(
            generate("Echo: hi there", &none, None),
            Reply {
                text: "Echo: hi there".into(),
                output_tokens: 3,
                stop: StopReason::EndTurn
            }
        );
        assert_eq!(
            generate("Echo: hi there", &none, Some(3)).stop,
            StopReason::EndTurn
        );
        assert_eq!(
            generate("Echo:  hi\n there  now", &none, Some(2)),
            Reply {
                text: "Echo:  hi".into(),
                output_tokens: 2,
                stop: StopReason::MaxTokens
            }
        );
        assert_eq!(
            generate("Echo: x", &none, Some(0)),
            Reply {
                text: String::new(),
                output_tokens: 0,
                stop: StopReason::MaxTokens
            }
        );
        let exact = Knobs {
            reply: Some(" exact  text ".into()),
            ..Knobs::default()
        };
        assert_eq!(generate("ignored", &exact, None).text, " exact  text ");
        let counted = Knobs {
            output_tokens: Some(28),
            ..Knobs::default()
        };
        let reply = generate("ignored", &counted, None);
        assert_eq!(reply.output_tokens, 28);
        assert!(reply.text.starts_with("alpha bravo charlie"));
        assert!(reply.text.ends_with("yankee zulu alpha bravo"));
        assert_eq!(
            generate("ignored", &counted, Some(4)).text,
            "alpha bravo charlie delta"
        );
        let empty = Knobs {
            output_tokens: Some(0),
            ..Knobs::default()
        };
        assert_eq!(generate("ignored", &empty, None).text, "");
    }

    #[test]
    fn chunks_concatenate_to_the_text() {
        let cases: [(&str, u32, &[&str]); 6] = [
            ("Echo: hello world", 1, &["Echo:", " hello", " world"]),
            ("Echo: hello world", 2, &["Echo: hello", " world"]),
            ("Echo: hello world", 5, &["Echo: hello world"]),
            ("  lead  and trail  ", 1, &["  lead", "  and", " trail  "]),
            ("", 1, &[""]),
            ("   ", 3, &["   "]),
        ];
        for (text, per, expected) in cases {
            let got = chunks(text, per);
            assert_eq!(got, expected, "{text:?} / {per}");
            assert_eq!(got.concat(), text);
        }
        let long = generate(
            "",
            &Knobs {
                output_tokens: Some(100),
                ..Knobs::default()
            },
            None,
        )
        .text;
        assert_eq!(chunks(&long, 7).len(), 15);
        assert_eq!(chunks(&long, 7).concat(), long);
    }

    #[test]
    fn unicode_whitespace_and_text() {
        let text = "héllo\u{3000}wörld ünïcode";
        assert_eq!(count_tokens(text), 3);
        assert_eq!(chunks(text, 1), ["héllo", "\u{3000}wörld", " ünïcode"]);
        assert_eq!(
            generate(text, &Knobs::default(), Some(2)).text,
            "héllo\u{3000}wörld"
        );
    }
}
