"""docker-compose.yml as shipped: the images built from the shipped Dockerfile, the stack started
from the shipped compose file, driven with boto3 through the compose Envoy.

Nothing can be pulled on the project's machines, so tests/docker/seed-images.sh first provides
local stand-ins for the base images (debian:bookworm-slim, envoyproxy/envoy:v1.40.0,
redis:7-bookworm), and the Rust binaries come from the host's build (Dockerfile
ARTIFACTS=prebuilt, staged in target/prebuilt/) instead of a Rust build inside Docker.
Everything else (runtime stages, compose file, health checks, ports) is what users run.

Skipped only when no Docker daemon answers. At the end the project's containers, volumes,
network and built images are removed; the seeded base images stay (scripts/test.sh removes
them when it finishes).
"""

import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from docker_stack import replace_once, run, started, wait_for
from test_boto3 import MODEL, gateway_client, user

CONFIG_IN_CONTAINER = "/etc/bedrock-gateway/compose.yaml"
# Tenants' request limit in the test's copy of config/compose.yaml (per tenant, per hour).
REQUEST_LIMIT = 4
SERVICES = ("redis", "emulator", "xds-server", "envoy")


def _limit_requests(config_dir):
    replace_once(config_dir / "compose.yaml", "rate_limit: {unit: minute, requests_per_unit: 120}",
                 f"rate_limit: {{unit: hour, requests_per_unit: {REQUEST_LIMIT}}}")


@pytest.fixture(scope="module")
def compose():
    with started(_limit_requests, services=SERVICES,
                 ports=("GATEWAY_PORT", "GATEWAY_STATUS_PORT", "GATEWAY_ADMIN_PORT")) as stack:
        stack.gateway = stack.url("GATEWAY_PORT")
        stack.status = stack.url("GATEWAY_STATUS_PORT")
        yield stack


def _mint(compose, tenant, config=CONFIG_IN_CONTAINER):
    return compose.mint_token(config, tenant)


def _converse(client):
    return client.converse(modelId=MODEL, messages=user("hello compose"))


def test_ports_published_only_where_expected(compose):
    published = {}
    for service in ("redis", "emulator", "xds-server", "envoy"):
        info = json.loads(run(["docker", "inspect", compose.container(service)]).stdout)[0]
        for port, bindings in (info["NetworkSettings"]["Ports"] or {}).items():
            for binding in bindings or []:
                # "::" is every IPv6 address: the same "all interfaces" as 0.0.0.0.
                host = "0.0.0.0" if binding["HostIp"] == "::" else binding["HostIp"]
                published.setdefault(service, set()).add((port, host))
    assert published == {
        "xds-server": {("18001/tcp", "127.0.0.1")},
        "envoy": {("8080/tcp", "0.0.0.0"), ("9901/tcp", "127.0.0.1")},
    }


def test_converse_and_stream_with_a_minted_token(compose):
    client = gateway_client("bedrock-runtime", compose.gateway, token=_mint(compose, "compose-a"))
    out = _converse(client)
    assert out["output"]["message"]["content"][0]["text"] == "Echo: hello compose"
    stream = client.converse_stream(modelId=MODEL, messages=user("stream it"),
                                    additionalModelRequestFields={"emulator": {"output_tokens": 5}})
    events = list(stream["stream"])
    assert next(iter(events[0])) == "messageStart" and events[-1]["metadata"]["usage"]["outputTokens"] == 5


def test_requests_without_a_token_are_refused(compose):
    with pytest.raises(ClientError) as refused:
        _converse(gateway_client("bedrock-runtime", compose.gateway))
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_config_edit_applies_live(compose):
    probes = iter(range(1000))

    def status_of_converse():
        # A new tenant for each probe: the probes must not run into the request limit.
        token = _mint(compose, f"compose-live-{next(probes)}")
        return _converse_status(gateway_client("bedrock-runtime", compose.gateway, token=token))

    assert status_of_converse() == 200
    config = compose.config_dir / "compose.yaml"
    shipped = config.read_text()
    allowed = "- services: [bedrock-runtime, bedrock-agent-runtime]"
    assert allowed in shipped

    try:
        config.write_text(shipped.replace(allowed, "- services: [bedrock-agent-runtime]"))
        wait_for(lambda: status_of_converse() == 403, what="Converse refused after the edit")
    finally:
        config.write_text(shipped)
    wait_for(lambda: status_of_converse() == 200, what="Converse admitted after restoring the config")


