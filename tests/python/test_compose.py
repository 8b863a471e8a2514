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
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from test_boto3 import MODEL, gateway_client, user

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREBUILT = ROOT / "target" / "prebuilt"
CONFIG_IN_CONTAINER = "/etc/bedrock-gateway/compose.yaml"
# Tenants' request limit in the test's copy of config/compose.yaml (per tenant, per hour).
REQUEST_LIMIT = 4


def _run(args, env=None, check=True, timeout=600, capture=True):
    result = subprocess.run(args, cwd=ROOT, env=env, text=True, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout}")
    return result


def _docker_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def _compose_command() -> list:
    """`docker compose` where the plugin exists, else `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("a Docker daemon answers but neither `docker compose` nor `docker-compose` exists")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage_prebuilt() -> None:
    """The host's binaries, stripped, where the Dockerfile's ARTIFACTS=prebuilt takes them."""
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    profile = os.environ.get("COMPOSE_TEST_PROFILE", "debug")
    sources = {
        "xds-server": target / profile / "xds-server",
        "bedrock-emulator": target / profile / "bedrock-emulator",
        "bedrock_gateway_filter.wasm": target / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm",
    }
    PREBUILT.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            pytest.fail(f"{source} is not built: run scripts/test.sh")
        if name.endswith(".wasm") or shutil.which("strip") is None:
            shutil.copy2(source, PREBUILT / name)
        else:
            _run(["strip", "-o", str(PREBUILT / name), str(source)])


class Compose:
    def __init__(self, config_dir: pathlib.Path):
        self.command = _compose_command()
        self.project = f"bgwtest{os.getpid()}"
        self.config_dir = config_dir
        self.gateway_port = _free_port()
        self.status_port = _free_port()
        self.admin_port = _free_port()
        self.env = dict(os.environ)
        for name in ("GATEWAY_CONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            self.env.pop(name, None)
        self.env.update({
            "COMPOSE_PROJECT_NAME": self.project,
            "GATEWAY_ARTIFACTS": "prebuilt",
            "GATEWAY_BUILD_IMAGE": "debian:bookworm-slim",
            "GATEWAY_CONFIG_DIR": str(config_dir),
            "GATEWAY_PORT": str(self.gateway_port),
            "GATEWAY_STATUS_PORT": str(self.status_port),
            "GATEWAY_ADMIN_PORT": str(self.admin_port),
        })
        self.gateway = f"http://127.0.0.1:{self.gateway_port}"
        self.status = f"http://127.0.0.1:{self.status_port}"

    def __call__(self, *args, check=True, timeout=600):
        return _run([*self.command, "-p", self.project, *args], env=self.env, check=check, timeout=timeout)

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        out = _run(["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", cid])
        return out.stdout.strip()

    def wait_healthy(self, services=("redis", "emulator", "xds-server", "envoy"), timeout=180):
        deadline = time.monotonic() + timeout
        while True:
            states = {s: self.health(s) for s in services}
            if all(state == "running healthy" for state in states.values()):
                return
            if time.monotonic() > deadline:
                logs = self("logs", "--no-color", "--tail", "40", check=False).stdout
                raise AssertionError(f"not healthy after {timeout} s: {states}\n{logs}")
            time.sleep(1)

    def mint_token(self, tenant: str) -> str:
        return self.mint_token_with(CONFIG_IN_CONTAINER, tenant)

    def mint_token_with(self, config: str, tenant: str) -> str:
        out = self("exec", "-T", "xds-server", "xds-server", "mint-token", "--config", config,
                   "--tenant", tenant)
        return out.stdout.strip().splitlines()[-1]

    def leftovers(self) -> dict:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: _run(["docker", *cmd, "--filter", label]).stdout.split()
            for kind, cmd in {"containers": ["ps", "-aq"], "volumes": ["volume", "ls", "-q"],
                              "networks": ["network", "ls", "-q"]}.items()
        }


@pytest.fixture(scope="module")
def compose():
    if not _docker_reachable():
        pytest.skip("no Docker daemon reachable (`docker info` failed)")
    timings = {}
    started = time.monotonic()
    _run([str(ROOT / "tests" / "docker" / "seed-images.sh")], capture=False, timeout=900)
    timings["seed"] = time.monotonic() - started
    _stage_prebuilt()
    config_dir = pathlib.Path(tempfile.mkdtemp(prefix="bgw-compose-config-"))
    shutil.copytree(ROOT / "config", config_dir, dirs_exist_ok=True)
    config_dir.chmod(0o755)
    config = config_dir / "compose.yaml"
    # Limits a test can reach: REQUEST_LIMIT requests per tenant per hour.
    text = config.read_text()
    shipped = "rate_limit: {unit: minute, requests_per_unit: 120}"
    assert shipped in text, "config/compose.yaml changed: update test_compose.py"
    config.write_text(text.replace(shipped, f"rate_limit: {{unit: hour, requests_per_unit: {REQUEST_LIMIT}}}"))
    stack = Compose(config_dir)
    try:
        mark = time.monotonic()
        stack("build")
        timings["build"] = time.monotonic() - mark
        mark = time.monotonic()
        stack("up", "-d")
        stack.wait_healthy()
        timings["up"] = time.monotonic() - mark
        print(f"\ncompose test timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        yield stack
    finally:
        stack("down", "-v", "--rmi", "local", "--remove-orphans", check=False)
        # The Dockerfile's artifacts stage, left untagged by the classic builder.
        _run(["docker", "image", "prune", "-f", "--filter", "label=org.bedrock-gateway.stage=artifacts"], check=False)
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(PREBUILT, ignore_errors=True)


def _converse(client):
    return client.converse(modelId=MODEL, messages=user("hello compose"))


def test_ports_published_only_where_expected(compose):
    published = {}
    for service in ("redis", "emulator", "xds-server", "envoy"):
        info = json.loads(_run(["docker", "inspect", compose.container(service)]).stdout)[0]
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
    client = gateway_client("bedrock-runtime", compose.gateway, token=compose.mint_token("compose-a"))
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


def _wait_for(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.5)


def test_config_edit_applies_live(compose):
    probes = iter(range(1000))

    def status_of_converse():
        # A new tenant for each probe: the probes must not run into the request limit.
        token = compose.mint_token(f"compose-live-{next(probes)}")
        return _converse_status(gateway_client("bedrock-runtime", compose.gateway, token=token))

    assert status_of_converse() == 200
    config = compose.config_dir / "compose.yaml"
    shipped = config.read_text()
    allowed = "- services: [bedrock-runtime, bedrock-agent-runtime]"
    assert allowed in shipped

    try:
        config.write_text(shipped.replace(allowed, "- services: [bedrock-agent-runtime]"))
        _wait_for(lambda: status_of_converse() == 403, what="Converse refused after the edit")
    finally:
        config.write_text(shipped)
    _wait_for(lambda: status_of_converse() == 200, what="Converse admitted after restoring the config")


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
        _wait_for(lambda: expected in compose("logs", "--no-color", "xds-server").stdout,
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
    client = gateway_client("bedrock-runtime", compose.gateway, token=compose.mint_token(tenant))
    for _ in range(REQUEST_LIMIT - 1):
        _converse(client)
    _wait_for(lambda: sum(r["requests"] for r in _usage_rows(compose, tenant)) == REQUEST_LIMIT - 1,
              what="the ledger counting the requests")
    before = _usage_rows(compose, tenant)

    compose("restart", "xds-server")
    compose.wait_healthy()
    assert _usage_rows(compose, tenant) == before

    # One request left in the window if the counter survived; REQUEST_LIMIT if it did not.
    _wait_for(lambda: _converse_status(client) in (200, 429), what="a decision after the restart")
    with pytest.raises(ClientError) as refused:
        _converse(client)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    _wait_for(lambda: sum(r["requests"] for r in _usage_rows(compose, tenant)) == REQUEST_LIMIT,
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
    env = dict(compose.env, GATEWAY_CONFIG="compose-aws.yaml")
    _run([*compose.command, "-p", compose.project, "up", "-d", "xds-server"], env=env)
    compose.wait_healthy()

    def credentials():
        with urllib.request.urlopen(f"{compose.status}/status") as response:
            status = json.load(response)
        return status["config_file"], status["credentials"]

    _wait_for(lambda: credentials()[1]["last_refresh_error"] is not None, timeout=90,
              what="a failed credentials fetch reported on /status")
    config_file, state = credentials()
    assert config_file.endswith("/compose-aws.yaml")
    assert state["available"] is False and state["access_key_id_prefix"] is None
    assert state["last_refresh_error"].startswith("no AWS credentials"), state
    logs = compose("logs", "--no-color", "xds-server").stdout
    assert "no AWS credentials" in logs
    assert "AKIACOMPOSEEMULATOR0" not in logs and "compose-emulator-secret" not in logs

    token = compose.mint_token_with("/etc/bedrock-gateway/compose-aws.yaml", "compose-aws")
    client = gateway_client("bedrock-runtime", compose.gateway, token=token)

    def refusal():
        try:
            _converse(client)
        except ClientError as error:
            return error
        raise AssertionError("signed without credentials")

    _wait_for(lambda: refusal().response["ResponseMetadata"]["HTTPStatusCode"] == 503,
              timeout=60, what="503 from the gateway without credentials")
    error = refusal()
    assert error.response["Error"]["Code"] == "ServiceUnavailableException"
    assert "credentials" in error.response["Error"]["Message"]


def test_down_leaves_nothing(compose):
    compose("down", "-v", "--remove-orphans")
    assert compose.leftovers() == {"containers": [], "volumes": [], "networks": []}
