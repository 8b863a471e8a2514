#!/usr/bin/env python3
"""Render the gateway's Kubernetes, Istio and Envoy Gateway manifests with your values.

Every YAML file under deploy/k8s, deploy/istio and deploy/envoy-gateway is a template in which
`${NAME}` stands for a value you give (there is no other syntax and no escape: `${` always
starts a placeholder). The rendered tree is written to --out, one directory per tree, the
files as they are named here; apply them as docs/mesh.md says.

The renderer refuses, naming the file, line and placeholder:
  - a placeholder without a value;
  - a value no rendered file uses (a misspelt name would otherwise be ignored);
  - a value that does not have its placeholder's form (below).

Placeholders (deploy/render.py --list shows where each one is used):
  XDS_SERVER_IMAGE     xds-server's image (Dockerfile target xds-server), a registry reference
                       with a tag or digest and no scheme: registry.example.com/bgw/xds-server:0.1.0
  XDS_SERVER_ROLE_ARN  the IAM role xds-server signs with (IRSA): arn:aws:iam::123456789012:role/NAME
  REDIS_URL            redis:// or rediss:// URL of the quota store, without password:
                       rediss://master.example.cache.amazonaws.com:6379/0
  REDIS_PASSWORD       the Redis password (into a Secret; printable ASCII without spaces, quotes
                       or backslashes; create the Secret yourself for others)
  FILTER_IMAGE         the filter's OCI image, a registry reference without oci://:
                       registry.example.com/bedrock-gateway/filter:0.1.0
  FILTER_SHA256        that image's manifest digest: 64 lowercase hex digits, without the
                       `sha256:` that deploy/oci/build-image.py prints
  JWT_ISSUER           the exact `iss` of callers' tokens, an https:// URL
  JWT_JWKS_URL         the issuer's JWKS, an https:// URL
  PUBLIC_HOST          the host name callers use: bedrock.gateway.example.com

Values come from --set, then (with --from-env) from environment variables of the same names,
then (with --example-values) from the examples above, for a trial render only. Example:

  deploy/render.py --out rendered \\
    --set XDS_SERVER_IMAGE=registry.example.com/bedrock-gateway/xds-server:0.1.0 \\
    --set FILTER_IMAGE=registry.example.com/bedrock-gateway/filter:0.1.0 \\
    --set FILTER_SHA256="$(deploy/oci/build-image.py --out target/oci/filter --tag 0.1.0 | cut -d: -f2)" \\
    ...
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
TREES = ("k8s", "istio", "envoy-gateway")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = rf"{_LABEL}(?:\.{_LABEL})+"
# A registry reference as the distribution spec writes them (lower-case path components), with
# a tag or a digest: no implicit `latest`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:(?:{_DNS_NAME}|{_LABEL}|localhost)(?::[0-9]{{1,5}})?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"


def _image(value: str) -> str | None:
    if "://" in value:
        return "a registry reference without a scheme (the manifests add oci:// where it is needed)"
    if not _IMAGE.match(value):
        return "a registry reference such as registry.example.com/team/name:1.0 (lower case, a tag or @sha256: digest)"
    last = value.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in value:
        return "a reference with a tag or an @sha256: digest (no implicit latest)"
    return None


def _sha256(value: str) -> str | None:
    if value.startswith("sha256:"):
        return "64 lowercase hex digits without the `sha256:` prefix (FILTER_SHA256=${digest#sha256:})"
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        return "64 lowercase hex digits: the OCI image manifest's sha256 digest"
    return None


def _https_url(value: str) -> str | None:
    if not re.fullmatch(rf"https://{_DNS_NAME}(?::[0-9]{{1,5}})?(?:/{_URL_CHARS}*)?", value):
        return "an https:// URL (no spaces, quotes or backslashes)"
    return None


def _redis_url(value: str) -> str | None:
    match = re.fullmatch(
        rf"(rediss?)://(?:([^:@/\s]*)(:[^@/\s]*)?@)?({_DNS_NAME}|{_LABEL}|\[[0-9a-fA-F:]+\]|[0-9.]+)"
        r"(?::[0-9]{1,5})?(?:/[0-9]{1,2})?",
        value,
    )
    if not match:
        return "redis://HOST[:PORT][/DB] or rediss://... (TLS)"
    if match.group(3):
        return "a URL without a password: give the password as REDIS_PASSWORD (it goes into a Secret)"
    return None


def _redis_password(value: str) -> str | None:
    if not re.fullmatch(r'[!#-\[\]-~]+', value):
        return ("printable ASCII without spaces, quotes or backslashes "
                "(for others, create the Secret xds-server-redis yourself: deploy/k8s/30-secret.yaml)")
    return None


def _role_arn(value: str) -> str | None:
    if not re.fullmatch(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", value):
        return "an IAM role ARN: arn:aws:iam::123456789012:role/NAME"
    return None


def _public_host(value: str) -> str | None:
    if not re.fullmatch(_DNS_NAME, value):
        return "a lower-case DNS name such as bedrock.gateway.example.com"
    if value.endswith(".amazonaws.com") or value.endswith(".amazonaws.com.cn"):
        return "the gateway's own host name, not an AWS endpoint"
    return None


# --example-values: the examples above, to try the renderer or to render a tree for a check.
EXAMPLES = {
    "XDS_SERVER_IMAGE": "registry.example.com/bedrock-gateway/xds-server:0.1.0",
    "XDS_SERVER_ROLE_ARN": "arn:aws:iam::123456789012:role/bedrock-gateway-xds-server",
    "REDIS_URL": "rediss://master.bedrock-gateway.example.com:6379/0",
    "REDIS_PASSWORD": "example-password-not-a-secret",
    "FILTER_IMAGE": "registry.example.com/bedrock-gateway/filter:0.1.0",
    "FILTER_SHA256": "0" * 64,
    "JWT_ISSUER": "https://login.example.com/",
    "JWT_JWKS_URL": "https://login.example.com/.well-known/jwks.json",
    "PUBLIC_HOST": "bedrock.gateway.example.com",
}

# Values never echoed in error messages.
SECRETS = {"REDIS_PASSWORD"}

VALIDATORS = {
    "XDS_SERVER_IMAGE": _image,
    "FILTER_IMAGE": _image,
    "FILTER_SHA256": _sha256,
    "XDS_SERVER_ROLE_ARN": _role_arn,
    "REDIS_URL": _redis_url,
    "REDIS_PASSWORD": _redis_password,
    "JWT_ISSUER": _https_url,
    "JWT_JWKS_URL": _https_url,
    "PUBLIC_HOST": _public_host,
}


def templates(trees) -> list[Path]:
    files = []
    for tree in trees:
        files += sorted(p for p in (DEPLOY / tree).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return files


def uses(files) -> dict[str, list[tuple[Path, int]]]:
    """Each placeholder name, with the files and lines that use it."""
    found: dict[str, list[tuple[Path, int]]] = {}
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in PLACEHOLDER.finditer(line):
                found.setdefault(match.group(1), []).append((path, number))
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(DEPLOY.parent)}:{line}"


def main(argv=None) -> int:
    doc = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(prog="deploy/render.py", description=doc[0],
                                     epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                        help="the value of placeholder NAME (repeatable)")
    parser.add_argument("--from-env", action="store_true",
                        help="take placeholders not given with --set from environment variables of the same name")
    parser.add_argument("--example-values", action="store_true",
                        help="fill placeholders that have no value from --set (or the environment) with built-in "
                             "examples (example.com hosts, an all-zero digest): for a trial, not for a cluster")
    parser.add_argument("--tree", action="append", choices=TREES,
                        help="render only this tree (repeatable; default: all three)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="directory for the rendered tree (created; must be empty or absent)")
    parser.add_argument("--list", action="store_true", help="list the placeholders and where they are used, then exit")
    args = parser.parse_args(argv)
    trees = args.tree or list(TREES)
    files = templates(trees)
    used = uses(files)

    if args.list:
        for name in sorted(used):
            print(f"{name}: " + ", ".join(where(p, n) for p, n in used[name]))
        return 0
    if args.out is None:
        parser.error("--out DIR is required (or --list)")

    errors = []
    for name in used:
        if not NAME.match(name):
            for path, line in used[name]:
                errors.append(f"{where(path, line)}: ${{{name}}} is not a placeholder name (A-Z, 0-9, _)")
    given: dict[str, str] = {}
    for item in args.values:
        name, sep, value = item.partition("=")
        if not sep or not NAME.match(name):
            errors.append(f"--set {item!r}: expected NAME=VALUE with NAME of A-Z, 0-9, _")
            continue
        if name in given:
            errors.append(f"--set {name}: given twice")
        given[name] = value
    for name in sorted(set(given) - set(used)):
        errors.append(f"--set {name}: no file of {', '.join(trees)} uses ${{{name}}}")
    values = dict(given)
    if args.from_env:
        for name in used:
            if name not in values and name in os.environ:
                values[name] = os.environ[name]
    if args.example_values:
        for name in used:
            if name not in values and name in EXAMPLES:
                values[name] = EXAMPLES[name]
    for name in sorted(used):
        if not NAME.match(name):
            continue
        if name not in values:
            for path, line in used[name]:
                errors.append(f"{where(path, line)}: ${{{name}}} has no value (--set {name}=...)")
            continue
        value = values[name]
        origin = "--set" if name in given else "example" if values[name] is EXAMPLES.get(name) else "environment"
        if value == "" or "\n" in value or "${" in value:
            errors.append(f"{name} ({origin}): expected a non-empty single line without '${{'")
            continue
        problem = VALIDATORS.get(name, lambda _: None)(value)
        if problem:
            first = used[name][0]
            shown = "(value not shown)" if name in SECRETS else repr(value)
            errors.append(f"{name}={shown} ({origin}, used in {where(*first)}): expected {problem}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        errors.append(f"--out {args.out}: exists and is not an empty directory")
    if errors:
        for error in errors:
            print(f"render: {error}", file=sys.stderr)
        return 2

    for path in files:
        target = args.out / path.relative_to(DEPLOY)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = PLACEHOLDER.sub(lambda m: values[m.group(1)], path.read_text())
        target.write_text(text)
        print(f"rendered {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
