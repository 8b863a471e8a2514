"""The Kubernetes, Istio and Envoy Gateway manifests in deploy/ (docs/mesh.md), without a cluster.

deploy/render.py renders them with test values; then every object is checked against its
schema (Kubernetes core kinds with kubernetes-validate in strict mode; the Istio, Gateway API
and Envoy Gateway kinds with the schemas in tests/deploy/schemas), every filter configuration
they carry against docs/filter-config.schema.json and `xds-server validate-filter-config`, the
xds-server ConfigMap with `xds-server validate`, and the objects against each other: the names
one object uses for another (clusters, services, ports, filters, listeners, labels) are the
names the other has or that the mesh gives it.

What needs Kubernetes, istiod or the Envoy Gateway controller is not run here (docs/mesh.md,
"What is tested")."""

import hashlib
import json
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT, _target_dir

DEPLOY = ROOT / "deploy"
RENDER = DEPLOY / "render.py"
SCHEMAS = ROOT / "tests" / "deploy" / "schemas"
FILTER_SCHEMA = json.loads((ROOT / "docs" / "filter-config.schema.json").read_text())
XDS_SERVER = _target_dir() / "debug" / "xds-server"
# The Kubernetes version the core objects are checked against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.33"

VALUES = {
    "XDS_SERVER_IMAGE": "registry.example.com/bedrock-gateway/xds-server:0.1.0",
    "XDS_SERVER_ROLE_ARN": "arn:aws:iam::123456789012:role/bedrock-gateway-xds-server",
    "REDIS_URL": "rediss://master.bedrock-gateway.example.com:6379/0",
    "REDIS_PASSWORD": "test-redis-password",
    "FILTER_IMAGE": "registry.example.com/bedrock-gateway/filter:0.1.0",
    "FILTER_SHA256": hashlib.sha256(b"a test OCI image manifest").hexdigest(),
    "JWT_ISSUER": "https://login.example.com/",
    "JWT_JWKS_URL": "https://login.example.com/.well-known/jwks.json",
    "PUBLIC_HOST": "bedrock.gateway.example.com",
}
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
# xds-server/src/snapshot/route.rs, BUFFER_HEADROOM_BYTES: Envoy buffers this much more than
# the filter accepts.
BUFFER_HEADROOM_BYTES = 4 * 1024 * 1024
# Files that are Helm values rather than Kubernetes objects, with their schemas.
VALUES_FILES = {
    "istio/istiod-values.yaml": "istiod-values.json",
    "envoy-gateway/envoy-gateway-values.yaml": "envoy-gateway-values.json",
}


# ---------------------------------------------------------------- helpers

def render(out, values=VALUES, extra=()):
    args = [sys.executable, str(RENDER), "--out", str(out)]
    for name, value in values.items():
        args += ["--set", f"{name}={value}"]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=60)


