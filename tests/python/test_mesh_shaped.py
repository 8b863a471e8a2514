"""The filter in an Envoy configured the way a mesh generates it, not by xds-server: the Wasm
filter inline with the JSON `xds-server filter-config` renders, clusters named as Istio names
them (`outbound|PORT||HOST`, the control clusters included), routing by host (a virtual host
per Bedrock host, no `cluster_header`), no ADS. boto3 calls pass through it to the emulator,
which checks their signatures: the filter's `:authority` chooses the upstream.

The upstream clusters here speak plain HTTP to the emulator (a mesh would originate TLS to the
real hosts); what is tested is what the filter relies on: its configuration as given, its
control clusters under another name, and host-based route selection after it rewrites the
request."""

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, start_stack
from test_boto3 import MODEL, gateway_client, stock_client, user

CONTROL = "outbound|18000||xds-server.bedrock-gateway.svc.cluster.local"
HOSTS = ("bedrock-runtime", "bedrock-agent-runtime", "bedrock", "bedrock-agent")
REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _address(host_port: str) -> dict:
    host, port = host_port.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


def _cluster(name: str, address: str, http2: bool = False) -> dict:
    cluster = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _address(address)}}]}]},
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}}}
    return cluster


def _bootstrap(filter_json: str, listen: int, admin: int, xds_grpc: str, emulator: str) -> dict:
    virtual_hosts = [
        {"name": f"{service}.{REGION}.amazonaws.com:443",
         "domains": [f"{service}.{REGION}.amazonaws.com", f"{service}.{REGION}.amazonaws.com:443"],
         "routes": [{"match": {"prefix": "/"}, "route": {
             "cluster": f"outbound|443||{service}.{REGION}.amazonaws.com", "timeout": "0s"}}]}
        for service in HOSTS
    ]
    # What the client sent before the filter rewrote it: nothing is routed by it.
    virtual_hosts.append({"name": "allow_any", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]})
    wasm = {
        "name": "bedrock_gateway",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "bedrock_gateway", "root_id": "bedrock_gateway",
                "vm_config": {"vm_id": "bedrock_gateway", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": str(ROOT / "target" / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm")}}},
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": filter_json},
                "fail_open": False,
                # The one setting meshes do not expose (docs/filter-config.md).
                "allow_on_headers_stop_iteration": True,
            },
        },
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound_mesh",
        "route_config": {"name": "mesh", "virtual_hosts": virtual_hosts},
        "http_filters": [wasm, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    clusters = [_cluster(CONTROL, xds_grpc, http2=True)]
    clusters += [_cluster(f"outbound|443||{service}.{REGION}.amazonaws.com", emulator) for service in HOSTS]
    return {
        "node": {"id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local", "cluster": "app.default"},
        "admin": {"address": _address(f"127.0.0.1:{admin}")},
        "static_resources": {
            "listeners": [{"name": "0.0.0.0_8080", "address": _address(f"127.0.0.1:{listen}"),
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": manager}]}]}],
            "clusters": clusters,
        },
    }


# Quotas that refuse when no decision comes (closed): the decisions must come over the
# mesh-named control cluster, on the decision stream and by calls.
QUOTAS = """quotas:
  failure_mode: closed
  descriptors:
    - key: service
      rate_limit: {unit: hour, requests_per_unit: 1000000}
"""


@pytest.fixture(scope="module")
def mesh():
    overlay = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    overlay.write(QUOTAS)
    overlay.close()
    stack = start_stack("--config-overlay", overlay.name)
    os.unlink(overlay.name)
    info = stack.info
    rendered = subprocess.run([info["xds_server"], "filter-config", "--config", info["config_path"]],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    document = json.loads(rendered.stdout)
    # The mesh's names for the control service; the services' own cluster names go unused.
    document["control"]["cluster"] = CONTROL
    if "quota" in document:
        document["quota"]["cluster"] = CONTROL
    listen, admin = _free_port(), _free_port()
    work = tempfile.mkdtemp(prefix="bgw-mesh-")
    config = os.path.join(work, "envoy.json")
    with open(config, "w") as out:
        json.dump(_bootstrap(json.dumps(document), listen, admin, info["xds_grpc"], info["emulator_api"]), out)
    envoy = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
    log = open(os.path.join(work, "envoy.log"), "w")
    process = subprocess.Popen([envoy, "-c", config, "--disable-hot-restart", "--base-id", str(listen),
                                "--concurrency", "1", "-l", "warning"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mesh-shaped Envoy did not start:\n{open(log.name).read()[-3000:]}")
            time.sleep(0.2)
        stack.mesh_gateway = f"http://127.0.0.1:{listen}"
        stack.mesh_admin = f"http://127.0.0.1:{admin}"
        yield stack
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        stack.stop()
        subprocess.run(["rm", "-rf", work], check=False)


def _host(request) -> str:
    return next(value for name, value in request["headers"] if name == "host")


def _wait_for_credentials(client):
    """The filter fetches signing credentials from the control cluster at start."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return client.converse(modelId=MODEL, messages=user("hello mesh"))
        except Exception:  # noqa: BLE001 - 503 until the credentials are in
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_seed_client_converse_and_stream_route_by_host(mesh):
    mesh.clear_emulator_requests()
    client = gateway_client("bedrock-runtime", mesh.mesh_gateway)
    out = _wait_for_credentials(client)
    assert out["output"]["message"]["content"][0]["text"] == "Echo: hello mesh"
    events = list(client.converse_stream(modelId=MODEL, messages=user("stream"))["stream"])
    assert "messageStart" in events[0] and "metadata" in events[-1]
    seen = mesh.emulator_requests()
    assert [_host(r) for r in seen] == [f"bedrock-runtime.{REGION}.amazonaws.com"] * 2, seen
    assert all(r["signature_valid"] for r in seen)


def test_stock_client_and_another_service_route_by_host(mesh):
    runtime = stock_client("bedrock-runtime", mesh.mesh_gateway)
    _wait_for_credentials(runtime)
    agent = stock_client("bedrock-agent-runtime", mesh.mesh_gateway)
    mesh.clear_emulator_requests()
    agent.retrieve(knowledgeBaseId="KB12345678", retrievalQuery={"text": "what is a gateway"})
    seen = mesh.emulator_requests()
    assert [_host(r) for r in seen] == [f"bedrock-agent-runtime.{REGION}.amazonaws.com"]
    assert seen[0]["signature_valid"] and seen[0]["access_key_id"] != "AKIDSTOCKCLIENT"


def test_decisions_and_reports_go_over_the_mesh_named_cluster(mesh):
    client = gateway_client("bedrock-runtime", mesh.mesh_gateway)
    _wait_for_credentials(client)
    for _ in range(5):
        client.converse(modelId=MODEL, messages=user("counted"))

    def metric(name):
        with urllib.request.urlopen(f"{mesh.info['xds_http']}/metrics") as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    deadline = time.monotonic() + 15
    while metric("xds_server_quota_usage_records_total") < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric("xds_server_quota_streams_opened_total") >= 1
    assert metric("xds_server_quota_decisions_total") >= 5
    assert metric("xds_server_quota_usage_records_total") >= 5
    with urllib.request.urlopen(f"{mesh.mesh_admin}/stats?filter=quota_failures") as response:
        stats = response.read().decode()
    assert "quota_failures_closed: 0" in stats and "quota_failures_open: 0" in stats, stats
