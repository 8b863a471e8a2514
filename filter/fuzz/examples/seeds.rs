//! Writes the seed corpora of the fuzz targets (`corpus/<target>/`): Bedrock paths, tokens
//! signed with the fixtures' keys, response bodies with real event-stream frames, and request
//! bodies. Run from `filter/fuzz` with `cargo run --example seeds`; the output is committed.

use std::fs;
use std::path::Path;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bedrock_gateway_filter::core::auth::{Authenticator, Outcome};
use bedrock_gateway_filter_fuzz::*;
use jwt_simple::prelude::*;
use serde_json::json;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn paths() {
    let paths = [
        (
            "converse",
            "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        ),
        (
            "converse-stream",
            "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        ),
        ("invoke", "/model/amazon.titan-text-express-v1/invoke"),
        (
            "invoke-stream",
            "/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream",
        ),
        (
            "invoke-arn",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3d4/invoke",
        ),
        (
            "converse-arn-query",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse?trace=1",
        ),
        (
            "count-tokens",
            "/model/anthropic.claude-3-haiku-20240307-v1:0/count-tokens",
        ),
        ("guardrail", "/guardrail/gr-123/version/1/apply"),
        ("async-invoke", "/async-invoke"),
        (
            "async-invoke-get",
            "/async-invoke/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aasync-invoke%2Fabc",
        ),
        ("retrieve", "/knowledgebases/KB12345678/retrieve"),
        ("rag", "/retrieveAndGenerate"),
        (
            "agent-invoke",
            "/agents/AGENT123/agentAliases/ALIAS123/sessions/s-1/text",
        ),
        ("sessions", "/sessions/s-1/"),
        ("flows-create", "/flows/"),
        ("flow-invoke", "/flows/F1/aliases/A1"),
        ("agents-list", "/agents/?maxResults=10&nextToken=abc%3D%3D"),
        (
            "foundation-models",
            "/foundation-models?byProvider=anthropic",
        ),
        ("evaluation-jobs", "/evaluation-jobs"),
        (
            "tags-arn",
            "/tags/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aagent%2FA1",
        ),
        ("custom-rule", "/custom/x/run/a/b"),
        ("root", "/"),
        ("dotdot", "/model/anthropic.x/../meta.llama3/converse"),
        (
            "dot-encoded",
            "/model/anthropic.x/%2E%2E/meta.llama3/converse",
        ),
        (
            "slash-encoded",
            "/model/anthropic.x%2F..%2Fmeta.llama3/converse",
        ),
        ("arn-empty-part", "/model/arn%3Aaws%2F%2Fx/converse"),
        ("double-slash", "/model//meta.llama3/converse"),
        ("leading-double-slash", "//model/m/converse"),
        ("double-encoding", "/model/a%252Fb/converse"),
        ("encoded-letter", "/mod%65l/m/converse"),
        ("path-parameter", "/model/anthropic.x;/..;/meta/converse"),
        ("backslash", "/model/a%5C..%5Cb/converse"),
        ("fragment", "/model/m/converse#frag"),
        ("utf8-encoded", "/model/caf%C3%A9/converse"),
        ("bad-utf8-encoded", "/model/a%FFb/converse"),
        ("relative", "model/m/converse"),
    ];
    for (name, path) in paths {
        write("path", name, path.as_bytes());
    }
}

fn claims(tenant: &str, issued: u64) -> JWTClaims<serde_json::Value> {
    let mut c = Claims::with_custom_claims(
        json!({
            "custom:tenant": tenant,
            "realm_access": {"roles": ["dev", "admin-eu", "intern"]},
            "tier": "gold"
        }),
        Duration::from_secs(3600),
    )
    .with_issuer(ISSUER)
    .with_audience(AUDIENCE)
    .with_subject("alice");
    c.issued_at = Some(UnixTimeStamp::from_secs(issued));
    c.invalid_before = Some(UnixTimeStamp::from_secs(issued));
    c.expires_at = Some(UnixTimeStamp::from_secs(issued + 3600));
    c
}

// A token without `kid` is checked with the key of its algorithm.
const VALID_TOKENS: [&str; 8] = [
    "rs256", "ps256", "rs512", "es256", "eddsa", "hs256", "partner", "no-kid",
];

fn partner() -> JWTClaims<serde_json::Value> {
    let mut c = Claims::with_custom_claims(json!({"tenant": "acme"}), Duration::from_secs(600))
        .with_issuer(PARTNER_ISSUER)
        .with_audience(AUDIENCE)
        .with_subject("bob");
    c.issued_at = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.invalid_before = Some(UnixTimeStamp::from_secs(NOW - 10));
    c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 590));
    c
}

