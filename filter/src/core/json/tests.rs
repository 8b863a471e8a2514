use super::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Rebuilds the document from the events, to compare with serde_json's reading.
#[derive(Default)]
struct Rebuild {
    stack: Vec<(Value, Option<String>)>,
    key: Option<String>,
    text: Vec<u8>,
    in_key: bool,
    done: Option<Value>,
}

impl Rebuild {
    fn put(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.done = Some(value),
            Some((Value::Array(items), _)) => items.push(value),
            Some((Value::Object(map), _)) => {
                let key = self.key.take().expect("a key before an object member");
                map.insert(key, value);
            }
            Some(_) => unreachable!(),
        }
    }
}

impl Events for Rebuild {
    fn open(&mut self, object: bool) {
        let container = if object {
            Value::Object(Map::new())
        } else {
            Value::Array(Vec::new())
        };
        let key = self.key.take();
        self.stack.push((container, key));
    }
    fn close(&mut self) {
        let (value, key) = self.stack.pop().expect("an open container");
        self.key = key;
        self.put(value);
    }
    fn string_start(&mut self, key: bool) {
        self.in_key = key;
        self.text.clear();
    }
    fn string_piece(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
    }
    fn string_end(&mut self) {
        let text = String::from_utf8(std::mem::take(&mut self.text)).expect("valid UTF-8");
        if self.in_key {
            self.key = Some(text);
        } else {
            self.put(Value::String(text));
        }
    }
    fn number(&mut self, integer: Option<u64>) {
        // Only the integer facts are delivered: a marker the comparison understands.
        self.put(match integer {
            Some(n) => Value::from(n),
            None => Value::String("<number>".into()),
        });
    }
    fn literal(&mut self, value: Option<bool>) {
        self.put(value.map_or(Value::Null, Value::Bool));
    }
}

/// serde_json's value with non-integer numbers replaced by the marker.
fn normalized(value: Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map_or_else(|| Value::String("<number>".into()), Value::from),
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalized(v))).collect())
        }
        other => other,
    }
}

fn read(pieces: &[&[u8]]) -> Result<Value, JsonError> {
    let mut tokenizer = Tokenizer::default();
    let mut rebuild = Rebuild::default();
    for piece in pieces {
        tokenizer.feed(piece, &mut rebuild);
    }
    tokenizer.finish(&mut rebuild)?;
    Ok(rebuild.done.expect("a value"))
}

fn read_split_everywhere(text: &[u8]) -> Result<Value, JsonError> {
    let whole = read(&[text]);
    let bytes: Vec<&[u8]> = text.chunks(1).collect();
    assert_eq!(
        read(&bytes),
        whole,
        "byte by byte: {:?}",
        String::from_utf8_lossy(text)
    );
    for at in 0..=text.len() {
        let (a, b) = text.split_at(at);
        assert_eq!(read(&[a, b]), whole, "split at {at}");
    }
    whole
}

#[test]
fn reads_what_serde_json_reads() {
    let documents = [
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        r#" [ ] "#,
        r#"{}"#,
        r#""just a string""#,
        r#"0"#,
        r#"-0.5e+10"#,
        r#"18446744073709551615"#,
        r#"18446744073709551616"#,
        r#"[1.0, 2E3, -7, 1e-2, 0.25]"#,
        r#"{"esc":"\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00","raw":"é€😀"}"#,
        r#"{"modelId":"us.anthropic.claude-3-5-haiku-20241022-v1:0","inferenceConfig":{"maxTokens":50}}"#,
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    for doc in documents {
        let ours = read_split_everywhere(doc.as_bytes());
        match serde_json::from_str::<Value>(doc) {
            Ok(theirs) => assert_eq!(ours, Ok(normalized(theirs)), "{doc}"),
            Err(e) => assert!(
                ours.is_err(),
                "{doc}: serde_json says {e}, we read {ours:?}"
            ),
        }
    }
}

#[test]
fn refuses_what_is_not_json() {
    use JsonError::*;
    let cases: [(&[u8], JsonError); 24] = [
        (b"", Truncated),
        (b"  ", Truncated),
        (b"{", Truncated),
        (b"{\"a\"", Truncated),
        (b"{\"a\":", Truncated),
        (b"\"abc", Truncated),
        (b"[1,]", Unexpected),
        (b"{\"a\":1,}", Unexpected),
        (b"{,}", Unexpected),
        (b"[1 2]", Unexpected),
        (b"{} {}", Unexpected),
        (b"{'a':1}", Unexpected),
        (b"{\"a\":1}//c", Unexpected),
        (b"/*c*/{}", Unexpected),
        (b"[NaN]", Unexpected),
        (b"[01]", Unexpected),
        (b"[1.]", Unexpected),
        (b"[-]", Unexpected),
        (b"[tru]", Unexpected),
        (b"\"a\x01b\"", BadString),
        (b"\"\\x\"", BadString),
        (b"\"\\ud83d\"", BadString),
        (b"\"\\ude00\"", BadString),
        (b"\"\xff\"", BadString),
    ];
    for (text, expected) in cases {
        assert_eq!(
            read_split_everywhere(text).map(|_| ()),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    for bad_utf8 in [
        &b"\"\xc0\xaf\""[..],
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"\xe2\x82\"",
    ] {
        assert_eq!(
            read(&[bad_utf8]).map(|_| ()),
            Err(BadString),
            "{bad_utf8:?}"
        );
    }
    assert_eq!(
        read(&[b"\xef\xbb\xbf{}"]).map(|_| ()),
        Err(Unexpected),
        "a BOM"
    );
}

#[test]
fn deep_nesting_costs_bits_not_frames() {
    let depth = 1_000_000;
    let mut tokenizer = Tokenizer::default();
    let mut rebuild = Counting::default();
    tokenizer.feed(&vec![b'['; depth], &mut rebuild);
    tokenizer.feed(&vec![b']'; depth], &mut rebuild);
    assert_eq!(tokenizer.finish(&mut rebuild), Ok(()));
    assert_eq!(rebuild.opens, depth);
    assert!(tokenizer.stack.capacity() <= 2 * (depth / 64) + 64);
}

#[derive(Default)]
struct Counting {
    opens: usize,
}

impl Events for Counting {
    fn open(&mut self, _: bool) {
        self.opens += 1;
    }
    fn close(&mut self) {}
    fn string_start(&mut self, _: bool) {}
    fn string_piece(&mut self, _: &[u8]) {}
    fn string_end(&mut self) {}
    fn number(&mut self, _: Option<u64>) {}
    fn literal(&mut self, _: Option<bool>) {}
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_document_reads_back_in_any_pieces(value in json_value(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5)) {
        let text = serde_json::to_vec(&value).unwrap();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for cut in at {
            pieces.push(&text[last..cut]);
            last = cut;
        }
        pieces.push(&text[last..]);
        prop_assert_eq!(read(&pieces), Ok(normalized(value)));
    }

    #[test]
    fn accepts_exactly_what_serde_json_accepts(text in prop::collection::vec(prop::sample::select(b"{}[]\",:0123456789.eE+-tfnrulsa \\/u\x01\xc3\xa9".to_vec()), 0..40)) {
        let ours = read(&[&text]).is_ok();
        let theirs = serde_json::from_slice::<Value>(&text).is_ok();
        prop_assert_eq!(ours, theirs, "{:?}", String::from_utf8_lossy(&text));
    }
}
