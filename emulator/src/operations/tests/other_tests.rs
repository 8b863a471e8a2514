//! CountTokens and Retrieve.

use super::*;
use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

#[test]
fn count_tokens() {
    let count = |body: Value| {
        run(
            Operation::CountTokens {
                model_id: MODEL.into(),
            },
            &body,
        )
        .map(|r| json_body(&r))
    };
    assert_eq!(
        count(
            json!({"input": {"converse": {"system": [{"text": "a b"}], "messages": [user("c d e")]}}})
        ),
        Ok(json!({"inputTokens": 5}))
    );
    let model_body =
        json!({"messages": [{"role": "user", "content": "one two"}], "system": "three"});
    assert_eq!(
        count(json!({"input": {"invokeModel": {"body": BASE64.encode(model_body.to_string())}}})),
        Ok(json!({"inputTokens": 3}))
    );
    for (body, message) in [
        (
            json!({"input": {}}),
            "input: expected exactly one of converse or invokeModel",
        ),
        (
            json!({"input": {"converse": {"messages": []}}}),
            "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
        ),
    ] {
        assert_eq!(count(body).unwrap_err().message, message);
    }
    let err = count(json!({"input": {"invokeModel": {"body": "***"}}})).unwrap_err();
    assert!(
        err.message
            .starts_with("input.invokeModel.body: expected base64"),
        "{}",
        err.message
    );
}

#[test]
fn retrieve() {
    let run_retrieve = |body: Value| {
        run(
            Operation::Retrieve {
                knowledge_base_id: "KB123".into(),
            },
            &body,
        )
        .map(|r| json_body(&r))
    };
    let body = run_retrieve(json!({"retrievalQuery": {"text": "what is bedrock"}})).unwrap();
    let results = body["retrievalResults"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[0],
        json!({
            "content": {"text": "Passage 1 from knowledge base KB123 about: what is bedrock"},
            "location": {"type": "S3", "s3Location": {"uri": "s3://emulator-kb/KB123/doc-1.txt"}},
            "score": 1.0,
        })
    );
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] > w[1]) && scores[2] > 0.0,
        "{scores:?}"
    );

    let five = run_retrieve(json!({
        "retrievalQuery": {"text": "q"},
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 5}},
    }))
    .unwrap();
    assert_eq!(
        five["retrievalResults"][4]["location"]["s3Location"]["uri"],
        "s3://emulator-kb/KB123/doc-5.txt"
    );
    let err = run_retrieve(json!({
        "retrievalQuery": {"text": "q"},
        "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 0}},
    }))
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Validation);
    assert!(run_retrieve(json!({})).is_err());
}