fn tokens() {
    let pem = RSA_PEM;
    let good = || claims("team-a", NOW - 60);
    let rsa = rsa_pair().with_key_id("rsa");
    let ed = ed25519_pair().with_key_id("ed");
    let rs256 = rsa.sign(good()).unwrap();
    let mut tokens = vec![
        ("rs256", rs256.clone()),
        (
            "ps256",
            PS256KeyPair::from_pem(pem)
                .unwrap()
                .with_key_id("rsa")
                .sign(good())
                .unwrap(),
        ),
        (
            "rs512",
            RS512KeyPair::from_pem(pem)
                .unwrap()
                .with_key_id("rsa")
                .sign(good())
                .unwrap(),
        ),
        (
            "es256",
            p256_pair().with_key_id("p256").sign(good()).unwrap(),
        ),
        ("eddsa", ed.sign(good()).unwrap()),
        (
            "hs256",
            HS256Key::from_bytes(HS256_SECRET)
                .with_key_id("hs")
                .authenticate(good())
                .unwrap(),
        ),
        (
            "partner",
            ed25519_pair()
                .with_key_id("partner-ed")
                .sign(partner())
                .unwrap(),
        ),
        ("expired", rsa.sign(claims("team-a", NOW - 7200)).unwrap()),
        (
            "not-yet-valid",
            rsa.sign(claims("team-a", NOW + 600)).unwrap(),
        ),
        (
            "tenant-not-allowed",
            rsa.sign(claims("intruders", NOW)).unwrap(),
        ),
        (
            "wrong-audience",
            rsa.sign(claims("team-a", NOW).with_audience("someone-else"))
                .unwrap(),
        ),
        (
            "unknown-kid",
            rsa_pair().with_key_id("rotated").sign(good()).unwrap(),
        ),
        ("no-kid", p256_pair().sign(good()).unwrap()),
    ];
    let parts: Vec<&str> = rs256.split('.').collect();
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    tokens.push((
        "alg-none",
        format!("{}.{}.AA", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]),
    ));
    tokens.push((
        "header-only-json",
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"rsa"}"#),
            b64(r#"{"iss":"https://idp.example.com","aud":["x"],"exp":1.5e9}"#)
        ),
    ));
    tokens.push(("truncated", rs256[..rs256.len() / 2].to_string()));
    tokens.push(("two-parts", format!("{}.{}", parts[0], parts[1])));
    tokens.push(("garbage", "not a token at all".to_string()));
    // The fixtures fit together: the valid seeds pass, the others are refused.
    let mut auth = Authenticator::new(jwt_config());
    assert!(auth.set_keys(&identity_keys()).is_empty());
    for (name, token) in tokens {
        let header = vec![(
            "authorization".to_string(),
            format!("Bearer {token}").into_bytes(),
        )];
        let outcome = auth.authenticate(&header, NOW, false);
        let valid = VALID_TOKENS.contains(&name);
        assert_eq!(
            matches!(outcome, Outcome::Authenticated(_)),
            valid,
            "{name}: {outcome:?}"
        );
        write("token", name, token.as_bytes());
    }
}

