"""A project's compose stack under test (test_compose.py, test_fleet.py): the shipped Dockerfile
and compose file, with base images from tests/docker/seed-images.sh and the Rust binaries from
the host's build (Dockerfile ARTIFACTS=prebuilt, staged in target/prebuilt/).
"""

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREBUILT = ROOT / "target" / "prebuilt"


def run(args, env=None, check=True, timeout=600, capture=True):
    result = subprocess.run(args, cwd=ROOT, env=env, text=True, timeout=timeout,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.STDOUT if capture else None)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout}")
    return result


def docker_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def compose_command() -> list:
    """`docker compose` where the plugin exists, else `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("a Docker daemon answers but neither `docker compose` nor `docker-compose` exists")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_prebuilt() -> None:
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
            run(["strip", "-o", str(PREBUILT / name), str(source)])


def wait_for(condition, timeout=30, what="condition", every=0.5):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(every)


class Compose:
    """One compose project: `file` (None: docker-compose.yml), `ports` the variables naming
    published ports (each given a free port), `services` those that must be healthy."""

    def __init__(self, config_dir: pathlib.Path, services, ports=(), file=None, prefix="bgwtest"):
        self.command = compose_command()
        if file is not None:
            self.command = [*self.command, "-f", str(ROOT / file)]
        self.project = f"{prefix}{os.getpid()}"
        self.config_dir = config_dir
        self.services = tuple(services)
        self.ports = {name: free_port() for name in ports}
        self.env = dict(os.environ)
        for name in ("GATEWAY_CONFIG", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            self.env.pop(name, None)
        self.env.update({
            "COMPOSE_PROJECT_NAME": self.project,
            "GATEWAY_ARTIFACTS": "prebuilt",
            "GATEWAY_BUILD_IMAGE": "debian:bookworm-slim",
            "GATEWAY_CONFIG_DIR": str(config_dir),
            **{name: str(port) for name, port in self.ports.items()},
        })

    def url(self, port_variable: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_variable]}"

    def __call__(self, *args, check=True, timeout=600, env=None):
        return run([*self.command, "-p", self.project, *args], env=env or self.env, check=check,
                   timeout=timeout)

    def container(self, service: str) -> str:
        return self("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        out = run(["docker", "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", cid])
        return out.stdout.strip()

    def wait_healthy(self, services=None, timeout=180):
        services = services or self.services
        deadline = time.monotonic() + timeout
        while True:
            states = {s: self.health(s) for s in services}
            if all(state == "running healthy" for state in states.values()):
                return
            if time.monotonic() > deadline:
                logs = self("logs", "--no-color", "--tail", "40", check=False).stdout
                raise AssertionError(f"not healthy after {timeout} s: {states}\n{logs}")
            time.sleep(1)

    def mint_token(self, config: str, tenant: str, service: str = "xds-server") -> str:
        out = self("exec", "-T", service, "xds-server", "mint-token", "--config", config,
                   "--tenant", tenant)
        return out.stdout.strip().splitlines()[-1]

    def leftovers(self) -> dict:
        label = f"label=com.docker.compose.project={self.project}"
        return {
            kind: run(["docker", *cmd, "--filter", label]).stdout.split()
            for kind, cmd in {"containers": ["ps", "-aq"], "volumes": ["volume", "ls", "-q"],
                              "networks": ["network", "ls", "-q"]}.items()
        }


@contextlib.contextmanager
def started(edit_config, **compose_args):
    """Seeds the base images, stages the binaries, copies config/ (changed by `edit_config`,
    given the copy's directory), builds and starts the stack; yields it healthy, and removes
    its containers, volumes, networks, built images and the copy at the end."""
    if not docker_reachable():
        pytest.skip("no Docker daemon reachable (`docker info` failed)")
    timings = {}
    mark = time.monotonic()
    run([str(ROOT / "tests" / "docker" / "seed-images.sh")], capture=False, timeout=900)
    timings["seed"] = time.monotonic() - mark
    stage_prebuilt()
    config_dir = pathlib.Path(tempfile.mkdtemp(prefix="bgw-compose-config-"))
    shutil.copytree(ROOT / "config", config_dir, dirs_exist_ok=True)
    config_dir.chmod(0o755)
    edit_config(config_dir)
    stack = Compose(config_dir, **compose_args)
    try:
        mark = time.monotonic()
        stack("build")
        timings["build"] = time.monotonic() - mark
        mark = time.monotonic()
        stack("up", "-d")
        stack.wait_healthy()
        timings["up"] = time.monotonic() - mark
        print(f"\n{stack.project} timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        yield stack
    finally:
        stack("down", "-v", "--rmi", "local", "--remove-orphans", check=False)
        # The Dockerfile's artifacts stage, left untagged by the classic builder, and the
        # container of a step of it that failed (the classic builder leaves it behind).
        artifacts = "label=org.bedrock-gateway.stage=artifacts"
        run(["docker", "container", "prune", "-f", "--filter", artifacts], check=False)
        run(["docker", "image", "prune", "-f", "--filter", artifacts], check=False)
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(PREBUILT, ignore_errors=True)


def replace_once(path: pathlib.Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} changed: '{old}' is not in it once (update the test)"
    path.write_text(text.replace(old, new))
