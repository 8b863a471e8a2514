"""The shipped Grafana dashboard (deploy/grafana/bedrock-gateway-genai.json) asks only for
metrics the gateway really exports: every metric name in every query of every panel and
variable is scraped from a real xds-server's /metrics after traffic through the gateway (boto3:
Converse, ConverseStream, and a request refused by a quota), with the labels the queries
select on."""

import json
import re
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, start_stack_with
from test_boto3 import MODEL, user
from test_quota import client, fresh_window

DASHBOARD = ROOT / "deploy" / "grafana" / "bedrock-gateway-genai.json"
QUOTAS = """
quotas:
  failure_mode: closed
  descriptors:
    - key: tenant
      value: team-over
      rate_limit: {unit: hour, requests_per_unit: 0}
    - key: tenant
      descriptors:
        - key: tokens
          value: total
          rate_limit: {unit: month, requests_per_unit: 1000000}
"""
# What PromQL queries contain besides metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "irate", "topk", "bottomk", "by", "without",
    "histogram_quantile", "label_values", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "le", "clamp_min", "clamp_max", "abs", "sort", "sort_desc",
}


@pytest.fixture(scope="module")
def scraped():
    fresh_window()
    stack = start_stack_with(QUOTAS, "--auth", "dev")
    try:
        runtime = client(stack, "team-a")
        runtime.converse(modelId=MODEL, messages=user("hello"))
        list(runtime.converse_stream(modelId=MODEL, messages=user("a stream"))["stream"])
        with pytest.raises(ClientError):
            client(stack, "team-over").converse(modelId=MODEL, messages=user("refused"))
        deadline = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(f"{stack.info['xds_http']}/metrics") as response:
                text = response.read().decode()
            if "gen_ai_server_time_to_first_token_seconds_count{" in text and 'outcome="refused_quota"' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        yield text
    finally:
        stack.stop()


def _series(text: str) -> dict:
    """Sample name -> the set of label names seen on it."""
    found = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
        assert match, line
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', match.group(3) or ""))
        found.setdefault(match.group(1), set()).update(labels)
    return found


def _queries(dashboard: dict) -> list:
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [(v["name"], v["query"]["query"]) for v in dashboard["templating"]["list"]
                if v["type"] == "query"]
    return queries


def _selectors(expr: str) -> list:
    """(metric, label names it selects or groups on) for each metric an expression names."""
    stripped = re.sub(r'"[^"]*"', '""', expr)
    stripped = re.sub(r"\$__\w+|\$\w+", "", stripped)
    # Grouping clauses, ranges and label_values' label argument name labels, not metrics.
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"label_values\(([^,()]+),[^)]*\)", r"label_values(\1)", stripped)
    found = []
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?", stripped):
        name = match.group(1)
        if name in PROMQL_WORDS or re.fullmatch(r"\d+(\.\d+)?", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(3) or ""))
        found.append((name, labels))
    return found


def test_every_query_names_metrics_and_labels_the_gateway_exports(scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    series = _series(scraped)
    queries = _queries(dashboard)
    assert len(queries) >= 10
    for where, expr in queries:
        grouped = set()
        for clause in re.findall(r"by \(([^)]*)\)", expr):
            grouped |= {label.strip() for label in clause.split(",")}
        selectors = [(name, labels) for name, labels in _selectors(expr) if name not in grouped]
        assert selectors, f"{where}: no metric in {expr}"
        for name, labels in selectors:
            assert name in series, f"{where}: {name} is not exported (have {sorted(series)})"
            assert labels <= series[name], f"{where}: {name} has no label {labels - series[name]}"
            assert grouped - {"le"} <= series[name] | {"le"}, f"{where}: groups by {grouped} missing on {name}"


def test_the_dashboard_is_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    names = {v["name"] for v in dashboard["templating"]["list"]}
    for _, expr in _queries(dashboard):
        for variable in re.findall(r"\$(\w+)", expr):
            assert variable.startswith("__") or variable in names, f"${variable} is not defined"


def test_a_name_that_is_not_exported_fails_the_check(scraped):
    """The check itself: a misspelt metric or label is caught."""
    series = _series(scraped)
    [(name, labels)] = _selectors('sum by (tenant) (rate(gen_ai_client_token_usages_sum{tenant=~"$tenant"}[5m]))')
    assert name not in series
    [(name, labels)] = _selectors('rate(gen_ai_client_token_usage_sum{tenantt="x"}[5m])')
    assert name in series and not labels <= series[name]
