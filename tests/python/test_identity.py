"""Identity with real clients: the seeds' client convention with a bearer token, and stock
boto3 configured by environment variables alone (AWS_BEARER_TOKEN_BEDROCK, an endpoint URL and
the gateway's CA: boto3 sends bearer tokens only over HTTPS), against a gateway whose
development issuer's tokens are minted with `xds-server mint-token`."""

import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import start_stack
from test_boto3 import MODEL, REGION, gateway_client, user


@pytest.fixture(scope="module")
def jwt_stack():
    running = start_stack("--auth", "dev", "--tls")
    yield running
    running.stop()


def mint(stack, tenant: str, *extra: str) -> str:
    out = subprocess.run(
        [stack.info["xds_server"], "mint-token", "--config", stack.info["config_path"], "--tenant", tenant, *extra],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def test_seeds_client_with_a_bearer_token(jwt_stack):
    runtime = gateway_client("bedrock-runtime", jwt_stack.gateway, token=mint(jwt_stack, "team-a"),
                             verify=jwt_stack.info["ca_file"])
    out = runtime.converse(modelId=MODEL, messages=user("hello with a token"))
    assert out["output"]["message"]["content"][0]["text"] == "Echo: hello with a token"


def test_stock_boto3_with_aws_bearer_token_bedrock(jwt_stack, monkeypatch):
    """Zero code: environment variables are all it takes."""
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", mint(jwt_stack, "team-a", "--subject", "carol"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", jwt_stack.gateway)
    monkeypatch.setenv("AWS_CA_BUNDLE", jwt_stack.info["ca_file"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        monkeypatch.delenv(name, raising=False)
    runtime = boto3.client("bedrock-runtime")
    out = runtime.converse(modelId=MODEL, messages=user("no code change"))
    assert out["output"]["message"]["content"][0]["text"] == "Echo: no code change"
    stream = runtime.converse_stream(modelId=MODEL, messages=user("streamed with a token"))
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in stream["stream"] if "contentBlockDelta" in e)
    assert text == "Echo: streamed with a token"
    last = jwt_stack.emulator_requests()[-1]
    assert last["signature_valid"]
    assert all("Bearer" not in value for _, value in last["headers"]), "the bearer token reached Bedrock"


def test_refusals_raise_the_usual_exceptions(jwt_stack):
    ca = jwt_stack.info["ca_file"]
    anonymous = gateway_client("bedrock-runtime", jwt_stack.gateway, verify=ca)
    with pytest.raises(ClientError) as raised:
        anonymous.converse(modelId=MODEL, messages=user("x"))
    assert raised.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401

    forged = mint(jwt_stack, "team-a")[:-4] + "AAAA"
    with pytest.raises(ClientError) as raised:
        gateway_client("bedrock-runtime", jwt_stack.gateway, token=forged, verify=ca).converse(
            modelId=MODEL, messages=user("x"))
    assert raised.value.response["Error"]["Code"] == "UnrecognizedClientException"

    team_a = gateway_client("bedrock-runtime", jwt_stack.gateway, token=mint(jwt_stack, "team-a"), verify=ca)
    with pytest.raises(ClientError) as raised:
        team_a.converse(modelId="meta.llama3-8b-instruct-v1:0", messages=user("x"))
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"

    other = gateway_client("bedrock-agent-runtime", jwt_stack.gateway, token=mint(jwt_stack, "team-b"), verify=ca)
    assert len(other.retrieve(knowledgeBaseId="KB12345678", retrievalQuery={"text": "q"})["retrievalResults"]) == 3
