"""The score card in a real browser: headless Chromium (Debian's `chromium` package, never a
downloaded build) driven by Playwright, against `rxcube serve --http` on the demo warehouse.

Every expected number comes from the local administrator (`rxcube sql` on the same warehouse),
read from `cube.metrics`, `cube.rankings` and `cube.attainment` for the same slice, never from
the page code; for pharmacy users with small-cell protection on (`SET rxcube.small_cells =
true`), as their sessions are. The card prints percentages with one decimal and dollars with two.
The demo users (password `demo`): pat manages pharmacy 423 (00423 is another store), rita the
region West, admin the division.

Screenshots and PDFs are saved under tests/artifacts/web/ (ignored by git).
"""

import datetime
import json
import os
import re
import signal
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import time

import pytest
from playwright.sync_api import sync_playwright

from conftest import rxcube
from test_flight_sql import Server, copy_warehouse, self_signed_certificate


CHROMIUM = "/usr/bin/chromium"
PASSWORD = "demo"
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "artifacts", "web")
DOLLARS = {"labor_cost_per_rx", "otc_sales_per_rx"}
PAY_METRICS = ["labor_cost_per_rx", "on_time_pct", "otc_sales_per_rx", "crp_usage_pct"]
SHARES = ["pct_very_satisfied", "pct_satisfied", "pct_dissatisfied", "pct_very_dissatisfied"]
ALL_METRICS = ["labor_cost_per_rx", "csat_pct", "on_time_pct", "otc_sales_per_rx", "crp_usage_pct"]


def fmt(metric, v):
    if v is None:
        return "n/a"
    return f"${v:.2f}" if metric in DOLLARS else f"{v:.1f}%"


def fmt_int(v):
    return "n/a" if v is None else str(int(v))


def sql(wh, query, protected=False):
    """The administrator's rows of `query` (as a pharmacy user's session computes them when
    `protected`)."""
    text = f"SET rxcube.small_cells = true; {query}" if protected else query
    out = rxcube("sql", "--warehouse", wh, "--format", "json", text).stdout
    return json.loads(out.strip().splitlines()[-1])


def ts(day):
    return f"TIMESTAMP '{day} 00:00:00'"


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    """The demo warehouse, landed once for the module; every server runs on a copy."""
    path = str(tmp_path_factory.mktemp("web") / "demo")
    rxcube("demo", "--warehouse", path)
    return path


@pytest.fixture(scope="module")
def served(landed, tmp_path_factory):
    wh = copy_warehouse(landed, str(tmp_path_factory.mktemp("web") / "served"))
    server = Server(wh)
    line = server.stdout_lines.get(timeout=30)
    m = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", (line or "").strip())
    assert m, f"expected the web pages' listening line, got {line!r}"
    server.http = m.group(1)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


class Visit:
    """One signed-in browser context; records every request that leaves for another host."""

    def __init__(self, browser, served):
        self.served = served
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.elsewhere = []
        self.page.on("request", self._request)

    def _request(self, request):
        if not request.url.startswith(self.served.http + "/") and not request.url.startswith("data:"):
            self.elsewhere.append(request.url)

    def sign_in(self, user, password=PASSWORD):
        self.page.goto(self.served.http + "/login")
        self.page.fill("input[name=username]", user)
        self.page.fill("input[name=password]", password)
        with self.page.expect_navigation():
            self.page.click("button[type=submit]")
        return self.page

    def close(self):
        self.context.close()
        assert self.elsewhere == [], f"requests to other hosts: {self.elsewhere}"


@pytest.fixture
def visit(browser, served):
    visits = []

    def make():
        v = Visit(browser, served)
        visits.append(v)
        return v

    yield make
    for v in visits:
        v.close()


def figures(page):
    """{(child, metric, field): text} of every figure on the page."""
    out = {}
    for el in page.query_selector_all("[data-metric][data-field]"):
        key = (el.get_attribute("data-child"), el.get_attribute("data-metric"), el.get_attribute("data-field"))
        assert key not in out, f"two figures {key}"
        out[key] = el.inner_text().strip()
    return out


