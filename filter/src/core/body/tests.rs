use super::*;

const RAG: &[&[&str]] = &[
    &[
        "retrieveAndGenerateConfiguration",
        "externalSourcesConfiguration",
        "modelArn",
    ],
    &[
        "retrieveAndGenerateConfiguration",
        "knowledgeBaseConfiguration",
        "modelArn",
    ],
    &[
        "retrieveAndGenerateConfiguration",
        "knowledgeBaseConfiguration",
        "retrievalConfiguration",
        "vectorSearchConfiguration",
        "rerankingConfiguration",
        "bedrockRerankingConfiguration",
        "modelConfiguration",
        "modelArn",
    ],
];
const ASYNC: &[&[&str]] = &[&["modelId"]];
const EVALUATION: &[&[&str]] = &[&[
    "inferenceConfig",
    "models",
    "bedrockModel",
    "modelIdentifier",
]];

fn read_in_pieces(
    paths: &'static [&'static [&'static str]],
    body: &[u8],
    require_json: bool,
) -> Result<BodyFacts, BodyError> {
    let whole = {
        let mut reader = BodyReader::new(paths, &[]);
        reader.feed(body);
        reader.finish(require_json)
    };
    for size in [1, 2, 3, 7, 64] {
        let mut reader = BodyReader::new(paths, &[]);
        for piece in body.chunks(size) {
            reader.feed(piece);
        }
        assert_eq!(reader.finish(require_json), whole, "pieces of {size}");
    }
    whole
}

fn models(paths: &'static [&'static [&'static str]], body: &str) -> Result<Vec<String>, BodyError> {
    read_in_pieces(paths, body.as_bytes(), true).map(|f| f.models)
}

#[test]
fn finds_models_where_the_operation_names_them() {
    assert_eq!(
        models(
            ASYNC,
            r#"{"modelId":"meta.llama3-70b-instruct-v1:0","modelInput":{"prompt":"hi","modelId":"not-this"}}"#
        ),
        Ok(vec!["meta.llama3-70b-instruct-v1:0".to_string()])
    );
    let rag = r#"{"input":{"text":"q"},"retrieveAndGenerateConfiguration":{"type":"KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration":{"knowledgeBaseId":"KB1","modelArn":"arn:aws:bedrock:us-east-1::foundation-model/meta.llama3",
        "retrievalConfiguration":{"vectorSearchConfiguration":{"rerankingConfiguration":{"type":"BEDROCK_RERANKING_MODEL",
        "bedrockRerankingConfiguration":{"modelConfiguration":{"modelArn":"arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0"}}}}}}}}"#;
    assert_eq!(
        models(RAG, rag),
        Ok(vec![
            "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3".to_string(),
            "arn:aws:bedrock:us-west-2::foundation-model/cohere.rerank-v3-5:0".to_string()
        ])
    );
    // Arrays are transparent; each model once, in the order found.
    let evaluation = r#"{"inferenceConfig":{"models":[{"bedrockModel":{"modelIdentifier":"a.b"}},{"bedrockModel":{"modelIdentifier":"c.d"}},{"bedrockModel":{"modelIdentifier":"a.b"}}]}}"#;
    assert_eq!(
        models(EVALUATION, evaluation),
        Ok(vec!["a.b".to_string(), "c.d".to_string()])
    );
    assert_eq!(models(ASYNC, r#"{"other":1}"#), Ok(vec![]));
    assert_eq!(models(ASYNC, r#"{"modelId":null}"#), Ok(vec![]));
}

#[test]
fn a_body_that_could_read_two_ways_is_refused() {
    let cases = [
        (
            r#"{"modelId":"anthropic.x","modelId":"meta.llama3"}"#,
            BodyError::DuplicateKey,
        ),
        (
            r#"{"modelId":"anthropic.x","ModelId":"meta.llama3"}"#,
            BodyError::DuplicateKey,
        ),
        (
            r#"{"modelId":"anthropic.x","model\u0049d":"meta.llama3"}"#,
            BodyError::DuplicateKey,
        ),
        (
            r#"{"MODELID":"a.b","modelid":"c.d"}"#,
            BodyError::DuplicateKey,
        ),
        (r#"{"modelId":7}"#, BodyError::ModelNotString),
        (r#"{"modelId":["meta.llama3"]}"#, BodyError::ModelNotString),
        (
            r#"{"modelId":{"id":"meta.llama3"}}"#,
            BodyError::ModelNotString,
        ),
        (r#"{"modelId":true}"#, BodyError::ModelNotString),
        (r#"{"modelId":"meta llama"}"#, BodyError::InvalidModel),
        (r#"{"modelId":""}"#, BodyError::InvalidModel),
        (r#"{"modelId":"a.b\n"}"#, BodyError::InvalidModel),
        (
            r#"{"modelId":"anthropic.x"}{"modelId":"meta.llama3"}"#,
            BodyError::NotJson(JsonError::Unexpected),
        ),
        (
            r#"{"modelId":"anthropic.x",}"#,
            BodyError::NotJson(JsonError::Unexpected),
        ),
        ("", BodyError::NotJson(JsonError::Truncated)),
    ];
    for (body, expected) in cases {
        assert_eq!(models(ASYNC, body), Err(expected), "{body}");
    }
    // Case-insensitive keys lead to the model too, and twice in one object is refused.
    assert_eq!(
        models(ASYNC, r#"{"MODELID":"meta.llama3"}"#),
        Ok(vec!["meta.llama3".to_string()])
    );
    let twice = r#"{"retrieveAndGenerateConfiguration":{"knowledgeBaseConfiguration":{"modelArn":"a.b"}},"RetrieveAndGenerateConfiguration":{"knowledgeBaseConfiguration":{"modelArn":"c.d"}}}"#;
    assert_eq!(models(RAG, twice), Err(BodyError::DuplicateKey));
    // The same key in two different objects is fine.
    let two_objects = r#"{"inferenceConfig":{"models":[{"bedrockModel":{"modelIdentifier":"a.b"}},{"bedrockModel":{"modelIdentifier":"c.d"}}]}}"#;
    assert!(models(EVALUATION, two_objects).is_ok());
    let long = format!(
        r#"{{"modelId":"{}"}}"#,
        "a".repeat(model::MAX_MODEL_ID_BYTES + 1)
    );
    assert_eq!(models(ASYNC, &long), Err(BodyError::InvalidModel));
    let many: Vec<String> = (0..=MAX_MODELS)
        .map(|i| format!(r#"{{"bedrockModel":{{"modelIdentifier":"m.{i}"}}}}"#))
        .collect();
    let body = format!(r#"{{"inferenceConfig":{{"models":[{}]}}}}"#, many.join(","));
    assert_eq!(models(EVALUATION, &body), Err(BodyError::TooManyModels));
}

#[test]
fn estimates_text_media_and_the_largest_output_cap() {
    let body = r#"{"messages":[{"role":"user","content":[{"text":"12345678"},{"image":{"format":"png","source":{"bytes":"QUFBQUFBQUFBQUFBQUFBQUFB"}}}]}],"system":[{"text":"abcd\u00e9"}],"inferenceConfig":{"maxTokens":50}}"#;
    let facts = read_in_pieces(&[], body.as_bytes(), false).unwrap();
    // "user" (4) + "12345678" (8) + "png" (3) + "abcdé" (5); 24 base64 characters are 18 bytes.
    assert_eq!(
        (facts.text_chars, facts.media_bytes, facts.output_cap),
        (20, 18, Some(50))
    );
    let llama_vision = r#"{"prompt":"ab","images":["QUFB","QUFB"],"max_gen_len":9}"#;
    let facts = read_in_pieces(&[], llama_vision.as_bytes(), false).unwrap();
    assert_eq!(
        (facts.text_chars, facts.media_bytes, facts.output_cap),
        (2, 6, Some(9))
    );
    // A duplicated cap counts at its largest; caps that are not non-negative integers are not caps.
    for (body, cap) in [
        (r#"{"max_tokens":1,"max_tokens":100000}"#, Some(100_000)),
        (r#"{"max_tokens":-5}"#, None),
        (r#"{"max_tokens":1e9}"#, None),
        (r#"{"max_tokens":"100"}"#, None),
        (r#"{"max_tokens":99999999999999999999999}"#, None),
        (r#"{"max_tokens":18446744073709551615}"#, Some(u64::MAX)),
        (
            r#"{"inferenceConfig":{"maxTokens":3},"textGenerationConfig":{"maxTokenCount":4}}"#,
            Some(4),
        ),
        (r#"{"nested":{"max_tokens":7}}"#, None),
    ] {
        assert_eq!(
            read_in_pieces(&[], body.as_bytes(), false)
                .unwrap()
                .output_cap,
            cap,
            "{body}"
        );
    }
}

#[test]
fn a_body_that_is_not_json_is_all_text_unless_json_is_required() {
    let facts = read_in_pieces(&[], b"not json at all!", false).unwrap();
    assert_eq!((facts.text_chars, facts.json), (16, false));
    assert_eq!(
        read_in_pieces(ASYNC, b"not json", true),
        Err(BodyError::NotJson(JsonError::Unexpected))
    );
}

#[test]
fn hostile_bodies_cost_fixed_memory() {
    // Deep nesting: followed to a fixed depth, then only counted.
    let depth = 2_000_000;
    let mut reader = BodyReader::new(ASYNC, &[]);
    reader.feed(&vec![b'['; depth]);
    reader.feed(b"\"deep text\"");
    reader.feed(&vec![b']'; depth]);
    assert!(reader.collector.frames.len() <= TRACKED_DEPTH);
    let facts = reader.finish(false).unwrap();
    assert_eq!(facts.text_chars, 9);
    // A huge array of objects at a model path: refused at the bound, not collected.
    let mut reader = BodyReader::new(EVALUATION, &[]);
    reader.feed(br#"{"inferenceConfig":{"models":["#);
    for i in 0..10_000 {
        reader.feed(format!(r#"{{"bedrockModel":{{"modelIdentifier":"m.{i}"}}}},"#).as_bytes());
        if i > MAX_MODELS {
            assert!(reader.collector.found.len() <= MAX_MODELS);
        }
    }
    assert_eq!(reader.finish(true), Err(BodyError::TooManyModels));
    // Arrays are transparent even at the top: more models checked, never fewer.
    let mut reader = BodyReader::new(ASYNC, &[]);
    reader.feed(br#"[[[[{"modelId":"a.b"}]]]]"#);
    assert_eq!(reader.finish(true).unwrap().models, ["a.b"]);
}

#[test]
fn a_value_where_the_table_stops_makes_the_models_undetermined() {
    const FLOW: &[&[&str]] = &[&["definition", "nodes", "configuration", "prompt", "modelId"]];
    const DEEPER: &[&[&str]] = &[&["definition", "nodes", "configuration", "loop", "definition"]];
    let read = |body: &str| {
        let mut reader = BodyReader::new(FLOW, DEEPER);
        reader.feed(body.as_bytes());
        reader.finish(true).unwrap()
    };
    let shallow =
        read(r#"{"definition":{"nodes":[{"configuration":{"prompt":{"modelId":"a.b"}}}]}}"#);
    assert_eq!(
        (shallow.models, shallow.beyond_table),
        (vec!["a.b".to_string()], false)
    );
    let deep = read(
        r#"{"definition":{"nodes":[{"configuration":{"loop":{"definition":{"nodes":[]}}}}]}}"#,
    );
    assert!(deep.beyond_table);
    let null = read(r#"{"definition":{"nodes":[{"configuration":{"loop":{"definition":null}}}]}}"#);
    assert!(!null.beyond_table);
}
