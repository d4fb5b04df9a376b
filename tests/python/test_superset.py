"""Apache Superset 6.1 over `rxcube serve`, for real: a dashboard tool in the test suite.

Superset runs from its own virtual environment ($RXCUBE_SUPERSET_VENV, which scripts/test.sh
installs from tests/superset-requirements.txt with the engine spec of clients/superset), with
SQLite metadata in a temporary directory, on a free loopback port. Everything goes through its
REST API as a user would: rxcube is registered as a database (flightsql-dbapi's `datafusion://`
URI) signed in as the pharmacy manager pat (scope pharmacy 423); a dataset on `cube.metrics`; a
time-series chart of on-time % by pay period with the peer average. The chart's numbers, read
through /api/v1/chart/data, must equal `rxcube sql` for the same slice exactly (as pat's session
computes them: small cells on), and so must a virtual dataset's (Superset's subquery) chart;
pat's Superset, SQL Lab included, must see only pharmacy 423. Then headless
Chromium (Debian's) signs in through Superset's login form, opens the chart and saves a
screenshot under tests/artifacts/superset/.

Without Superset's environment the test skips on a developer's machine and fails in CI.
"""

import datetime
import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import rxcube
from test_flight_sql import Server, copy_warehouse
from test_web import browser  # noqa: F401  headless Chromium (Debian's), as the web tests drive it

ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "artifacts", "superset")
ADMIN, ADMIN_PASSWORD = "admin", "admin-pw-superset"
USER, PASSWORD, NODE = "pat", "demo", "423"  # the demo's pharmacy manager (00423 is another store)
PAY_PERIOD = "P2W"  # rxcube_superset.PAY_PERIOD
SLICE = {"level": "pharmacy", "grain": "pay_period", "metric": "on_time_pct"}


