"""The filter in an Envoy configured the way a mesh generates it, not by xds-server: the Wasm
filter configuration of deploy/istio's EnvoyFilter (rendered by deploy/render.py; the module a
local file, as istio-agent hands it to Envoy; the JSON document the test stack's, with the
manifest's cluster names), its virtual-host settings, clusters named as Istio names
them (`outbound|PORT||HOST`, the control clusters included), routing by host (a virtual host
per Bedrock host, no `cluster_header`), no ADS. boto3 calls pass through it to the emulator,
which checks their signatures: the filter's `:authority` chooses the upstream.

Each Bedrock cluster originates TLS as an Istio DestinationRule (mode SIMPLE) makes it: SNI and
subject alternative name = the Bedrock host, the CA given. A second listener of the same Envoy
stands in for the Bedrock hosts: it terminates TLS with a certificate for them (made by the test
with openssl) and passes the requests to the emulator, Host unchanged.

A third listener holds the filter as Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy
emit it, without `allow_on_headers_stop_iteration`: requests without a body pass; a request with
a body is held until the stream idle timeout (what the patches in deploy/ are for)."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, running_envoy, start_stack_with
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


def _cluster(name: str, address: str, http2: bool = False, tls: dict | None = None) -> dict:
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
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls["sni"],
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": tls["ca"]},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls["sni"]}}]}}}}
    return cluster


def _istio_delivery() -> tuple[dict, dict]:
    """The Wasm filter configuration and the virtual-host settings of deploy/istio's
    EnvoyFilter, rendered (deploy/render.py, example values) as istiod would serve them."""
    import yaml

    out = tempfile.mkdtemp(prefix="bgw-mesh-render-")
    try:
        done = subprocess.run([sys.executable, str(ROOT / "deploy" / "render.py"), "--example-values",
                               "--tree", "istio", "--out", out], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        with open(os.path.join(out, "istio", "filter-envoyfilter.yaml")) as rendered:
            gateway_filter = next(yaml.safe_load_all(rendered))
    finally:
        subprocess.run(["rm", "-rf", out], check=False)
    patches = gateway_filter["spec"]["configPatches"]
    [extension] = [p["patch"]["value"] for p in patches if p["applyTo"] == "EXTENSION_CONFIG"]
    virtual_host = {}
    for patch in patches:
        if patch["applyTo"] == "VIRTUAL_HOST" and patch["patch"]["operation"] == "MERGE":
            virtual_host.update(patch["patch"]["value"])
    return extension["typed_config"], virtual_host


def _wasm(delivered: dict, filter_json: str, stop_iteration: bool) -> dict:
    """The filter as Envoy gets it: istio-agent has replaced the remote module by the local
    file it fetched; the configuration is the test stack's (its issuers and limits) with the
    manifest's cluster names. Without `stop_iteration`, as Istio's WasmPlugin and Envoy
    Gateway's EnvoyExtensionPolicy emit it: without the option."""
    typed_config = json.loads(json.dumps(delivered))
    config = typed_config["config"]
    assert config["allow_on_headers_stop_iteration"] is True, config
    remote = config["vm_config"]["code"].pop("remote")
    assert remote["http_uri"]["uri"].startswith("oci://") and len(remote["sha256"]) == 64, remote
    config["vm_config"]["code"]["local"] = {
        "filename": str(ROOT / "target" / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm")}
    manifest_document = json.loads(config["configuration"]["value"])
    document = json.loads(filter_json)
    document["control"]["cluster"] = manifest_document["control"]["cluster"]
    if "quota" in document:
        document["quota"]["cluster"] = manifest_document["quota"]["cluster"]
    config["configuration"]["value"] = json.dumps(document)
    if not stop_iteration:
        del config["allow_on_headers_stop_iteration"]
    return {"name": "bedrock-gateway-filter", "typed_config": typed_config}


def _manager(prefix: str, routes: dict, filters: list, **extra) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": prefix,
        "route_config": routes,
        "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        **extra}}


def _listener(name: str, port: int, manager: dict, tls: dict | None = None) -> dict:
    chain = {"filters": [manager]}
    if tls:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {"tls_certificates": [{
                "certificate_chain": {"filename": tls["cert"]}, "private_key": {"filename": tls["key"]}}]}}}
    return {"name": name, "address": _address(f"127.0.0.1:{port}"), "filter_chains": [chain]}


