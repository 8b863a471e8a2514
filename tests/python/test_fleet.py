"""docker-compose.fleet.yml as shipped: two Envoy replicas and two xds-server replicas sharing
one Redis, each container on its own address on private networks, driven with boto3, and the
faults operators meet: an xds-server killed, Redis cut off from the network, an Envoy restarted
with streams in flight, a configuration change while traffic flows.

Images and binaries as in test_compose.py (tests/docker/seed-images.sh, ARTIFACTS=prebuilt).
Each fault's cost (requests failed, decisions failed open or closed, time to recover) is
printed in the test output; docs/operations.md has the table. Skipped only when no Docker
daemon answers.
"""

import concurrent.futures
import json
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from docker_stack import replace_once, run, started, wait_for
from test_boto3 import MODEL, gateway_client, user

CONFIG = "/etc/bedrock-gateway/compose.yaml"
SERVICES = ("redis", "emulator", "xds-a", "xds-b", "envoy-a", "envoy-b")
GATEWAYS = {"envoy-a": "FLEET_PORT_A", "envoy-b": "FLEET_PORT_B"}
ADMINS = {"envoy-a": "FLEET_ADMIN_PORT_A", "envoy-b": "FLEET_ADMIN_PORT_B"}
STATUSES = {"xds-a": "FLEET_STATUS_PORT_A", "xds-b": "FLEET_STATUS_PORT_B"}
# Limits of the test's copy of config/compose.yaml, per hour.
REQUEST_LIMIT = 20          # tenant fleet-requests
TOKEN_BUDGET = 2000         # tenant fleet-tokens, input + output
STREAM_BUDGET = 10000       # tenant fleet-streams, input + output
TIMEOUT_MS = 200            # quotas.timeout_ms (the default)
STREAM_MAX_AGE_SECONDS = 2  # quotas.stream_max_age_seconds: decision streams move quickly
DAILY_TOKENS = 2000000      # every other tenant's daily token budget (as shipped)
# What each fault cost, printed at the end of the module.
COSTS = {}


def _configure(config_dir):
    config = config_dir / "compose.yaml"
    # Every other tenant: no request limit the load below could reach.
    replace_once(config, "rate_limit: {unit: minute, requests_per_unit: 120}",
                 "rate_limit: {unit: minute, requests_per_unit: 1000000}")
    replace_once(config, "  failure_mode: open\n",
                 f"  failure_mode: open\n  stream_max_age_seconds: {STREAM_MAX_AGE_SECONDS}\n")
    replace_once(config, "  descriptors:\n    - key: tenant\n", f"""  descriptors:
    - key: tenant
      value: fleet-requests
      rate_limit: {{unit: hour, requests_per_unit: {REQUEST_LIMIT}}}
    - key: tenant
      value: fleet-tokens
      rate_limit: {{unit: hour, requests_per_unit: 1000000}}
      descriptors:
        - {{key: tokens, value: total, rate_limit: {{unit: hour, requests_per_unit: {TOKEN_BUDGET}}}}}
    - key: tenant
      value: fleet-streams
      rate_limit: {{unit: hour, requests_per_unit: 1000000}}
      descriptors:
        - {{key: tokens, value: total, rate_limit: {{unit: hour, requests_per_unit: {STREAM_BUDGET}}}}}
    - key: tenant
""")


@pytest.fixture(scope="module")
def fleet():
    ports = (*GATEWAYS.values(), *ADMINS.values(), *STATUSES.values())
    with started(_configure, file="docker-compose.fleet.yml", services=SERVICES, ports=ports,
                 prefix="bgwfleet") as stack:
        yield stack
        if COSTS:
            print("\nfleet fault costs:\n" + "\n".join(f"  {fault}: {cost}" for fault, cost in COSTS.items()))


# --- helpers -----------------------------------------------------------------------------

def _client(fleet, replica, token):
    return gateway_client("bedrock-runtime", fleet.url(GATEWAYS[replica]), token=token)


def _clients(fleet, tenant, minted_by="xds-a"):
    token = fleet.mint_token(CONFIG, tenant, service=minted_by)
    return [_client(fleet, replica, token) for replica in GATEWAYS]


def _converse(client, text="hello fleet", max_tokens=16, **knobs):
    return client.converse(modelId=MODEL, messages=user(text), inferenceConfig={"maxTokens": max_tokens},
                           additionalModelRequestFields={"emulator": knobs} if knobs else {})


