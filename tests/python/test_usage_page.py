"""The usage ledger for people, on xds-server's admin port: `/usage.csv` holds exactly the rows
`/usage` answers (callers' names escaped and formula-neutralised), and `/usage.html`, loaded in
a real headless Chromium (Debian's, driven by Selenium), shows each tenant's spend, tokens,
refusals and budgets, and the top models, as the ledger has them; a tenant named as markup
shows as text. A screenshot of the page is kept in target/usage-page.png."""

import csv
import io
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ROOT, start_stack_with
from test_quota import client

SONNET = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"

# team-b's budget holds one call of 2000 output tokens of Sonnet (0.03 USD), not two: its second
# call's reservation does not fit and is refused.
QUOTAS = """
quotas:
  failure_mode: closed
  prices:
    models:
      - {model: "anthropic.claude-3-5-sonnet*", input: 3, output: 15}
      - {model: "anthropic.claude-3-haiku*", input: 0.25, output: 1.25}
  descriptors:
    - key: tenant
      descriptors:
        - {key: tokens, value: cost, rate_limit: {unit: month, requests_per_unit: 500000000, name: monthly-budget}}
        - {key: tokens, value: total, rate_limit: {unit: month, requests_per_unit: 2000000}}
    - key: tenant
      value: team-b
      descriptors:
        - {key: tokens, value: cost, rate_limit: {unit: month, requests_per_unit: 50000, name: team-b-budget}}
    - {key: tokens, value: total, rate_limit: {unit: month, requests_per_unit: 100000000}}
"""

XSS = "<img src=x onerror=alert(1)>"
FORMULA = '=HYPERLINK("http://example.invalid","a,b")'
COLUMNS = ["day", "tenant", "model", "requests", "input_tokens", "output_tokens", "cache_read_tokens",
           "cache_write_tokens", "cost_usd", "refusals", "gateway_refusals"]


def chromium_driver(profile: str):
    """Headless Chromium with its profile in `profile` (left to itself, it makes one in /tmp
    that nothing removes)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("chromium and chromedriver are missing: scripts/test.sh installs them "
                    "(apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--hide-scrollbars", "--lang=en-US",
                 f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    # Any alert() the page's data could trigger is counted instead of shown (injected by the
    # browser itself, before the page's own script and outside its Content-Security-Policy).
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {
        "source": "window.__alerts = 0; window.alert = function () { window.__alerts += 1; };",
    })
    return browser


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="bgw-chromium-")
    try:
        running = chromium_driver(profile)
        yield running
        running.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def usage_stack():
    running = start_stack_with(QUOTAS, "--auth", "dev")
    yield running
    running.stop()


def get(url: str):
    with urllib.request.urlopen(url) as response:
        return response.status, response.headers, response.read()


def load(browser, url: str) -> str:
    """Opens the page and waits until its script has drawn it; returns its state."""
    browser.get(url)
    deadline = time.time() + 10
    while time.time() < deadline:
        state = browser.execute_script("return document.body.dataset.state")
        if state != "loading":
            return state
        time.sleep(0.05)
    pytest.fail(f"the page did not finish loading: {browser.page_source[:2000]}")


def csp_violations(browser) -> list:
    return [entry["message"] for entry in browser.get_log("browser")
            if "Content Security Policy" in entry["message"] or "Refused to" in entry["message"]]


def usd(nano: int) -> str:
    """The page's money format: every non-zero digit, at least two decimals."""
    whole, fraction = divmod(nano, 10**9)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"${whole:,}.{digits}"


