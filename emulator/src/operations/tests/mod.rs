use super::*;
use aws_smithy_eventstream::frame::read_message_from;
use serde_json::{Value, json};
use std::time::Duration;

mod cache_tests;
mod converse_tests;
mod invoke_tests;
mod other_tests;

const MODEL: &str = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Runs `operation` with a prompt cache of its own (the cache tests share one on purpose).
fn run(operation: Operation, body: &Value) -> Result<Response, ApiError> {
    run_with(&PromptCache::default(), operation, body)
}

fn run_with(cache: &PromptCache, operation: Operation, body: &Value) -> Result<Response, ApiError> {
    handle(&operation, body.to_string().as_bytes(), cache)
}

fn converse(body: Value) -> Result<Response, ApiError> {
    run(
        Operation::Converse {
            model_id: MODEL.into(),
        },
        &body,
    )
}

fn json_body(response: &Response) -> Value {
    match &response.body {
        Body::Full(bytes) => serde_json::from_slice(bytes).unwrap(),
        Body::Stream(_) => panic!("expected a JSON body"),
    }
}

/// A decoded event-stream frame: kind, `:event-type` or `:exception-type`, JSON payload.
#[derive(Debug)]
struct Event {
    message_type: String,
    event_type: String,
    payload: Value,
    delay: Duration,
}

fn events(response: &Response) -> Vec<Event> {
    assert_eq!(response.content_type, "application/vnd.amazon.eventstream");
    let Body::Stream(stream) = &response.body else {
        panic!("expected a stream");
    };
    stream
        .iter()
        .map(|event| {
            let message = read_message_from(event.frame.clone()).unwrap();
            let header = |name: &str| {
                message
                    .headers()
                    .iter()
                    .find(|h| h.name().as_str() == name)
                    .map(|h| h.value().as_string().unwrap().as_str().to_string())
            };
            assert_eq!(header(":content-type").as_deref(), Some("application/json"));
            let message_type = header(":message-type").unwrap();
            let event_type = header(":event-type")
                .or_else(|| header(":exception-type"))
                .unwrap();
            Event {
                message_type,
                event_type,
                payload: serde_json::from_slice(message.payload()).unwrap(),
                delay: event.delay,
            }
        })
        .collect()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": [{"text": text}]})
}

#[test]
fn routing() {
    let converse = Operation::Converse {
        model_id: MODEL.into(),
    };
    let path = "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";
    assert_eq!(route(Some(RUNTIME), "POST", path), Ok(converse.clone()));
    assert_eq!(route(None, "POST", path), Ok(converse));
    let arn = "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/invoke";
    assert_eq!(
        route(Some(RUNTIME), "POST", arn),
        Ok(Operation::InvokeModel {
            model_id: "arn:aws:bedrock:us-east-1:1:inference-profile/us.x".into()
        })
    );
    let table = [
        ("/model/m/converse-stream", Ok("ConverseStream")),
        (
            "/model/m/invoke-with-response-stream",
            Ok("InvokeModelWithResponseStream"),
        ),
        ("/model/m/count-tokens", Ok("CountTokens")),
        ("/model/m/converse/", Err(404)),
        ("/model/m/chat", Err(404)),
        ("/model//converse", Err(400)),
        ("/model/%FF/converse", Err(400)),
        ("/guardrail/g/version/1/apply", Err(404)),
        ("/knowledgebases/kb/retrieve", Err(404)),
    ];
    for (path, expected) in table {
        let got = route(Some(RUNTIME), "POST", path)
            .map(|op| op.name())
            .map_err(|e| e.status);
        assert_eq!(got, expected, "{path}");
    }
    let unknown = route(Some(RUNTIME), "GET", "/model/m/converse").unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownOperation);
    assert_eq!(
        unknown.message,
        "The operation GET /model/m/converse is not supported by bedrock-runtime."
    );
    assert_eq!(
        route(
            Some(AGENT_RUNTIME),
            "POST",
            "/knowledgebases/KB%2012/retrieve"
        ),
        Ok(Operation::Retrieve {
            knowledge_base_id: "KB 12".into()
        })
    );
    assert_eq!(
        route(Some(AGENT_RUNTIME), "POST", "/model/m/converse")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        route(Some("bedrock"), "POST", "/model/m/converse")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        route(None, "POST", "/knowledgebases/kb/retrieve").map(|o| o.name()),
        Ok("Retrieve")
    );
}

#[test]
fn failing_model_ids() {
    for (model, status, code, message) in [
        (
            "us.emulator-throttle.x:0",
            429,
            ErrorCode::Throttling,
            "Too many requests, please wait before trying again.",
        ),
        (
            "emulator-error",
            500,
            ErrorCode::InternalServer,
            "The emulator was asked to fail this request (model id contains 'emulator-error').",
        ),
    ] {
        for operation in [
            Operation::Converse {
                model_id: model.into(),
            },
            Operation::ConverseStream {
                model_id: model.into(),
            },
            Operation::InvokeModel {
                model_id: model.into(),
            },
            Operation::InvokeModelWithResponseStream {
                model_id: model.into(),
            },
            Operation::CountTokens {
                model_id: model.into(),
            },
        ] {
            // Even a body that is not valid fails with the model's error first.
            let err = handle(&operation, b"", &PromptCache::default()).unwrap_err();
            assert_eq!(
                (err.status, err.code, err.message.as_str()),
                (status, code, message)
            );
        }
    }
}