def _status(call):
    """200, the HTTP status of an error answer, or the name of what broke the call."""
    try:
        call()
        return 200
    except ClientError as error:
        return error.response["ResponseMetadata"]["HTTPStatusCode"]
    except Exception as error:  # noqa: BLE001 - a broken connection is an outcome here
        return type(error).__name__


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def envoy_stat(fleet, replica, name):
    text = _get(f"{fleet.url(ADMINS[replica])}/stats?filter=^{name}$")
    return int(text.split(":")[1]) if text.strip() else 0


def envoy_stats(fleet, name):
    return sum(envoy_stat(fleet, replica, name) for replica in ADMINS)


def xds_metric(fleet, xds, name):
    for line in _get(f"{fleet.url(STATUSES[xds])}/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on {xds}'s /metrics")


def _deciding(fleet, xds):
    """Whether `xds` has decided on a decision stream (False while it is not answering yet:
    Docker's published port resets connections until the process listens)."""
    try:
        return xds_metric(fleet, xds, "xds_server_quota_stream_requests_total") > 0
    except OSError:
        return False


def usage(fleet, tenant, xds="xds-b"):
    rows = [row for row in json.loads(_get(f"{fleet.url(STATUSES[xds])}/usage"))["rows"]
            if row["tenant"] == tenant]
    return {key: sum(row[key] for row in rows)
            for key in ("requests", "input_tokens", "output_tokens", "refusals")}


def _within_one_window(seconds, period=3600):
    """Waits for the next window if fewer than `seconds` are left in this one (hour windows;
    `period` 86400 for days, UTC)."""
    left = period - time.time() % period
    if left < seconds:
        time.sleep(left + 1)