def _hosts() -> list:
    return [f"{service}.{REGION}.amazonaws.com" for service in HOSTS]


def _bootstrap(filter_json: str, ports: dict, xds_grpc: str, emulator: str, pki: dict) -> dict:
    delivered, virtual_host_settings = _istio_delivery()
    virtual_hosts = [
        {"name": f"{host}:443", "domains": [host, f"{host}:443"],
         "routes": [{"match": {"prefix": "/"}, "route": {"cluster": f"outbound|443||{host}", "timeout": "0s"}}],
         **virtual_host_settings}
        for host in _hosts()
    ]
    # What the client sent before the filter rewrote it: nothing is routed by it.
    virtual_hosts.append({"name": "allow_any", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]})
    routes = {"name": "mesh", "virtual_hosts": virtual_hosts}
    # The Bedrock hosts' stand-in: TLS with their certificate, then the emulator.
    bedrock = _manager("bedrock_hosts", {"name": "bedrock", "virtual_hosts": [
        {"name": "bedrock", "domains": _hosts(),
         "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "emulator", "timeout": "0s"}}]}]}, [])
    clusters = [_cluster(CONTROL, xds_grpc, http2=True), _cluster("emulator", emulator)]
    clusters += [_cluster(f"outbound|443||{host}", f"127.0.0.1:{ports['bedrock']}",
                          tls={"sni": host, "ca": pki["ca"]}) for host in _hosts()]
    return {
        "node": {"id": "sidecar~10.0.0.1~app.default~default.svc.cluster.local", "cluster": "app.default"},
        "admin": {"address": _address(f"127.0.0.1:{ports['admin']}")},
        "static_resources": {
            "listeners": [
                _listener("0.0.0.0_8080", ports["listen"],
                          _manager("inbound_mesh", routes, [_wasm(delivered, filter_json, True)])),
                # As WasmPlugin / EnvoyExtensionPolicy emit the filter: no way to set the option.
                _listener("0.0.0.0_8081", ports["unpatched"],
                          _manager("unpatched", routes, [_wasm(delivered, filter_json, False)], stream_idle_timeout="2s")),
                _listener("bedrock_hosts", ports["bedrock"], bedrock, tls=pki),
            ],
            "clusters": clusters,
        },
    }


def _pki(work: str) -> dict:
    """A CA and a certificate for the Bedrock hosts, as a mesh is given for TLS origination."""
    ca_key, ca, key, csr, cert = (os.path.join(work, name) for name in
                                  ("ca.key", "ca.pem", "bedrock.key", "bedrock.csr", "bedrock.pem"))
    extensions = os.path.join(work, "san.ext")
    with open(extensions, "w") as out:
        out.write("subjectAltName=" + ",".join(f"DNS:{host}" for host in _hosts()) + "\n")

    def openssl(*args):
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=mesh test CA", "-keyout", ca_key, "-out", ca)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={_hosts()[0]}", "-keyout", key, "-out", csr)
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", extensions, "-out", cert)
    return {"ca": ca, "cert": cert, "key": key}


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
    stack = start_stack_with(QUOTAS)
    work = tempfile.mkdtemp(prefix="bgw-mesh-")
    try:
        info = stack.info
        document = stack.filter_config()
        # The mesh's names for the control service come from the manifest (_wasm); the
        # services' own cluster names go unused.
        ports = {name: _free_port() for name in ("listen", "admin", "unpatched", "bedrock")}
        emulator = info["emulator_api"].removeprefix("http://")
        bootstrap = _bootstrap(json.dumps(document), ports, info["xds_grpc"], emulator, _pki(work))
        with running_envoy(bootstrap, work, "mesh-shaped Envoy"):
            stack.mesh_gateway = f"http://127.0.0.1:{ports['listen']}"
            stack.mesh_admin = f"http://127.0.0.1:{ports['admin']}"
            stack.mesh_unpatched = f"http://127.0.0.1:{ports['unpatched']}"
            stack.mesh_admin_ports = ports
            yield stack
    finally:
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


def _stat(admin: str, name: str) -> int:
    with urllib.request.urlopen(f"{admin}/stats?filter=^{name.replace('|', '.')}$") as response:
        for line in response.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


def test_bedrock_is_reached_over_tls_checked_against_the_host(mesh):
    client = gateway_client("bedrock-runtime", mesh.mesh_gateway)
    _wait_for_credentials(client)
    cluster = f"cluster.outbound|443||bedrock-runtime.{REGION}.amazonaws.com"
    before = _stat(mesh.mesh_admin, f"{cluster}.ssl.handshake")
    # A fresh connection per request is not guaranteed: count requests, not handshakes.
    requests_before = _stat(mesh.mesh_admin, f"{cluster}.upstream_rq_completed")
    client.converse(modelId=MODEL, messages=user("over tls"))
    assert _stat(mesh.mesh_admin, f"{cluster}.upstream_rq_completed") == requests_before + 1
    assert _stat(mesh.mesh_admin, f"{cluster}.ssl.handshake") >= max(before, 1)
    assert _stat(mesh.mesh_admin, f"{cluster}.ssl.fail_verify_san") == 0
    assert _stat(mesh.mesh_admin, "listener.127.0.0.1_{}.ssl.handshake".format(
        mesh.mesh_admin_ports["bedrock"])) >= 1


def test_without_the_stop_iteration_option_only_bodyless_requests_pass(mesh):
    """What Istio's WasmPlugin or Envoy Gateway's EnvoyExtensionPolicy make of the filter unless
    patched: the filter pauses the headers to sign the body, and Envoy then never hands the
    body over. The request is held until the stream idle timeout (2 s here) and never reaches
    Bedrock; a request without a body is unaffected."""
    _wait_for_credentials(gateway_client("bedrock-runtime", mesh.mesh_gateway))
    unpatched = gateway_client("bedrock-runtime", mesh.mesh_unpatched)
    mesh.clear_emulator_requests()
    # GET, no body: signed and forwarded as usual (the emulator does not implement the
    # operation; its answer is the proof that the request got there).
    with pytest.raises(Exception) as answered:
        unpatched.list_async_invokes()
    seen = mesh.emulator_requests()
    assert [(r["method"], r["path"]) for r in seen] == [("GET", "/async-invoke")], (answered.value, seen)
    assert seen[0]["signature_valid"]
    mesh.clear_emulator_requests()
    started = time.monotonic()
    with pytest.raises(Exception) as held:
        unpatched.converse(modelId=MODEL, messages=user("held"))
    waited = time.monotonic() - started
    # Envoy's stream idle timeout: 504 "stream timeout" (the client had sent the whole request).
    response = getattr(held.value, "response", {})
    assert response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 504, held.value
    assert response.get("Error", {}).get("Message") == "stream timeout", held.value
    assert 1.5 < waited < 10, waited
    assert mesh.emulator_requests() == []


def _chunked_converse(base_url: str, text: str, pieces: int, pause: float) -> tuple[int, bytes]:
    """A Converse request whose body arrives in many small chunks, with pauses between them."""
    import http.client

    body = json.dumps({"messages": user(text)}).encode()
    size = -(-len(body) // pieces)
    host, port = base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", f"/model/{MODEL}/converse")
    for name, value in (("content-type", "application/json"), ("aws-endpoint-prefix", "bedrock-runtime"),
                        ("transfer-encoding", "chunked")):
        connection.putheader(name, value)
    connection.endheaders()
    for offset in range(0, len(body), size):
        piece = body[offset:offset + size]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(pause)
    connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response.status, answer


def test_a_body_in_many_chunks_is_signed_whole(mesh):
    _wait_for_credentials(gateway_client("bedrock-runtime", mesh.mesh_gateway))
    mesh.clear_emulator_requests()
    text = "chunk by chunk " * 20
    status, answer = _chunked_converse(mesh.mesh_gateway, text, pieces=40, pause=0.01)
    assert status == 200, answer
    assert json.loads(answer)["output"]["message"]["content"][0]["text"] == f"Echo: {text}"
    [seen] = mesh.emulator_requests()
    assert seen["signature_valid"], seen
    # Without the option the same request never reaches Bedrock.
    status, answer = _chunked_converse(mesh.mesh_unpatched, text, pieces=40, pause=0.01)
    assert (status, answer) == (504, b"stream timeout")
    assert len(mesh.emulator_requests()) == 1