def xds_server(*args, stdin=None, env=None):
    return subprocess.run([str(XDS_SERVER), *args], input=stdin, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def load_schemas():
    """Each CRD schema by (apiVersion, kind), read from the schema's own `const`s."""
    by_kind, by_name = {}, {}
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        by_name[path.name] = schema
        properties = schema.get("properties", {})
        if "kind" in properties and "apiVersion" in properties:
            by_kind[(properties["apiVersion"]["const"], properties["kind"]["const"])] = schema
    return by_kind, by_name


CRD_SCHEMAS, SCHEMA_FILES = load_schemas()
FRAGMENTS = SCHEMA_FILES["envoy-fragments.json"]


def fragment(name):
    """A definition of envoy-fragments.json as a schema of its own."""
    return {"$schema": FRAGMENTS["$schema"], "$defs": FRAGMENTS["$defs"], "$ref": f"#/$defs/{name}"}


def core_kind(document):
    group = document["apiVersion"].rsplit("/", 1)[0] if "/" in document["apiVersion"] else ""
    return "." not in group or group.endswith(".k8s.io") and not group.startswith("gateway.networking")


def check_document(document):
    """Validates one Kubernetes object: core kinds with kubernetes-validate (strict), the others
    with their schema in tests/deploy/schemas; an object of a kind with neither fails."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key in CRD_SCHEMAS:
        errors = sorted(jsonschema.Draft202012Validator(CRD_SCHEMAS[key]).iter_errors(document), key=str)
        if errors:
            raise AssertionError("; ".join(f"{e.json_path}: {e.message}" for e in errors[:5]))
        return "schema"
    if None in key or not core_kind(document):
        raise AssertionError(f"{key[0]} {key[1]}: no schema in tests/deploy/schemas and not a Kubernetes core kind")
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise AssertionError(f"{key[1]}: {error}") from None
    except kubernetes_validate.SchemaNotFoundError as error:
        raise AssertionError(f"{key[1]}: {error}") from None
    return "kubernetes-validate"


class Manifests:
    def __init__(self, out):
        self.out = out
        self.files = {}
        self.objects = []  # (relative path, document)
        for path in sorted(out.rglob("*.yaml")):
            relative = str(path.relative_to(out))
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            self.files[relative] = documents
            if relative not in VALUES_FILES:
                self.objects += [(relative, d) for d in documents]

    def of(self, kind, tree=None, name=None):
        return [d for path, d in self.objects
                if d.get("kind") == kind and (tree is None or path.startswith(tree + "/"))
                and (name is None or d["metadata"]["name"] == name)]

    def one(self, kind, tree=None, name=None):
        found = self.of(kind, tree, name)
        assert len(found) == 1, f"expected one {kind} {name or ''} in {tree or 'deploy'}, found {len(found)}"
        return found[0]


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered") / "deploy"
    result = render(out)
    assert result.returncode == 0, result.stderr
    return Manifests(out)


def envoyfilter_patches(envoyfilter, apply_to):
    return [p for p in envoyfilter["spec"]["configPatches"] if p["applyTo"] == apply_to]


def filter_configs(manifests):
    """Every filter configuration the manifests carry: (where, the JSON text the filter gets)."""
    found = []
    for envoyfilter in manifests.of("EnvoyFilter", "istio"):
        for patch in envoyfilter_patches(envoyfilter, "EXTENSION_CONFIG"):
            configuration = patch["patch"]["value"]["typed_config"]["config"]["configuration"]
            found.append((f"EnvoyFilter {envoyfilter['metadata']['name']}", configuration["value"]))
    for plugin in manifests.of("WasmPlugin", "istio"):
        found.append((f"WasmPlugin {plugin['metadata']['name']}", json.dumps(plugin["spec"]["pluginConfig"])))
    for policy in manifests.of("EnvoyExtensionPolicy", "envoy-gateway"):
        for wasm in policy["spec"]["wasm"]:
            found.append((f"EnvoyExtensionPolicy {policy['metadata']['name']}", json.dumps(wasm["config"])))
    return found


def deployment_container(manifests):
    deployment = manifests.one("Deployment", "k8s", "xds-server")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return deployment, container


def gateway_config(manifests, tmp_path):
    """The ConfigMap's gateway.yaml as a file, with the environment its Deployment gives it."""
    configmap = manifests.one("ConfigMap", "k8s", "xds-server-config")
    path = tmp_path / "gateway.yaml"
    path.write_text(configmap["data"]["gateway.yaml"])
    _, container = deployment_container(manifests)
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in manifests.of("Secret", "k8s")}
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secrets[ref["name"]][ref["key"]]
    return path, env


def istio_control_cluster(manifests):
    service = manifests.one("Service", "k8s", "xds-server")
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    meta = service["metadata"]
    return f"outbound|{grpc['port']}||{meta['name']}.{meta['namespace']}.svc.cluster.local"


def eg_added_clusters(manifests):
    policy = manifests.one("EnvoyPatchPolicy", "envoy-gateway")
    return {p["name"]: p["operation"]["value"] for p in policy["spec"]["jsonPatches"]
            if p["type"].endswith("envoy.config.cluster.v3.Cluster") and p["operation"]["op"] == "add"
            and not p["operation"].get("path")}


def bedrock_hosts(document):
    return {service["host"] for service in json.loads(document)["services"]}