def neutralised(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def test_page_without_quotas(stack, browser):
    status, headers, _ = get(f"{stack.info['xds_http']}/usage.html")
    assert status == 200
    assert load(browser, f"{stack.info['xds_http']}/usage.html") == "not-configured"
    message = browser.find_element("id", "message").text
    assert "quotas are not configured" in message.lower(), message
    assert csp_violations(browser) == []


def test_csv_and_page_show_the_ledger(usage_stack, browser, tmp_path):
    started = time.time()
    admin = usage_stack.info["xds_http"]
    page_url = f"{admin}/usage.html"

    # Before any call: an empty ledger.
    assert load(browser, page_url) == "ready"
    assert browser.find_element("css selector", "#tenants tbody").text == "No usage recorded this month."
    assert browser.find_element("id", "top-cost").text == "Nothing yet."

    team_a, team_b = client(usage_stack, "team-a"), client(usage_stack, "team-b")
    for text in ["one two three", "four five"]:
        team_a.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": text}]}],
                        additionalModelRequestFields={"emulator": {"output_tokens": 300}})
    team_a.converse(modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "cheap call"}]}],
                    additionalModelRequestFields={"emulator": {"output_tokens": 40}})
    big = {"inferenceConfig": {"maxTokens": 2000},
           "additionalModelRequestFields": {"emulator": {"output_tokens": 2000}}}
    team_b.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "spend it"}]}], **big)
    with pytest.raises(ClientError) as refused:
        team_b.converse(modelId=SONNET, messages=[{"role": "user", "content": [{"text": "too much"}]}], **big)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    for tenant in [XSS, FORMULA]:
        client(usage_stack, tenant).converse(
            modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "odd name"}]}],
            additionalModelRequestFields={"emulator": {"output_tokens": 7}})

    # Usage reports arrive in batches: wait for all seven records (six calls, one refusal).
    _, _, body = get(f"{admin}/usage/budgets")
    month = json.loads(body)["month"]
    query = f"from={month['from']}&to={month['to']}"
    deadline = time.time() + 15
    while True:
        rows = json.loads(get(f"{admin}/usage?{query}")[2])["rows"]
        if sum(r["requests"] + r["refusals"] for r in rows) >= 7 or time.time() > deadline:
            break
        time.sleep(0.1)
    assert sum(r["requests"] for r in rows) == 6, json.dumps(rows, indent=1)
    assert sum(r["refusals"] for r in rows) == 1, rows
    budgets = json.loads(get(f"{admin}/usage/budgets")[2])

    # The CSV: the same rows, in the documented columns, with formulas neutralised.
    status, headers, raw = get(f"{admin}/usage.csv?{query}")
    assert status == 200
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Disposition"] == f'attachment; filename="usage-{month["from"]}-{month["to"]}.csv"'
    text = raw.decode("utf-8")
    assert text.count("\r\n") == len(rows) + 1 and "\n" not in text.replace("\r\n", "")
    records = list(csv.reader(io.StringIO(text, newline="")))
    assert records[0] == COLUMNS
    expected = [[neutralised(str(row[c])) if c in ("tenant", "model") else str(row[c]) for c in COLUMNS]
                for row in rows]
    assert records[1:] == expected
    assert '"\'=HYPERLINK(""http://example.invalid"",""a,b"")"' in text
    assert any(record[1] == XSS for record in records)

    # The page, in a real browser.
    assert load(browser, page_url) == "ready"
    assert browser.execute_script("return window.__alerts") == 0
    assert browser.execute_script("return document.getElementsByTagName('img').length") == 0
    assert csp_violations(browser) == []
    shown = {}
    for tr in browser.find_elements("css selector", "#tenants tbody tr.tenant-row"):
        cell = lambda name: tr.find_element("css selector", f"td.{name}")  # noqa: E731
        shown[cell("tenant").text] = {
            "requests": cell("requests").text,
            "tokens": cell("tokens").get_attribute("data-value"),
            "tokens_text": cell("tokens").text.splitlines()[0],
            "nano": cell("cost").get_attribute("data-nano"),
            "cost": cell("cost").text,
            "refusals": cell("refusals").text,
            "budgets": {b.get_attribute("data-kind"): (b.get_attribute("data-used"), b.get_attribute("data-limit"))
                        for b in tr.find_elements("css selector", "div.budget")},
        }
    tenants = sorted({r["tenant"] for r in rows})
    assert sorted(shown) == tenants
    for tenant in tenants:
        own = [r for r in rows if r["tenant"] == tenant]
        tokens = sum(r["input_tokens"] + r["output_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]
                     for r in own)
        nano = sum(r["cost_nano_usd"] for r in own)
        assert shown[tenant]["requests"] == f"{sum(r['requests'] for r in own):,}", tenant
        assert shown[tenant]["tokens"] == str(tokens), tenant
        assert shown[tenant]["tokens_text"] == f"{tokens:,}", tenant
        assert shown[tenant]["nano"] == str(nano), tenant
        assert shown[tenant]["cost"] == usd(nano), tenant
        assert shown[tenant]["refusals"] == str(sum(r["refusals"] for r in own)), tenant
        listed = next(t for t in budgets["tenants"] if t["tenant"] == tenant)["budgets"]
        assert shown[tenant]["budgets"] == {b["kind"]: (str(b["used"]), str(b["limit"])) for b in listed}, tenant
    assert shown["team-b"]["refusals"] == "1"
    assert shown["team-b"]["budgets"]["cost"][1] == "50000"
    assert "cost" in shown["team-a"]["budgets"] and "total" in shown["team-a"]["budgets"]
    assert int(shown["team-b"]["budgets"]["cost"][0]) >= 30000  # one call's 2000 Sonnet tokens
    # The limit of every tenant together: one counter of every token billed this month.
    everyone = browser.find_elements("css selector", "#everyone div.budget")
    assert [(b.get_attribute("data-kind"), b.get_attribute("data-used")) for b in everyone] == \
        [("total", str(budgets["everyone"][0]["used"]))]
    assert budgets["everyone"][0]["used"] == sum(
        r["input_tokens"] + r["output_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"] for r in rows)
    # The markup-looking tenant is text, in the table and in the DOM.
    xss_cell = browser.execute_script(
        "return [...document.querySelectorAll('#tenants td.tenant')].map(td => td.textContent)")
    assert XSS in xss_cell
    # The top models, by cost and by tokens.
    per_model = {}
    for r in rows:
        m = per_model.setdefault(r["model"], [0, 0])
        m[0] += r["cost_nano_usd"]
        m[1] += r["input_tokens"] + r["output_tokens"] + r["cache_read_tokens"] + r["cache_write_tokens"]
    by_cost = max(per_model, key=lambda m: per_model[m][0])
    by_tokens = max(per_model, key=lambda m: per_model[m][1])
    top_cost = browser.find_elements("css selector", "#top-cost li")
    top_tokens = browser.find_elements("css selector", "#top-tokens li")
    assert top_cost[0].get_attribute("data-model") == by_cost == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert usd(per_model[by_cost][0]) in top_cost[0].text
    assert top_tokens[0].get_attribute("data-model") == by_tokens
    assert f"{per_model[by_tokens][1]:,}" in top_tokens[0].text
    # The chart: one bar segment per day and model with use, tokens or cost.
    segments = {(r["day"], r["model"]) for r in rows if r["requests"]}
    assert len(browser.find_elements("css selector", "#chart svg rect")) == len(segments)
    browser.find_element("css selector", 'input[name="metric"][value="cost"]').click()
    assert len(browser.find_elements("css selector", "#chart svg rect")) == len(segments)
    assert browser.find_element("css selector", "#chart svg").get_attribute("aria-label") == "Daily cost by model"
    legend = [li.text for li in browser.find_elements("css selector", "#legend li")]
    assert sorted(legend) == sorted({r["model"] for r in rows if r["requests"]})
    assert browser.find_element("id", "csv-link").get_attribute("href") == f"{admin}/usage.csv?{query}"
    assert browser.execute_script("return window.__alerts") == 0

    # A screenshot of the whole page, for a person to look at.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False})
    shot = tmp_path / "usage-page.png"
    assert browser.save_screenshot(str(shot))
    kept = ROOT / "target" / "usage-page.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)
    print(f"\nusage page screenshot: {kept} (and {shot}); test took {time.time() - started:.1f} s")


def test_page_headers(usage_stack):
    status, headers, body = get(f"{usage_stack.info['xds_http']}/usage.html")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; script-src 'sha256-") and "unsafe" not in csp
    assert b"<script>" in body
    with pytest.raises(urllib.error.HTTPError) as bad:
        get(f"{usage_stack.info['xds_http']}/usage.csv?from=yesterday")
    assert bad.value.code == 400
