"""The filter's OCI image (deploy/oci/build-image.py): built from the release .wasm without a
registry, in the Wasm image format Istio and Envoy Gateway pull (the "compat" variant: one OCI
tar+gzip layer holding plugin.wasm), pushed to and pulled from a real registry on loopback
(Debian's docker-registry, the CNCF distribution server) with skopeo, and pinned by the digest
the registry reports in the manifests deploy/render.py renders."""

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

BUILD = ROOT / "deploy" / "oci" / "build-image.py"
WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm"
REPOSITORY = "bedrock-gateway/filter"
TAG = "0.1.0-test"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(out: Path, *extra: str, wasm: Path = WASM) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUILD), "--wasm", str(wasm), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=60)


def _blob(layout: Path, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    data = (layout / "blobs" / algorithm / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest, f"blob {digest} does not match its digest"
    return data


def _manifest(layout: Path, tag: str) -> tuple[str, dict]:
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"]
               if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    return entry["digest"], json.loads(_blob(layout, entry["digest"]))


def _plugin_wasm(layer: bytes) -> bytes:
    """What Istio's and Envoy Gateway's fetchers do with a compat image's last layer: gunzip,
    untar, take the file named plugin.wasm."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        names = tar.getnames()
        assert names == ["plugin.wasm"], names
        return tar.extractfile("plugin.wasm").read()


def _check_compat(layout: Path, tag: str) -> str:
    digest, manifest = _manifest(layout, tag)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == OCI_MANIFEST
    [layer] = manifest["layers"]
    assert layer["mediaType"] == OCI_LAYER
    data = _blob(layout, layer["digest"])
    assert len(data) == layer["size"]
    assert _plugin_wasm(data) == WASM.read_bytes()
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()]
    return digest


@pytest.fixture(scope="module")
def work():
    if not WASM.exists():
        pytest.fail(f"{WASM} is not built: run scripts/test.sh")
    directory = Path(tempfile.mkdtemp(prefix="bgw-oci-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def image(work):
    out = work / "image"
    built = _build(out, "--tag", TAG)
    assert built.returncode == 0, built.stderr
    digest = built.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71, built.stdout
    return out, digest


@pytest.fixture(scope="module")
def registry(work):
    """Debian's docker-registry on a loopback port, storing under the test's directory."""
    binary = shutil.which("docker-registry")
    if binary is None or shutil.which("skopeo") is None:
        pytest.fail("docker-registry and skopeo are missing: scripts/test.sh installs them (apt-get)")
    port = _free_port()
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {work / 'registry-data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n")
    log = open(work / "registry.log", "w")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not start: {(work / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"skopeo {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_the_image_is_the_compat_variant_holding_the_release_module(image):
    layout, digest = image
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert _check_compat(layout, TAG) == digest


def test_the_build_is_reproducible(work, image):
    _, digest = image
    again = _build(work / "again", "--tag", TAG)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == digest
    other = _build(work / "other-version", "--tag", TAG, "--version", "9.9.9")
    assert other.returncode == 0 and other.stdout.strip() != digest, "the version annotation is part of the image"


def test_bad_input_is_refused_with_the_reason(work):
    not_wasm = work / "not.wasm"
    not_wasm.write_bytes(b"#!/bin/sh\n")
    refused = _build(work / "refused-1", wasm=not_wasm)
    assert refused.returncode == 2 and "not a WebAssembly module" in refused.stderr, refused.stderr
    refused = _build(work / "refused-2", "--tag=.bad")
    assert refused.returncode == 2 and "--tag '.bad'" in refused.stderr, refused.stderr
    refused = _build(work / "refused-3", wasm=work / "missing.wasm")
    assert refused.returncode == 2 and "missing.wasm" in refused.stderr, refused.stderr
    occupied = work / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("x")
    refused = _build(occupied)
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr, refused.stderr
    assert not (work / "refused-1").exists() and not (work / "refused-2").exists()


def test_pushed_and_pulled_through_a_registry_with_the_same_digest(work, image, registry):
    layout, digest = image
    reference = f"{registry}/{REPOSITORY}:{TAG}"
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{reference}")

    # What a mesh's fetcher sees: the manifest the registry serves for the tag, and its digest.
    request = urllib.request.Request(f"http://{registry}/v2/{REPOSITORY}/manifests/{TAG}",
                                     headers={"Accept": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        served = response.read()
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert response.headers["Docker-Content-Digest"] == digest
    assert "sha256:" + hashlib.sha256(served).hexdigest() == digest
    inspected = json.loads(_skopeo("inspect", "--tls-verify=false", f"docker://{reference}"))
    assert inspected["Digest"] == digest

    # Pulled back (by digest, as a pinned manifest does), it is the same module.
    pulled = work / "pulled"
    _skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{registry}/{REPOSITORY}@{digest}",
            f"oci:{pulled}:{TAG}")
    assert _check_compat(pulled, TAG) == digest


def test_rendered_manifests_pin_the_digest_the_registry_serves(work, image, registry):
    """deploy/render.py writes the image reference and digest into every object that fetches
    the module; each must name what the registry holds."""
    layout, digest = image
    reference = f"{registry}/{REPOSITORY}:{TAG}"
    _skopeo("copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{TAG}", f"docker://{reference}")
    out = work / "rendered"
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "render.py"), "--example-values", "--set", f"FILTER_IMAGE={reference}",
         "--set", f"FILTER_SHA256={digest.split(':', 1)[1]}", "--out", str(out)],
        capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    pins = []
    for path in sorted(out.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                pins.extend(_module_pins(document, path.relative_to(out)))
    kinds = {kind for kind, _, _, _ in pins}
    assert {"WasmPlugin", "EnvoyExtensionPolicy", "EnvoyFilter"} <= kinds, pins
    for kind, where, url, sha256 in pins:
        assert sha256 == digest.split(":", 1)[1], f"{where} ({kind}) pins {sha256}, the registry serves {digest}"
        assert url.removeprefix("oci://") == reference, f"{where} ({kind}) fetches {url}"
        served = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}",
                                 f"docker://{url.removeprefix('oci://')}"], capture_output=True, text=True)
        assert served.stdout.strip() == digest, served.stderr


def _module_pins(document: dict, where) -> list:
    """(kind, file, url, sha256) of every Wasm module an object makes a mesh fetch."""
    kind, spec = document.get("kind"), document.get("spec") or {}
    pins = []
    if kind == "WasmPlugin":
        pins.append((kind, where, spec["url"], spec.get("sha256")))
    elif kind == "EnvoyExtensionPolicy":
        for wasm in spec.get("wasm", []):
            image = wasm["code"]["image"]
            pins.append((kind, where, image["url"], image.get("sha256")))
    elif kind == "EnvoyFilter":
        for patch in spec.get("configPatches", []):
            value = json.dumps(patch.get("patch", {}).get("value", {}))
            for remote in _find_remote(json.loads(value)):
                pins.append((kind, where, remote["http_uri"]["uri"], remote.get("sha256")))
    return pins


def _find_remote(node) -> list:
    if isinstance(node, dict):
        if "remote" in node and "http_uri" in node["remote"]:
            return [node["remote"]]
        return [found for value in node.values() for found in _find_remote(value)]
    if isinstance(node, list):
        return [found for value in node for found in _find_remote(value)]
    return []