def latest_complete_pay_period(wh, level, node, protected):
    """The latest pay period whose 14 days lie on or before the node's last day with facts."""
    metrics = ", ".join(f"'{m}'" for m in ALL_METRICS)
    where = f"level = '{level}' AND node = '{node}' AND metric IN ({metrics})"
    periods = sorted({r["period_start"][:10] for r in sql(
        wh, f"SELECT DISTINCT period_start FROM cube.metrics WHERE {where} AND grain = 'pay_period'", protected)})
    last = sql(wh, f"SELECT max(period_start) AS d FROM cube.metrics WHERE {where} AND grain = 'day'", protected)[0]["d"]
    after = datetime.date.fromisoformat(last[:10]) + datetime.timedelta(days=1)
    complete = [p for p in periods if datetime.date.fromisoformat(p) + datetime.timedelta(days=14) <= after]
    return complete[-1]


def expected_pharmacy_card(wh, node, period, protected):
    """Every figure of a pharmacy's card, from the cube relations."""
    q0 = datetime.date.fromisoformat(period)
    q0 = q0.replace(month=(q0.month - 1) // 3 * 3 + 1, day=1).isoformat()
    want = {}
    rows = sql(wh, f"SELECT metric, value, peer_avg, peer_rank, peer_size FROM cube.metrics "
                   f"WHERE level = 'pharmacy' AND node = '{node}' AND grain = 'pay_period' "
                   f"AND period_start = {ts(period)} AND metric IN ({', '.join(repr(m) for m in PAY_METRICS)})",
               protected)
    rows += sql(wh, f"SELECT metric, value, peer_avg, peer_rank, peer_size FROM cube.metrics "
                    f"WHERE level = 'pharmacy' AND node = '{node}' AND grain = 'quarter' "
                    f"AND period_start = {ts(q0)} AND metric IN ('csat_pct', {', '.join(repr(s) for s in SHARES)})",
                protected)
    by = {r["metric"]: r for r in rows}
    assert len(by) == len(rows)
    for m in PAY_METRICS + ["csat_pct"]:
        r = by.get(m, {})
        want[(None, m, "value")] = fmt(m, r.get("value"))
        want[(None, m, "peer_avg")] = fmt(m, r.get("peer_avg"))
        want[(None, m, "peer_rank")] = fmt_int(r.get("peer_rank"))
        want[(None, m, "peer_size")] = fmt_int(r.get("peer_size"))
    for s in SHARES:
        want[(None, s, "value")] = fmt("pct", by.get(s, {}).get("value"))
    ranks = sql(wh, f"SELECT grain, period_start, metric, pacesetter_1, pacesetter_1_value, pacesetter_2, "
                    f"pacesetter_2_value FROM cube.rankings WHERE level = 'pharmacy' AND node = '{node}' "
                    f"AND ranked_among = 'peer_group' AND ((grain = 'pay_period' AND period_start = {ts(period)}) "
                    f"OR (grain = 'quarter' AND period_start = {ts(q0)} AND metric = 'csat_pct'))", protected)
    for m in PAY_METRICS + ["csat_pct"]:
        grain = "quarter" if m == "csat_pct" else "pay_period"
        r = next((r for r in ranks if r["metric"] == m and r["grain"] == grain), {})
        for k in ("1", "2"):
            name = r.get(f"pacesetter_{k}")
            want[(None, m, f"pacesetter_{k}")] = name if name is not None else "none"
            want[(None, m, f"pacesetter_{k}_value")] = fmt(m, r.get(f"pacesetter_{k}_value")) if name is not None else ""
    tiers = sql(wh, f"SELECT grain, metric, tier, target FROM cube.attainment WHERE node = '{node}' "
                    f"AND ((grain = 'pay_period' AND period_start = {ts(period)}) "
                    f"OR (grain = 'quarter' AND period_start = {ts(q0)} AND metric = 'csat_pct'))", protected)
    for t in tiers:
        if (t["metric"] == "csat_pct") != (t["grain"] == "quarter"):
            continue
        want[(None, t["metric"], f"tier_{t['tier']}")] = fmt(t["metric"], t["target"])
    return want


def test_a_pharmacy_manager_sees_the_cubes_numbers_and_prints_one_page(served, visit):
    v = visit()
    page = v.sign_in("pat")
    assert page.url == served.http + "/card/pharmacy/423", page.url
    period = latest_complete_pay_period(served.warehouse, "pharmacy", "423", protected=True)
    assert page.inner_text("[data-field=period]") == period
    assert "latest complete pay period" in page.inner_text("p.sub")
    got = figures(page)
    want = expected_pharmacy_card(served.warehouse, "423", period, protected=True)
    assert got == want
    assert len(got) >= 40
    # Five graphs, no script.
    assert page.locator("svg.chart").count() == 5
    assert page.locator("script").count() == 0
    page.screenshot(path=os.path.join(ARTIFACTS, "card-pharmacy-423.png"), full_page=True)
    for paper in ("Letter", "A4"):
        pdf = page.pdf(format=paper, print_background=False)
        with open(os.path.join(ARTIFACTS, f"card-pharmacy-423-{paper}.pdf"), "wb") as f:
            f.write(pdf)
        pages = re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)
        assert len(pages) == 1, f"{paper}: {len(pages)} pages"
    page.emulate_media(media="print")
    page.screenshot(path=os.path.join(ARTIFACTS, "card-pharmacy-423-print.png"), full_page=True)


