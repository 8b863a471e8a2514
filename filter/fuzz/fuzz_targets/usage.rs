//! Response usage: `quota::usage::UsageParser` reading a JSON or event-stream response body
//! in pieces. Input: a selector byte (bit 0: event stream or JSON; bits 1-2: a failed status,
//! token-count headers), two piece sizes, then the body. However the body is cut, the usage
//! read is the same.

#![no_main]

use bedrock_gateway_filter::core::quota::usage::{Usage, UsageParser};
use bedrock_gateway_filter_fuzz::{pieces, split_input};
use libfuzzer_sys::fuzz_target;

fn read(status: u32, headers: &[(String, Vec<u8>)], pieces: &[&[u8]]) -> Option<Usage> {
    let mut parser = UsageParser::new(status, headers);
    parser.feed(&[]);
    for piece in pieces {
        parser.feed(piece);
    }
    parser.feed(&[]);
    parser.finish()
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, sizes, body)) = split_input(data) else {
        return;
    };
    let content_type: &[u8] = if selector & 1 == 1 {
        b"application/vnd.amazon.eventstream"
    } else {
        b"application/json"
    };
    let mut headers = vec![("content-type".to_string(), content_type.to_vec())];
    // Rarely: counts in headers (InvokeModel), whose values the body's end then supplies.
    let counted = selector & 0b110 == 0b110;
    if counted {
        let split = body.len() / 2;
        headers.push((
            "x-amzn-bedrock-input-token-count".to_string(),
            body[..split].to_vec(),
        ));
        headers.push((
            "x-amzn-bedrock-output-token-count".to_string(),
            body[split..].to_vec(),
        ));
    }
    let status = if selector & 0b110 == 0b100 { 429 } else { 200 };

    let cut = read(status, &headers, &pieces(body, sizes));
    let whole = read(status, &headers, &[body]);
    assert_eq!(
        cut, whole,
        "pieces of {sizes:?} read otherwise than the whole body"
    );
    if status >= 400 {
        assert_eq!(
            whole,
            Some(Usage::default()),
            "a failed response used nothing"
        );
    }
});