def superset_venv():
    venv = os.environ.get("RXCUBE_SUPERSET_VENV", os.path.expanduser("~/.cache/rxcube/superset-venv"))
    if not os.path.exists(os.path.join(venv, "bin", "superset")):
        message = (f"Superset is not installed in {venv} (scripts/test.sh installs it from "
                   "tests/superset-requirements.txt and sets RXCUBE_SUPERSET_VENV)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return venv


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Superset:
    """`superset run` on a fresh SQLite metadata database in `home`."""

    def __init__(self, venv, home):
        self.home = str(home)
        self.bin = os.path.join(venv, "bin", "superset")
        config = os.path.join(self.home, "superset_config.py")
        with open(config, "w") as f:
            f.write(
                "import rxcube_superset\n"
                "SECRET_KEY = 'rxcube-test-' + '0123456789abcdef' * 3\n"
                f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{self.home}/superset.db'\n"
                "# The pay period as a time grain (the engine spec gives its SQL).\n"
                "TIME_GRAIN_ADDONS = rxcube_superset.TIME_GRAIN_ADDONS\n"
                "WTF_CSRF_ENABLED = True\n"
                "TALISMAN_ENABLED = False\n"
                "CACHE_CONFIG = DATA_CACHE_CONFIG = {'CACHE_TYPE': 'NullCache'}\n"
                "SCARF_ANALYTICS = False  # no telemetry pixel from the browser\n"
            )
        self.env = {**os.environ, "SUPERSET_CONFIG_PATH": config, "SUPERSET_HOME": self.home,
                    "FLASK_APP": "superset", "PYTHONUNBUFFERED": "1"}
        self.log_path = os.path.join(self.home, "superset.log")
        self.log = open(self.log_path, "w+")
        self.cli("db", "upgrade")
        self.cli("fab", "create-admin", "--username", ADMIN, "--firstname", "Ad", "--lastname", "Min",
                 "--email", "admin@example.com", "--password", ADMIN_PASSWORD)
        self.cli("init")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([self.bin, "run", "-h", "127.0.0.1", "-p", str(self.port), "--with-threads"],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.home)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"superset run exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.read() == b"OK":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"superset run did not answer /health in 120 s:\n{self.tail()}")
            time.sleep(0.5)

    def cli(self, *args):
        p = subprocess.run([self.bin, *args], env=self.env, cwd=self.home, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"superset {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"

    def tail(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()[-6000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Api:
    """Superset's REST API as the administrator: a JWT from /api/v1/security/login, the CSRF
    token (and its session cookie) from /api/v1/security/csrf_token/."""

    def __init__(self, superset):
        self.superset = superset
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.headers = {}
        token = self.call("POST", "/api/v1/security/login",
                          {"username": ADMIN, "password": ADMIN_PASSWORD, "provider": "db", "refresh": True})
        self.headers["Authorization"] = f"Bearer {token['access_token']}"
        csrf = self.call("GET", "/api/v1/security/csrf_token/")["result"]
        self.headers["X-CSRFToken"] = csrf
        self.headers["Referer"] = superset.url

    def call(self, method, path, body=None, expect=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.superset.url + path, data=data, method=method,
                                     headers={**self.headers, "Content-Type": "application/json"})
        try:
            with self.opener.open(req, timeout=120) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode()
        assert status in expect, f"{method} {path} -> {status}: {text[:3000]}\nsuperset log:\n{self.superset.tail()}"
        return json.loads(text) if text else None


@pytest.fixture(scope="module")
def rxcube_server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("superset") / "demo")
    rxcube("demo", "--warehouse", path)
    server = Server(copy_warehouse(path, str(tmp_path_factory.mktemp("superset") / "served")), "--no-http")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def superset(tmp_path_factory):
    venv = superset_venv()
    s = Superset(venv, tmp_path_factory.mktemp("superset-home"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(superset):
    return Api(superset)


@pytest.fixture(scope="module")
def database(api, rxcube_server):
    """rxcube registered in Superset as the pharmacy manager pat (Superset tests the
    connection first: its `SELECT 1` probe and a dialect start-up over Flight SQL)."""
    uri = f"datafusion://{USER}:{PASSWORD}@{rxcube_server.host}:{rxcube_server.port}?insecure=true"
    api.call("POST", "/api/v1/database/test_connection/", {"sqlalchemy_uri": uri, "database_name": "probe"})
    created = api.call("POST", "/api/v1/database/",
                       {"database_name": f"rxcube ({USER})", "sqlalchemy_uri": uri, "expose_in_sqllab": True})
    return created["id"]


@pytest.fixture(scope="module")
def dataset(api, database):
    created = api.call("POST", "/api/v1/dataset/", {"database": database, "schema": "cube", "table_name": "metrics"})
    return created["id"]


def rxcube_rows(warehouse, sql):
    """The rows of `sql` as pat's session computes them (small cells on), from the local
    administrator: `rxcube sql --format json`."""
    out = rxcube("sql", "--warehouse", warehouse, "--format", "json",
                 f"SET rxcube.small_cells = true; {sql}").stdout
    return json.loads(out.strip().splitlines()[-1])


def where(filters):
    return [{"col": col, "op": "==", "val": val} for col, val in filters.items()]


def metric(sql, label):
    return {"expressionType": "SQL", "sqlExpression": sql, "label": label}


ON_TIME = metric("MAX(value)", "on_time_pct")
PEER_AVG = metric("MAX(peer_avg)", "peer_avg")


def pay_period_query(node):
    """The chart's query: on-time % of a pharmacy and its peer average by pay period."""
    return {
        "columns": [{"columnType": "BASE_AXIS", "sqlExpression": "period_start", "label": "period_start",
                     "expressionType": "SQL", "timeGrain": PAY_PERIOD}],
        "metrics": [ON_TIME, PEER_AVG],
        "filters": where({**SLICE, "node": node}),
        "orderby": [[ON_TIME, False]],
        "extras": {"time_grain_sqla": PAY_PERIOD},
        "row_limit": 10000,
    }


def chart_data(api, dataset, query):
    body = {"datasource": {"id": dataset, "type": "table"}, "force": True, "queries": [query],
            "result_format": "json", "result_type": "full"}
    result = api.call("POST", "/api/v1/chart/data", body)["result"][0]
    assert not result.get("error"), result
    return result


def epoch_ms(ts):
    """A TIMESTAMP (no zone) as Superset's chart data carries it: epoch milliseconds."""
    return int(datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def test_engine_spec_and_dataset(api, database, dataset):
    """The database uses rxcube's engine spec (its time grains, pay period included), and the
    dataset's period_start is temporal."""
    engines = api.call("GET", "/api/v1/database/available/")["databases"]
    spec = [e for e in engines if e.get("engine") == "datafusion"]
    assert spec and spec[0]["name"] == "rxcube (Arrow Flight SQL)", [e.get("name") for e in engines]
    assert spec[0]["available_drivers"] == ["flightsql"], spec
    got = api.call("GET", f"/api/v1/database/{database}")["result"]
    assert got["backend"] == "datafusion"
    ds = api.call("GET", f"/api/v1/dataset/{dataset}")["result"]
    columns = {c["column_name"]: c for c in ds["columns"]}
    assert {"level", "node", "grain", "period_start", "metric", "value", "peer_avg"} <= set(columns)
    assert columns["period_start"]["is_dttm"], columns["period_start"]
    assert columns["period_start"]["type"] == "TIMESTAMP", columns["period_start"]
    assert columns["value"]["type"] == "FLOAT", columns["value"]
    assert ds["main_dttm_col"] == "period_start", ds["main_dttm_col"]
    # The catalog as Superset's SQLAlchemy inspector lists it for pat: the cube's relations.
    tables = api.call("GET", f"/api/v1/database/{database}/tables/?q=(schema_name:cube,force:!t)")["result"]
    names = {t["value"] for t in tables}
    assert {"metrics", "rankings", "pharmacy_pay_period"} <= names, sorted(names)
    schemas = set(api.call("GET", f"/api/v1/database/{database}/schemas/?q=(force:!t)")["result"])
    assert {"public", "cube"} <= schemas and not schemas & {"rollups", "system"}, schemas


def test_chart_numbers_equal_rxcube_sql(api, dataset, rxcube_server):
    """On-time % by pay period and the peer average, through /api/v1/chart/data, equal `rxcube
    sql` for pat's slice exactly; the pay periods are rxcube's (14 days from the anchor)."""
    result = chart_data(api, dataset, pay_period_query(NODE))
    # period_start is temporal (Superset's GenericDataType.TEMPORAL), sent as epoch milliseconds.
    assert result["coltypes"][result["colnames"].index("period_start")] == 2, result["coltypes"]
    got = sorted((r["period_start"], r["on_time_pct"], r["peer_avg"]) for r in result["data"])
    want = rxcube_rows(rxcube_server.warehouse,
                       "SELECT CAST(period_start AS VARCHAR) AS period_start, value, peer_avg FROM cube.metrics "
                       f"WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct' "
                       f"AND node = '{NODE}' ORDER BY period_start")
    assert len(want) >= 5 and sum(r.get("value") is not None for r in want) >= 4
    # (`rxcube sql --format json` leaves NULLs out of its objects.)
    assert got == [(epoch_ms(r["period_start"]), r.get("value"), r.get("peer_avg")) for r in want]
    # The SQL Superset ran: rxcube's pay-period grain inside Superset's GROUP BY and LIMIT.
    assert "rx_period_start('pay_period'" in result["query"], result["query"]
    assert "LIMIT" in result["query"].upper()
    # Pay periods start on Sundays 14 days apart.
    starts = [datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc) for ms, _, _ in got]
    assert all(s.weekday() == 6 for s in starts)
    assert all((b - a).days % 14 == 0 for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("grain,duration", [("month", "P1M"), ("week", "P1W")])
def test_time_grains_equal_the_cube(api, dataset, rxcube_server, grain, duration):
    """Superset's month and week grains (date_trunc over period_start) land on the cube's own
    periods: the day grain's rows bucketed by Superset hold the cube's month and week starts."""
    query = {
        "columns": [{"columnType": "BASE_AXIS", "sqlExpression": "period_start", "label": "period_start",
                     "expressionType": "SQL", "timeGrain": duration}],
        "metrics": [metric("COUNT(*)", "days")],
        "filters": where({"level": "pharmacy", "grain": "day", "metric": "on_time_pct", "node": NODE}),
        "extras": {"time_grain_sqla": duration},
        "row_limit": 10000,
    }
    got = sorted(r["period_start"] for r in chart_data(api, dataset, query)["data"])
    want = rxcube_rows(rxcube_server.warehouse,
                       "SELECT CAST(period_start AS VARCHAR) AS period_start FROM cube.metrics "
                       f"WHERE level = 'pharmacy' AND grain = '{grain}' AND metric = 'on_time_pct' "
                       f"AND node = '{NODE}' ORDER BY period_start")
    assert got == [epoch_ms(r["period_start"]) for r in want]


def test_scoped_database_sees_only_the_scope(api, dataset, rxcube_server):
    """pat's database in Superset reaches pharmacy 423 only: another pharmacy's slice is empty
    (the administrator's is not), and the distinct pharmacies are pat's own."""
    other = "00423"
    assert rxcube_rows(rxcube_server.warehouse,
                       f"SELECT count(*) AS n FROM cube.metrics WHERE level = 'pharmacy' AND node = '{other}'")[0]["n"] > 0
    assert chart_data(api, dataset, pay_period_query(other))["data"] == []
    query = {"columns": ["level", "node"], "metrics": [metric("COUNT(*)", "n")], "filters": [],
             "orderby": [], "row_limit": 1000}
    got = {(r["level"], r["node"]) for r in chart_data(api, dataset, query)["data"]}
    assert got == {("pharmacy", NODE)}, got
    # The values a filter offers (Superset's SELECT DISTINCT ... LIMIT).
    for column, values in {"node": [NODE], "level": ["pharmacy"]}.items():
        got = api.call("GET", f"/api/v1/datasource/table/{dataset}/column/{column}/values/")["result"]
        assert got == values, (column, got)


def test_chart_in_a_browser(api, dataset, superset, browser):
    """The saved chart opens in headless Chromium after signing in through Superset's login
    form; a screenshot is saved."""
    query = pay_period_query(NODE)
    form_data = {
        "datasource": f"{dataset}__table", "viz_type": "echarts_timeseries_line",
        "x_axis": "period_start", "time_grain_sqla": PAY_PERIOD,
        "metrics": [ON_TIME, PEER_AVG], "groupby": [],
        "adhoc_filters": [{"expressionType": "SIMPLE", "subject": col, "operator": "==", "comparator": val,
                           "clause": "WHERE"} for col, val in {**SLICE, "node": NODE}.items()],
        "row_limit": 10000, "show_legend": True, "markerEnabled": True, "y_axis_format": ".1f",
        "x_axis_title": "pay period", "x_axis_time_format": "%Y-%m-%d",
        "truncateYAxis": True,
    }
    chart = api.call("POST", "/api/v1/chart/", {
        "slice_name": f"On-time % by pay period, pharmacy {NODE}, with its peer average",
        "viz_type": "echarts_timeseries_line", "datasource_id": dataset, "datasource_type": "table",
        "params": json.dumps(form_data),
        "query_context": json.dumps({"datasource": {"id": dataset, "type": "table"}, "queries": [query],
                                     "form_data": form_data, "result_format": "json", "result_type": "full"}),
    })["id"]

    os.makedirs(ARTIFACTS, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # Superset's pages load several MB of script: generous waits on a busy 2-core machine.
    page.set_default_timeout(180_000)
    page.set_default_navigation_timeout(180_000)
    try:
        # Superset's page would fetch a telemetry pixel from the internet: only loopback here.
        page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"), lambda route: route.abort())
        page.goto(superset.url + "/login/", wait_until="domcontentloaded")
        page.fill("[data-test=username-input]", ADMIN)
        page.fill("[data-test=password-input]", ADMIN_PASSWORD)
        page.click("[data-test=login-button]")
        page.wait_for_url(lambda url: "/login" not in url, wait_until="domcontentloaded")
        page.goto(f"{superset.url}/explore/?slice_id={chart}", wait_until="domcontentloaded")
        # The chart is drawn (ECharts' canvas) from the rows of the chart data.
        page.wait_for_selector(".chart-container canvas, [data-test=chart-container] canvas")
        rows = len(chart_data(api, dataset, query)["data"])
        page.wait_for_selector(f"text={rows} rows")
        page.wait_for_timeout(2500)  # the line animation
        page.screenshot(path=os.path.join(ARTIFACTS, "superset-chart.png"))
    finally:
        page.close()


def test_sql_lab_and_a_virtual_dataset(api, database, rxcube_server):
    """SQL Lab's statements (Superset adds its LIMIT) and a virtual dataset (Superset wraps its
    SQL in a subquery with its own time grain, GROUP BY and LIMIT) reach pat's scope only."""
    def sql_lab(sql):
        got = api.call("POST", "/api/v1/sqllab/execute/",
                       {"database_id": database, "sql": sql, "schema": "cube", "runAsync": False, "queryLimit": 1000})
        assert got["status"] == "success", got
        assert "LIMIT" in got["query"]["executedSql"].upper(), got["query"]["executedSql"]
        return got

    got = sql_lab("SELECT level, node, count(*) AS n FROM cube.metrics GROUP BY level, node")
    assert {(r["level"], r["node"]) for r in got["data"]} == {("pharmacy", NODE)}, got["data"]
    assert sql_lab("SELECT count(*) AS n FROM public.rx_fills WHERE pharmacy_id = '00423'")["data"] == [{"n": 0}]
    got = sql_lab("SELECT period_start, value FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' "
                  "AND metric = 'on_time_pct'")
    types = {c["name"]: (c["type"], c["is_dttm"]) for c in got["columns"]}
    assert types == {"period_start": ("TIMESTAMP", True), "value": ("FLOAT", False)}, types

    sql = ("SELECT node, period_start, value, peer_avg FROM cube.metrics "
           "WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct'")
    virtual = api.call("POST", "/api/v1/dataset/",
                       {"database": database, "schema": "cube", "table_name": "on_time_by_pay_period", "sql": sql})["id"]
    query = {**pay_period_query(NODE), "filters": []}
    result = chart_data(api, virtual, query)
    assert "virtual_table" in result["query"], result["query"]
    got = sorted((r["period_start"], r["on_time_pct"], r["peer_avg"]) for r in result["data"])
    want = rxcube_rows(rxcube_server.warehouse,
                       f"SELECT CAST(period_start AS VARCHAR) AS period_start, value, peer_avg FROM ({sql}) "
                       f"WHERE node = '{NODE}' ORDER BY period_start")
    assert len(want) >= 5
    assert got == [(epoch_ms(r["period_start"]), r.get("value"), r.get("peer_avg")) for r in want]