def test_another_period_is_chosen_by_date(served, visit):
    v = visit()
    page = v.sign_in("pat")
    page.goto(served.http + "/card/pharmacy/423?period=2024-02-10")
    # 2024-02-10 lies in the pay period of 2024-02-04.
    assert page.inner_text("[data-field=period]") == "2024-02-04"
    assert figures(page) == expected_pharmacy_card(served.warehouse, "423", "2024-02-04", protected=True)


def test_a_pharmacy_manager_typing_another_pharmacys_url_is_refused(served, visit):
    v = visit()
    page = v.sign_in("pat")
    other = page.goto(served.http + "/card/pharmacy/00423")
    assert other.status == 404
    text = page.inner_text("main")
    assert "Phoenix" not in text and "00423" not in text
    missing = page.goto(served.http + "/card/pharmacy/NO-SUCH-STORE")
    assert missing.status == 404
    assert page.inner_text("main") == text
    up = page.goto(served.http + "/card/local_area/Chicago")
    assert up.status == 404
    report = page.goto(served.http + "/report/rankings?level=pharmacy&node=00423&metric=on_time_pct&period=2024-03-03")
    assert report.status == 404
    page.screenshot(path=os.path.join(ARTIFACTS, "refused.png"))
    denied = wait_for_audit(served.warehouse, "pat", "denied", 4)
    assert any("/card/pharmacy/00423" in (r["detail"] or "") for r in denied), denied


def wait_for_audit(wh, user, event, at_least, seconds=15):
    """The audit rows of `user`'s `event`s, once at least `at_least` are written (every second)."""
    deadline = time.monotonic() + seconds
    while True:
        rows = sql(wh, f"SELECT user_name, event, detail, client FROM system.audit_log "
                       f"WHERE user_name = '{user}' AND event = '{event}' ORDER BY at")
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def test_a_wrong_password_is_refused_and_audited(served, visit):
    v = visit()
    before = len(wait_for_audit(served.warehouse, "rita", "login_failed", 0, seconds=0))
    page = v.sign_in("rita", "not-the-password")
    assert page.url.startswith(served.http + "/login")
    assert "Invalid user name or password." in page.inner_text("main")
    # No session: only the sign-in form's CSRF cookie.
    assert [c["name"] for c in v.context.cookies()] == ["rxcube_login"]
    page.screenshot(path=os.path.join(ARTIFACTS, "wrong-password.png"))
    rows = wait_for_audit(served.warehouse, "rita", "login_failed", before + 1)
    assert len(rows) == before + 1
    assert rows[-1]["detail"] == "wrong password"
    assert rows[-1]["client"].startswith("127.0.0.1:")
    # Signed out, a card sends the browser to the sign-in form.
    page.goto(served.http + "/card/region/West")
    assert page.url == served.http + "/login?next=%2Fcard%2Fregion%2FWest"