def quantity_bytes(value):
    if isinstance(value, int):
        return value
    number, unit = re.fullmatch(r"([0-9]+)([KMGTPE]i?|k)?", value).groups()
    powers = {None: 1, "k": 1000, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(number) * powers[unit]


# ---------------------------------------------------------------- schemas

def test_every_object_passes_its_schema(manifests):
    checked = {}
    for path, document in manifests.objects:
        name = f"{path}: {document.get('kind')} {document.get('metadata', {}).get('name')}"
        try:
            checked[name] = check_document(document)
        except AssertionError as error:
            pytest.fail(f"{name}: {error}")
    kinds = {d["kind"] for _, d in manifests.objects}
    assert {"Deployment", "Service", "EnvoyFilter", "EnvoyPatchPolicy", "HTTPRoute"} <= kinds, kinds
    assert "kubernetes-validate" in checked.values() and "schema" in checked.values()


def test_values_files_pass_their_schemas(manifests):
    for relative, schema in VALUES_FILES.items():
        documents = manifests.files[relative]
        assert len(documents) == 1, relative
        jsonschema.validate(documents[0], SCHEMA_FILES[schema])
    eg = manifests.files["envoy-gateway/envoy-gateway-values.yaml"][0]["config"]["envoyGateway"]
    assert eg["extensionApis"] == {"enableEnvoyPatchPolicy": True, "enableBackend": True}
    # The EnvoyPatchPolicy names the listener by the v1 xDS name scheme.
    assert "XDSNameSchemeV2" not in eg.get("runtimeFlags", {}).get("enabled", [])


def test_an_unknown_kind_or_a_stray_field_fails():
    with pytest.raises(AssertionError, match="no schema"):
        check_document({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    with pytest.raises(AssertionError, match="no schema"):
        check_document({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                        "metadata": {"name": "s", "namespace": "n"}, "spec": {}})
    with pytest.raises(AssertionError):
        check_document({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                        "spec": {"ports": [{"port": 1, "nmae": "typo"}]}})
    with pytest.raises(AssertionError):
        check_document({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": {"name": "r", "namespace": "n"}, "spec": {"hostname": ["x"]}})


def test_schemas_are_closed():
    """Every object a schema describes lists its fields (additionalProperties false, or the
    value schema of a map), except the few free-form fields that are checked elsewhere."""
    def walk(node, where):
        if isinstance(node, dict):
            if node.get("type") == "object" and "free-form" not in node.get("$comment", ""):
                assert "additionalProperties" in node and node["additionalProperties"] is not True, where
                assert "properties" in node or isinstance(node["additionalProperties"], dict) \
                    or node.get("properties") == {}, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")
    for name, schema in SCHEMA_FILES.items():
        walk(schema, name)
    readme = (SCHEMAS / "README.md").read_text()
    for name in SCHEMA_FILES:
        assert name in readme, f"tests/deploy/schemas/README.md does not say where {name} comes from"


# ---------------------------------------------------------------- the filter's configuration

def test_every_filter_configuration_is_valid(manifests):
    configs = filter_configs(manifests)
    assert len(configs) >= 3
    for where, document in configs:
        jsonschema.validate(json.loads(document), FILTER_SCHEMA)
        checked = xds_server("validate-filter-config", "-", stdin=document)
        assert (checked.returncode, checked.stdout.strip()) == (0, "ok: -"), f"{where}: {checked.stderr}"


def test_the_gateway_configuration_is_valid(manifests, tmp_path):
    path, env = gateway_config(manifests, tmp_path)
    checked = xds_server("validate", "--config", str(path), env=env)
    assert (checked.returncode, checked.stdout.strip()) == (0, f"ok: {path}"), checked.stderr


def _defaults_compare(rendered, given, schema, where, skip):
    """`given` (a manifest's filter configuration) must say what `rendered` (xds-server's) says,
    leaving out only keys whose rendered value is the schema's default."""
    def resolve(node):
        while isinstance(node, dict) and "$ref" in node:
            extra = {k: v for k, v in node.items() if k != "$ref"}
            node = {**FILTER_SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]], **extra}
        if isinstance(node, dict) and "anyOf" in node:
            (node,) = [resolve(n) for n in node["anyOf"] if n.get("type") != "null"]
        return node

    schema = resolve(schema)
    if where in skip:
        return
    if isinstance(rendered, dict):
        assert isinstance(given, dict), f"{where}: expected an object"
        if "oneOf" in schema:  # authentication: the branch of its mode
            (schema,) = [b for b in schema["oneOf"] if b["properties"]["mode"]["const"] == rendered.get("mode")]
        for key in set(rendered) | set(given):
            sub = schema.get("properties", {}).get(key) or schema.get("additionalProperties") or {}
            if key not in given:
                default = sub.get("default", resolve(sub).get("default") if isinstance(sub, dict) else None)
                assert rendered[key] == default, \
                    f"{where}/{key}: left out, but xds-server renders {rendered[key]!r}, not the default {default!r}"
            elif key not in rendered:
                pytest.fail(f"{where}/{key}: {given[key]!r} is not what xds-server renders (no such key)")
            else:
                _defaults_compare(rendered[key], given[key], sub, f"{where}/{key}", skip)
    elif isinstance(rendered, list):
        assert isinstance(given, list) and len(given) == len(rendered), f"{where}: {given!r} != {rendered!r}"
        for index, (r, g) in enumerate(zip(rendered, given)):
            _defaults_compare(r, g, schema.get("items", {}), f"{where}/{index}", skip)
    else:
        assert given == rendered, f"{where}: {given!r}, but xds-server renders {rendered!r}"


def test_filter_configurations_say_what_xds_server_renders(manifests, tmp_path):
    """Issuers, access rules, quota descriptors, services: the filter must be configured as
    xds-server is (xds-server hands it the keys of its issuers under their `iss`, counts the quota
    descriptors it sends). Only the control clusters' names are the mesh's."""
    path, env = gateway_config(manifests, tmp_path)
    rendered = xds_server("filter-config", "--config", str(path), env=env)
    assert rendered.returncode == 0, rendered.stderr
    expected = json.loads(rendered.stdout)
    for where, document in filter_configs(manifests):
        _defaults_compare(expected, json.loads(document), FILTER_SCHEMA, where,
                          skip={f"{where}/control/cluster", f"{where}/quota/cluster"})


def test_control_clusters_are_the_meshes_names_for_xds_server(manifests):
    istio_cluster = istio_control_cluster(manifests)
    assert istio_cluster == "outbound|18000||xds-server.bedrock-gateway.svc.cluster.local"
    added = eg_added_clusters(manifests)
    headless = manifests.one("Service", "envoy-gateway", "xds-server-headless")
    (grpc,) = [p for p in headless["spec"]["ports"] if p["name"] == "grpc"]
    headless_name = f"{headless['metadata']['name']}.{headless['metadata']['namespace']}.svc.cluster.local"
    for where, document in filter_configs(manifests):
        config = json.loads(document)
        clusters = {config["control"]["cluster"], config["quota"]["cluster"]}
        if where.startswith("EnvoyExtensionPolicy"):
            assert clusters <= set(added), f"{where}: {clusters} are not clusters the EnvoyPatchPolicy adds"
            for name in clusters:
                cluster = added[name]
                jsonschema.validate(cluster, fragment("Cluster"))
                assert cluster["name"] == cluster["load_assignment"]["cluster_name"] == name
                addresses = {e["endpoint"]["address"]["socket_address"]["address"]
                             + f":{e['endpoint']['address']['socket_address']['port_value']}"
                             for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]}
                assert addresses == {f"{headless_name}:{grpc['port']}"}, addresses
                # gRPC: HTTP/2, and health-checked as xds-server answers grpc.health.v1.
                options = cluster["typed_extension_protocol_options"]
                assert "http2_protocol_options" in options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
                    "explicit_http_config"]
                assert any("grpc_health_check" in check for check in cluster["health_checks"])
        else:
            assert clusters == {istio_cluster}, f"{where}: {clusters}"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == manifests.one("Service", "k8s", "xds-server")["spec"]["selector"]


# ---------------------------------------------------------------- the Kubernetes objects

def test_service_ports_and_probes_match_the_container(manifests):
    deployment, container = deployment_container(manifests)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    for service in manifests.of("Service"):
        assert service["spec"]["selector"].items() <= pod_labels.items(), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), f"{service['metadata']['name']}: {port}"
    (grpc,) = [p for p in manifests.one("Service", "k8s", "xds-server")["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["appProtocol"] == "grpc" and ports.get(grpc["targetPort"], grpc["targetPort"]) == 18000
    for probe in ("readinessProbe", "livenessProbe"):
        action = container[probe]
        port = (action.get("httpGet") or action.get("grpc") or action.get("tcpSocket"))["port"]
        assert port in ports or port in ports.values(), f"{probe}: port {port} is not a container port"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    budget = manifests.one("PodDisruptionBudget", "k8s")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["replicas"] >= 2 and budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_deployment_runs_serve_with_flags_it_has(manifests):
    deployment, container = deployment_container(manifests)
    help_text = xds_server("serve", "--help").stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text))
    env_names = set(re.findall(r"\[env: ([A-Z_]+)=", help_text))
    args = container["args"]
    assert args[0] == "serve"
    given = [a for a in args[1:] if a.startswith("--")]
    assert set(given) <= flags, f"flags xds-server serve does not have: {set(given) - flags}"
    options = dict(zip(args[1::2], args[2::2]))
    for variable in container.get("env", []):
        if variable["name"].startswith("XDS_SERVER_"):
            assert variable["name"] in env_names, variable["name"]
    # Listens where the Service and the probes reach it.
    ports = {p["containerPort"] for p in container["ports"]}
    assert {int(options["--grpc-listen"].rsplit(":", 1)[1]), int(options["--http-listen"].rsplit(":", 1)[1])} == ports
    assert all(options[f].startswith("0.0.0.0:") for f in ("--grpc-listen", "--http-listen"))
    # The grace period covers the drain and the streams closing after it.
    drain = int(options["--drain-seconds"])
    assert drain > 0 and deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 5
    # The configuration file is the ConfigMap's key, mounted read-only.
    config_dir, config_file = options["--config"].rsplit("/", 1)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config_dir]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    configmap = manifests.one("ConfigMap", "k8s", volume["configMap"]["name"])
    assert config_file in configmap["data"] and mount["readOnly"]


