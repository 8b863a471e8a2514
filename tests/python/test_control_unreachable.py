"""Envoy with the filter while the control service has no endpoint at all: every xds-server
replica gone (a mesh's EDS has none left, a compose service is stopped and its name no longer
resolves). The filter's gRPC streams and calls to it then fail inside Envoy's own call: there
is no host to try, and Envoy's router answers at once.

Envoy 1.40 defers the close of such a stream while the filter's callback runs, and a second
failure of that kind in the same callback made Envoy re-queue that close forever: the worker
and main threads at 100% CPU, the admin silent, every request hanging (seen in the compose
tests, when xds-server restarted on a broken config and both of a worker's streams re-opened in
one tick). The filter makes no further call to the control service once one failed that way,
until its next tick. Here the control cluster has no endpoint from the start, with the default
configuration that opens both streams (rate limit decisions, signature checks) at once: Envoy
must become ready, keep answering its admin, and answer every caller at once with an
AWS-style refusal, over many ticks and stream re-opens."""

import json
import subprocess
import tempfile
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, running_envoy, start_stack_with
from docker_stack import free_port
from test_boto3 import MODEL, gateway_client, user
from test_identity import mint

QUOTAS = """quotas:
  failure_mode: closed
  descriptors:
    - key: service
      rate_limit: {unit: hour, requests_per_unit: 1000000}
"""


def _empty_cluster(name: str) -> dict:
    """A gRPC cluster with no endpoint."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": []},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}},
    }


def _bootstrap(document: dict, listen: int, admin: int) -> dict:
    module = ROOT / "target" / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm"
    gateway_filter = {"name": "bedrock-gateway", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "bedrock_gateway", "root_id": "bedrock_gateway",
            "allow_on_headers_stop_iteration": True,
            "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(module)}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(document)}}}}
    manager = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "route_config": {"name": "all", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "bedrock", "timeout": "0s"}}]}]},
        "http_filters": [gateway_filter, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}
    clusters = {document["control"]["cluster"], document["quota"]["cluster"]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "gateway",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                           "filter_chains": [{"filters": [manager]}]}],
            # Never reached: nothing is signed without credentials.
            "clusters": [_empty_cluster(name) for name in sorted(clusters)] + [{
                "name": "bedrock", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "bedrock", "endpoints": []}}],
        },
    }


def _admin_answers(admin: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2) as response:
        return response.status


@pytest.fixture(scope="module")
def unreachable():
    stack = start_stack_with(QUOTAS, "--auth", "dev")
    work = tempfile.mkdtemp(prefix="bgw-unreachable-")
    try:
        document = stack.filter_config()
        # The default: both streams exist, and open in the same callbacks.
        assert document["quota"]["transport"] == "stream", document["quota"]
        authentication = document["authentication"]
        assert authentication["mode"] == "jwt", authentication
        assert authentication.get("signature_checks", "xds-server") == "xds-server", authentication
        listen, admin = free_port(), free_port()
        with running_envoy(_bootstrap(document, listen, admin), work,
                           "Envoy with an empty control cluster", concurrency=2) as process:
            stack.gateway_url = f"http://127.0.0.1:{listen}"
            stack.admin_port = admin
            stack.envoy = process
            yield stack
    finally:
        stack.stop()
        subprocess.run(["rm", "-rf", work], check=False)


def test_envoy_keeps_answering_while_the_control_cluster_is_empty(unreachable):
    client = gateway_client("bedrock-runtime", unreachable.gateway_url, token=mint(unreachable, "team-a"))
    answers, slowest = {}, 0.0
    # Over 5 s: many ticks, and each stream re-opened several times (its backoff starts at 0.1 s).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        started = time.monotonic()
        with pytest.raises(ClientError) as refused:
            client.converse(modelId=MODEL, messages=user("nobody home"))
        took = time.monotonic() - started
        slowest = max(slowest, took)
        error = refused.value.response
        key = (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"])
        answers[key] = answers.get(key, 0) + 1
        assert error["Error"]["Message"], error
        # At once, not after a timeout of the control service's (there is nothing to wait on).
        assert took < 2, (took, error)
        assert _admin_answers(unreachable.admin_port) == 200
        time.sleep(0.05)
    print(f"\nno control endpoint: {answers}, slowest answer {slowest * 1000:.0f} ms")
    assert unreachable.envoy.poll() is None
    assert sum(answers.values()) >= 20, answers
    assert set(answers) == {(503, "ServiceUnavailableException")}, answers
    with urllib.request.urlopen(f"http://127.0.0.1:{unreachable.admin_port}/stats?filter=wasm") as response:
        assert response.status == 200