def test_a_region_card_ranks_its_children_as_the_cube_does(served, visit):
    v = visit()
    page = v.sign_in("rita")
    assert page.url == served.http + "/card/region/West"
    wh = served.warehouse
    period = latest_complete_pay_period(wh, "region", "West", protected=False)
    assert page.inner_text("[data-field=period]") == period
    q0 = datetime.date.fromisoformat(period)
    q0 = q0.replace(month=(q0.month - 1) // 3 * 3 + 1, day=1).isoformat()
    want = {}
    for r in sql(wh, f"SELECT metric, value FROM cube.metrics WHERE level = 'region' AND node = 'West' "
                     f"AND ((grain = 'pay_period' AND period_start = {ts(period)} AND metric IN "
                     f"({', '.join(repr(m) for m in PAY_METRICS)})) OR (grain = 'quarter' AND period_start = "
                     f"{ts(q0)} AND metric IN ('csat_pct', {', '.join(repr(s) for s in SHARES)})))"):
        want[(None, r["metric"], "value")] = fmt(r["metric"] if r["metric"] in ALL_METRICS else "pct", r["value"])
    for r in sql(wh, f"SELECT node, metric, value, rank, group_size FROM cube.rankings WHERE level = 'service_area' "
                     f"AND grain = 'pay_period' AND ranked_among = 'siblings' AND group_name = 'West' "
                     f"AND period_start = {ts(period)} AND metric IN ({', '.join(repr(m) for m in ALL_METRICS)})"):
        want[(r["node"], r["metric"], "value")] = fmt(r["metric"], r["value"])
        want[(r["node"], r["metric"], "rank")] = f"({fmt_int(r['rank'])} of {fmt_int(r['group_size'])})"
    assert figures(page) == want
    children = sorted({k[0] for k in want if k[0]})
    assert children, "West has service areas"
    page.screenshot(path=os.path.join(ARTIFACTS, "card-region-West.png"), full_page=True)
    # Each child links to its card; the division is not rita's to open.
    page.click(f"a[href='/card/service_area/{children[0]}']")
    assert page.url.startswith(served.http + f"/card/service_area/{children[0]}")
    assert page.locator("nav.crumbs a[href='/card/region/West']").count() == 1
    assert page.locator("nav.crumbs a[href='/card/division/ALL']").count() == 0
    pdf = page.pdf(format="A4")
    assert len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) == 1


def test_consolidated_cards_print_on_one_page(served, visit):
    v = visit()
    page = v.sign_in("admin")
    for path, name in [("/card/division/ALL", "division"), ("/card/region/Central", "region-Central"),
                       ("/card/local_area/Chicago", "local_area-Chicago")]:
        page.goto(served.http + path)
        assert page.locator("svg.chart").count() == 5, path
        assert page.locator("section.children tr[data-child]").count() >= 1, path
        for paper in ("Letter", "A4"):
            pdf = page.pdf(format=paper)
            with open(os.path.join(ARTIFACTS, f"card-{name}-{paper}.pdf"), "wb") as f:
                f.write(pdf)
            assert len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) == 1, (path, paper)
        page.screenshot(path=os.path.join(ARTIFACTS, f"card-{name}.png"), full_page=True)