def test_deployment_is_locked_down(manifests):
    deployment, container = deployment_container(manifests)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert pod["automountServiceAccountToken"] is False
    # Writable volumes only where something is written: nothing is (jwks_uri issuers, Redis).
    assert all("emptyDir" not in v for v in pod.get("volumes", []))
    account = manifests.one("ServiceAccount", "k8s", pod["serviceAccountName"])
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == VALUES["XDS_SERVER_ROLE_ARN"]
    # The Redis password is in the Secret, not in the ConfigMap.
    configmap = manifests.one("ConfigMap", "k8s", "xds-server-config")
    assert VALUES["REDIS_PASSWORD"] not in json.dumps(configmap)
    assert "password_env: REDIS_PASSWORD" in configmap["data"]["gateway.yaml"]


def test_network_policy_admits_the_meshes_envoys(manifests):
    policy = manifests.one("NetworkPolicy", "k8s")
    deployment, _ = deployment_container(manifests)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    (grpc_rule,) = [r for r in policy["spec"]["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    selectors = [peer["podSelector"]["matchLabels"] for peer in grpc_rule["from"]]
    for envoyfilter in manifests.of("EnvoyFilter", "istio"):
        assert envoyfilter["spec"]["workloadSelector"]["labels"] in selectors
    gateway = manifests.one("Gateway", "envoy-gateway")
    assert {"gateway.envoyproxy.io/owning-gateway-name": gateway["metadata"]["name"],
            "gateway.envoyproxy.io/owning-gateway-namespace": gateway["metadata"]["namespace"]} in selectors


# ---------------------------------------------------------------- Istio

def test_istio_filter_is_delivered_with_allow_on_headers_stop_iteration(manifests):
    envoyfilters = manifests.of("EnvoyFilter", "istio")
    assert len(envoyfilters) == 2
    for envoyfilter in envoyfilters:
        name = envoyfilter["metadata"]["name"]
        (extension,) = envoyfilter_patches(envoyfilter, "EXTENSION_CONFIG")
        assert extension["patch"]["operation"] == "ADD"
        value = extension["patch"]["value"]
        jsonschema.validate(value, fragment("WasmExtensionConfig"))
        config = value["typed_config"]["config"]
        assert config["allow_on_headers_stop_iteration"] is True, name
        assert config["failure_policy"] in ("FAIL_RELOAD", "FAIL_CLOSED"), name
        remote = config["vm_config"]["code"]["remote"]
        assert remote["http_uri"]["uri"] == f"oci://{VALUES['FILTER_IMAGE']}"
        assert remote["sha256"] == VALUES["FILTER_SHA256"]
        (http_filter,) = envoyfilter_patches(envoyfilter, "HTTP_FILTER")
        assert http_filter["patch"]["operation"] == "INSERT_BEFORE"
        assert http_filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == \
            "envoy.filters.http.router"
        jsonschema.validate(http_filter["patch"]["value"], fragment("HttpFilterFromEcds"))
        discovery = http_filter["patch"]["value"]["config_discovery"]
        # The HTTP filter asks ECDS for the resource the EXTENSION_CONFIG patch adds; istio-agent
        # may hand Envoy its deny-all RBAC filter instead when the module cannot be fetched.
        assert http_filter["patch"]["value"]["name"] == value["name"]
        assert set(discovery["type_urls"]) == {WASM_TYPE, RBAC_TYPE}
        assert discovery["config_source"]["initial_fetch_timeout"] in ("0s", "0")
        for patch in envoyfilter_patches(envoyfilter, "VIRTUAL_HOST"):
            jsonschema.validate(patch["patch"]["value"], fragment("VirtualHostMerge"))
            assert patch["match"]["context"] == http_filter["match"]["context"]
        assert {p["applyTo"] for p in envoyfilter["spec"]["configPatches"]} == \
            {"EXTENSION_CONFIG", "HTTP_FILTER", "VIRTUAL_HOST"}


def test_istio_gateway_filter_and_buffer_limit_apply_to_the_bedrock_server(manifests):
    gateway = manifests.one("Gateway", "istio")
    (server,) = gateway["spec"]["servers"]
    envoyfilter = manifests.one("EnvoyFilter", "istio", "bedrock-gateway-filter")
    assert envoyfilter["spec"]["workloadSelector"]["labels"] == gateway["spec"]["selector"]
    (http_filter,) = envoyfilter_patches(envoyfilter, "HTTP_FILTER")
    assert http_filter["match"]["context"] == "GATEWAY"
    # Only the filter chain of this server: its SNI names are the server's hosts.
    assert http_filter["match"]["listener"]["filterChain"]["sni"] == VALUES["PUBLIC_HOST"] in server["hosts"]
    (buffer,) = envoyfilter_patches(envoyfilter, "VIRTUAL_HOST")
    route_config = buffer["match"]["routeConfiguration"]
    # Istio names an HTTPS server's routes https.<port>.<port name>.<gateway>.<namespace>.
    assert route_config == {"gateway": f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}",
                            "portNumber": server["port"]["number"], "portName": server["port"]["name"]}
    assert server["port"]["protocol"] == "HTTPS" and server["tls"]["mode"] == "SIMPLE"


def test_istio_routes_and_egress_cover_every_bedrock_host(manifests):
    hosts = set().union(*(bedrock_hosts(d) for where, d in filter_configs(manifests) if "EnvoyFilter" in where))
    (entry,) = manifests.of("ServiceEntry", "istio")
    assert hosts <= set(entry["spec"]["hosts"]), hosts - set(entry["spec"]["hosts"])
    ports = {p["number"]: p for p in entry["spec"]["ports"]}
    gateway = manifests.one("Gateway", "istio")
    gateway_ref = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}"
    server_hosts = set(gateway["spec"]["servers"][0]["hosts"])
    rules = {d["spec"]["host"]: d for d in manifests.of("DestinationRule", "istio")}
    services = {vs["spec"]["hosts"][0]: vs for vs in manifests.of("VirtualService", "istio")}
    sidecar = manifests.one("EnvoyFilter", "istio", "bedrock-client-filter")
    enabled = {p["match"]["routeConfiguration"]["vhost"]["domainName"]
               for p in envoyfilter_patches(sidecar, "VIRTUAL_HOST")}
    for host in entry["spec"]["hosts"]:
        assert host in server_hosts, f"{host}: not a host of the Gateway's server"
        (route,) = services[host]["spec"]["http"]
        assert set(services[host]["spec"]["gateways"]) == {gateway_ref, "mesh"}
        (destination,) = route["route"]
        port = destination["destination"]["port"]["number"]
        assert destination["destination"]["host"] == host and ports[port]["protocol"] == "HTTP"
        assert ports[port]["targetPort"] == 443
        (settings,) = [s for s in rules[host]["spec"]["trafficPolicy"]["portLevelSettings"]
                       if s["port"]["number"] == port]
        assert settings["tls"] == {"mode": "SIMPLE", "sni": host, "subjectAltNames": [host]}
        assert route["retries"] == {"attempts": 0}
        assert host in enabled, f"{host}: the sidecar filter is not enabled on its virtual host"
    (public,) = [vs for vs in manifests.of("VirtualService", "istio") if VALUES["PUBLIC_HOST"] in vs["spec"]["hosts"]]
    assert "directResponse" in public["spec"]["http"][0]