fn frame(event_type: &str, payload: &[u8]) -> Vec<u8> {
    let message = Message::new(payload.to_vec())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_string().into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

/// A usage input: selector, piece sizes, body.
fn usage(name: &str, selector: u8, sizes: [u8; 2], body: &[u8]) {
    let mut input = vec![selector, sizes[0], sizes[1]];
    input.extend_from_slice(body);
    write("usage", name, &input);
}

fn usages() {
    usage(
        "converse",
        0,
        [0, 0],
        br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":5,"outputTokens":6,"totalTokens":11},"metrics":{"latencyMs":120}}"#,
    );
    usage(
        "anthropic-invoke",
        0,
        [7, 64],
        br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":34}}"#,
    );
    usage(
        "error",
        0b100,
        [0, 0],
        br#"{"message":"Too many requests"}"#,
    );
    usage("counted", 0b110, [0, 0], b"1234");

    let mut converse_stream = Vec::new();
    converse_stream.extend(frame("messageStart", br#"{"role":"assistant"}"#));
    converse_stream.extend(frame(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"hello"}}"#,
    ));
    converse_stream.extend(frame("contentBlockStop", br#"{"contentBlockIndex":0}"#));
    converse_stream.extend(frame("messageStop", br#"{"stopReason":"end_turn"}"#));
    converse_stream.extend(frame(
        "metadata",
        br#"{"usage":{"inputTokens":3,"outputTokens":7,"totalTokens":10},"metrics":{"latencyMs":1}}"#,
    ));
    usage("converse-stream", 1, [0, 0], &converse_stream);
    usage("converse-stream-pieces", 1, [5, 13], &converse_stream);

    let chunk = |json: &str| {
        frame(
            "chunk",
            format!(r#"{{"bytes":"{}"}}"#, STANDARD.encode(json)).as_bytes(),
        )
    };
    let mut invoke_stream =
        chunk(r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}"#);
    invoke_stream.extend(chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":8,"invocationLatency":1,"firstByteLatency":1}}"#));
    usage("invoke-stream", 1, [0, 0], &invoke_stream);
    usage("invoke-stream-bytes", 1, [1, 2], &invoke_stream);

    let mut exception = frame("messageStart", br#"{"role":"assistant"}"#);
    let message = Message::new(br#"{"message":"throttled"}"#.to_vec())
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String("throttlingException".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    write_message_to(&message, &mut exception).unwrap();
    usage("stream-exception", 1, [0, 0], &exception);
    usage(
        "stream-corrupt",
        1,
        [0, 0],
        b"\x00\x00\x00\x10garbage-garbage-garbage",
    );
}

/// A body input: selector (index in BODY_OPERATIONS), piece sizes, body.
fn body(name: &str, operation: &str, sizes: [u8; 2], body: &str) {
    let index = BODY_OPERATIONS
        .iter()
        .position(|o| o.name == operation)
        .unwrap();
    let mut input = vec![index as u8, sizes[0], sizes[1]];
    input.extend_from_slice(body.as_bytes());
    write("body", name, &input);
}

fn bodies() {
    body(
        "converse",
        "Converse",
        [0, 0],
        r#"{"messages":[{"role":"user","content":[{"text":"Hello, how are you?"},{"image":{"format":"png","source":{"bytes":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="}}}]}],"system":[{"text":"Be brief."}],"inferenceConfig":{"maxTokens":512,"temperature":0.5,"topP":0.9},"additionalModelRequestFields":{"top_k":200}}"#,
    );
    body(
        "converse-escapes",
        "Converse",
        [3, 7],
        r#"{"messages":[{"role":"user","content":[{"text":"\"quoted\" \\ \/ \b\f\n\r\t \u00e9\u20ac\ud83d\ude00 é€😀"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"t","inputSchema":{"json":{"type":"object","properties":{}}}}}]}}"#,
    );
    body(
        "anthropic-invoke",
        "InvokeModel",
        [0, 0],
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1024,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"QUFBQQ=="}},{"type":"text","text":"What is this?"}]}]}"#,
    );
    body(
        "titan-invoke",
        "InvokeModel",
        [1, 1],
        r#"{"inputText":"Summarize: ...","textGenerationConfig":{"maxTokenCount":300,"stopSequences":[],"temperature":0,"topP":1}}"#,
    );
    body(
        "llama-invoke",
        "InvokeModel",
        [0, 0],
        r#"{"prompt":"<|begin_of_text|>Hi","max_gen_len":18446744073709551615,"temperature":-0.5e-3}"#,
    );
    body(
        "nova-invoke",
        "InvokeModel",
        [0, 0],
        r#"{"schemaVersion":"messages-v1","messages":[{"role":"user","content":[{"text":"Hi"},{"video":{"format":"mp4","source":{"bytes":"AAAA"}}}]}],"inferenceConfig":{"max_new_tokens":100}}"#,
    );
    body("not-json", "InvokeModel", [0, 0], "not json at all!");
    body(
        "async-invoke",
        "StartAsyncInvoke",
        [0, 0],
        r#"{"clientRequestToken":"t-1","modelId":"amazon.nova-reel-v1:0","modelInput":{"taskType":"TEXT_VIDEO","textToVideoParams":{"text":"a cat"}},"outputDataConfig":{"s3OutputDataConfig":{"s3Uri":"s3://bucket/out"}}}"#,
    );
    body(
        "async-invoke-duplicate",
        "StartAsyncInvoke",
        [0, 0],
        r#"{"modelId":"amazon.nova-reel-v1:0","MODELID":"meta.llama3-8b-instruct-v1:0","modelInput":{}}"#,
    );
    body(
        "async-invoke-not-string",
        "StartAsyncInvoke",
        [0, 0],
        r#"{"modelId":["amazon.nova-reel-v1:0"],"modelInput":{}}"#,
    );
    body(
        "rag",
        "RetrieveAndGenerate",
        [16, 5],
        r#"{"input":{"text":"What is Bedrock?"},"retrieveAndGenerateConfiguration":{"type":"KNOWLEDGE_BASE","knowledgeBaseConfiguration":{"knowledgeBaseId":"KB1","modelArn":"arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0","retrievalConfiguration":{"vectorSearchConfiguration":{"numberOfResults":5,"rerankingConfiguration":{"type":"BEDROCK_RERANKING_MODEL","bedrockRerankingConfiguration":{"modelConfiguration":{"modelArn":"arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"}}}}}}}}"#,
    );
    body(
        "rag-external",
        "RetrieveAndGenerate",
        [0, 0],
        r#"{"input":{"text":"q"},"retrieveAndGenerateConfiguration":{"type":"EXTERNAL_SOURCES","externalSourcesConfiguration":{"modelArn":"anthropic.claude-v2","sources":[{"sourceType":"BYTE_CONTENT","byteContent":{"contentType":"text/plain","data":"aGVsbG8=","identifier":"doc"}}]}}}"#,
    );
    body(
        "create-flow",
        "CreateFlow",
        [0, 0],
        r#"{"name":"f","executionRoleArn":"arn:aws:iam::1:role/r","definition":{"nodes":[{"name":"In","type":"Input","configuration":{"input":{}}},{"name":"P","type":"Prompt","configuration":{"prompt":{"sourceConfiguration":{"inline":{"modelId":"anthropic.claude-3-haiku-20240307-v1:0","templateType":"TEXT","templateConfiguration":{"text":{"text":"{{x}}"}}}}}}},{"name":"L","type":"Loop","configuration":{"loop":{"definition":{"nodes":[{"name":"Inner","type":"Prompt"}]}}}}],"connections":[]}}"#,
    );
    body(
        "evaluation-job",
        "CreateEvaluationJob",
        [0, 0],
        r#"{"jobName":"j","roleArn":"arn:aws:iam::1:role/r","evaluationConfig":{"automated":{"datasetMetricConfigs":[],"evaluatorModelConfig":{"bedrockEvaluatorModels":[{"modelIdentifier":"anthropic.claude-3-haiku-20240307-v1:0"}]}}},"inferenceConfig":{"models":[{"bedrockModel":{"modelIdentifier":"amazon.nova-lite-v1:0","inferenceParams":"{}"}},{"bedrockModel":{"modelIdentifier":"amazon.nova-pro-v1:0"}}]},"outputDataConfig":{"s3Uri":"s3://b/o"}}"#,
    );
    let deep = format!("{}{}", "[".repeat(120), "]".repeat(120));
    body("deep", "Converse", [0, 0], &deep);
    body(
        "numbers",
        "InvokeModel",
        [2, 0],
        r#"[0,-0,1,-1,1.5,1e3,1E-3,-2.5e+10,18446744073709551615,18446744073709551616,1e400,true,false,null,"",{}]"#,
    );
}

fn main() {
    paths();
    tokens();
    usages();
    bodies();
}