def test_a_graph_point_opens_the_diagnostics_of_its_period(served, visit):
    v = visit()
    page = v.sign_in("admin")
    page.goto(served.http + "/card/pharmacy/RX101?period=2024-03-03")
    # The period's on-time point: the weekly on-time of the six months to its last day.
    point = page.locator("section[data-panel=on_time_pct] svg a").last
    assert point.get_attribute("href") == "/report/on-time/pharmacy/RX101?date=2024-03-16"
    value = sql(served.warehouse, "SELECT value FROM cube.metrics WHERE level = 'pharmacy' AND node = 'RX101' "
                                  "AND grain = 'pay_period' AND metric = 'on_time_pct' "
                                  "AND period_start = TIMESTAMP '2024-03-03 00:00:00'")[0]["value"]
    assert point.locator("title").text_content() == (
        f"pay period 2024-03-03 (weekly on-time to 2024-03-16): {fmt('on_time_pct', value)}")
    with page.expect_navigation():
        point.click()
    assert page.url == served.http + "/report/on-time/pharmacy/RX101?date=2024-03-16"
    want = sql(served.warehouse, "SELECT CAST(CAST(period_start AS DATE) AS VARCHAR) AS week, on_time_pct "
                                 "FROM cube.weekly_trend WHERE level = 'pharmacy' AND node = 'RX101' "
                                 "AND period_start > TIMESTAMP '2024-03-16 00:00:00' - INTERVAL '6 months' "
                                 "AND period_start <= TIMESTAMP '2024-03-16 00:00:00' ORDER BY period_start")
    got = [(tr.get_attribute("data-row"), tr.query_selector("[data-field=on_time_pct]").inner_text())
           for tr in page.query_selector_all("tr[data-row]")]
    assert got == [(r["week"], fmt("on_time_pct", r["on_time_pct"])) for r in want]
    assert len(got) >= 2
    page.screenshot(path=os.path.join(ARTIFACTS, "on-time.png"), full_page=True)
    # The labor cost point opens the days of the period's last week; CRP and OTC their trend.
    page.goto(served.http + "/card/pharmacy/RX101?period=2024-03-03")
    assert page.get_attribute("section[data-panel=labor_cost_per_rx] svg a >> nth=-1", "href") == \
        "/report/week/pharmacy/RX101?date=2024-03-16"
    assert page.get_attribute("section[data-panel=crp_usage_pct] svg a >> nth=-1", "href") == \
        "/report/crp-otc/pharmacy/RX101?date=2024-03-16"


def test_the_rankings_beside_a_graph_and_their_csv(served, visit):
    v = visit()
    page = v.sign_in("admin")
    page.goto(served.http + "/card/pharmacy/RX101?period=2024-03-03")
    href = page.get_attribute("section[data-panel=on_time_pct] a.ranked", "href")
    assert href == ("/report/rankings?level=pharmacy&node=RX101&metric=on_time_pct&grain=pay_period"
                    "&period=2024-03-03&among=peer_group")
    page.goto(served.http + href)
    want = sql(served.warehouse,
               "SELECT node, rank, value, group_size, group_name FROM cube.rankings WHERE level = 'pharmacy' "
               "AND grain = 'pay_period' AND metric = 'on_time_pct' AND ranked_among = 'peer_group' "
               "AND period_start = TIMESTAMP '2024-03-03 00:00:00' AND group_name = (SELECT group_name FROM "
               "cube.rankings WHERE level = 'pharmacy' AND node = 'RX101' AND grain = 'pay_period' AND metric = "
               "'on_time_pct' AND ranked_among = 'peer_group' AND period_start = TIMESTAMP '2024-03-03 00:00:00') "
               "ORDER BY rank, node")
    got = [(tr.get_attribute("data-node"), tr.query_selector("[data-field=rank]").inner_text(),
            tr.query_selector("[data-field=value]").inner_text(),
            tr.query_selector("[data-field=group_size]").inner_text())
           for tr in page.query_selector_all("tr[data-node]")]
    assert got == [(r["node"], fmt_int(r["rank"]), fmt("on_time_pct", r["value"]), fmt_int(r["group_size"]))
                   for r in want]
    page.screenshot(path=os.path.join(ARTIFACTS, "rankings.png"), full_page=True)
    csv_href = page.get_attribute("a[href^='/report/rankings.csv']", "href")
    response = page.request.get(served.http + csv_href)
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text().strip().splitlines()
    assert lines[0].split(",")[:4] == ["level", "node", "value", "rank"]
    assert [(l.split(",")[1], l.split(",")[3]) for l in lines[1:]] == [(r["node"], str(r["rank"])) for r in want]


