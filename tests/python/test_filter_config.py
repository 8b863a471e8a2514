"""The filter's configuration as a public interface (docs/filter-config.md): its committed JSON
Schema describes every configuration xds-server renders from the shipped YAML files and the
documented example, and `xds-server validate-filter-config` accepts those and names the key of
a broken one."""

import json
import re
import subprocess

import jsonschema
import pytest

from conftest import ROOT, _target_dir

SCHEMA = json.loads((ROOT / "docs" / "filter-config.schema.json").read_text())
XDS_SERVER = _target_dir() / "debug" / "xds-server"


def _xds_server(*args, stdin=None):
    # config/compose*.yaml sign with credentials from these variables (checked at load).
    env = {"EMULATOR_ACCESS_KEY_ID": "AKIAEXAMPLE", "EMULATOR_SECRET_ACCESS_KEY": "example",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(XDS_SERVER), *args], input=stdin, capture_output=True, text=True,
                          timeout=60, env=env)


def _documented_example() -> str:
    text = (ROOT / "docs" / "filter-config.md").read_text()
    return re.search(r"```json\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_rendered_configurations_match_the_schema(config):
    rendered = _xds_server("filter-config", "--config", str(ROOT / "config" / config))
    assert rendered.returncode == 0, rendered.stderr
    document = json.loads(rendered.stdout)
    jsonschema.validate(document, SCHEMA)
    checked = _xds_server("validate-filter-config", "-", stdin=rendered.stdout)
    assert (checked.returncode, checked.stdout.strip()) == (0, "ok: -"), checked.stderr


def test_the_documented_example_is_valid():
    example = _documented_example()
    jsonschema.validate(json.loads(example), SCHEMA)
    checked = _xds_server("validate-filter-config", "-", stdin=example)
    assert checked.returncode == 0, checked.stderr


def test_a_broken_configuration_is_refused_with_its_key(tmp_path):
    document = json.loads(_documented_example())
    document["quota"]["failure_mode"] = "sometimes"
    broken = tmp_path / "filter.json"
    broken.write_text(json.dumps(document))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)
    checked = _xds_server("validate-filter-config", str(broken))
    assert checked.returncode == 1
    assert checked.stderr.startswith(f"{broken}: filter configuration: quota.failure_mode"), checked.stderr

    document = json.loads(_documented_example())
    document["services"][0]["colour"] = "blue"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)
    checked = _xds_server("validate-filter-config", "-", stdin=json.dumps(document))
    assert checked.returncode == 1 and "unknown field `colour`" in checked.stderr, checked.stderr
