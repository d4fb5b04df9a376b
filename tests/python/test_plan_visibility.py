"""What `EXPLAIN` tells whom, against the real `rxcube serve` with real clients (ADBC).

A physical plan tells what a scope does not: `EXPLAIN ANALYZE` counts the rows of a relation
before the scope's filter (a binary search on `value > t` read every pharmacy's yearly labor cost
off `output_rows`), plans name the warehouse's files, carry statistics, and say when the shared
result cache held a result another user computed. So:
- users who are not administrators (a scope below the division, or no audit privilege) are
  refused `EXPLAIN ANALYZE` in every spelling, audited as `denied`;
- their `EXPLAIN` (VERBOSE, FORMAT ...) is the logical plan of the statement only: no statistics,
  row counts, metrics, files or warehouse path, no word on the cache, the same text whatever
  other users ran;
- administrators (division scope and the audit privilege) see plans in full, as before.

The server runs on a freshly landed demo warehouse with the demo users (password `demo`),
`wanda`, a member of `administrators` whose scope is a region (so not an administrator), and
`pat2`, a second manager of pat's pharmacy (same scope, so the same cached results).
"""

import os
import re
import signal
import time
import uuid

import adbc_driver_flightsql.dbapi as adbc
import pytest

from conftest import rxcube, rxcube_json, users
from test_flight_sql import Server, adbc_connect, fetch, rows

PASSWORD = "demo"
REFUSAL = ("EXPLAIN ANALYZE is for administrators: its row counts and timings describe rows "
           "outside your scope and what other users ran; use EXPLAIN, which shows the plan of "
           "your statement")
# The attack: a filter's selectivity before the scope's filter.
PROBE = ("SELECT node, value FROM cube.metrics WHERE grain = 'year' AND metric = 'labor_cost' "
         "AND value > 1000")
NOT_ADMINISTRATORS = ["pat", "lena", "rita", "dana", "wanda"]
EXPLAINS = ["EXPLAIN", "EXPLAIN VERBOSE", "EXPLAIN FORMAT indent", "EXPLAIN FORMAT tree",
            "EXPLAIN FORMAT pgjson", "EXPLAIN FORMAT graphviz", "explain  verbose"]
ANALYZES = ["EXPLAIN ANALYZE", "explain analyze", "EXPLAIN ANALYZE VERBOSE", "EXPLAIN ANALYZE FORMAT indent",
            "EXPLAIN ANALYZE FORMAT pgjson", "EXPLAIN (ANALYZE)", "EXPLAIN (ANALYZE true, VERBOSE)",
            "/* a comment */ EXPLAIN\n  ANALYZE", "EXPLAIN EXPLAIN ANALYZE"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("plans") / "demo")
    rxcube("demo", "--warehouse", path)
    users(path, "add", "wanda", "--scope", "region:West", "--group", "administrators", "--password-stdin",
          password=PASSWORD + "\n")
    users(path, "add", "pat2", "--scope", "pharmacy:423", "--password-stdin", password=PASSWORD + "\n")
    server = Server(path)
    yield server
    server.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def login(served):
    opened = []

    def make(user):
        conn = adbc_connect(served.uri, user, PASSWORD)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture(scope="module")
def pharmacies(served):
    return [str(r["pharmacy_id"]) for r in
            rxcube_json(served.warehouse, "SELECT DISTINCT pharmacy_id FROM pharmacies ORDER BY pharmacy_id")]


def locations(served):
    """The warehouse's location as plans spell it: the local path, and as object stores print
    it (without the leading /)."""
    real = os.path.realpath(served.warehouse).rstrip("/")
    assert len(real) > 5, real
    return sorted({real, real.lstrip("/"), served.warehouse.rstrip("/"), served.warehouse.strip("/")})


def plan_rows(conn, sql, params=None):
    got = fetch(conn, sql, params)
    assert got.schema.names == ["plan_type", "plan"], got.schema
    return [(r["plan_type"], r["plan"]) for r in got.to_pylist()]


def text_of(plan):
    return "\n".join(f"{t}\n{p}" for t, p in plan)


def refusal(conn, sql, params=None):
    with pytest.raises(adbc.Error) as err:
        fetch(conn, sql, params)
    return str(err.value)


def served_by(conn, sql):
    """What served the result of `sql` (its `rxcube.served_by` metadata; may be empty)."""
    metadata = fetch(conn, sql).schema.metadata or {}
    return metadata.get(b"rxcube.served_by", b"").decode()