def test_sign_out_ends_the_session(served, visit):
    v = visit()
    page = v.sign_in("dana")
    assert page.url == served.http + "/card/division/ALL"
    cookie = next(c for c in v.context.cookies() if c["name"] == "rxcube_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    with page.expect_navigation():
        page.click("form.signout button")
    assert page.url == served.http + "/login"
    page.goto(served.http + "/card/division/ALL")
    assert page.url.startswith(served.http + "/login")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def serve_tls(landed, tmp_path):
    """A server on a copy of the demo with a self-signed certificate: the server, the pages'
    https:// base and an SSL context that trusts the certificate."""
    path = copy_warehouse(landed, str(tmp_path / "warehouse"))
    cert, key, pem = self_signed_certificate(tmp_path)
    server = Server(path, "--tls-cert", cert, "--tls-key", key, "--http", "127.0.0.1:0")
    line = server.stdout_lines.get(timeout=30)
    m = re.fullmatch(r"listening on (https://127\.0\.0\.1:\d+)", (line or "").strip())
    if not m:
        server.stop()
        pytest.fail(f"expected the pages' https listening line, got {line!r}")
    return server, m.group(1), ssl.create_default_context(cadata=pem)


def test_under_tls_the_pages_are_https_and_the_cookie_is_secure(landed, tmp_path):
    server, base, trust = serve_tls(landed, tmp_path)
    try:
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=trust), NoRedirect)
        with opener.open(base + "/login") as r:
            assert r.status == 200
            body = r.read().decode()
            assert 'name="username"' in body
            login_cookie = r.headers["Set-Cookie"]
        assert login_cookie.startswith("rxcube_login=") and "; Secure" in login_cookie, login_cookie
        token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
        form = urllib.parse.urlencode({"username": "pat", "password": PASSWORD, "csrf": token}).encode()
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(urllib.request.Request(base + "/login", data=form, headers={
                "Sec-Fetch-Site": "same-origin", "Cookie": login_cookie.split(";")[0]}))
        assert redirected.value.code == 303
        assert redirected.value.headers["Location"] == "/card/pharmacy/423"
        cookie = redirected.value.headers["Set-Cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        session = cookie.split(";")[0]
        with opener.open(urllib.request.Request(base + "/card/pharmacy/423", headers={"Cookie": session})) as r:
            assert r.status == 200
            assert "Chicago #423" in r.read().decode()
        # Plain HTTP on the same port gets no page.
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            urllib.request.urlopen(base.replace("https://", "http://") + "/login", timeout=10).read()
    finally:
        server.stop()


def test_under_tls_a_request_in_flight_at_sigterm_is_answered_before_the_server_stops(landed, tmp_path):
    """SIGTERM while a browser is half-way through sending a sign-in form over TLS: the server
    stops accepting, but the request in flight gets its answer (within the 10 s grace), and the
    server then exits 0."""
    server, base, trust = serve_tls(landed, tmp_path)
    try:
        host, port = base.removeprefix("https://").split(":")
        body = b"username=pat&password=demo&csrf=none"
        raw = socket.create_connection((host, int(port)), timeout=20)
        tls = trust.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:11])
        time.sleep(1)  # the request is being read: its body is short
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert server.proc.poll() is None, f"exited at once, dropping the request; stderr:\n{server.stderr()}"
        tls.sendall(body[11:])
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
        tls.close()
        status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
        # No sign-in form token: the answer is a refusal page, but an answer.
        assert re.fullmatch(r"HTTP/1\.1 \d{3} .*", status), answer[:200]
        assert server.proc.wait(timeout=20) == 0, server.stderr()
        assert time.monotonic() - t0 < 15
    finally:
        server.stop()


def http_client_errors():
    import http.client
    return http.client.HTTPException


