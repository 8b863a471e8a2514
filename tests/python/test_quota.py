"""Quotas seen by boto3: a tenant over its requests-per-hour limit gets ThrottlingException
(boto3's own retry logic treats it like Bedrock's throttling) while another tenant keeps being
served, and the usage ledger answers over HTTP."""

import json
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import start_stack_with
from test_boto3 import MODEL, REGION, user
from test_identity import mint

QUOTAS = """
quotas:
  failure_mode: closed
  descriptors:
    - key: tenant
      rate_limit: {unit: hour, requests_per_unit: 4}
"""


def fresh_window(seconds: int = 3600, needed: int = 120) -> None:
    """Waits, if need be, until `needed` seconds are left in the current hour: the tests count
    in one window, never across a boundary."""
    import time

    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def quota_stack():
    fresh_window()
    running = start_stack_with(QUOTAS, "--auth", "dev")
    yield running
    running.stop()


def client(stack, tenant: str, attempts: int = 1):
    import boto3
    from botocore import UNSIGNED

    runtime = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=stack.gateway,
        config=Config(signature_version=UNSIGNED, retries={"mode": "standard", "total_max_attempts": attempts}),
    )
    token = mint(stack, tenant)

    def add_headers(params, **kwargs):
        params["headers"]["aws-endpoint-prefix"] = "bedrock-runtime"
        params["headers"]["Authorization"] = f"Bearer {token}"

    runtime.meta.events.register("before-call.*.*", add_headers)
    return runtime


def test_noisy_tenant_throttled_other_tenant_served(quota_stack):
    noisy, quiet = client(quota_stack, "team-noisy"), client(quota_stack, "team-quiet")
    for _ in range(4):
        noisy.converse(modelId=MODEL, messages=user("within the limit"))
    with pytest.raises(ClientError) as raised:
        noisy.converse(modelId=MODEL, messages=user("one too many"))
    error = raised.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    headers = error["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-ratelimit-limit"] == "4" and int(headers["retry-after"]) >= 1
    for _ in range(3):
        assert quiet.converse(modelId=MODEL, messages=user("still served"))["stopReason"] == "end_turn"
    # boto3 retries throttling by itself, as it does Bedrock's own (and still fails here, since
    # the window is an hour).
    retrying = client(quota_stack, "team-noisy", attempts=3)
    with pytest.raises(ClientError) as raised:
        retrying.converse(modelId=MODEL, messages=user("retried"))
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] >= 2


def test_usage_ledger_over_http(quota_stack):
    import time

    deadline = time.time() + 15
    while True:
        with urllib.request.urlopen(f"{quota_stack.info['xds_http']}/usage?tenant=team-noisy") as response:
            rows = json.load(response)["rows"]
        if sum(r["refusals"] for r in rows) >= 4 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert sum(r["requests"] for r in rows) == 4
    # One refusal, then the retrying client's attempts.
    assert sum(r["refusals"] for r in rows) >= 4
    # One row per model, under its key: the cross-region profile's model id, in lower case.
    assert all(r["model"] == MODEL.split(".", 1)[1].lower() for r in rows)