def assert_plain(served, plan, what, others=()):
    """`plan` (rows of plan_type, plan) holds a logical plan and nothing a physical plan adds."""
    text = text_of(plan)
    assert plan, what
    assert {t for t, _ in plan} <= {"logical_plan", "initial_logical_plan"}, f"{what}: {[t for t, _ in plan]}"
    assert any(t == "logical_plan" for t, _ in plan), what
    assert "TableScan" in text or "Node Type" in text, f"{what}: no logical plan:\n{text}"
    lowered = text.lower()
    for word in ("output_rows", "statistics", "rows=", "bytes=", "elapsed", "metrics=[", "file_groups",
                 "parquet", "datasourceexec", "cubescanexec", "physical", "exec:", "cache", "rollup",
                 "served by", "partition_sizes", "file://"):
        assert word not in lowered, f"{what} shows {word!r}:\n{text}"
    assert not re.search(r"(?i)\brows\s*[=:]\s*[~\d]", text), f"{what} shows row counts:\n{text}"
    for path in locations(served):
        assert path not in text, f"{what} shows the warehouse path {path!r}:\n{text}"
    for other in others:
        assert f'"{other}"' not in text and f"'{other}'" not in text and f"({other})" not in text, \
            f"{what} names pharmacy {other}, outside the scope:\n{text}"


# ---------------------------------------------------------------------------------------------
# EXPLAIN ANALYZE.

@pytest.mark.parametrize("user", NOT_ADMINISTRATORS)
def test_explain_analyze_is_refused_to_users_who_are_not_administrators(login, user):
    conn = login(user)
    for explain in ANALYZES:
        message = refusal(conn, f"{explain} {PROBE}")
        assert REFUSAL in message, f"{explain}: {message}"
    # Bound parameters and prepared statements too (ADBC prepares every statement with them).
    message = refusal(conn, "EXPLAIN ANALYZE SELECT node, value FROM cube.metrics WHERE grain = 'year' "
                            "AND metric = 'labor_cost' AND value > ?", (1000.0,))
    assert REFUSAL in message, message
    # The same session goes on: EXPLAIN works.
    assert plan_rows(conn, f"EXPLAIN {PROBE}")


def test_refused_explain_analyze_is_audited(login):
    marker = f"plan-probe-{uuid.uuid4().hex[:8]}"
    sql = f"EXPLAIN ANALYZE SELECT node, value, '{marker}' AS m FROM cube.metrics WHERE grain = 'year'"
    refusal(login("pat"), sql)
    admin = login("admin")
    deadline = time.monotonic() + 20
    while True:
        # (The administrator's own query names the marker too.)
        found = rows(admin, f"SELECT user_name, event, sql, detail FROM system.audit_log "
                            f"WHERE user_name = 'pat' AND sql LIKE '%{marker}%'")
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert found == [{"user_name": "pat", "event": "denied", "sql": sql, "detail": REFUSAL}], found


# ---------------------------------------------------------------------------------------------
# EXPLAIN.

@pytest.mark.parametrize("user", ["pat", "lena", "dana", "wanda"])
def test_explain_shows_the_logical_plan_only(served, login, pharmacies, user):
    conn = login(user)
    scope = {"pat": ["423"], "lena": None, "dana": None, "wanda": None}[user]
    others = [p for p in pharmacies if p not in scope] if scope else []
    queries = [
        PROBE,
        "SELECT metric, value, peer_avg, peer_rank FROM cube.metrics WHERE level = 'pharmacy' "
        "AND grain = 'month' AND metric = 'on_time_pct'",
        "SELECT e.name, e.ssn, count(*) AS n FROM employees e JOIN payroll p ON p.employee_id = e.employee_id "
        "GROUP BY e.name, e.ssn",
        "SELECT pharmacy_id, count(*) AS n FROM rx_fills WHERE pharmacy_id NOT IN ('423') GROUP BY pharmacy_id",
    ]
    for sql in queries:
        for explain in EXPLAINS:
            plan = plan_rows(conn, f"{explain} {sql}")
            assert_plain(served, plan, f"{user}: {explain} {sql}", others)
            verbose = "verbose" in explain.lower()
            assert [t for t, _ in plan] == (["initial_logical_plan", "logical_plan"] if verbose else ["logical_plan"])


