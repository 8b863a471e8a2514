"""Fixtures: the whole gateway (Envoy + wasm filter, xds-server, Bedrock emulator) started by
the Rust harness binary `gateway-stack` on free loopback ports."""

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# A SIGTERM (scripts/test.sh stopping the background Docker tests when another step failed)
# ends the run as Ctrl-C does, so `finally` blocks and fixture teardowns still remove the
# containers, images and directories they made.
signal.signal(signal.SIGTERM, _interrupt)


def _target_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


class Stack:
    def __init__(self, process: subprocess.Popen, info: dict):
        self.process = process
        self.info = info
        self.gateway = info["gateway"]
        self.emulator_control = info["emulator_control"]

    def emulator_requests(self) -> list:
        with urllib.request.urlopen(f"{self.emulator_control}/requests") as response:
            return json.load(response)

    def clear_emulator_requests(self) -> None:
        request = urllib.request.Request(f"{self.emulator_control}/requests", method="DELETE")
        urllib.request.urlopen(request).close()

    def filter_config(self) -> dict:
        """The filter's JSON document for the stack's configuration (`xds-server filter-config`)."""
        rendered = subprocess.run([self.info["xds_server"], "filter-config", "--config", self.info["config_path"]],
                                  capture_output=True, text=True, timeout=60)
        assert rendered.returncode == 0, rendered.stderr
        return json.loads(rendered.stdout)

    def stop(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_stack(*args: str) -> Stack:
    binary = _target_dir() / "debug" / "gateway-stack"
    if not binary.exists():
        pytest.fail(f"{binary} is not built: run scripts/test.sh")
    process = subprocess.Popen(
        [str(binary), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=10)
        pytest.fail(f"gateway-stack exited with {process.returncode} before reporting its addresses")
    return Stack(process, json.loads(line))


def start_stack_with(overlay: str, *args: str) -> Stack:
    """The stack with `overlay` (YAML merged into its gateway configuration at start)."""
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "overlay.yaml"
        path.write_text(overlay)
        return start_stack(*args, "--config-overlay", str(path))


@pytest.fixture(scope="session")
def stack():
    running = start_stack()
    yield running
    running.stop()


@contextlib.contextmanager
def running_envoy(bootstrap: dict, work: str, what: str, concurrency: int = 1):
    """Envoy (ENVOY_BIN, or the project's) on `bootstrap`, written into `work` with its log,
    once its admin says it is ready; stopped at the end. `what` names it when it does not
    become ready within 30 s (the error has the end of its log)."""
    admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    config = os.path.join(work, f"envoy-{admin}.json")
    with open(config, "w") as out:
        json.dump(bootstrap, out)
    envoy = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
    with open(os.path.join(work, f"envoy-{admin}.log"), "w") as log:
        process = subprocess.Popen([envoy, "-c", config, "--disable-hot-restart", "--base-id", str(admin),
                                    "--concurrency", str(concurrency), "-l", "warning"],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not _ready(admin):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{what} did not become ready:\n{open(log.name).read()[-3000:]}")
                time.sleep(0.2)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _ready(admin: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
