//! Hostile and careless clients against the whole gateway: paths that could be read two ways,
//! models named in bodies, other spellings of a model, bodies built to exhaust a worker, and
//! requests the gateway refuses after their quota was charged. Raw HTTP/1.1 where a client
//! library would normalize what the test must send as it is.

use std::time::Duration as StdDuration;

use gateway_e2e::{Stack, StackOptions};
use jwt_simple::prelude::*;
use serde_json::{Value, json};
use serde_norway::Value as Yaml;

use crate::common::{RawResponse, fresh_window, raw_http, start, wait_for_audit};

const SECRET: &str = "a-hardening-test-secret-of-32-bytes-or-more";
const ISSUER: &str = "hardening-tests";
const AUDIENCE: &str = "bedrock-gateway";
const CONVERSE: &str = r#"{"messages":[{"role":"user","content":[{"text":"hello"}]}]}"#;
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const LLAMA: &str = "meta.llama3-8b-instruct-v1:0";

fn token(tenant: &str) -> String {
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(
            Claims::with_custom_claims(json!({"tenant": tenant}), Duration::from_mins(30))
                .with_issuer(ISSUER)
                .with_audience(AUDIENCE)
                .with_subject("tester"),
        )
        .unwrap()
}

/// `team-a` may use Anthropic models (and its application inference profiles) with any
/// operation of any service; `team-any` any model.
fn options(quotas: Option<&str>, envoy_concurrency: u32) -> StackOptions {
    let auth: Yaml = serde_norway::from_str(&format!(
        r#"
mode: jwt
issuers:
  - name: test
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    algorithms: [HS256]
    hs256_secret_env: GATEWAY_TEST_SECRET
access:
  tenants:
    team-a:
      - services: ["*"]
        models: ["anthropic.*", "arn:aws:bedrock:*:*:application-inference-profile/*"]
    team-any:
      - services: ["*"]
"#
    ))
    .unwrap();
    let quotas: Option<Yaml> = quotas.map(|q| serde_norway::from_str(q).unwrap());
    StackOptions {
        configure: Box::new(move |c| {
            let audit = c["auth"]["audit_log"].clone();
            c["auth"] = auth.clone();
            c["auth"]["audit_log"] = audit;
            if let Some(quotas) = &quotas {
                c["quotas"] = quotas.clone();
            }
        }),
        xds_env: vec![("GATEWAY_TEST_SECRET".into(), SECRET.into())],
        envoy_concurrency,
        ..StackOptions::default()
    }
}

fn post(stack: &Stack, path: &str, token: Option<&str>, body: &[u8]) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_bytes()));
    }
    raw_http(stack, "POST", path, &headers, body)
}

fn converse(stack: &Stack, model_in_path: &str, token: &str) -> RawResponse {
    post(
        stack,
        &format!("/model/{model_in_path}/converse"),
        Some(token),
        CONVERSE.as_bytes(),
    )
}

fn error_type(response: &RawResponse) -> Option<&str> {
    response.header("x-amzn-errortype")
}

fn paths_seen(stack: &Stack) -> Vec<String> {
    stack
        .emulator_requests()
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect()
}