def test_explain_is_the_logical_plan_of_the_statement(login):
    """Pat's plan of the probe is exactly the administrator's logical plan: the scope is applied
    inside the relation, so the plan shows the statement and nothing of any scope."""
    admin = dict(plan_rows(login("admin"), f"EXPLAIN {PROBE}"))
    pat = plan_rows(login("pat"), f"EXPLAIN {PROBE}")
    assert pat == [("logical_plan", admin["logical_plan"])], (pat, admin)
    assert "cube.metrics.value > Float64(1000)" in pat[0][1], pat


def test_explain_binds_parameters(login):
    pat = login("pat")
    sql = ("EXPLAIN SELECT node, value FROM cube.metrics WHERE grain = 'year' AND metric = 'labor_cost' "
           "AND value > ?")
    assert plan_rows(pat, sql, (1000.0,)) == plan_rows(pat, f"EXPLAIN {PROBE}")


def test_explain_does_not_tell_what_other_users_ran(login):
    """The result cache is shared by every session: after the administrator ran a query, its
    plans say `cached result`, and after pat2 (pat's scope) ran it, pat's query is answered from
    the cache. Pat's EXPLAIN, in every form, and its results' metadata say the same before and
    after."""
    sql = ("SELECT node, metric, value, peer_avg, peer_rank FROM cube.metrics WHERE level = 'pharmacy' "
           "AND grain = 'pay_period' AND metric = 'labor_cost_per_rx'")
    pat, pat2, admin = login("pat"), login("pat2"), login("admin")
    forms = ["EXPLAIN", "EXPLAIN VERBOSE", "EXPLAIN FORMAT pgjson", "EXPLAIN FORMAT graphviz"]
    before = {f: plan_rows(pat, f"{f} {sql}") for f in forms}
    admin_before = text_of(plan_rows(admin, f"EXPLAIN {sql}"))
    assert "cached result" not in admin_before, "the query ran before the test: pick another"
    rows(admin, sql)
    rows(pat2, sql)
    admin_after = text_of(plan_rows(admin, f"EXPLAIN {sql}"))
    assert "cached result" in admin_after, admin_after  # the cache holds it now
    assert "cached result" in served_by(admin, sql)
    after = {f: plan_rows(pat, f"{f} {sql}") for f in forms}
    assert after == before
    for f in forms:
        assert "cache" not in text_of(after[f]).lower(), after[f]
    # Pat's results carry what served them, never the cache.
    assert "cache" not in served_by(pat, sql)
    assert "cache" not in served_by(pat2, sql)


def test_the_result_cache_is_partitioned_by_scope(login):
    """A result computed for one scope answers no other: after lena (local_area:Chicago) ran a
    query, the administrator's plan of the same query is not served from the cache (so neither
    its presence nor its speed tells anyone what lena ran); after the administrator ran it, it is."""
    sql = ("SELECT node, metric, value, peer_avg, peer_rank FROM cube.metrics WHERE level = 'pharmacy' "
           "AND grain = 'quarter' AND metric = 'otc_sales_per_rx'")
    lena, admin = login("lena"), login("admin")
    assert "cached result" not in text_of(plan_rows(admin, f"EXPLAIN {sql}")), "the query ran before the test"
    assert rows(lena, sql), "lena's scope has quarters of otc sales"
    assert "cached result" not in text_of(plan_rows(admin, f"EXPLAIN {sql}"))
    rows(admin, sql)
    assert "cached result" in text_of(plan_rows(admin, f"EXPLAIN {sql}"))


# ---------------------------------------------------------------------------------------------
# Administrators.

def test_administrators_see_plans_in_full(served, login):
    admin = login("admin")
    probe = PROBE.replace("1000", "1234.5")  # a query nobody ran: its files are read
    explained = dict(plan_rows(admin, f"EXPLAIN {probe}"))
    assert set(explained) == {"logical_plan", "physical_plan"}, explained.keys()
    physical = explained["physical_plan"]
    assert "CubeScanExec: cube.metrics served by rollup" in physical, physical[:2000]
    assert "file_groups=" in physical, physical[:2000]
    assert os.path.realpath(served.warehouse).lstrip("/") in physical, physical[:2000]
    verbose = [t for t, _ in plan_rows(admin, f"EXPLAIN VERBOSE {probe}")]
    assert "physical_plan" in verbose and "initial_physical_plan" in verbose, verbose
    analyzed = plan_rows(admin, f"EXPLAIN ANALYZE {probe}")
    assert [t for t, _ in analyzed] == ["Plan with Metrics"], analyzed
    assert re.search(r"output_rows=\d", analyzed[0][1]), analyzed[0][1][:2000]
    assert "elapsed_compute=" in analyzed[0][1], analyzed[0][1][:2000]
