//! Request bodies: `body::BodyReader` (models and estimation facts, in fixed memory) for the
//! model paths of real operations, `quota::estimate::estimate` on what it read, and the
//! `json::Tokenizer` under it, checked against serde_json. Input: a selector byte (which
//! operation), two piece sizes, then the body. However the body is cut, it reads the same.

#![no_main]

use std::sync::LazyLock;

use bedrock_gateway_filter::core::body::{BodyError, BodyFacts, BodyReader, MAX_MODELS};
use bedrock_gateway_filter::core::json::{Events, Tokenizer};
use bedrock_gateway_filter::core::operations::Operation;
use bedrock_gateway_filter::core::quota::estimate::{MAX_TOKENS, estimate};
use bedrock_gateway_filter_fuzz::{BODY_OPERATIONS, pieces, split_input};
use gateway_common::model;
use gateway_common::quota_config::QuotaConfig;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// serde_json refuses deeper documents (its recursion limit is 128).
const COMPARED_DEPTH: usize = 100;
/// Longest body compared with serde_json.
const COMPARED_BYTES: usize = 8 * 1024;

static QUOTAS: LazyLock<Vec<QuotaConfig>> = LazyLock::new(|| {
    let config = |chars: u64, media: u64, output: u64| {
        serde_json::from_value(serde_json::json!({
            "domain": "fuzz", "failure_mode": "open", "chars_per_token": chars,
            "media_bytes_per_token": media, "default_max_output_tokens": output
        }))
        .unwrap_or_else(|e| panic!("fuzz quota configuration: {e}"))
    };
    vec![config(4, 750, 1000), config(0, 0, u64::MAX)]
});

fn read(
    operation: &Operation,
    pieces: &[&[u8]],
    require_json: bool,
) -> Result<BodyFacts, BodyError> {
    let mut reader = BodyReader::new(operation.body_models, operation.undetermined);
    reader.feed(&[]);
    for piece in pieces {
        reader.feed(piece);
    }
    reader.feed(&[]);
    reader.finish(require_json)
}