def test_search_finds_only_pharmacies_within_the_scope(served, visit):
    v = visit()
    page = v.sign_in("pat")
    # From the header of the card: pat's own pharmacy, by id prefix.
    page.fill("header form.search input[name=q]", "42")
    with page.expect_navigation():
        page.click("header form.search button")
    assert page.url == served.http + "/search?q=42"
    assert [tr.get_attribute("data-result") for tr in page.query_selector_all("tr[data-result]")] == ["423"]
    page.screenshot(path=os.path.join(ARTIFACTS, "search.png"), full_page=True)
    with page.expect_navigation():
        page.click("tr[data-result='423'] a")
    assert page.url == served.http + "/card/pharmacy/423"
    # Another pharmacy's id finds what an id that does not exist finds.
    page.goto(served.http + "/search?q=00423")
    other = page.inner_text("main").replace("00423", "Q")
    page.goto(served.http + "/search?q=99999")
    assert page.inner_text("main").replace("99999", "Q") == other
    assert page.locator("tr[data-result]").count() == 0
    # The administrator finds both 423 and 00423 by name or id, capped.
    a = visit().sign_in("admin")
    a.goto(served.http + "/search?q=00423")
    assert [tr.get_attribute("data-result") for tr in a.query_selector_all("tr[data-result]")] == ["00423"]
    a.goto(served.http + "/search?q=a")
    assert 1 <= a.locator("tr[data-result]").count() <= 50


def test_attainment_and_budget_are_the_cubes_numbers(served, visit):
    v = visit()
    page = v.sign_in("pat")
    wh = served.warehouse
    with page.expect_navigation():
        page.click("nav.reports a:text('Target attainment and bonus')")
    period = latest_complete_pay_period(wh, "pharmacy", "423", protected=True)
    assert page.url == served.http + f"/report/attainment/pharmacy/423?period={period}"
    want = sql(wh, f"SELECT node, metric, tier, value, target, attained, bonus_earned FROM cube.attainment "
                   f"WHERE grain = 'pay_period' AND node = '423' AND period_start = {ts(period)} "
                   f"ORDER BY node, metric, tier", protected=True)
    got = {tr.get_attribute("data-row"): (tr.query_selector("[data-field=value]").inner_text(),
                                          tr.query_selector("[data-field=target]").inner_text(),
                                          tr.query_selector("[data-field=attained]").inner_text(),
                                          tr.query_selector("[data-field=bonus_earned]").inner_text())
           for tr in page.query_selector_all("tr[data-row*='/']") if tr.get_attribute("data-row").count("/") == 2}
    assert got == {f"{r['node']}/{r['metric']}/{r['tier']}": (
        fmt(r["metric"], r["value"]), fmt(r["metric"], r["target"]),
        {True: "yes", False: "no", None: "n/a"}[r["attained"]],
        f"${(r['bonus_earned'] or 0):.2f}") for r in want}
    assert want, "423 has targets"
    page.screenshot(path=os.path.join(ARTIFACTS, "attainment.png"), full_page=True)
    with page.expect_navigation():
        page.click("nav.reports a:text('Budget estimator')")
    assert page.url == served.http + "/report/budget/pharmacy/423"
    # The next pay period: the first after the latest complete one (the card's).
    rows = sql(wh, f"SELECT CAST(CAST(period_start AS DATE) AS VARCHAR) AS p, tier, budget_dollars "
                   f"FROM cube.budget WHERE node = '423' AND period_start > {ts(period)} "
                   f"ORDER BY period_start, tier", protected=True)
    first = rows[0]["p"]
    assert first == (datetime.date.fromisoformat(period) + datetime.timedelta(days=14)).isoformat()
    assert f"pay period {first}" in page.inner_text("h1")
    got = [(tr.get_attribute("data-row"), tr.query_selector("[data-field=budget_dollars]").inner_text())
           for tr in page.query_selector_all("tr[data-row]")]
    assert got == [(f"423/{r['tier']}", fmt("labor_cost_per_rx", r["budget_dollars"])) for r in rows if r["p"] == first]
    page.screenshot(path=os.path.join(ARTIFACTS, "budget.png"), full_page=True)
    # Breadcrumbs up pat's own path; another pharmacy's reports are the card's 404.
    assert page.locator("nav.crumbs a[href='/card/pharmacy/423']").count() == 1
    for path in ("/report/attainment/pharmacy/00423", "/report/budget/pharmacy/00423"):
        assert page.goto(served.http + path).status == 404