#[test]
fn ambiguous_paths_are_refused_before_anything_else() {
    let stack = start(options(None, 2));
    let team_a = token("team-a");
    let hostile = [
        format!("/model//{LLAMA}/converse"),
        format!("/model/{HAIKU}/../{LLAMA}/converse"),
        format!("/model/{HAIKU}/%2E%2E/{LLAMA}/converse"),
        format!("/model/{HAIKU}/%2e%2e/{LLAMA}/converse"),
        format!("/model/{HAIKU}%2F..%2F{LLAMA}/converse"),
        format!("/model/{HAIKU}%2F%2E%2E%2F{LLAMA}/converse"),
        format!("/model/{HAIKU}%252F..%252F{LLAMA}/converse"),
        format!("/model/{HAIKU};/..;/{LLAMA}/converse"),
        format!("/model/{HAIKU}%5C..%5C{LLAMA}/converse"),
        format!("/model/{HAIKU}/./converse"),
        format!("/mod%65l/{LLAMA}/converse"),
        format!("/model/{LLAMA}%2Fx/converse"),
        format!("/model/{LLAMA}%00/converse"),
        format!("/model/{LLAMA}%0A/converse"),
        "/model/a%zz/converse".to_string(),
    ];
    for path in &hostile {
        for token in [Some(team_a.as_str()), None] {
            let response = post(&stack, path, token, CONVERSE.as_bytes());
            assert_eq!(response.status, 400, "{path}: {}", response.text());
            // Envoy refuses some itself; what the filter refuses has Bedrock's shape.
            if let Some(code) = error_type(&response) {
                assert_eq!(code, "ValidationException", "{path}");
            }
        }
    }
    assert!(
        paths_seen(&stack).is_empty(),
        "forwarded: {:?}",
        paths_seen(&stack)
    );

    // What SDKs send still works: an application inference profile ARN (its `/` encoded, as
    // botocore encodes labels), a raw `:`.
    let profile =
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3d4";
    for model in [profile, HAIKU] {
        let response = converse(&stack, model, &team_a);
        assert_eq!(response.status, 200, "{model}: {}", response.text());
    }
    assert_eq!(paths_seen(&stack).len(), 2);
    let audit = wait_for_audit(&stack, hostile.len());
    assert!(
        audit.iter().any(|l| l["reason"] == "ambiguous_path"),
        "{audit:?}"
    );
}