fn check_body(operation: &Operation, sizes: [u8; 2], body: &[u8]) {
    let cut = pieces(body, sizes);
    let strict = read(operation, &cut, true);
    assert_eq!(
        strict,
        read(operation, &[body], true),
        "pieces of {sizes:?}"
    );
    let lenient = read(operation, &cut, false);
    assert_eq!(
        lenient,
        read(operation, &[body], false),
        "pieces of {sizes:?}"
    );
    match (&strict, &lenient) {
        (Ok(strict), Ok(lenient)) => assert_eq!(strict, lenient),
        (Err(BodyError::NotJson(_)), Ok(text)) => {
            assert!(!text.json && text.models.is_empty());
            assert_eq!(text.text_chars, body.len() as u64);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (strict, lenient) => panic!("strict {strict:?}, lenient {lenient:?}"),
    }
    if let Ok(facts) = &lenient {
        assert_eq!(facts.body_bytes, body.len() as u64);
        assert!(facts.models.len() <= MAX_MODELS);
        for (i, m) in facts.models.iter().enumerate() {
            assert!(model::is_valid(m), "invalid model {m:?}");
            assert!(!facts.models[..i].contains(m), "model {m:?} twice");
        }
        if !operation.models_in_body() {
            assert!(facts.models.is_empty());
        }
        for name in [operation.name, "Converse", "InvokeModel"] {
            for config in QUOTAS.iter() {
                let e = estimate(name, facts, config);
                assert!(e.input <= MAX_TOKENS && e.output <= MAX_TOKENS && e.total() <= MAX_TOKENS);
            }
        }
    }
}

/// Checks that the events nest and pair up, and rebuilds the document (numbers as their
/// integer fact, like the tokenizer's own tests) to compare with serde_json's reading.
#[derive(Default)]
struct Checker {
    /// Open containers and the key each is the value of.
    stack: Vec<(Value, Option<String>)>,
    key: Option<String>,
    /// The string being read: whether it is a key, its bytes so far.
    string: Option<(bool, Vec<u8>)>,
    depth: usize,
    max_depth: usize,
    done: Option<Value>,
}

impl Checker {
    fn put(&mut self, value: Value) {
        assert!(self.string.is_none(), "a value inside a string");
        assert!(self.done.is_none(), "a second top-level value");
        match self.stack.last_mut() {
            None => self.done = Some(value),
            Some((Value::Array(items), _)) => {
                assert!(self.key.is_none(), "a key in an array");
                items.push(value);
            }
            Some((Value::Object(map), _)) => {
                let key = self
                    .key
                    .take()
                    .unwrap_or_else(|| panic!("a member without key"));
                map.insert(key, value);
            }
            Some(_) => unreachable!(),
        }
    }
}

impl Events for Checker {
    fn open(&mut self, object: bool) {
        assert!(self.string.is_none() && self.done.is_none());
        let container = if object {
            Value::Object(Map::new())
        } else {
            Value::Array(Vec::new())
        };
        let key = self.key.take();
        self.stack.push((container, key));
        self.depth += 1;
        self.max_depth = self.max_depth.max(self.depth);
    }

    fn close(&mut self) {
        assert!(self.string.is_none(), "a close inside a string");
        assert!(self.key.is_none(), "a close after a key");
        let (value, key) = self
            .stack
            .pop()
            .unwrap_or_else(|| panic!("a close without an open"));
        self.depth -= 1;
        self.key = key;
        self.put(value);
    }

    fn string_start(&mut self, key: bool) {
        assert!(self.string.is_none(), "a string inside a string");
        if key {
            assert!(
                matches!(self.stack.last(), Some((Value::Object(_), _))) && self.key.is_none(),
                "a key outside an object"
            );
        }
        self.string = Some((key, Vec::new()));
    }

    fn string_piece(&mut self, bytes: &[u8]) {
        let (_, text) = self
            .string
            .as_mut()
            .unwrap_or_else(|| panic!("a piece outside a string"));
        text.extend_from_slice(bytes);
    }

    fn string_end(&mut self) {
        let (key, text) = self
            .string
            .take()
            .unwrap_or_else(|| panic!("a string end outside a string"));
        let text = String::from_utf8(text).unwrap_or_else(|e| panic!("a string not UTF-8: {e}"));
        if key {
            self.key = Some(text);
        } else {
            self.put(Value::String(text));
        }
    }

    fn number(&mut self, integer: Option<u64>) {
        self.put(integer.map_or_else(|| Value::String("<number>".into()), Value::from));
    }

    fn literal(&mut self, value: Option<bool>) {
        self.put(value.map_or(Value::Null, Value::Bool));
    }
}

/// Whether the rebuilt document is serde_json's: the same values, numbers as their integer
/// fact. `-0` is the integer 0 to the tokenizer and a float to serde_json; `-0.0` is no
/// integer to either.
fn same(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (_, Value::Number(n)) => match n.as_u64() {
            Some(n) => ours.as_u64() == Some(n),
            None if n.as_f64() == Some(0.0) => {
                ours.as_u64() == Some(0) || ours.as_str() == Some("<number>")
            }
            None => ours.as_str() == Some("<number>"),
        },
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        (ours, theirs) => ours == theirs,
    }
}

fn check_json(sizes: [u8; 2], body: &[u8]) {
    let mut tokenizer = Tokenizer::default();
    let mut checker = Checker::default();
    for piece in pieces(body, sizes) {
        tokenizer.feed(piece, &mut checker);
    }
    let ours = tokenizer.finish(&mut checker);
    if ours.is_ok() {
        assert!(checker.stack.is_empty() && checker.string.is_none() && checker.key.is_none());
        assert!(checker.done.is_some(), "accepted without a value");
    }
    if body.len() > COMPARED_BYTES || checker.max_depth >= COMPARED_DEPTH {
        return;
    }
    match (ours, serde_json::from_slice::<Value>(body)) {
        (Ok(()), Ok(theirs)) => {
            let ours = checker.done.unwrap_or_default();
            assert!(
                same(&ours, &theirs),
                "tokenizer read {ours}, serde_json {theirs}"
            );
        }
        (Err(_), Err(_)) => {}
        // RFC 8259 allows numbers beyond f64; serde_json (without arbitrary_precision)
        // refuses them.
        (Ok(()), Err(e)) if e.to_string().starts_with("number out of range") => {}
        (ours, theirs) => panic!(
            "tokenizer {ours:?}, serde_json {:?}: {:?}",
            theirs.map(|_| ()),
            String::from_utf8_lossy(body)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, sizes, body)) = split_input(data) else {
        return;
    };
    let operation = &BODY_OPERATIONS[usize::from(selector) % BODY_OPERATIONS.len()];
    check_body(operation, sizes, body);
    check_json(sizes, body);
});