def test_a_service_that_cannot_start_says_why(compose):
    """xds-server restarted on a broken config file refuses it, keeps being restarted by its
    restart policy, is not healthy, and its log names the file, the key and the expectation."""
    config = compose.config_dir / "compose.yaml"
    shipped = config.read_text()
    assert "  port: 8080\n" in shipped
    expected = (f"{CONFIG_IN_CONTAINER}: listener.port: invalid type: string \"eighty\", "
                "expected a whole number from 0 to 65535")
    try:
        config.write_text(shipped.replace("  port: 8080\n", "  port: eighty\n", 1))
        compose("restart", "xds-server")
        wait_for(lambda: expected in compose("logs", "--no-color", "xds-server").stdout,
                  timeout=60, what="the config error in xds-server's log")
        assert compose.health("xds-server") != "running healthy"
    finally:
        config.write_text(shipped)
    # The restart policy brings it back once the file is good again.
    compose.wait_healthy()


def _usage_rows(compose, tenant):
    with urllib.request.urlopen(f"{compose.status}/usage") as response:
        return [row for row in json.load(response)["rows"] if row["tenant"] == tenant]


def test_quota_counters_and_ledger_survive_an_xds_server_restart(compose):
    # Not across an hour boundary: the request window is one hour.
    if time.time() % 3600 > 3600 - 90:
        time.sleep(3600 - time.time() % 3600 + 1)
    tenant = "compose-restart"
    client = gateway_client("bedrock-runtime", compose.gateway, token=_mint(compose, tenant))
    for _ in range(REQUEST_LIMIT - 1):
        _converse(client)
    wait_for(lambda: sum(r["requests"] for r in _usage_rows(compose, tenant)) == REQUEST_LIMIT - 1,
              what="the ledger counting the requests")
    before = _usage_rows(compose, tenant)

    compose("restart", "xds-server")
    compose.wait_healthy()
    assert _usage_rows(compose, tenant) == before

    # One request left in the window if the counter survived; REQUEST_LIMIT if it did not.
    wait_for(lambda: _converse_status(client) in (200, 429), what="a decision after the restart")
    with pytest.raises(ClientError) as refused:
        _converse(client)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    wait_for(lambda: sum(r["requests"] for r in _usage_rows(compose, tenant)) == REQUEST_LIMIT,
              what="the ledger counting the request after the restart")


def _converse_status(client):
    try:
        _converse(client)
        return 200
    except ClientError as error:
        return error.response["ResponseMetadata"]["HTTPStatusCode"]


def test_the_aws_variant_without_credentials_says_so(compose):
    """GATEWAY_CONFIG=compose-aws.yaml with no AWS credentials in the shell (the Compose env drops
    them): xds-server starts and says why it cannot sign, and callers get the gateway's 503."""
    compose("up", "-d", "xds-server", env=dict(compose.env, GATEWAY_CONFIG="compose-aws.yaml"))
    compose.wait_healthy()

    def credentials():
        with urllib.request.urlopen(f"{compose.status}/status") as response:
            status = json.load(response)
        return status["config_file"], status["credentials"]

    wait_for(lambda: credentials()[1]["last_refresh_error"] is not None, timeout=90,
              what="a failed credentials fetch reported on /status")
    config_file, state = credentials()
    assert config_file.endswith("/compose-aws.yaml")
    assert state["available"] is False and state["access_key_id_prefix"] is None
    assert state["last_refresh_error"].startswith("no AWS credentials"), state
    logs = compose("logs", "--no-color", "xds-server").stdout
    assert "no AWS credentials" in logs
    assert "AKIACOMPOSEEMULATOR0" not in logs and "compose-emulator-secret" not in logs

    token = _mint(compose, "compose-aws", "/etc/bedrock-gateway/compose-aws.yaml")
    client = gateway_client("bedrock-runtime", compose.gateway, token=token)

    def refusal():
        """The gateway's answer; None while Envoy still runs the previous configuration (the
        emulator answers 200 until the new xds-server's resources reach it over ADS)."""
        try:
            _converse(client)
        except ClientError as error:
            return error
        return None

    def refused_for_credentials():
        error = refusal()
        return error is not None and error.response["ResponseMetadata"]["HTTPStatusCode"] == 503 \
            and "credentials" in error.response["Error"]["Message"]

    wait_for(refused_for_credentials, timeout=90, what="503 from the gateway without credentials")
    error = refusal()
    assert error is not None, "signed without credentials"
    assert error.response["Error"]["Code"] == "ServiceUnavailableException"
    assert "credentials" in error.response["Error"]["Message"]


def test_down_leaves_nothing(compose):
    compose("down", "-v", "--remove-orphans")
    assert compose.leftovers() == {"containers": [], "volumes": [], "networks": []}
