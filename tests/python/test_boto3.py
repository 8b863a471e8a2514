"""boto3 through the gateway, as the reference design's clients use it (unsigned, one endpoint
URL, an `aws-endpoint-prefix` header added by a before-call hook) and as a stock client does
(its own endpoint URL and signature, no hook)."""

import json
import re
import urllib.error
import urllib.request

import boto3
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

MODEL = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
REGION = "us-east-1"


def gateway_client(service: str, base_url: str, token: str | None = None, verify=None):
    """The seeds' client factory: the client does not sign; the gateway does."""
    client = boto3.client(
        service,
        region_name=REGION,
        endpoint_url=base_url,
        verify=verify,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )
    prefix = client.meta.service_model.endpoint_prefix

    def add_gateway_headers(params, **kwargs):
        params["headers"]["aws-endpoint-prefix"] = prefix
        if token:
            params["headers"]["Authorization"] = f"Bearer {token}"

    client.meta.events.register("before-call.*.*", add_gateway_headers)
    return client


def stock_client(service: str, base_url: str):
    """A client that only sets its endpoint and signs with its own (made-up) credentials."""
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=base_url,
        aws_access_key_id="AKIDSTOCKCLIENT",
        aws_secret_access_key="stock-client-secret",
        config=Config(retries={"total_max_attempts": 1}),
    )


def user(text: str) -> list:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse(stack):
    runtime = gateway_client("bedrock-runtime", stack.gateway)
    out = runtime.converse(modelId=MODEL, messages=user("hello from boto3"))
    assert out["output"]["message"]["content"][0]["text"] == "Echo: hello from boto3"
    assert out["usage"] == {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}
    assert out["stopReason"] == "end_turn"


def test_converse_stream(stack):
    runtime = gateway_client("bedrock-runtime", stack.gateway)
    out = runtime.converse_stream(
        modelId=MODEL,
        messages=user("stream it"),
        additionalModelRequestFields={"emulator": {"output_tokens": 5}},
    )
    events = list(out["stream"])
    kinds = [next(iter(event)) for event in events]
    assert kinds[0] == "messageStart" and kinds[-1] == "metadata"
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert len(text.split()) == 5
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 5


def test_invoke_model_and_stream(stack):
    runtime = gateway_client("bedrock-runtime", stack.gateway)
    body = json.dumps({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "invoke me"}],
    })
    out = runtime.invoke_model(modelId=MODEL, body=body, contentType="application/json")
    reply = json.loads(out["body"].read())
    assert reply["content"][0]["text"] == "Echo: invoke me"
    headers = out["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "2"
    assert headers["x-amzn-bedrock-output-token-count"] == "3"

    streamed = runtime.invoke_model_with_response_stream(modelId=MODEL, body=body, contentType="application/json")
    chunks = [json.loads(event["chunk"]["bytes"]) for event in streamed["body"]]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == "Echo: invoke me"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3


def test_count_tokens(stack):
    runtime = gateway_client("bedrock-runtime", stack.gateway)
    out = runtime.count_tokens(modelId=MODEL, input={"converse": {"messages": user("three words here")}})
    assert out["inputTokens"] == 3


def test_retrieve(stack):
    agent_runtime = gateway_client("bedrock-agent-runtime", stack.gateway)
    out = agent_runtime.retrieve(knowledgeBaseId="KB12345678", retrievalQuery={"text": "gateways"})
    results = out["retrievalResults"]
    assert len(results) == 3
    assert all("gateways" in r["content"]["text"] for r in results)
    assert stack.emulator_requests()[-1]["headers"] and any(
        name == "host" and value == "bedrock-agent-runtime.us-east-1.amazonaws.com"
        for name, value in stack.emulator_requests()[-1]["headers"]
    )


def test_stock_clients_work_without_the_header(stack):
    runtime = stock_client("bedrock-runtime", stack.gateway)
    out = runtime.converse(modelId=MODEL, messages=user("no hook here"))
    assert out["output"]["message"]["content"][0]["text"] == "Echo: no hook here"
    agent_runtime = stock_client("bedrock-agent-runtime", stack.gateway)
    out = agent_runtime.retrieve(
        knowledgeBaseId="KB12345678",
        retrievalQuery={"text": "inferred"},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": 2}},
    )
    assert len(out["retrievalResults"]) == 2
    last = stack.emulator_requests()[-1]
    assert (last["method"], last["path"]) == ("POST", "/knowledgebases/KB12345678/retrieve")
    assert last["signature_valid"] and last["access_key_id"] != "AKIDSTOCKCLIENT"


def test_bedrock_errors_keep_their_code(stack):
    runtime = gateway_client("bedrock-runtime", stack.gateway)
    with pytest.raises(ClientError) as raised:
        runtime.converse(modelId="emulator-throttle", messages=user("x"))
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


def test_gateway_errors_have_bedrocks_shape(stack):
    client = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=stack.gateway,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )

    def wrong_service(params, **kwargs):
        params["headers"]["aws-endpoint-prefix"] = "dynamodb"

    client.meta.events.register("before-call.*.*", wrong_service)
    with pytest.raises(ClientError) as raised:
        client.converse(modelId=MODEL, messages=user("x"))
    error = raised.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert "dynamodb" in error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


# Paths served by two services: the gateway cannot tell them apart without the header.
AMBIGUOUS = {("bedrock-agent-runtime", "ListTagsForResource"), ("bedrock-agent-runtime", "TagResource"),
             ("bedrock-agent-runtime", "UntagResource")}


def every_operation():
    session = botocore.session.get_session()
    for service in ["bedrock-runtime", "bedrock-agent-runtime", "bedrock", "bedrock-agent"]:
        model = session.get_service_model(service)
        for name in model.operation_names:
            if (service, name) in AMBIGUOUS:
                continue
            http = model.operation_model(name).http
            path = re.sub(r"\{[^}]+\}", "x1", http["requestUri"].split("?")[0])
            yield pytest.param(service, http["method"], path, id=f"{service}.{name}")


@pytest.mark.parametrize("service,method,path", list(every_operation()))
def test_every_operation_without_the_header_reaches_its_service(stack, service, method, path):
    """Each operation in botocore's models of the four Bedrock services, sent as a stock client
    sends it (no aws-endpoint-prefix), reaches that service's host, signed."""
    stack.clear_emulator_requests()
    request = urllib.request.Request(f"{stack.gateway}{path}", data=b"{}" if method != "GET" else None,
                                     method=method, headers={"content-type": "application/json"})
    try:
        urllib.request.urlopen(request).close()
    except urllib.error.HTTPError as error:
        assert error.headers.get("x-amzn-errortype") in ("UnknownOperationException", "ValidationException")
        assert error.code != 400 or "aws-endpoint-prefix" not in error.read().decode(), "the gateway could not route it"
    # The emulator saw this request, and only it (not one of an earlier test).
    seen = stack.emulator_requests()
    assert [(r["method"], r["path"]) for r in seen] == [(method, path)]
    assert dict(seen[0]["headers"])["host"] == f"{service}.{REGION}.amazonaws.com"
    assert seen[0]["signature_valid"]