class Load:
    """Converse calls in a loop through the Envoy replicas (two callers each) until the block
    ends; `records` holds (start, replica, status, seconds) of each."""

    def __init__(self, fleet, tenant, callers=2, replicas=tuple(GATEWAYS)):
        token = fleet.mint_token(CONFIG, tenant, service="xds-b")
        self.clients = {replica: _client(fleet, replica, token) for replica in replicas}
        self.callers = callers
        self.records = []
        self.stop = threading.Event()
        self.threads = []

    def _call(self, replica):
        client = self.clients[replica]
        while not self.stop.is_set():
            start = time.monotonic()
            status = _status(lambda: _converse(client))
            self.records.append((start, replica, status, time.monotonic() - start))

    def __enter__(self):
        self.threads = [threading.Thread(target=self._call, args=(replica,), daemon=True)
                        for replica in self.clients for _ in range(self.callers)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def failed(self):
        return [record for record in self.records if record[2] != 200]

    def slowest(self):
        return max(record[3] for record in self.records)


# --- tests -------------------------------------------------------------------------------

def test_a_token_minted_by_one_xds_server_works_on_every_replica(fleet):
    token = fleet.mint_token(CONFIG, "fleet-hello", service="xds-b")
    for replica in GATEWAYS:
        out = _converse(_client(fleet, replica, token))
        assert out["output"]["message"]["content"][0]["text"] == "Echo: hello fleet"


def test_a_request_limit_holds_exactly_across_replicas(fleet):
    _within_one_window(120)
    clients = _clients(fleet, "fleet-requests")
    # Half the limit through one replica, then twice the limit races through both.
    first = [_status(lambda: _converse(clients[0])) for _ in range(REQUEST_LIMIT // 2)]
    assert first == [200] * (REQUEST_LIMIT // 2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: (i % 2, _status(lambda: _converse(clients[i % 2]))),
                                 range(2 * REQUEST_LIMIT)))
    admitted = [replica for replica, status in statuses if status == 200]
    refused = [replica for replica, status in statuses if status == 429]
    assert len(admitted) == REQUEST_LIMIT - REQUEST_LIMIT // 2, statuses
    assert len(refused) == 2 * REQUEST_LIMIT - len(admitted), statuses
    wait_for(lambda: usage(fleet, "fleet-requests")["requests"] == REQUEST_LIMIT,
             what="the ledger counting the admitted requests")
    assert usage(fleet, "fleet-requests", xds="xds-a") == usage(fleet, "fleet-requests", xds="xds-b")


def test_a_token_budget_holds_exactly_across_replicas(fleet):
    """Waves of concurrent requests through both replicas, each reserving its estimated input
    plus its maxTokens, until the budget refuses a whole wave once every report is in: what the
    upstream reported never goes over the budget, and what is left cannot fit one more request."""
    _within_one_window(120)
    tenant = "fleet-tokens"
    clients = _clients(fleet, tenant)
    max_tokens, output = 150, 100
    text = "budgeted"  # 8 characters: an estimate of 2 input tokens; the emulator counts 1
    reservation = 2 + max_tokens
    reported = admitted = 0

    def call(i):
        try:
            out = _converse(clients[i % 2], text=text, max_tokens=max_tokens, output_tokens=output)
            return out["usage"]["totalTokens"]
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            return None

    for _ in range(30):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            totals = [t for t in pool.map(call, range(8)) if t is not None]
        admitted += len(totals)
        reported += sum(totals)
        # Every report in (each settles its reservation to what the upstream reported).
        wait_for(lambda: usage(fleet, tenant)["requests"] == admitted, what="the reports")
        if not totals:
            break
    else:
        raise AssertionError("the budget never refused a wave")
    ledger = usage(fleet, tenant)
    assert ledger["input_tokens"] + ledger["output_tokens"] == reported
    assert reported <= TOKEN_BUDGET
    assert TOKEN_BUDGET - reported < reservation, (reported, admitted)
    COSTS["token budget across replicas"] = (f"{admitted} requests admitted, {reported} of "
                                             f"{TOKEN_BUDGET} tokens used, {ledger['refusals']} refused")


def test_an_xds_server_killed(fleet):
    """SIGKILL to one xds-server under load: the Envoys go on with their cached keys and
    credentials, decisions move to the other replica (fail open meanwhile), and once the
    killed one is back it gets decision streams and calls again."""
    wait_for(lambda: all(_deciding(fleet, xds) for xds in STATUSES), timeout=30,
             what="decision streams on both xds-servers", every=1)
    failed_open = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_open")
    with Load(fleet, "fleet-kill") as load:
        time.sleep(2)
        fleet("kill", "xds-a")
        killed = time.monotonic()
        time.sleep(5)
        # A caller never seen before: its token is checked with the key the workers hold.
        newcomers = _clients(fleet, "fleet-kill-new", minted_by="xds-b")
        assert [_status(lambda c=c: _converse(c)) for c in newcomers] == [200, 200]
        back = time.monotonic()
        fleet("start", "xds-a")
        wait_for(lambda: _deciding(fleet, "xds-a"),
                 timeout=STREAM_MAX_AGE_SECONDS * 5 + 10, what="decisions on the returning xds-server")
        share = time.monotonic() - back
        fleet.wait_healthy(["xds-a"])
    failed_open = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_open") - failed_open
    during = [r for r in load.records if killed <= r[0] <= killed + 5]
    COSTS["xds-server killed (failure_mode open)"] = (
        f"{len(load.failed())} of {len(load.records)} requests failed, {failed_open} decisions "
        f"failed open, slowest request {load.slowest() * 1000:.0f} ms, {len(during)} served in the "
        f"5 s after the kill; the returning one decided again {share:.1f} s after it was started")
    assert load.failed() == []
    assert len(during) > 0
    assert load.slowest() < 2.0
    # The other calls (usage reports) reach it too.
    wait_for(lambda: xds_metric(fleet, "xds-a", "xds_server_quota_usage_records_total") > 0,
             timeout=20, what="usage reports on the returning xds-server")


def _edit_config(fleet, old, new):
    replace_once(fleet.config_dir / "compose.yaml", old, new)


def _filter_config_on(fleet, replica):
    """Envoy `replica`'s gateway filter configuration as its admin shows it (ECDS; the
    filter's own configuration is a JSON string in it)."""
    return _get(f"{fleet.url(ADMINS[replica])}/config_dump?resource=ecds_filters")


def _failure_mode(fleet, mode):
    """Sets quotas.failure_mode in the shared file; returns once both Envoys run with it."""
    current = "closed" if mode == "open" else "open"
    _edit_config(fleet, f"  failure_mode: {current}\n", f"  failure_mode: {mode}\n")
    wanted = f'failure_mode\\":\\"{mode}\\"'
    wait_for(lambda: all(wanted in _filter_config_on(fleet, replica) for replica in ADMINS),
             timeout=30, what=f"failure_mode {mode} on both Envoys")


def test_redis_cut_off_from_the_network(fleet):
    """Redis's container leaves the store network (running, but unreachable: no connection is
    refused, packets go nowhere). Decisions fail open, then closed once the shared file says
    so, each within quotas.timeout_ms; when Redis is back, counting resumes and the usage
    reports the Envoys kept meanwhile reach the ledger."""
    _within_one_window(120, period=86400)
    network, redis = f"{fleet.project}_store", fleet.container("redis")
    tenant = "fleet-redis"
    failed_open = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_open")
    failed_closed = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_closed")
    try:
        with Load(fleet, tenant) as opened:
            time.sleep(1)
            run(["docker", "network", "disconnect", network, redis])
            cut = time.monotonic()
            time.sleep(6)
        while_cut = [r for r in opened.records if r[0] >= cut + 2.5]
        failed_open = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_open") - failed_open
        assert opened.failed() == [], opened.failed()[:5]
        assert while_cut and failed_open >= len(while_cut)
        # Nothing waits longer than the decision timeout (plus the filter's tick and the call).
        slowest_open = max(r[3] for r in while_cut)
        assert slowest_open < TIMEOUT_MS / 1000 + 0.5

        _failure_mode(fleet, "closed")
        with Load(fleet, "fleet-redis-closed") as closed:
            time.sleep(3)
        statuses = {r[2] for r in closed.records}
        assert statuses == {503}, statuses
        slowest_closed = closed.slowest()
        assert slowest_closed < TIMEOUT_MS / 1000 + 0.5
        failed_closed = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_closed") - failed_closed
        assert failed_closed >= len(closed.records)
    finally:
        run(["docker", "network", "connect", "--alias", "redis", network, redis], check=False)
    back = time.monotonic()
    probe = _clients(fleet, "fleet-redis-back")[0]
    wait_for(lambda: _status(lambda: _converse(probe)) == 200, timeout=30, every=0.2,
             what="decisions once Redis is back")
    recovered = time.monotonic() - back
    _failure_mode(fleet, "open")

    # Counting resumed: exactly what is admitted now is counted ...
    counted = usage(fleet, "fleet-redis-back")["requests"]
    for _ in range(5):
        _converse(probe)
    wait_for(lambda: usage(fleet, "fleet-redis-back")["requests"] == counted + 5, what="counting")
    # ... and the reports of what was forwarded while Redis was away reached the ledger.
    # Across the configuration changes above: each replaced the filter's root contexts, and
    # the new ones took over the reports the old ones had not delivered.
    wait_for(lambda: usage(fleet, tenant)["requests"] == len(opened.records), timeout=60,
             what=f"the usage reports kept while Redis was away ({len(opened.records)} requests, "
                  f"ledger {usage(fleet, tenant)})")
    # The tokens of the requests let through are charged too: the tenant's daily budget
    # (config/compose.yaml: 2,000,000) is charged what the ledger has, and at most the
    # reservations of the decisions in flight when the network was cut more (Redis counted
    # them, their answers were lost, their callers failed open: nobody can know; one per
    # caller at most, each "hello fleet" + 16 output tokens = 19).
    ledger = usage(fleet, tenant)
    with pytest.raises(ClientError) as refused:
        _converse(_clients(fleet, tenant)[0], max_tokens=DAILY_TOKENS)
    headers = refused.value.response["ResponseMetadata"]["HTTPHeaders"]
    charged = DAILY_TOKENS - int(headers["x-ratelimit-remaining"])
    spent = ledger["input_tokens"] + ledger["output_tokens"]
    callers = 2 * len(GATEWAYS)
    assert spent <= charged <= spent + callers * 19, (charged, spent)
    COSTS["Redis cut off"] = (
        f"fail open: 0 of {len(opened.records)} requests failed, slowest {slowest_open * 1000:.0f} ms, "
        f"{failed_open} decisions failed open; fail closed: {len(closed.records)} of "
        f"{len(closed.records)} refused 503, slowest {slowest_closed * 1000:.0f} ms; "
        f"deciding again {recovered:.1f} s after Redis was reconnected, every report kept; "
        f"{charged} tokens charged for {spent} spent")


def test_an_envoy_restarted_with_streams_in_flight(fleet):
    """`restart envoy-a` while three ConverseStream responses flow through it: the other
    replica serves new requests throughout; the three streams are cut, and their token
    reservations stay charged (no usage report could settle them)."""
    _within_one_window(120)
    tenant = "fleet-streams"
    token = fleet.mint_token(CONFIG, tenant, service="xds-a")
    streaming = _client(fleet, "envoy-a", token)
    max_tokens = 200
    progress = [0, 0, 0]
    outcomes = [None, None, None]

    def stream(i):
        try:
            response = streaming.converse_stream(
                modelId=MODEL, messages=user("stream me"), inferenceConfig={"maxTokens": max_tokens},
                additionalModelRequestFields={"emulator": {"output_tokens": 40, "chunk_delay_ms": 250}})
            for event in response["stream"]:
                progress[i] += 1
                if "metadata" in event:
                    outcomes[i] = "complete"
                    return
            outcomes[i] = "ended without its metadata event"
        except Exception as error:  # noqa: BLE001 - the cut is the outcome
            outcomes[i] = type(error).__name__

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    wait_for(lambda: min(progress) >= 3, timeout=20, what="three streams flowing")
    with Load(fleet, "fleet-restart", replicas=("envoy-b",)) as survivor:
        time.sleep(1)
        fleet("restart", "envoy-a")
        restarted = time.monotonic()
        fleet.wait_healthy(["envoy-a"])
        ready = time.monotonic() - restarted
    for thread in threads:
        thread.join(timeout=30)
    assert survivor.failed() == [] and len(survivor.records) > 0
    assert all(outcome != "complete" for outcome in outcomes), outcomes
    assert _status(lambda: _converse(streaming)) == 200

    # What is left of the budget: a request that cannot fit is refused with the remainder.
    with pytest.raises(ClientError) as refused:
        _converse(streaming, max_tokens=STREAM_BUDGET)
    remaining = int(refused.value.response["ResponseMetadata"]["HTTPHeaders"]["x-ratelimit-remaining"])
    # The ledger has the request after the restart; the cut ones' reports died with that Envoy.
    wait_for(lambda: usage(fleet, tenant)["requests"] >= 1, what="the report of the request after the restart")
    time.sleep(1)
    completed = usage(fleet, tenant)
    settled = completed["input_tokens"] + completed["output_tokens"]
    assert completed["requests"] == 1, completed
    held = STREAM_BUDGET - settled - remaining
    assert 3 * max_tokens <= held <= 3 * (max_tokens + 10), (held, outcomes)
    COSTS["Envoy restarted with 3 streams in flight"] = (
        f"streams: {outcomes}; other replica: 0 of {len(survivor.records)} failed; ready again in "
        f"{ready:.1f} s; {held} tokens of the cut streams' reservations stay charged")


def test_a_config_change_reaches_every_replica_without_a_failed_request(fleet):
    probe_token = fleet.mint_token(CONFIG, "fleet-probe", service="xds-a")
    probes = [_client(fleet, replica, probe_token) for replica in GATEWAYS]
    assert [_status(lambda c=c: _converse(c)) for c in probes] == [200, 200]
    granted = "      - services: [bedrock-runtime, bedrock-agent-runtime]\n"
    with Load(fleet, "fleet-rolling") as load:
        time.sleep(1)
        _edit_config(fleet, granted, granted + "    tenants:\n      fleet-probe:\n        - {services: [bedrock-agent-runtime]}\n")
        edited = time.monotonic()
        wait_for(lambda: [_status(lambda c=c: _converse(c)) for c in probes] == [403, 403],
                 timeout=30, what="the change on both replicas")
        applied = time.monotonic() - edited
        time.sleep(1)
    versions = {json.loads(_get(f"{fleet.url(port)}/status"))["config_version"] for port in STATUSES.values()}
    assert len(versions) == 1
    assert load.failed() == [] and len(load.records) > 0
    COSTS["config change"] = (f"on both replicas within {applied:.1f} s; 0 of {len(load.records)} "
                              "requests failed meanwhile")


def test_a_rolling_restart_of_the_xds_servers_fails_no_request(fleet):
    """`restart` of one xds-server, then the other, under load with failure_mode closed: each
    stops with --drain-seconds 3 (health checks fail while it still serves, then its streams
    end after answering what they read), Envoy moves to the other one, and no request is
    refused or fails."""
    _failure_mode(fleet, "closed")
    failed_closed = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_closed")
    try:
        with Load(fleet, "fleet-rolling-restart") as load:
            time.sleep(1)
            timings = {}
            for xds in STATUSES:
                started_at = time.monotonic()
                fleet("restart", xds)
                fleet.wait_healthy([xds])
                # The new process decides again (its counters started at 0).
                wait_for(lambda: _deciding(fleet, xds),
                         timeout=STREAM_MAX_AGE_SECONDS * 5 + 10, what=f"decisions on {xds} again")
                timings[xds] = time.monotonic() - started_at
    finally:
        _failure_mode(fleet, "open")
    failed_closed = envoy_stats(fleet, "wasmcustom.bedrock_gateway.quota_failures_closed") - failed_closed
    COSTS["rolling restart of both xds-servers (failure_mode closed)"] = (
        f"{len(load.failed())} of {len(load.records)} requests failed, {failed_closed} decisions "
        f"failed closed, slowest request {load.slowest() * 1000:.0f} ms; each back and deciding in "
        + ", ".join(f"{xds} {seconds:.1f} s" for xds, seconds in timings.items()))
    assert load.failed() == [], load.failed()[:5]
    assert failed_closed == 0


def test_down_leaves_nothing(fleet):
    fleet("down", "-v", "--remove-orphans")
    assert fleet.leftovers() == {"containers": [], "volumes": [], "networks": []}