def test_every_page_is_at_most_100_kb_gzipped(served, visit):
    v = visit()
    v.sign_in("admin")
    session = next(c for c in v.context.cookies() if c["name"] == "rxcube_session")
    paths = ["/card/pharmacy/RX101", "/card/local_area/Chicago", "/card/region/Central", "/card/division/ALL",
             "/report/rankings?level=division&node=ALL&metric=on_time_pct&period=2024-03-03&among=children",
             "/report/rankings?level=pharmacy&node=RX101&metric=on_time_pct&period=2024-03-03",
             "/report/day/division/ALL", "/report/week/division/ALL", "/report/on-time/division/ALL",
             "/report/crp-otc/division/ALL", "/report/attainment/division/ALL", "/report/budget/division/ALL",
             "/report/attainment/pharmacy/RX101", "/report/budget/pharmacy/RX101", "/search?q=a"]
    opener = urllib.request.build_opener(NoRedirect)
    for path in paths:
        request = urllib.request.Request(served.http + path, headers={
            "Cookie": f"rxcube_session={session['value']}", "Accept-Encoding": "gzip"})
        with opener.open(request) as r:
            assert r.status == 200, path
            assert r.headers["Content-Encoding"] == "gzip", path
            size = len(r.read())
        assert size <= 100 * 1024, f"{path}: {size} bytes gzipped"


def test_a_sign_in_without_the_forms_token_is_refused(served):
    form = urllib.parse.urlencode({"username": "pat", "password": PASSWORD}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(served.http + "/login", data=form,
                                                      headers={"Sec-Fetch-Site": "same-origin"}))
    assert refused.value.code == 403
    assert "Sign-in form expired" in refused.value.read().decode()


def test_the_alerts_page_is_the_cubes_alerts_within_the_scope(served, visit):
    """From the header to /alerts: the administrator sees every row of cube.alerts, pat those of
    pharmacy 423 as pat's session computes them, with the value, reference and run length."""
    wh = served.warehouse

    def shown(page):
        return {tr.get_attribute("data-alert"): (tr.query_selector("[data-field=value]").inner_text(),
                                                 tr.query_selector("[data-field=reference]").inner_text(),
                                                 tr.query_selector("[data-field=periods]").inner_text())
                for tr in page.query_selector_all("tr[data-alert]")}

    def expected(rows):
        unit = {"median_processing_minutes": lambda v: f"{v:.1f} min"}
        return {f"{r['node']}/{r['metric']}/{r['reason']}": (
            unit.get(r["metric"], lambda v: fmt(r["metric"], v))(r["value"]),
            unit.get(r["metric"], lambda v: fmt(r["metric"], v))(r["reference"]),
            str(r["periods"])) for r in rows}

    query = "SELECT node, metric, reason, value, reference, periods FROM cube.alerts {where} ORDER BY 1, 2, 3"
    admin = visit().sign_in("admin")
    with admin.expect_navigation():
        admin.click("header a.alerts")
    assert admin.url == served.http + "/alerts"
    every = sql(wh, query.format(where=""))
    assert every, "the demo chain has alerts"
    assert shown(admin) == expected(every)
    admin.screenshot(path=os.path.join(ARTIFACTS, "alerts.png"), full_page=True)
    pat = visit().sign_in("pat")
    pat.goto(served.http + "/alerts")
    own = sql(wh, query.format(where="WHERE node = '423'"), protected=True)
    assert shown(pat) == expected(own)
    assert all(key.startswith("423/") for key in shown(pat))
