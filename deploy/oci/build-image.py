#!/usr/bin/env python3
"""Package the gateway filter (a .wasm file) as an OCI image that Istio and Envoy Gateway pull.

The image is the "compat" variant of the Wasm image format both accept: an ordinary OCI image
manifest with one `tar+gzip` layer holding `plugin.wasm` at its root (what `docker build` makes
of `FROM scratch` + `COPY plugin.wasm ./`). It is written as an OCI image layout directory, so
no registry or container engine is needed to build it; push it with any OCI tool, e.g.

    deploy/oci/build-image.py --out target/oci/filter --tag 0.1.0
    skopeo copy oci:target/oci/filter:0.1.0 docker://registry.example.com/bedrock-gateway/filter:0.1.0

The build is reproducible: the same .wasm and options give the same bytes, so the same digest.
The digest printed on standard output (`sha256:...`) is the image manifest's: the value Istio's
WasmPlugin `sha256` and Envoy Gateway's `image.sha256` take (without the `sha256:` prefix), and
the one a registry reports for the pushed image (`skopeo inspect --format '{{.Digest}}'`).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "bedrock_gateway_filter.wasm"

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# What an OCI image tag may be (the distribution spec's reference grammar for tags).
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
WASM_MAGIC = b"\0asm\x01\0\0\0"


def layer_tar(wasm: bytes, mtime: int) -> bytes:
    """A tar holding only `plugin.wasm`, with nothing that varies between builds."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size, info.mode, info.mtime = len(wasm), 0o444, mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return out.getvalue()


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build(wasm: bytes, out: Path, tag: str, mtime: int, annotations: dict) -> str:
    tar = layer_tar(wasm, mtime)
    # mtime=0 and no file name: gzip's header carries nothing of the build.
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    config = canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(tar)]},
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": digest(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
        "annotations": annotations,
    })
    index = canonical({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": digest(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    })
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in (layer, config, manifest):
        (blobs / digest(blob).split(":", 1)[1]).write_bytes(blob)
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(index)
    return digest(manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM,
                        help="the filter module (default: the release build, %(default)s)")
    parser.add_argument("--out", type=Path, required=True,
                        help="directory for the OCI image layout (created; must be empty or absent)")
    parser.add_argument("--tag", default="latest", help="the image's tag in the layout (default: latest)")
    parser.add_argument("--version", default=None,
                        help="org.opencontainers.image.version annotation (default: the tag)")
    args = parser.parse_args()

    def fail(message: str) -> int:
        print(f"build-image: {message}", file=sys.stderr)
        return 2

    if not TAG.match(args.tag):
        return fail(f"--tag {args.tag!r}: expected 1-128 characters of letters, digits, '_', '.', '-', "
                    "not starting with '.' or '-'")
    try:
        wasm = args.wasm.read_bytes()
    except OSError as error:
        return fail(f"--wasm {args.wasm}: {error.strerror} (build it with scripts/run.sh or "
                    "`cargo build -p bedrock-gateway-filter --target wasm32-wasip1 --release`)")
    if not wasm.startswith(WASM_MAGIC):
        return fail(f"--wasm {args.wasm}: not a WebAssembly module (no \\0asm version 1 header)")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        return fail(f"--out {args.out}: exists and is not an empty directory")
    # SOURCE_DATE_EPOCH (reproducible-builds.org) dates the file in the layer; 0 otherwise.
    try:
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    except ValueError:
        return fail("SOURCE_DATE_EPOCH: expected whole seconds since 1970")
    annotations = {
        "org.opencontainers.image.title": "bedrock-gateway-filter",
        "org.opencontainers.image.description": "proxy-wasm HTTP filter of the Bedrock gateway "
                                                "(Wasm image, compat variant: plugin.wasm)",
        "org.opencontainers.image.version": args.version or args.tag,
    }
    print(build(wasm, args.out, args.tag, mtime, annotations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