#[test]
fn models_named_in_the_body_are_checked_like_models_in_the_path() {
    let stack = start(options(None, 2));
    let team_a = token("team-a");
    let arn = |model: &str| format!("arn:aws:bedrock:us-east-1::foundation-model/{model}");
    let async_invoke = |model: &str| {
        json!({"modelId": model, "modelInput": {"messages": []},
               "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}}})
    };
    let rag = |generator: &str, reranker: Option<&str>| {
        let mut configuration = json!({"knowledgeBaseId": "KB1", "modelArn": arn(generator)});
        if let Some(reranker) = reranker {
            configuration["retrievalConfiguration"] = json!({"vectorSearchConfiguration": {
                "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL",
                    "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": arn(reranker)}}}}});
        }
        json!({"input": {"text": "q"}, "retrieveAndGenerateConfiguration":
               {"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": configuration}})
    };
    let rerank = |model: &str| {
        json!({"queries": [{"type": "TEXT", "textQuery": {"text": "q"}}], "sources": [],
               "rerankingConfiguration": {"type": "BEDROCK_RERANKING_MODEL",
                   "bedrockRerankingConfiguration": {"modelConfiguration": {"modelArn": arn(model)}}}})
    };
    let inline_agent =
        |model: &str| json!({"foundationModel": model, "instruction": "help", "inputText": "hi"});
    let batch = |model: &str| {
        json!({"jobName": "j", "roleArn": "arn:aws:iam::1:role/r", "modelId": model,
               "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://b/in/"}},
               "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/out/"}}})
    };
    // (path, body, may team-a make the call)
    let cases: Vec<(&str, Value, bool)> = vec![
        ("/async-invoke", async_invoke(LLAMA), false),
        ("/async-invoke", async_invoke(&format!("us.{HAIKU}")), true),
        ("/retrieveAndGenerate", rag(LLAMA, None), false),
        (
            "/retrieveAndGenerate",
            rag(HAIKU, Some("cohere.rerank-v3-5:0")),
            false,
        ),
        ("/retrieveAndGenerate", rag(HAIKU, None), true),
        ("/retrieveAndGenerateStream", rag(LLAMA, None), false),
        ("/rerank", rerank("amazon.rerank-v1:0"), false),
        ("/agents/session-1", inline_agent(LLAMA), false),
        ("/agents/session-1", inline_agent(HAIKU), true),
        ("/model-invocation-job", batch(LLAMA), false),
        ("/model-invocation-job", batch(HAIKU), true),
    ];
    for (path, body, allowed) in &cases {
        stack.clear_emulator_requests().unwrap();
        let response = post(&stack, path, Some(&team_a), body.to_string().as_bytes());
        let forwarded = paths_seen(&stack);
        if *allowed {
            assert_ne!(response.status, 403, "{path} {body}: {}", response.text());
            assert_eq!(forwarded, [path.to_string()], "{path} {body}");
        } else {
            assert_eq!(
                (response.status, error_type(&response)),
                (403, Some("AccessDeniedException")),
                "{path} {body}: {}",
                response.text()
            );
            assert!(forwarded.is_empty(), "{path} {body}: forwarded");
        }
    }
    // A tenant allowed every model makes the same calls.
    for (path, body, _) in &cases {
        let response = post(
            &stack,
            path,
            Some(&token("team-any")),
            body.to_string().as_bytes(),
        );
        assert_ne!(response.status, 403, "{path}: {}", response.text());
    }

    // Bodies that could be read two ways, or not at all, are refused.
    stack.clear_emulator_requests().unwrap();
    let refused: [(&str, String, u16, &str); 7] = [
        (
            "/async-invoke",
            format!(r#"{{"modelId":"{HAIKU}","modelId":"{LLAMA}"}}"#),
            400,
            "ValidationException",
        ),
        (
            "/async-invoke",
            format!(r#"{{"modelId":"{HAIKU}","ModelId":"{LLAMA}"}}"#),
            400,
            "ValidationException",
        ),
        (
            "/async-invoke",
            format!(r#"{{"modelId":"{HAIKU}","model\u0049d":"{LLAMA}"}}"#),
            400,
            "ValidationException",
        ),
        (
            "/async-invoke",
            format!(r#"{{"MODELID":"{LLAMA}"}}"#),
            403,
            "AccessDeniedException",
        ),
        (
            "/async-invoke",
            format!(r#"{{"modelId":"{HAIKU}"}} trailing"#),
            400,
            "ValidationException",
        ),
        (
            "/async-invoke",
            r#"{"modelId":["x"]}"#.to_string(),
            400,
            "ValidationException",
        ),
        (
            "/async-invoke",
            r#"{"modelId":"a b"}"#.to_string(),
            400,
            "ValidationException",
        ),
    ];
    for (path, body, status, code) in &refused {
        let response = post(&stack, path, Some(&team_a), body.as_bytes());
        assert_eq!(
            (response.status, error_type(&response)),
            (*status, Some(*code)),
            "{body}: {}",
            response.text()
        );
    }
    assert!(paths_seen(&stack).is_empty());

    // Models that cannot be determined: an operation the gateway does not know, a flow whose
    // loops nest deeper than the table follows. Only a grant for every model lets them by.
    let deep_flow = {
        let mut definition = json!({"nodes": [{"name": "p", "type": "Prompt",
            "configuration": {"prompt": {"sourceConfiguration": {"inline": {"modelId": LLAMA}}}}}]});
        for _ in 0..4 {
            definition = json!({"nodes": [{"name": "l", "type": "Loop",
                "configuration": {"loop": {"definition": definition}}}]});
        }
        json!({"name": "f", "executionRoleArn": "arn:aws:iam::1:role/r", "definition": definition})
    };
    let undetermined: [(&str, String); 2] = [
        (
            &format!("/model/{HAIKU}/a-future-operation"),
            "{}".to_string(),
        ),
        ("/flows/", deep_flow.to_string()),
    ];
    for (path, body) in &undetermined {
        let response = post(&stack, path, Some(&team_a), body.as_bytes());
        assert_eq!(response.status, 403, "{path}: {}", response.text());
        let response = post(&stack, path, Some(&token("team-any")), body.as_bytes());
        assert_ne!(response.status, 403, "{path}: {}", response.text());
    }
    // Without a token, nothing about the body or the configuration is answered.
    let response = post(
        &stack,
        "/async-invoke",
        None,
        async_invoke(LLAMA).to_string().as_bytes(),
    );
    assert_eq!(response.status, 401);

    let audit = wait_for_audit(
        &stack,
        2 * cases.len() + refused.len() + 2 * undetermined.len() + 1,
    );
    let denied = audit
        .iter()
        .find(|l| l["operation"] == "StartAsyncInvoke" && l["reason"] == "model_not_allowed")
        .expect("the StartAsyncInvoke refusal");
    assert_eq!(
        (denied["model"].as_str(), denied["model_key"].as_str()),
        (Some(LLAMA), Some(LLAMA))
    );
    let allowed = audit
        .iter()
        .find(|l| l["operation"] == "StartAsyncInvoke" && l["decision"] == "allow")
        .expect("the StartAsyncInvoke allowed");
    assert_eq!(
        (allowed["model"].as_str(), allowed["model_key"].as_str()),
        (Some(format!("us.{HAIKU}").as_str()), Some(HAIKU))
    );
    assert!(audit.iter().any(|l| l["reason"] == "model_undetermined"));
    assert!(audit.iter().any(|l| l["reason"] == "ambiguous_body"));
}

#[test]
fn every_spelling_of_a_model_is_one_counter_and_one_ledger_row() {
    fresh_window(3600, 120);
    let quotas = r#"
failure_mode: closed
descriptors:
  - key: tenant
    descriptors:
      - key: model
        rate_limit: {unit: hour, requests_per_unit: 3}
"#;
    let stack = start(options(Some(quotas), 2));
    let team = token("team-any");
    let spellings = [
        HAIKU.to_string(),
        format!("us.{HAIKU}"),
        format!("arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2F{HAIKU}"),
        format!("eu.{HAIKU}"),
        format!(
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fglobal.{HAIKU}"
        ),
        format!("APAC.{}", HAIKU.to_uppercase()),
    ];
    let statuses: Vec<u16> = spellings
        .iter()
        .map(|model| converse(&stack, model, &team).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "{spellings:?}");
    // The same model named in a body is the same counter too; another model is not.
    let body = json!({"modelId": format!("us.{HAIKU}"), "modelInput": {},
                      "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b/"}}});
    assert_eq!(
        post(
            &stack,
            "/async-invoke",
            Some(&team),
            body.to_string().as_bytes()
        )
        .status,
        429
    );
    assert_eq!(converse(&stack, LLAMA, &team).status, 200);

    let mut rows = Vec::new();
    stack
        .wait_until("the ledger", StdDuration::from_secs(15), || {
            rows = stack.usage("tenant=team-any").unwrap()["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            rows.iter()
                .map(|r| r["requests"].as_u64().unwrap_or(0))
                .sum::<u64>()
                >= 4
                && rows
                    .iter()
                    .map(|r| r["refusals"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    >= 4
        })
        .unwrap();
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, [HAIKU, LLAMA], "{rows:?}");
    assert_eq!(
        (rows[0]["requests"].as_u64(), rows[0]["refusals"].as_u64()),
        (Some(3), Some(4))
    );
}

#[test]
fn bodies_built_to_exhaust_a_worker_do_not() {
    // One worker, token quotas on (the body is read for an estimate): every hostile body is
    // answered, and the next ordinary request on the same worker is served.
    let quotas = r#"
failure_mode: open
descriptors:
  - key: tenant
    descriptors:
      - {key: tokens, value: total, rate_limit: {unit: day, requests_per_unit: 1000000000}}
"#;
    let stack = start(options(Some(quotas), 1));
    let team = token("team-any");
    let size = 20 * 1024 * 1024 - 64;
    let nested = {
        let half = size / 2;
        let mut body = vec![b'['; half];
        body.extend(std::iter::repeat_n(b']', half));
        body
    };
    let wide = {
        let mut body = br#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"x":["#.to_vec();
        while body.len() < size - 16 {
            body.extend_from_slice(b"1,");
        }
        body.extend_from_slice(b"1]}");
        body
    };
    let objects = {
        let mut body = b"[".to_vec();
        while body.len() < size - 16 {
            body.extend_from_slice(br#"{"a":{"b":[]}},"#);
        }
        body.extend_from_slice(b"{}]");
        body
    };
    let strings = {
        let mut body = br#"{"messages":[{"role":"user","content":[{"text":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', size - 100));
        body.extend_from_slice(br#""}]}]}"#);
        body
    };
    for (name, body) in [
        ("nested", &nested),
        ("wide", &wide),
        ("objects", &objects),
        ("strings", &strings),
    ] {
        let response = post(
            &stack,
            &format!("/model/{HAIKU}/converse"),
            Some(&team),
            body,
        );
        assert!(
            response.status < 500,
            "{name}: {} {}",
            response.status,
            response.text()
        );
        let next = converse(&stack, HAIKU, &team);
        assert_eq!(next.status, 200, "after {name}: {}", next.text());
    }
}

#[test]
fn requests_the_gateway_refuses_after_admission_give_their_quota_back() {
    fresh_window(3600, 120);
    let quotas = r#"
failure_mode: closed
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 2}
    descriptors:
      - {key: tokens, value: total, rate_limit: {unit: hour, requests_per_unit: 100000}}
"#;
    let stack = start(options(Some(quotas), 2));
    let team = token("team-any");
    let auth = format!("Bearer {team}");
    // A header that must be signed but cannot be: refused at signing, after admission.
    for _ in 0..2 {
        let response = raw_http(
            &stack,
            "POST",
            &format!("/model/{HAIKU}/converse"),
            &[
                ("content-type", b"application/json"),
                ("authorization", auth.as_bytes()),
                ("x-amz-meta-note", "caf\u{e9}".as_bytes()),
            ],
            CONVERSE.as_bytes(),
        );
        assert_eq!(
            (response.status, error_type(&response)),
            (400, Some("ValidationException")),
            "{}",
            response.text()
        );
    }
    // Both reach the ledger, and their charges are given back.
    let ledger = |check: &dyn Fn(&Value) -> bool| {
        let mut row = Value::Null;
        stack
            .wait_until("the ledger", StdDuration::from_secs(15), || {
                row = stack.usage("tenant=team-any").unwrap()["rows"][0].clone();
                check(&row)
            })
            .unwrap_or_else(|e| panic!("{e}: {row}"));
    };
    ledger(&|row| row["gateway_refusals"].as_u64() == Some(2));
    // So the two requests the hour allows are still there.
    assert_eq!(converse(&stack, HAIKU, &team).status, 200);
    assert_eq!(converse(&stack, HAIKU, &team).status, 200);
    assert_eq!(converse(&stack, HAIKU, &team).status, 429);
    ledger(&|row| {
        (
            row["gateway_refusals"].as_u64(),
            row["requests"].as_u64(),
            row["refusals"].as_u64(),
        ) == (Some(2), Some(2), Some(1))
    });
}

#[test]
fn client_numbers_cannot_overflow_a_reservation_and_media_counts() {
    fresh_window(3600, 120);
    let quotas = r#"
failure_mode: closed
media_bytes_per_token: 100
descriptors:
  - key: tenant
    descriptors:
      - {key: tokens, value: total, rate_limit: {unit: hour, requests_per_unit: 5000}}
"#;
    let stack = start(options(Some(quotas), 2));
    let team = token("team-any");
    // An output cap near 2^64: saturates, so it cannot wrap into a small reservation.
    let body = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}],
                      "inferenceConfig": {"maxTokens": u64::MAX - 3}});
    let response = post(
        &stack,
        &format!("/model/{HAIKU}/converse"),
        Some(&team),
        body.to_string().as_bytes(),
    );
    assert_eq!(
        (response.status, error_type(&response)),
        (429, Some("ThrottlingException")),
        "{}",
        response.text()
    );
    // An image of 600 kB is 6,000 estimated tokens here: over the 5,000 budget, whatever
    // its text says; a small one fits.
    for (image_bytes, status) in [(600_000, 429), (3_000, 200)] {
        let body = json!({"messages": [{"role": "user", "content": [{"text": "what is this?"},
            {"image": {"format": "png", "source": {"bytes": base64_of(image_bytes)}}}]}],
            "inferenceConfig": {"maxTokens": 10}});
        let response = post(
            &stack,
            &format!("/model/{HAIKU}/converse"),
            Some(&team),
            body.to_string().as_bytes(),
        );
        assert_eq!(
            response.status,
            status,
            "{image_bytes}: {}",
            response.text()
        );
    }
}

/// Base64 text of `bytes` bytes.
fn base64_of(bytes: usize) -> String {
    "QUFB".repeat(bytes / 3)
}