def test_istio_wasmplugin_reference_differs_only_by_what_it_cannot_say(manifests):
    plugins = manifests.of("WasmPlugin", "istio")
    assert len(plugins) == 2
    assert all(path.startswith("istio/reference/") for path, d in manifests.objects if d["kind"] == "WasmPlugin")
    # Each WasmPlugin beside the EnvoyFilter that selects the same workloads.
    envoyfilters = {json.dumps(e["spec"]["workloadSelector"]["labels"]): e
                    for e in manifests.of("EnvoyFilter", "istio")}
    for plugin in plugins:
        assert plugin["spec"]["url"] == f"oci://{VALUES['FILTER_IMAGE']}"
        assert plugin["spec"]["sha256"] == VALUES["FILTER_SHA256"]
        envoyfilter = envoyfilters[json.dumps(plugin["spec"]["selector"]["matchLabels"])]
        (extension,) = envoyfilter_patches(envoyfilter, "EXTENSION_CONFIG")
        configuration = extension["patch"]["value"]["typed_config"]["config"]["configuration"]["value"]
        assert plugin["spec"]["pluginConfig"] == json.loads(configuration)


# ---------------------------------------------------------------- Envoy Gateway

def test_envoy_gateway_patch_finds_the_filter_it_generates(manifests):
    gateway = manifests.one("Gateway", "envoy-gateway")
    (listener,) = gateway["spec"]["listeners"]
    policy = manifests.one("EnvoyExtensionPolicy", "envoy-gateway")
    target = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway["metadata"]["name"]}
    assert policy["spec"]["targetRefs"] == [target]
    assert policy["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    # internal/gatewayapi/envoyextensionpolicy.go (irConfigNameForWasm) and
    # internal/xds/translator/wasm.go (wasmFilterName): the HTTP filter's name.
    meta = policy["metadata"]
    names = {f"envoy.filters.http.wasm/envoyextensionpolicy/{meta['namespace']}/{meta['name']}/wasm/{index}"
             for index, _ in enumerate(policy["spec"]["wasm"])}
    (wasm,) = policy["spec"]["wasm"]
    assert wasm["code"]["image"] == {"url": VALUES["FILTER_IMAGE"], "sha256": VALUES["FILTER_SHA256"]}
    assert wasm["failOpen"] is False
    patch_policy = manifests.one("EnvoyPatchPolicy", "envoy-gateway")
    assert patch_policy["spec"]["targetRef"] == target
    assert patch_policy["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    listener_name = f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}/{listener['name']}"
    patched = {}
    for patch in patch_policy["spec"]["jsonPatches"]:
        if not patch["type"].endswith("envoy.config.listener.v3.Listener"):
            continue
        assert patch["name"] == listener_name
        operation = patch["operation"]
        (name,) = re.fullmatch(r"\.\.http_filters\[\?\(@\.name=='([^']+)'\)\]", operation["jsonPath"]).groups()
        assert name in names, f"{name} is not the name Envoy Gateway gives the filter ({names})"
        assert operation["op"] == "add"
        (field,) = re.fullmatch(r"/typed_config/config/([a-z_]+)", operation["path"]).groups()
        patched[field] = operation["value"]
    assert patched["allow_on_headers_stop_iteration"] is True
    # What the patched filter would look like passes the schema of the Envoy fields.
    config = {"vm_config": {"runtime": "envoy.wasm.runtime.v8",
                            "code": {"remote": {"http_uri": {"uri": "https://eg/x.wasm", "cluster": "wasm_cluster",
                                                             "timeout": "10s"}, "sha256": "0" * 64}}},
              "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "{}"},
              **patched}
    jsonschema.validate({"name": "x", "typed_config": {"@type": WASM_TYPE, "config": config}},
                        fragment("WasmExtensionConfig"))


def test_envoy_gateway_routes_cover_every_bedrock_host(manifests):
    (where, document), = [c for c in filter_configs(manifests) if c[0].startswith("EnvoyExtensionPolicy")]
    backends = {b["metadata"]["name"]: b for b in manifests.of("Backend", "envoy-gateway")}
    routes = {}
    for route in manifests.of("HTTPRoute", "envoy-gateway"):
        for host in route["spec"]["hostnames"]:
            routes[host] = route
    gateway = manifests.one("Gateway", "envoy-gateway")
    (listener,) = gateway["spec"]["listeners"]
    assert "hostname" not in listener, "a listener hostname would keep the Bedrock hosts' routes off it"
    for host in bedrock_hosts(document):
        route = routes[host]
        assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"], "sectionName": listener["name"]}]
        (rule,) = route["spec"]["rules"]
        (ref,) = rule["backendRefs"]
        assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "Backend")
        backend = backends[ref["name"]]["spec"]
        assert backend["endpoints"] == [{"fqdn": {"hostname": host, "port": 443}}]
        assert backend["tls"] == {"wellKnownCACertificates": "System", "sni": host}
        assert rule["timeouts"] == {"request": "0s"}
    public = routes[VALUES["PUBLIC_HOST"]]
    assert all("backendRefs" not in rule for rule in public["spec"]["rules"])


def test_header_removal_matches_what_the_filter_sets(manifests):
    names = (ROOT / "common" / "src" / "names.rs").read_text()
    cluster_header = re.search(r'CLUSTER_HEADER: &str = "([^"]+)"', names).group(1)
    identity = re.findall(r'"(x-bedrock-gateway-[a-z]+)"', re.search(r"IDENTITY_HEADERS[^=]*= \[(.*?)\];", names,
                                                                       re.S).group(1))
    required = {cluster_header, *identity}
    assert len(required) == 6
    removals = []
    for service in manifests.of("VirtualService", "istio"):
        for route in service["spec"]["http"]:
            if "route" in route:
                removals.append(set(route["headers"]["request"]["remove"]))
    for route in manifests.of("HTTPRoute", "envoy-gateway"):
        for rule in route["spec"]["rules"]:
            if rule.get("backendRefs"):
                (modifier,) = [f for f in rule["filters"] if f["type"] == "RequestHeaderModifier"]
                removals.append(set(modifier["requestHeaderModifier"]["remove"]))
    assert len(removals) == 8
    for removed in removals:
        assert required <= removed, required - removed


def test_buffer_limits_exceed_the_filters_body_limit(manifests):
    for where, document in filter_configs(manifests):
        limit = json.loads(document).get("max_request_body_bytes", 20971520) + BUFFER_HEADROOM_BYTES
        if where.startswith("EnvoyExtensionPolicy"):
            traffic = manifests.one("ClientTrafficPolicy", "envoy-gateway")["spec"]
            assert quantity_bytes(traffic["connection"]["bufferLimit"]) == limit
            assert traffic["path"] == {"escapedSlashesAction": "KeepUnchanged", "disableMergeSlashes": True}
        elif where.startswith("EnvoyFilter"):
            envoyfilter = manifests.one("EnvoyFilter", "istio", where.split()[1])
            patches = envoyfilter_patches(envoyfilter, "VIRTUAL_HOST")
            assert patches and all(p["patch"]["value"]["request_body_buffer_limit"] == limit for p in patches)


def test_audit_log_formats_are_xds_servers(manifests, tmp_path):
    """The mesh's access logs print the filter's record as xds-server's own listener does: the
    format and the condition must be found verbatim in the bootstrap xds-server renders."""
    path, env = gateway_config(manifests, tmp_path)
    out = tmp_path / "bootstrap.pb"
    rendered = xds_server("render", "--config", str(path), "--control-address", "127.0.0.1:18000",
                          "--out", str(out), env=env)
    assert rendered.returncode == 0, rendered.stderr
    bootstrap = out.read_bytes()
    (provider,) = manifests.files["istio/istiod-values.yaml"][0]["meshConfig"]["extensionProviders"]
    proxy = manifests.one("EnvoyProxy", "envoy-gateway")
    (setting,) = proxy["spec"]["telemetry"]["accessLog"]["settings"]
    formats = [provider["envoyFileAccessLog"]["logFormat"]["text"], setting["format"]["text"]]
    conditions = [t["spec"]["accessLogging"][0]["filter"]["expression"] for t in manifests.of("Telemetry", "istio")]
    conditions += setting["matches"]
    for text in formats + conditions:
        assert text.encode() in bootstrap, f"not what xds-server renders: {text!r}"
    names = {t["spec"]["accessLogging"][0]["providers"][0]["name"] for t in manifests.of("Telemetry", "istio")}
    assert names == {provider["name"]}
    assert setting["type"] == "Route"
    gateway_class = manifests.one("GatewayClass", "envoy-gateway")
    reference = gateway_class["spec"]["parametersRef"]
    assert (reference["kind"], reference["name"], reference["namespace"]) == \
        ("EnvoyProxy", proxy["metadata"]["name"], proxy["metadata"]["namespace"])


# ---------------------------------------------------------------- the renderer

def test_renderer_help_and_list():
    shown = subprocess.run([str(RENDER), "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and "--set NAME=VALUE" in shown.stdout
    listed = subprocess.run([sys.executable, str(RENDER), "--list"], capture_output=True, text=True, timeout=30)
    assert set(re.findall(r"^([A-Z0-9_]+):", listed.stdout, re.M)) == set(VALUES)


def test_renderer_leaves_no_placeholder(manifests):
    for path in manifests.out.rglob("*.yaml"):
        assert "${" not in path.read_text(), path


def test_renderer_rejects_a_missing_placeholder(tmp_path):
    values = {k: v for k, v in VALUES.items() if k != "JWT_JWKS_URL"}
    result = render(tmp_path / "out", values)
    assert result.returncode == 2
    missing = r"deploy/k8s/20-configmap\.yaml:\d+: \$\{JWT_JWKS_URL\} has no value"
    assert re.search(missing, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, expected", [
    ("sha256:" + VALUES["FILTER_SHA256"], "without the `sha256:` prefix"),
    (VALUES["FILTER_SHA256"].upper(), "64 lowercase hex digits"),
    (VALUES["FILTER_SHA256"][:-1], "64 lowercase hex digits"),
])
def test_renderer_rejects_a_malformed_digest(tmp_path, value, expected):
    result = render(tmp_path / "out", {**VALUES, "FILTER_SHA256": value})
    assert result.returncode == 2
    assert "FILTER_SHA256=" in result.stderr and expected in result.stderr, result.stderr
    assert "deploy/istio/filter-envoyfilter.yaml:" in result.stderr or "deploy/envoy-gateway/" in result.stderr


@pytest.mark.parametrize("name, value, expected", [
    ("FILTER_IMAGE", "oci://" + VALUES["FILTER_IMAGE"], "without a scheme"),
    ("XDS_SERVER_IMAGE", "registry.example.com/bedrock-gateway/xds-server", "tag or an @sha256: digest"),
    ("REDIS_URL", "rediss://default:hunter2@master.example.com:6379/0", "without a password"),
    ("JWT_ISSUER", "http://login.example.com/", "https:// URL"),
    ("PUBLIC_HOST", "bedrock-runtime.us-east-1.amazonaws.com", "not an AWS endpoint"),
])
def test_renderer_rejects_values_of_the_wrong_form(tmp_path, name, value, expected):
    result = render(tmp_path / "out", {**VALUES, name: value})
    assert result.returncode == 2 and f"{name}=" in result.stderr and expected in result.stderr, result.stderr


def test_renderer_rejects_a_value_nothing_uses(tmp_path):
    result = render(tmp_path / "out", {**VALUES, "JWT_ISUER": VALUES["JWT_ISSUER"]})
    assert result.returncode == 2 and "--set JWT_ISUER: no file" in result.stderr, result.stderr
    # Rendering one tree: values only the others use are refused too.
    only = render(tmp_path / "k8s", VALUES, ["--tree", "k8s"])
    assert only.returncode == 2 and "--set PUBLIC_HOST: no file of k8s uses" in only.stderr


def test_renderer_takes_values_from_the_environment(tmp_path):
    env = {**os.environ, **VALUES}
    result = subprocess.run([sys.executable, str(RENDER), "--from-env", "--tree", "k8s", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert VALUES["XDS_SERVER_IMAGE"] in (tmp_path / "o" / "k8s" / "40-deployment.yaml").read_text()


def test_renderer_example_values_fill_only_what_is_not_given(tmp_path):
    result = subprocess.run([sys.executable, str(RENDER), "--example-values", "--set",
                             f"FILTER_SHA256={VALUES['FILTER_SHA256']}", "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "o" / "envoy-gateway" / "40-filter.yaml").read_text()
    assert 'sha256: "%s"' % VALUES["FILTER_SHA256"] in text and "url: registry.example.com/" in text


@pytest.mark.parametrize("digest", ["0" * 64, "1e" + "7" * 62, "123" + "0" * 61])
def test_a_digest_that_yaml_could_read_as_a_number_stays_a_string(tmp_path, digest):
    """Digests are hex: some are all digits, or digits around one 'e' (a float to YAML)."""
    result = render(tmp_path / "out", {**VALUES, "FILTER_SHA256": digest})
    assert result.returncode == 0, result.stderr
    pins = []
    for path in sorted((tmp_path / "out").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for node in _walk(document):
                if isinstance(node, dict) and "sha256" in node:
                    pins.append((path.name, node["sha256"]))
    assert len(pins) >= 3, pins
    assert all(value == digest for _, value in pins), pins


def _walk(node):
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
