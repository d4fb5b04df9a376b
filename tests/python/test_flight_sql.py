"""`rxcube serve` driven by the real Flight SQL clients, as the demo chain's users.

One server (started once for the module on a freshly landed demo warehouse) is queried by:
- the ADBC Flight SQL driver (the Go driver behind pandas/Polars, R and C): queries, prepared
  statements with bound `?` parameters, the catalog calls, large streamed results;
- flightsql-dbapi and its SQLAlchemy dialect (what SQLAlchemy-based BI tools such as Superset use);
- pyarrow.flight for the wire-level checks: tokens, tickets, expiry.

Every expected answer comes from the local administrator (`rxcube sql --format json` on the same
warehouse) with the user's scope applied by the test, never from the server: a scoped user must
get exactly the rows an administrator gets for that scope, and nothing else, however the SQL is
written. Scopes are "as was" (`Scope` below works them out from the pharmacies table): after a
re-org a pharmacy's facts stay with the node it was under when they happened. The demo users
(password `demo`): admin (division, administrators), dana (division, analysts), rita (region
West), sam (service area Rockies), lena (local area Chicago), pat (pharmacy 423; pharmacy 00423
is another store). The demo's re-orgs: 00423 moved from Desert (West) to Rockies (Central) and
01056 from Milwaukee into Chicago, both on 2024-01-31.
"""

import calendar
import datetime
import decimal
import functools
import glob
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import zoneinfo

import adbc_driver_flightsql.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest
from flightsql import FlightSQLCallOptions, FlightSQLClient
from flightsql import connect as flightsql_connect
from flightsql import flightsql_pb2 as pb
from flightsql.client import flight_descriptor

from conftest import rxcube, rxcube_bin, rxcube_json, users

PASSWORD = "demo"
LEVELS = ["pharmacy", "local_area", "service_area", "region", "division"]
DEMO_SCOPES = {
    "admin": ("division", "ALL"),
    "dana": ("division", "ALL"),
    "rita": ("region", "West"),
    "sam": ("service_area", "Rockies"),
    "lena": ("local_area", "Chicago"),
    "pat": ("pharmacy", "423"),
}
MASK = "***-**-****"
# The contract tables and the pharmacy column of their rows (None: not a pharmacy's).
SCOPED_BY = {
    "pharmacies": "pharmacy_id",
    "peer_groups": "pharmacy_id",
    "payroll": "pharmacy_id",
    "pos": "pharmacy_id",
    "rx_fills": "pharmacy_id",
    "surveys": "pharmacy_id",
    "employees": "home_pharmacy_id",
    "targets": None,
}
ERRORS = (adbc.Error, flight.FlightError, pa.ArrowException)


# ---------------------------------------------------------------------------------------------
# The server process.

class Server:
    """`rxcube serve` on a warehouse, listening on an ephemeral loopback port."""

    def __init__(self, warehouse, *extra, timeout=60.0):
        self.warehouse = warehouse
        # Beside a local warehouse; in the temporary folder for one on an object store.
        base = warehouse if "://" not in warehouse else os.path.join(tempfile.gettempdir(), "rxcube-serve")
        self.stderr_path = f"{base}.serve-{uuid.uuid4().hex[:8]}.stderr"
        self._stderr = open(self.stderr_path, "w+")
        self.proc = subprocess.Popen(
            [rxcube_bin(), "serve", "--warehouse", warehouse, "--flight", "127.0.0.1:0",
             # The web pages on a free port too (not the default 8080), unless told otherwise.
             *([] if {"--http", "--no-http"} & set(extra) else ["--http", "127.0.0.1:0"]), *extra],
            stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL, text=True)
        self.stdout_lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"rxcube serve printed no listening line in {timeout:.0f} s; stderr:\n{self.stderr()}")
            try:
                line = self.stdout_lines.get(timeout=min(left, 0.25))
            except queue.Empty:
                if self.proc.poll() is not None:
                    pytest.fail(f"rxcube serve exited with {self.proc.returncode} before listening; "
                                f"stderr:\n{self.stderr()}")
                continue
            if line is None:
                code = self.proc.wait()
                pytest.fail(f"rxcube serve closed stdout (exit {code}) before listening; stderr:\n{self.stderr()}")
            m = re.fullmatch(r"listening on (grpc(?:\+tls)?)://127\.0\.0\.1:(\d+)", line.rstrip("\n"))
            if not m:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"rxcube serve printed {line!r} before its listening line; stderr:\n{self.stderr()}")
            self.scheme, self.port = m.group(1), int(m.group(2))
            self.host = "127.0.0.1"
            self.uri = f"{self.scheme}://{self.host}:{self.port}"
            assert self.port > 0
            return

    def _pump(self):
        for line in self.proc.stdout:
            self.stdout_lines.put(line)
        self.stdout_lines.put(None)

    def stderr(self):
        self._stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()[-6000:]

    def stop(self, sig=signal.SIGTERM):
        """Stops the server with `sig` and checks that it ends gracefully (exit code 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"rxcube serve did not stop within 30 s of {sig.name}; stderr:\n{self.stderr()}")
        code = self.proc.returncode
        self._stderr.close()
        assert code == 0, f"rxcube serve exited with {code} after {sig.name}; stderr:\n{self.stderr()}"


def copy_warehouse(source, dest):
    shutil.copytree(source, dest)
    return str(dest)


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    """The demo chain and its users, landed once for this module and never served itself:
    every server below runs on a copy, so no two servers ever share a warehouse."""
    path = str(tmp_path_factory.mktemp("flight") / "demo")
    rxcube("demo", "--warehouse", path)
    return path


@pytest.fixture(scope="module")
def served(landed, tmp_path_factory):
    wh = copy_warehouse(landed, tmp_path_factory.mktemp("served") / "warehouse")
    server = Server(wh)
    yield server
    server.stop(signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# Clients.

def adbc_connect(uri, user, password=PASSWORD, **db_kwargs):
    return adbc.connect(uri, db_kwargs={"username": user, "password": password, **db_kwargs}, autocommit=True)


@pytest.fixture(scope="module")
def login(served):
    """A new ADBC connection to the module's server as a user (closed before the server stops)."""
    opened = []

    def make(user, password=PASSWORD):
        conn = adbc_connect(served.uri, user, password)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        try:
            conn.close()
        except Exception:
            pass


@pytest.fixture(scope="module")
def as_user(login):
    """One shared ADBC connection per user."""
    return functools.cache(login)


def fetch(conn, sql, params=None):
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()
    finally:
        cur.close()


def rows(conn, sql, params=None):
    return fetch(conn, sql, params).to_pylist()


def flight_login(server, user, password=PASSWORD):
    """A pyarrow Flight client and call options carrying the bearer token of a fresh login."""
    client = flight.FlightClient(server.uri)
    header = client.authenticate_basic_token(user, password)
    assert header[0].lower() == b"authorization" and header[1].startswith(b"Bearer "), header
    return client, flight.FlightCallOptions(headers=[header])


def statement(sql):
    return flight_descriptor(pb.CommandStatementQuery(query=sql))


# ---------------------------------------------------------------------------------------------
# What the administrator sees, and the scopes.

_admin_cache = {}


def admin(wh, sql):
    """The local administrator's rows for `sql` (cached: the data never changes here)."""
    key = (wh, sql)
    if key not in _admin_cache:
        _admin_cache[key] = rxcube_json(wh, sql)
    return [dict(r) for r in _admin_cache[key]]


# The time zone of a pharmacy whose latest row names none, and the instant column of each fact table.
DEFAULT_ZONE = "America/Los_Angeles"
EVENT_TIME = {"rx_fills": "filled_at", "pos": "sold_at", "surveys": "responded_at", "payroll": "shift_start"}
# The spans of a node in the scope at any time.
ALWAYS = ((None, None),)


def merged_spans(spans):
    """Local date spans [from, to) (to None: open) sorted, overlapping or touching ones joined."""
    out = []
    for start, end in sorted(spans, key=lambda s: s[0]):
        if out and (out[-1][1] is None or start <= out[-1][1]):
            out[-1] = (out[-1][0], None if out[-1][1] is None or end is None else max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def add_months(t, months):
    """`t` plus whole months, the day clamped to the month's last (as interval arithmetic does)."""
    y, m = divmod(t.month - 1 + months, 12)
    y, m = t.year + y, m + 1
    return t.replace(year=y, month=m, day=min(t.day, calendar.monthrange(y, m)[1]))


def period_end(start, grain):
    """The end of the period of `grain` starting at local `start`; None for an unknown grain."""
    fixed = {"hour": datetime.timedelta(hours=1), "day": datetime.timedelta(days=1),
             "week": datetime.timedelta(days=7), "pay_period": datetime.timedelta(days=14)}
    months = {"month": 1, "quarter": 3, "year": 12}
    if grain in fixed:
        return start + fixed[grain]
    if grain in months:
        return add_months(start, months[grain])
    return None


def utc_midnight(day, zone):
    """The UTC instant of local midnight of `day` in `zone` (the earlier one where it repeats), as
    SQL text a timestamp column compares with."""
    instant = datetime.datetime.combine(day, datetime.time(), tzinfo=zone).astimezone(datetime.timezone.utc)
    return instant.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def quoted(values):
    return ", ".join(f"'{v}'" for v in values)


class Scope:
    """What a user at (level, node) may see, "as was", worked out here from the administrator's
    pharmacies table (not by rxcube):

    - a pharmacy is in the scope for the local dates [valid_from, valid_to) of its rows that place
      it under the node (merged); if those are all of its rows' dates, at any time ("always");
    - an area or region node below the scope's is in it for the dates of the rows placing it
      (with a pharmacy) under the node; the scope's own node always;
    - raw facts are in it when their pharmacy is always, or their event instant lies in a span,
      from local midnight (in the pharmacy's zone: that of its latest row) to local midnight;
      effective-dated rows when they overlap a span; cube rows when their whole period does;
    - employees when their home pharmacy's latest row is under the node; the pharmacies rows
      that themselves place a pharmacy under the node; every target.
    """

    def __init__(self, org, level, node):
        self.level, self.node = level, node
        rows = [dict(r, valid_from=datetime.date.fromisoformat(r["valid_from"]),
                     valid_to=datetime.date.fromisoformat(r["valid_to"]) if r.get("valid_to") else None,
                     pharmacy_id=str(r["pharmacy_id"])) for r in org]

        def under(r):
            if level == "division":
                return True
            return (r["pharmacy_id"] if level == "pharmacy" else r.get(level)) == node

        placed = [r for r in rows if under(r)]
        assert placed, (level, node)
        top = LEVELS.index(level)
        spans = {lvl: {} for lvl in LEVELS[:top]}
        for r in placed:
            for lvl in LEVELS[:top]:
                key = r["pharmacy_id"] if lvl == "pharmacy" else r[lvl]
                spans[lvl].setdefault(key, []).append((r["valid_from"], r["valid_to"]))
        lifetime = {}
        for r in rows:
            lifetime.setdefault(r["pharmacy_id"], []).append((r["valid_from"], r["valid_to"]))
        self.spans = {lvl: {k: merged_spans(s) for k, s in nodes.items()} for lvl, nodes in spans.items()}
        self.spans[level] = {node: ALWAYS}
        for pharmacy, s in self.spans.get("pharmacy", {}).items():
            if s == merged_spans(lifetime[pharmacy]):
                self.spans["pharmacy"][pharmacy] = ALWAYS
        latest = {}
        for r in rows:
            if r["pharmacy_id"] not in latest or latest[r["pharmacy_id"]]["valid_from"] < r["valid_from"]:
                latest[r["pharmacy_id"]] = r
        self.zones = {p: zoneinfo.ZoneInfo(r.get("timezone") or DEFAULT_ZONE) for p, r in latest.items()}
        # Every pharmacy in the scope at some time, and those whose employees are in it.
        self.pharmacies = sorted(self.spans["pharmacy"])
        self.current = sorted(p for p, r in latest.items() if under(r))

    @property
    def everything(self):
        return self.level == "division"

    def always(self):
        return sorted(p for p, s in self.spans["pharmacy"].items() if s == ALWAYS)

    def moved(self):
        """{pharmacy: spans} of the pharmacies in the scope only for some dates."""
        return {p: s for p, s in sorted(self.spans["pharmacy"].items()) if s != ALWAYS}

    def _per_pharmacy(self, pharmacy, during):
        """`pharmacy` always in scope, or in it `during(spans, zone)`."""
        if self.everything:
            return "TRUE"
        parts = [f"{pharmacy} IN ({quoted(self.always())})"] if self.always() else []
        for p, spans in self.moved().items():
            parts.append(f"({pharmacy} = '{p}' AND ({during(spans, self.zones[p])}))")
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"

    def fact_where(self, pharmacy, time):
        """Raw facts by their event instant `time`."""
        def during(spans, zone):
            return " OR ".join(
                "(" + " AND ".join([f"{time} >= '{utc_midnight(start, zone)}'"]
                                   + ([f"{time} < '{utc_midnight(end, zone)}'"] if end else [])) + ")"
                for start, end in spans)
        return self._per_pharmacy(pharmacy, during)

    def dated_where(self, pharmacy, valid_from="valid_from", valid_to="valid_to"):
        """Effective-dated rows [valid_from, valid_to) overlapping a span."""
        def during(spans, _zone):
            return " OR ".join(
                "(" + " AND ".join(([f"{valid_from} < DATE '{end}'"] if end else [])
                                   + [f"({valid_to} IS NULL OR {valid_to} > DATE '{start}')"]) + ")"
                for start, end in spans)
        return self._per_pharmacy(pharmacy, during)

    def where(self, table):
        """The administrator's predicate for the rows of contract table `table` in the scope."""
        if self.everything or table == "targets":
            return "TRUE"
        if table == "pharmacies":
            return f"{'pharmacy_id' if self.level == 'pharmacy' else self.level} = '{self.node}'"
        if table == "employees":
            return f"home_pharmacy_id IN ({quoted(self.current)})" if self.current else "FALSE"
        if table == "peer_groups":
            return self.dated_where("pharmacy_id")
        return self.fact_where("pharmacy_id", EVENT_TIME[table])

    def holds(self, level, node, period_start, grain):
        """Whether the cube row of `node` at `level` for the period of `grain` from local
        `period_start` (ISO text) is in the scope: the whole period lies in a span."""
        if self.everything:
            return True
        spans = self.spans.get(level, {}).get(str(node))
        if spans is None:
            return False
        if spans == ALWAYS:
            return True
        if period_start is None:
            return False
        start = datetime.datetime.fromisoformat(period_start)
        end = period_end(start, grain)
        if end is None:
            return False
        midnight = lambda d: datetime.datetime.combine(d, datetime.time())  # noqa: E731
        return any(start >= midnight(s) and (e is None or end <= midnight(e)) for s, e in spans)


@pytest.fixture(scope="module")
def scope_of(served):
    org = admin(served.warehouse, "SELECT pharmacy_id, local_area, service_area, region, valid_from, valid_to, "
                                  "timezone FROM pharmacies")
    return functools.cache(lambda user: Scope(org, *DEMO_SCOPES[user]))


# ---------------------------------------------------------------------------------------------
# Comparing answers.

def same_value(got, want):
    """A value as an Arrow client reads it against the same value in rxcube's JSON output."""
    if got is None or want is None:
        return got is None and want is None
    if isinstance(got, decimal.Decimal):
        got = float(got)
    if isinstance(got, datetime.datetime):
        w = datetime.datetime.fromisoformat(want)
        return got == w if (got.tzinfo is None) == (w.tzinfo is None) else False
    if isinstance(got, datetime.date):
        return got.isoformat() == want
    if isinstance(got, bool) or isinstance(want, bool):
        return got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        if isinstance(got, int) and isinstance(want, int):
            return got == want
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return got == want


def assert_same_rows(got, want, what=""):
    """Row lists equal in order; JSON leaves NULL columns out, so a missing key is NULL."""
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}\ngot {got[:5]}\nexpected {want[:5]}"
    for i, (g, w) in enumerate(zip(got, want)):
        extra = set(w) - set(g)
        assert not extra, f"{what}: columns {extra} missing from the served row {g}"
        for col, value in g.items():
            if not same_value(value, w.get(col)):
                raise AssertionError(f"{what}: row {i}, column {col}: got {value!r}, expected {w.get(col)!r}\n"
                                     f"got      {g}\nexpected {w}")


def view_types(schema):
    """The fields (by path) whose type is a view type, at any depth."""
    found = []

    def walk(path, t):
        if pa.types.is_string_view(t) or pa.types.is_binary_view(t) or pa.types.is_list_view(t) \
                or pa.types.is_large_list_view(t):
            found.append((path, str(t)))
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                walk(f"{path}.{t.field(i).name}", t.field(i).type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            walk(f"{path}[]", t.value_type)
        elif pa.types.is_map(t):
            walk(f"{path}.key", t.key_type)
            walk(f"{path}.value", t.item_type)

    for field in schema:
        walk(field.name, field.type)
    return found


def expect_refused(conn, sql, params=None, naming=None):
    """`sql` fails for this user; the error names `naming` when given."""
    with pytest.raises(adbc.Error) as err:
        fetch(conn, sql, params)
    if naming:
        assert naming in str(err.value), f"{sql!r}: the error does not name {naming!r}: {err.value}"
    return err.value


# ---------------------------------------------------------------------------------------------
# The server and the ADBC driver.

def test_server_announces_its_port_and_answers(served, as_user):
    assert served.uri == f"grpc://127.0.0.1:{served.port}"
    assert rows(as_user("admin"), "SELECT 1 AS one, 'x' AS s") == [{"one": 1, "s": "x"}]


@pytest.mark.parametrize("user", ["dana", "rita", "sam", "lena", "pat"])
def test_adbc_query_gives_the_scope_of_the_user(served, as_user, scope_of, user):
    sql = ("SELECT pharmacy_id, count(*) AS fills, sum(fill_no) AS fill_nos, min(received_at) AS first_received "
           "FROM rx_fills {where} GROUP BY pharmacy_id ORDER BY pharmacy_id")
    got = rows(as_user(user), sql.format(where=""))
    want = admin(served.warehouse, sql.format(where="WHERE " + scope_of(user).where("rx_fills")))
    assert [r["pharmacy_id"] for r in got] == scope_of(user).pharmacies
    assert_same_rows(got, want, user)


def test_adbc_prepared_statement_binds_parameters(served, login, scope_of):
    conn = login("lena")
    wh = served.warehouse
    cur = conn.cursor()
    try:
        sql = "SELECT employee_id, name, job_class, hired_on FROM employees WHERE home_pharmacy_id = ? ORDER BY employee_id"
        # The same statement executed with one parameter set after another.
        for pharmacy in ("423", "01056", "RX101", "00423", "423"):
            cur.execute(sql, parameters=(pharmacy,))
            got = cur.fetch_arrow_table().to_pylist()
            if pharmacy in ("423", "01056"):
                # Both pharmacies' latest rows are in Chicago (01056 moved there), so their staff is lena's.
                want = admin(wh, sql.replace("?", f"'{pharmacy}'"))
                assert len(want) > 0
            else:
                want = []  # RX101 and 00423 are outside Chicago
            assert_same_rows(got, want, f"home_pharmacy_id = {pharmacy}")

        sql = ("SELECT period_start, metric, value, peer_avg, peer_rank FROM cube.metrics "
               "WHERE level = 'pharmacy' AND grain = 'month' AND node = ? ORDER BY period_start, metric")
        cur.execute(sql, parameters=("01056",))
        got = cur.fetch_arrow_table().to_pylist()
        # 01056 is lena's only from its move into Chicago: the months that lie wholly after it.
        every = admin(wh, sql.replace("?", "'01056'"))
        want = [r for r in every if scope_of("lena").holds("pharmacy", "01056", r["period_start"], "month")]
        assert 0 < len(want) < len(every)
        assert_same_rows(got, want, "node = '01056'")

        sql = "SELECT count(*) AS n, sum(fill_no) AS s FROM rx_fills WHERE pharmacy_id = ? AND fill_no >= ? AND channel = ?"
        cur.execute(sql, parameters=("423", 1, "crp"))
        got = cur.fetch_arrow_table().to_pylist()
        want = admin(wh, "SELECT count(*) AS n, sum(fill_no) AS s FROM rx_fills "
                         "WHERE pharmacy_id = '423' AND fill_no >= 1 AND channel = 'crp'")
        assert want[0]["n"] > 0
        assert_same_rows(got, want, "three parameters")
    finally:
        cur.close()


def objects(conn, **filters):
    """adbc_get_objects flattened: {(catalog, schema): {table: (type, [columns in order])}}."""
    out = {}
    for cat in conn.adbc_get_objects(depth="all", **filters).read_all().to_pylist():
        for sch in cat["catalog_db_schemas"] or []:
            tables = out.setdefault((cat["catalog_name"], sch["db_schema_name"]), {})
            for tab in sch["db_schema_tables"] or []:
                cols = sorted(tab["table_columns"] or [], key=lambda c: c["ordinal_position"])
                tables[tab["table_name"]] = (tab["table_type"], [c["column_name"] for c in cols])
    return out


def admin_tables(wh):
    """{schema: {table: [columns in order]}} as the administrator's information_schema has them."""
    out = {}
    for r in admin(wh, "SELECT table_schema, table_name, column_name, ordinal_position FROM information_schema.columns "
                       "WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name, ordinal_position"):
        out.setdefault(r["table_schema"], {}).setdefault(r["table_name"], []).append(r["column_name"])
    return out


@pytest.mark.parametrize("user", ["dana", "pat"])
def test_adbc_get_objects_lists_what_the_user_may_see(served, as_user, user):
    got = objects(as_user(user))
    assert {cat for cat, _ in got} == {"rxcube"}, sorted(got)
    schemas = {sch for _, sch in got}
    want = admin_tables(served.warehouse)
    for schema in ("public", "cube"):
        assert schema in schemas, sorted(schemas)
        tables = got[("rxcube", schema)]
        assert set(tables) == set(want[schema]), (schema, sorted(tables), sorted(want[schema]))
        for name, (_, columns) in tables.items():
            assert columns == want[schema][name], (schema, name, columns, want[schema][name])
    assert got[("rxcube", "public")]["rx_fills"][0] in ("TABLE", "BASE TABLE"), got[("rxcube", "public")]["rx_fills"]
    if user == "pat":
        assert not schemas & {"rollups", "system"}, sorted(schemas)
    else:
        # Division users see the rollups and the import logs; the audit log only with `audit`.
        assert set(got[("rxcube", "rollups")]) == set(want["rollups"])
        assert set(got[("rxcube", "system")]) == set(want["system"]) - {"audit_log"}


def test_adbc_get_table_schema(served, as_user):
    conn = as_user("pat")
    want = admin_tables(served.warehouse)
    for schema, table in (("public", "employees"), ("public", "rx_fills"), ("cube", "metrics")):
        got = conn.adbc_get_table_schema(table, db_schema_filter=schema)
        assert got.names == want[schema][table], (schema, table, got)
        assert not view_types(got), (schema, table, got)
        # A query returns the columns and types the catalog announced.
        queried = fetch(conn, f"SELECT * FROM {schema}.{table} LIMIT 0").schema
        assert [(f.name, f.type) for f in queried] == [(f.name, f.type) for f in got], (queried, got)
    with pytest.raises(adbc.Error):
        conn.adbc_get_table_schema("daily", db_schema_filter="rollups")


def test_large_results_stream_in_batches(served, as_user):
    conn = as_user("dana")
    cur = conn.cursor()
    try:
        cur.execute("SELECT * FROM rx_fills")
        batches, n, rx_ids = 0, 0, set()
        for batch in cur.fetch_record_batch():
            batches += 1
            n += batch.num_rows
            rx_ids.update(batch.column("rx_id").to_pylist())
        want = admin(served.warehouse, "SELECT count(*) AS n, count(DISTINCT rx_id) AS s FROM rx_fills")[0]
        assert (n, len(rx_ids)) == (want["n"], want["s"])
        assert batches > 1, batches

        count = 2_000_000
        cur.execute(f"SELECT * FROM range({count})")
        batches, n, total = 0, 0, 0
        for batch in cur.fetch_record_batch():
            batches += 1
            n += batch.num_rows
            total += pc.sum(batch.column(0)).as_py() or 0
        assert n == count
        assert total == count * (count - 1) // 2
        assert batches > 1, batches
    finally:
        cur.close()


def test_result_types_reach_clients_without_view_types(as_user):
    conn = as_user("dana")
    pharmacies = fetch(conn, "SELECT * FROM pharmacies")
    assert not view_types(pharmacies.schema), pharmacies.schema
    assert pharmacies.schema.field("name").type == pa.string()
    fills = fetch(conn, "SELECT * FROM rx_fills LIMIT 5")
    assert not view_types(fills.schema), fills.schema
    assert fills.schema.field("channel").type == pa.string()
    assert fills.schema.field("filled_at").type == pa.timestamp("us", tz="UTC")
    assert fills.schema.field("event_month").type == pa.date32()
    employees = fetch(conn, "SELECT * FROM employees")
    assert employees.schema.field("ssn").type == pa.string()
    assert employees.schema.field("hourly_rate").type == pa.decimal128(18, 2)
    metrics = fetch(conn, "SELECT * FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'month' AND node = 'RX101'")
    assert not view_types(metrics.schema), metrics.schema
    assert metrics.schema.field("period_start").type == pa.timestamp("us")
    assert metrics.schema.field("node").type == pa.string()
    # Strings computed in the query, and in a prepared statement with a parameter.
    cooked = fetch(conn, "SELECT p.name, f.channel, upper(f.channel) AS c FROM pharmacies p JOIN "
                         "(SELECT DISTINCT pharmacy_id, channel FROM rx_fills WHERE channel = ?) f "
                         "ON p.pharmacy_id = f.pharmacy_id", ("local",))
    assert cooked.num_rows > 0 and set(cooked.column("c").to_pylist()) == {"LOCAL"}
    assert not view_types(cooked.schema), cooked.schema


# ---------------------------------------------------------------------------------------------
# flightsql-dbapi and its SQLAlchemy dialect.

def test_flightsql_dbapi(served, scope_of):
    client = FlightSQLClient(host=served.host, port=served.port, user="rita", password=PASSWORD, insecure=True)
    conn = flightsql_connect(client)
    try:
        cur = conn.cursor()
        sql = "SELECT pharmacy_id, name, count(*) AS n FROM pharmacies {where} GROUP BY pharmacy_id, name ORDER BY pharmacy_id, name"
        cur.execute(sql.format(where=""))
        got = cur.fetchall()
        assert [d[0] for d in cur.description] == ["pharmacy_id", "name", "n"]
        want = admin(served.warehouse, sql.format(where="WHERE " + scope_of("rita").where("pharmacies")))
        assert [list(r) for r in got] == [[r["pharmacy_id"], r["name"], r["n"]] for r in want]

        schemas = set(conn.flightsql_get_schema_names())
        assert {"public", "cube"} <= schemas and not schemas & {"rollups", "system"}, schemas
        assert set(conn.flightsql_get_table_names("public")) == set(admin_tables(served.warehouse)["public"])
    finally:
        client.close()


def test_sqlalchemy_dialect(served, scope_of):
    import sqlalchemy

    import flightsql.sqlalchemy  # noqa: F401  registers the datafusion+flightsql dialect

    engine = sqlalchemy.create_engine(f"datafusion+flightsql://rita:{PASSWORD}@{served.host}:{served.port}?insecure=True")
    try:
        sql = "SELECT pharmacy_id, count(*) AS n FROM rx_fills {where} GROUP BY pharmacy_id ORDER BY pharmacy_id"
        with engine.connect() as c:
            got = [tuple(r) for r in c.execute(sqlalchemy.text(sql.format(where="")))]
        want = admin(served.warehouse, sql.format(where="WHERE " + scope_of("rita").where("rx_fills")))
        assert got == [(r["pharmacy_id"], r["n"]) for r in want]
        inspector = sqlalchemy.inspect(engine)
        assert set(inspector.get_table_names(schema="public")) == set(admin_tables(served.warehouse)["public"])
        columns = [c["name"] for c in inspector.get_columns("rx_fills", schema="public")]
        assert columns == admin_tables(served.warehouse)["public"]["rx_fills"]
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Score cards and scopes.

def test_score_card_of_a_pharmacy_manager(served, as_user):
    """pat's score card is the administrator's for pharmacy 423, peer lines included (computed over
    every pharmacy of the peer group), and it is served from a rollup."""
    cols = "node, period_start, metric, value, numerator, denominator, peer_group, peer_avg, peer_rank, peer_size"
    sql = f"SELECT {cols} FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'month' {{node}} ORDER BY period_start, metric"
    table = fetch(as_user("pat"), sql.format(node=""))
    want = admin(served.warehouse, sql.format(node="AND node = '423'"))
    assert len(want) > 20
    assert_same_rows(table.to_pylist(), want, "pat's score card")
    assert any(r.get("peer_rank") is not None and r.get("peer_avg") is not None for r in want)
    meta = table.schema.metadata or {}
    assert b"rollup" in meta.get(b"rxcube.served_by", b""), meta

    # Rankings: pat's rows, with the pacesetters named as for everyone.
    sql = ("SELECT node, period_start, metric, ranked_among, value, group_name, rank, group_size, pacesetter_1, "
           "pacesetter_1_value, pacesetter_2, pacesetter_2_value FROM cube.rankings "
           "WHERE level = 'pharmacy' AND grain = 'month' {node} ORDER BY period_start, metric, ranked_among")
    got = rows(as_user("pat"), sql.format(node=""))
    want = admin(served.warehouse, sql.format(node="AND node = '423'"))
    assert len(want) > 0
    assert_same_rows(got, want, "pat's rankings")


@pytest.mark.parametrize("user", ["dana", "rita", "sam", "lena", "pat"])
def test_contract_tables_hold_only_the_scope(served, as_user, scope_of, user):
    scope = scope_of(user)
    for table, column in SCOPED_BY.items():
        key = column or "peer_group"
        sql = "SELECT {key} AS k, count(*) AS n FROM {table} {where} GROUP BY {key} ORDER BY {key}"
        got = rows(as_user(user), sql.format(key=key, table=table, where=""))
        want = admin(served.warehouse, sql.format(key=key, table=table, where="WHERE " + scope.where(table)))
        if column:
            assert {r["k"] for r in want} <= set(scope.pharmacies), (table, want)
        assert_same_rows(got, want, f"{user}: {table}")


CUBE_RELATIONS = [
    # (relation and filter, level when the relation has no level column, grain when it has no
    # grain column)
    ("cube.metrics WHERE grain = 'month'", None, None),
    ("cube.metrics WHERE grain = 'day' AND metric = 'on_time_pct'", None, None),
    ("cube.metrics WHERE grain = 'pay_period' AND metric = 'on_time_pct'", None, None),
    ("cube.rankings WHERE grain = 'month' AND metric = 'on_time_pct'", None, None),
    ("cube.volume WHERE grain = 'day'", None, None),
    ("cube.weekly_trend", None, "week"),
    ("cube.attainment WHERE grain = 'month'", "pharmacy", None),
    ("cube.budget", "pharmacy", "pay_period"),
    ("cube.alerts", None, None),
    ("cube.pharmacy_month", "pharmacy", "month"),
    ("cube.pharmacy_week", "pharmacy", "week"),
    ("cube.local_area_month", "local_area", "month"),
    ("cube.local_area_day", "local_area", "day"),
    ("cube.service_area_pay_period", "service_area", "pay_period"),
    ("cube.region_month", "region", "month"),
    ("cube.division_month", "division", "month"),
]


@pytest.mark.parametrize("user", ["dana", "rita", "sam", "lena", "pat"])
def test_cube_relations_hold_only_the_scope(served, as_user, scope_of, user):
    """Each node's periods: all of them for the scope's own node, those lying wholly in a time
    the node was under it for the nodes below (the oracle's `holds`)."""
    scope = scope_of(user)
    cut = 0
    for relation, level, grain in CUBE_RELATIONS:
        keys = ", ".join(([] if level else ["level"]) + ["node", "period_start"] + ([] if grain else ["grain"]))
        sql = f"SELECT {keys}, count(*) AS n FROM {relation} GROUP BY {keys} ORDER BY {keys}"
        got = rows(as_user(user), sql)
        every = admin(served.warehouse, sql)
        assert every, relation
        held = [scope.holds(level or r["level"], r["node"], r.get("period_start"), grain or r["grain"]) for r in every]
        want = [r for r, h in zip(every, held) if h]
        if user == "dana":
            assert len(want) == len(every)
        # Rows of nodes the scope reaches at some time, left out for the periods it does not.
        cut += sum(1 for r, h in zip(every, held) if not h and str(r["node"]) in scope.spans.get(level or r["level"], {}))
        assert_same_rows(got, want, f"{user}: {relation}")
    # The re-orgs of 2024-01-31 cut periods from every scope they touch (pat's and the division's
    # they do not).
    assert (cut > 0) == (user in ("rita", "sam", "lena")), (user, cut)


@pytest.mark.parametrize("pharmacy, new_user, old_user", [
    ("01056", "lena", None),  # from Milwaukee (no demo user) into lena's Chicago
    ("00423", "sam", "rita"),  # from rita's Desert (West) into sam's Rockies (Central)
])
def test_a_moved_pharmacy_is_seen_as_was(served, as_user, pharmacy, new_user, old_user):
    """A pharmacy that moved between scopes: its new manager sees its fills from local midnight of
    the move date on, in the pharmacy's time zone, and the old manager those before it (counted
    here from the pharmacies rows, without the oracle); pharmacy-level cube rows go with the
    periods that lie wholly on one side; its pharmacies rows and staff go by placement."""
    wh = served.warehouse
    placements = admin(wh, "SELECT valid_from, valid_to, local_area, service_area, region, timezone FROM pharmacies "
                           f"WHERE pharmacy_id = '{pharmacy}' ORDER BY valid_from")
    assert len(placements) == 2, placements
    before, after = placements
    assert before["valid_to"] == after["valid_from"] and "valid_to" not in after, placements
    move = datetime.date.fromisoformat(after["valid_from"])
    new_level, new_node = DEMO_SCOPES[new_user]
    assert after[new_level] == new_node != before[new_level], (new_user, placements)
    if old_user:
        old_level, old_node = DEMO_SCOPES[old_user]
        assert before[old_level] == old_node != after[old_level], (old_user, placements)
    zone = zoneinfo.ZoneInfo(after["timezone"])
    moved_at = datetime.datetime(move.year, move.month, move.day, tzinfo=zone).astimezone(datetime.timezone.utc)
    cut = moved_at.isoformat()

    fills = "SELECT count(*) AS n, sum(fill_no) AS s, min(filled_at) AS first, max(filled_at) AS last FROM rx_fills " \
            f"WHERE pharmacy_id = '{pharmacy}'"
    total = admin(wh, fills)[0]
    since = admin(wh, f"{fills} AND filled_at >= '{cut}'")[0]
    until = admin(wh, f"{fills} AND filled_at < '{cut}'")[0]
    assert since["n"] > 0 and until["n"] > 0 and since["n"] + until["n"] == total["n"], (total, since, until)
    # Not the UTC date: the instants between UTC midnight and local midnight are the old scope's.
    utc_cut = datetime.datetime(move.year, move.month, move.day, tzinfo=datetime.timezone.utc).isoformat()
    assert admin(wh, f"{fills} AND filled_at >= '{utc_cut}' AND filled_at < '{cut}'")[0]["n"] > 0

    got = rows(as_user(new_user), fills)[0]
    assert got["first"] >= moved_at, (got, cut)
    assert_same_rows([got], [since], f"{new_user}: {pharmacy}'s fills")
    if old_user:
        got = rows(as_user(old_user), fills)[0]
        assert got["last"] < moved_at, (got, cut)
        assert_same_rows([got], [until], f"{old_user}: {pharmacy}'s fills")

    # Pharmacy-level cube rows: the periods wholly after the move for the new manager, wholly
    # before it for the old one; the month of the move (it is not on the 1st) is neither's.
    assert move.day != 1
    midnight = f"TIMESTAMP '{move.isoformat()} 00:00:00'"
    metrics = ("SELECT period_start, metric, value, numerator, denominator FROM cube.metrics "
               "WHERE level = 'pharmacy' AND grain = '{grain}' AND node = '" + pharmacy + "' {where} "
               "ORDER BY period_start, metric")
    for grain, length in (("month", "1 month"), ("day", "1 day")):
        every = admin(wh, metrics.format(grain=grain, where=""))
        later = admin(wh, metrics.format(grain=grain, where=f"AND period_start >= {midnight}"))
        earlier = admin(wh, metrics.format(grain=grain, where=f"AND period_start + INTERVAL '{length}' <= {midnight}"))
        assert later and len(later) < len(every), (grain, len(every))
        got = rows(as_user(new_user), metrics.format(grain=grain, where=""))
        assert_same_rows(got, later, f"{new_user}: {pharmacy}'s {grain} metrics")
        if grain == "month":
            assert not earlier  # the demo starts in the month of the move
        else:
            assert earlier and len(earlier) + len(later) == len(every), grain
        if old_user:
            got = rows(as_user(old_user), metrics.format(grain=grain, where=""))
            assert_same_rows(got, earlier, f"{old_user}: {pharmacy}'s {grain} metrics")

    # Its pharmacies rows by the placement each states; its staff with its latest placement.
    sql = f"SELECT valid_from, local_area FROM pharmacies WHERE pharmacy_id = '{pharmacy}' ORDER BY valid_from"
    assert rows(as_user(new_user), sql) == [{"valid_from": move, "local_area": after["local_area"]}]
    staff = f"SELECT employee_id FROM employees WHERE home_pharmacy_id = '{pharmacy}' ORDER BY employee_id"
    want = admin(wh, staff)
    assert want and rows(as_user(new_user), staff) == want
    if old_user:
        assert rows(as_user(old_user), sql) == [
            {"valid_from": datetime.date.fromisoformat(before["valid_from"]), "local_area": before["local_area"]}]
        assert rows(as_user(old_user), staff) == []


# ---------------------------------------------------------------------------------------------
# Sensitive employee data.

def test_pharmacy_users_see_employee_data_masked(served, as_user):
    conn = as_user("pat")
    got = rows(conn, "SELECT employee_id, name, ssn, hourly_rate FROM employees ORDER BY employee_id")
    want = admin(served.warehouse, "SELECT employee_id, name FROM employees WHERE home_pharmacy_id = '423' ORDER BY employee_id")
    assert [(r["employee_id"], r["name"]) for r in got] == [(r["employee_id"], r["name"]) for r in want]
    assert {r["ssn"] for r in got} == {MASK}
    assert {r["hourly_rate"] for r in got} == {None}
    payroll = rows(conn, "SELECT count(*) AS n, count(cost) AS costs, sum(cost) AS total, sum(hours) AS hours FROM payroll")[0]
    want = admin(served.warehouse, "SELECT count(*) AS n, sum(hours) AS hours FROM payroll WHERE pharmacy_id = '423'")[0]
    assert (payroll["n"], payroll["costs"], payroll["total"]) == (want["n"], 0, None)
    assert same_value(payroll["hours"], want["hours"])


def test_masked_values_cannot_be_probed(served, as_user):
    conn = as_user("pat")
    real = admin(served.warehouse, "SELECT ssn, hourly_rate FROM employees WHERE home_pharmacy_id = '423' ORDER BY employee_id")[0]
    probes = [
        (f"SELECT count(*) AS n FROM employees WHERE ssn = '{real['ssn']}'", None),
        ("SELECT count(*) AS n FROM employees WHERE ssn = ?", (real["ssn"],)),
        (f"SELECT count(*) AS n FROM employees WHERE ssn LIKE '{real['ssn'][:3]}%'", None),
        (f"SELECT count(*) AS n FROM employees WHERE substr(ssn, 1, 3) = '{real['ssn'][:3]}'", None),
        (f"SELECT count(*) AS n FROM employees WHERE hourly_rate = {real['hourly_rate']}", None),
        ("SELECT count(*) AS n FROM employees WHERE hourly_rate > 0", None),
        ("SELECT count(*) AS n FROM payroll WHERE cost > 0", None),
        ("SELECT count(*) AS n FROM payroll p JOIN employees e ON p.employee_id = e.employee_id "
         "WHERE e.ssn <> '***-**-****' OR p.cost IS NOT NULL", None),
    ]
    for sql, params in probes:
        assert rows(conn, sql, params) == [{"n": 0}], sql
    # Sorting by a masked column orders nothing by the real values: every row shows the mask.
    assert {r["ssn"] for r in rows(conn, "SELECT ssn FROM employees ORDER BY ssn")} == {MASK}


def test_area_users_see_employee_data(served, as_user, scope_of):
    conn = as_user("lena")
    where = scope_of("lena").where("employees")
    sql = "SELECT employee_id, ssn, hourly_rate FROM employees {where} ORDER BY employee_id"
    want = admin(served.warehouse, sql.format(where="WHERE " + where))
    assert len(want) > 0 and all(r["ssn"] != MASK for r in want)
    assert_same_rows(rows(conn, sql.format(where="")), want, "lena's employees")
    sql = "SELECT pharmacy_id, sum(cost) AS cost FROM payroll {where} GROUP BY pharmacy_id ORDER BY pharmacy_id"
    want = admin(served.warehouse, sql.format(where="WHERE " + scope_of("lena").where("payroll")))
    assert {r["pharmacy_id"] for r in want} == {"423", "01056"} and all(r.get("cost") for r in want)
    assert_same_rows(rows(conn, sql.format(where="")), want, "lena's payroll cost")


# ---------------------------------------------------------------------------------------------
# However the SQL is written: pat and lena.

ADVERSARIAL = [
    # Each query is written twice over: {<table>} is TRUE for the user, and the scope of that
    # contract table's rows (`Scope.where`) for the administrator; it stands only where that
    # table's columns are the ones in view, unqualified. No masked column is read.
    "SELECT pharmacy_id, name FROM pharmacies WHERE pharmacy_id = 'RX101' AND {pharmacies} "
    "UNION SELECT pharmacy_id, name FROM pharmacies WHERE pharmacy_id <> '423' AND {pharmacies} "
    "UNION ALL SELECT pharmacy_id, CAST(count(*) AS VARCHAR) FROM rx_fills WHERE {rx_fills} GROUP BY pharmacy_id "
    "ORDER BY 1, 2",
    "SELECT count(*) AS n FROM rx_fills WHERE {rx_fills} AND pharmacy_id IN "
    "(SELECT pharmacy_id FROM pharmacies WHERE {pharmacies} AND region = 'West')",
    "SELECT (SELECT count(*) FROM rx_fills WHERE {rx_fills}) AS fills, "
    "(SELECT max(pharmacy_id) FROM pos WHERE {pos}) AS top, "
    "(SELECT count(DISTINCT pharmacy_id) FROM surveys WHERE {surveys}) AS surveyed",
    "SELECT pharmacy_id, count(*) AS n FROM rx_fills f WHERE {rx_fills} AND EXISTS "
    "(SELECT 1 FROM pharmacies p WHERE {pharmacies} AND p.pharmacy_id = f.pharmacy_id AND p.region = 'Central') "
    "GROUP BY pharmacy_id ORDER BY pharmacy_id",
    "SELECT e.employee_id, e.name, p.pharmacy_id, count(*) AS shifts, sum(p.hours) AS hours "
    "FROM (SELECT * FROM payroll WHERE {payroll}) p JOIN (SELECT * FROM employees WHERE {employees}) e "
    "ON e.employee_id = p.employee_id GROUP BY 1, 2, 3 ORDER BY 1, 3",
    "SELECT p.pharmacy_id, e.name, count(*) AS shifts FROM (SELECT * FROM payroll WHERE {payroll}) p "
    "LEFT JOIN (SELECT * FROM employees WHERE {employees}) e ON e.employee_id = p.employee_id "
    "GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST",
    "SELECT e.home_pharmacy_id, count(*) AS n FROM (SELECT * FROM employees WHERE {employees}) e "
    "FULL OUTER JOIN (SELECT * FROM pharmacies WHERE {pharmacies}) ph ON e.home_pharmacy_id = ph.pharmacy_id "
    "GROUP BY 1 ORDER BY 1 NULLS FIRST",
    "WITH x AS (SELECT * FROM pos WHERE {pos}) SELECT kind, count(*) AS n, sum(quantity) AS q FROM x "
    "GROUP BY kind ORDER BY kind",
    "SELECT pharmacy_id, count(*) OVER () AS everyone FROM (SELECT DISTINCT pharmacy_id FROM rx_fills "
    "WHERE {rx_fills}) ORDER BY 1",
    "SELECT count(*) AS n FROM rxcube.public.rx_fills WHERE {rx_fills}",
    "SELECT count(*) AS n FROM public.surveys WHERE {surveys} AND pharmacy_id NOT IN (4)",
    "SELECT g.peer_group, count(*) AS n FROM (SELECT * FROM peer_groups WHERE {peer_groups}) g "
    "JOIN (SELECT DISTINCT pharmacy_id FROM pos WHERE {pos}) s ON s.pharmacy_id = g.pharmacy_id "
    "GROUP BY 1 ORDER BY 1",
]


def both(template, scope):
    """The user's form (no scope written) and the administrator's (the scope written in)."""
    return (template.format(**{t: "TRUE" for t in SCOPED_BY}),
            template.format(**{t: scope.where(t) for t in SCOPED_BY}))


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_rewritten_queries_reach_no_other_rows(served, as_user, scope_of, user):
    conn = as_user(user)
    for template in ADVERSARIAL:
        mine, theirs = both(template, scope_of(user))
        assert_same_rows(rows(conn, mine), admin(served.warehouse, theirs), f"{user}: {mine}")


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_information_schema_lists_only_visible_tables(served, as_user, user):
    conn = as_user(user)
    want = admin_tables(served.warehouse)
    tables = rows(conn, "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2")
    schemas = {r["table_schema"] for r in tables}
    assert not schemas & {"rollups", "system"}, sorted(schemas)
    for schema in ("public", "cube"):
        assert {r["table_name"] for r in tables if r["table_schema"] == schema} == set(want[schema]), schema
    columns = rows(conn, "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema IN ('rollups', 'system') OR table_name IN ('daily', 'hourly', 'monthly', "
                         "'audit_log', 'import_log', 'import_errors')")
    assert columns == []
    assert {r["schema_name"] for r in rows(conn, "SELECT schema_name FROM information_schema.schemata")} \
        .isdisjoint({"rollups", "system"})
    assert rows(conn, "SELECT count(*) AS n FROM information_schema.views WHERE table_schema IN ('rollups', 'system')") \
        == [{"n": 0}]


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_explain_shows_no_rows_of_others(served, as_user, scope_of, user):
    conn = as_user(user)
    scope = scope_of(user)
    others = [r["ssn"] for r in admin(served.warehouse, "SELECT ssn, home_pharmacy_id FROM employees")
              if r["home_pharmacy_id"] not in scope.current]
    cases = [
        ("SELECT * FROM employees", f"SELECT count(*) AS n FROM employees WHERE {scope.where('employees')}"),
        ("SELECT * FROM rx_fills WHERE pharmacy_id NOT IN ('423')",
         f"SELECT count(*) AS n FROM rx_fills WHERE pharmacy_id NOT IN ('423') AND {scope.where('rx_fills')}"),
        ("SELECT * FROM cube.metrics WHERE grain = 'month' AND metric = 'on_time_pct'", None),
    ]
    for sql, count_sql in cases:
        for explain in ("EXPLAIN", "EXPLAIN ANALYZE"):
            try:
                plan = rows(conn, f"{explain} {sql}")
            except adbc.Error:
                continue  # refusing EXPLAIN is allowed
            text = "\n".join(str(v) for r in plan for v in r.values())
            leaked = [s for s in others if s in text]
            assert not leaked, f"{explain} {sql} shows other pharmacies' employees: {leaked[:3]}"
            if explain == "EXPLAIN ANALYZE" and count_sql:
                analyzed = "\n".join(r["plan"] for r in plan if r.get("plan_type") == "Plan with Metrics")
                # DataFusion prints large counts rounded: output_rows=44.88 K
                m = re.search(r"output_rows=([\d.]+)(?: ([KMB]))?", analyzed)
                assert m, analyzed[:2000]
                want = admin(served.warehouse, count_sql)[0]["n"]
                if m.group(2):
                    scale = {"K": 1e3, "M": 1e6, "B": 1e9}[m.group(2)]
                    assert f"{want / scale:.2f}" == m.group(1), analyzed[:2000]
                else:
                    assert int(m.group(1)) == want, analyzed[:2000]


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_bound_parameters_stay_values(served, as_user, scope_of, user):
    conn = as_user(user)
    assert rows(conn, "SELECT employee_id FROM employees WHERE name = ?", ("' OR 1=1 --",)) == []
    assert rows(conn, "SELECT count(*) AS n FROM rx_fills WHERE channel = ?", ("local' OR '1'='1",)) == [{"n": 0}]
    assert rows(conn, "SELECT count(*) AS n FROM cube.metrics WHERE grain = 'month' AND node = ?",
                ("RX101' OR node <> 'RX101",)) == [{"n": 0}]
    assert rows(conn, "SELECT count(*) AS n FROM rx_fills WHERE pharmacy_id = ?", ("RX101",)) == [{"n": 0}]
    want = admin(served.warehouse, "SELECT count(*) AS n FROM rx_fills WHERE pharmacy_id = '423'")
    assert rows(conn, "SELECT count(*) AS n FROM rx_fills WHERE pharmacy_id = ?", ("423",)) == want
    payload = "'; DROP TABLE rx_fills; --"
    assert rows(conn, "SELECT CAST(? AS VARCHAR) AS v", (payload,)) == [{"v": payload}]
    assert admin(served.warehouse, "SELECT count(*) AS n FROM rx_fills")[0]["n"] > 0


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_hidden_tables_are_refused_by_name(as_user, user):
    conn = as_user(user)
    for table, name in (("rollups.daily", "daily"), ("rollups.hourly", "hourly"), ("rxcube.rollups.monthly", "monthly"),
                        ("system.import_log", "import_log"), ("system.audit_log", "audit_log")):
        expect_refused(conn, f"SELECT * FROM {table}", naming=name)
    # Hidden inside a query that is otherwise the user's own.
    expect_refused(conn, "SELECT count(*) FROM rx_fills WHERE pharmacy_id IN (SELECT pharmacy_id FROM rollups.daily)",
                   naming="daily")
    expect_refused(conn, "SELECT * FROM pharmacies UNION ALL SELECT * FROM pharmacies "
                         "WHERE EXISTS (SELECT 1 FROM system.import_log)", naming="import_log")


@pytest.mark.parametrize("user", ["pat", "lena"])
def test_warehouse_files_cannot_be_read_directly(served, as_user, scope_of, user):
    conn = as_user(user)
    scope = scope_of(user)
    files = glob.glob(os.path.join(served.warehouse, "employees", "*.parquet"))
    assert files
    for sql in (f"SELECT * FROM read_parquet('{files[0]}')",
                f"SELECT * FROM '{files[0]}'",
                f"SELECT * FROM '{os.path.join(served.warehouse, 'employees')}/'"):
        try:
            got = rows(conn, sql)
        except adbc.Error:
            continue
        assert all(r["home_pharmacy_id"] in scope.current for r in got), f"{sql} reached other pharmacies"
        if user == "pat":
            assert all(r["ssn"] == MASK for r in got), f"{sql} showed SSNs"


@pytest.mark.parametrize("user", ["pat", "lena", "admin"])
def test_the_server_is_read_only(served, as_user, tmp_path, user):
    conn = as_user(user)
    wh = served.warehouse
    counts = ("SELECT (SELECT count(*) FROM rx_fills) AS fills, (SELECT count(*) FROM employees) AS employees, "
              "(SELECT count(*) FROM targets) AS targets, (SELECT max(ssn) FROM employees) AS ssn")
    before = rxcube_json(wh, counts)
    target = tmp_path / "leak.parquet"
    refused = [
        f"CREATE EXTERNAL TABLE leak STORED AS PARQUET LOCATION '{os.path.join(wh, 'employees')}/'",
        f"COPY (SELECT * FROM employees) TO '{target}' STORED AS PARQUET",
        f"COPY employees TO '{target}'",
        "SET datafusion.execution.target_partitions = 1",
        "SET datafusion.catalog.information_schema = false",
        "INSERT INTO targets SELECT * FROM targets",
        "DELETE FROM rx_fills WHERE pharmacy_id = '423'",
        "UPDATE employees SET ssn = 'x'",
        "DROP TABLE employees",
        "CREATE TABLE leak AS SELECT * FROM employees",
        "CREATE VIEW leak AS SELECT * FROM employees",
        "CREATE SCHEMA leak",
        "DROP VIEW cube.metrics",
    ]
    for sql in refused:
        expect_refused(conn, sql)
    # The same through CommandStatementUpdate (DoPut), which ADBC does not use for queries.
    client = FlightSQLClient(host=served.host, port=served.port, user=user, password=PASSWORD, insecure=True)
    try:
        for sql in ("DELETE FROM rx_fills", "DROP TABLE employees", "INSERT INTO targets SELECT * FROM targets"):
            with pytest.raises(ERRORS):
                client.execute_update(sql, FlightSQLCallOptions(timeout=30))
    finally:
        client.close()
    # Two statements in one: refused, or at least nothing changed.
    try:
        rows(conn, "SELECT 1 AS x; DROP TABLE rx_fills")
    except adbc.Error:
        pass
    expect_refused(conn, "SELECT * FROM leak", naming="leak")
    assert not target.exists()
    assert rxcube_json(wh, counts) == before


# ---------------------------------------------------------------------------------------------
# Authentication, tokens and tickets.

def test_wrong_password_and_unknown_user_are_refused(served):
    for user, password in (("pat", "not-demo"), ("pat", ""), ("nobody", PASSWORD)):
        with pytest.raises(adbc.Error):
            conn = adbc_connect(served.uri, user, password)
            try:
                fetch(conn, "SELECT 1")
            finally:
                conn.close()
        client = flight.FlightClient(served.uri)
        try:
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.authenticate_basic_token(user, password)
        finally:
            client.close()
    with pytest.raises(ERRORS):
        FlightSQLClient(host=served.host, port=served.port, user="pat", password="not-demo", insecure=True)


def test_forged_and_missing_tokens_are_refused(served):
    client = flight.FlightClient(served.uri)
    try:
        for headers in ([(b"authorization", b"Bearer forged")], [(b"authorization", b"Bearer ")], []):
            options = flight.FlightCallOptions(headers=headers)
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.get_flight_info(statement("SELECT 1"), options)
            with pytest.raises(ERRORS):
                client.do_get(flight.Ticket(b"forged"), options).read_all()
        # A real login on the same client works: the refusals were about the tokens.
        header = client.authenticate_basic_token("pat", PASSWORD)
        info = client.get_flight_info(statement("SELECT 1 AS one"), flight.FlightCallOptions(headers=[header]))
        assert len(info.endpoints) == 1 and list(info.endpoints[0].locations) == []
    finally:
        client.close()


def test_tickets_and_prepared_statements_belong_to_their_user(served):
    pat, pat_options = flight_login(served, "pat")
    dana, dana_options = flight_login(served, "dana")
    sql = "SELECT employee_id, name FROM employees ORDER BY employee_id"
    want = admin(served.warehouse, "SELECT employee_id, name FROM employees WHERE home_pharmacy_id = '423' ORDER BY employee_id")
    try:
        info = pat.get_flight_info(statement(sql), pat_options)
        assert len(info.endpoints) == 1
        ticket = info.endpoints[0].ticket
        with pytest.raises(ERRORS):
            dana.do_get(ticket, dana_options).read_all()
        with pytest.raises(ERRORS):
            pat.do_get(ticket).read_all()  # no token at all
        assert pat.do_get(ticket, pat_options).read_all().to_pylist() == want

        # A prepared statement's handle, used by another user.
        pat_sql = FlightSQLClient(host=served.host, port=served.port, user="pat", password=PASSWORD, insecure=True)
        try:
            prepared = pat_sql.prepare(sql)
            handle = flight_descriptor(pb.CommandPreparedStatementQuery(prepared_statement_handle=prepared.handle))
            with pytest.raises(ERRORS):
                dana.get_flight_info(handle, dana_options)
            info = prepared.execute(None)
            assert pat_sql.do_get(info.endpoints[0].ticket).read_all().to_pylist() == want
            prepared.close()
        finally:
            pat_sql.close()
    finally:
        pat.close()
        dana.close()


def test_tokens_expire(landed, tmp_path):
    server = Server(copy_warehouse(landed, tmp_path / "warehouse"), "--token-ttl", "1")
    try:
        client, options = flight_login(server, "rita")
        try:
            assert len(client.get_flight_info(statement("SELECT 1 AS one"), options).endpoints) == 1
            time.sleep(2.5)
            with pytest.raises(flight.FlightUnauthenticatedError):
                client.get_flight_info(statement("SELECT 1 AS one"), options)
            # Logging in again gives a fresh token.
            header = client.authenticate_basic_token("rita", PASSWORD)
            info = client.get_flight_info(statement("SELECT 2 AS two"), flight.FlightCallOptions(headers=[header]))
            assert len(info.endpoints) == 1
        finally:
            client.close()
    finally:
        server.stop(signal.SIGINT)


def self_signed_certificate(directory):
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (directory / "cert.pem").write_bytes(cert_pem)
    (directory / "key.pem").write_bytes(key_pem)
    return str(directory / "cert.pem"), str(directory / "key.pem"), cert_pem.decode()


def test_tls(landed, tmp_path):
    cert, key, pem = self_signed_certificate(tmp_path)
    server = Server(copy_warehouse(landed, tmp_path / "warehouse"), "--tls-cert", cert, "--tls-key", key)
    try:
        assert server.uri == f"grpc+tls://127.0.0.1:{server.port}"
        conn = adbc_connect(server.uri, "rita", **{"adbc.flight.sql.client_option.tls_root_certs": pem})
        try:
            # The rows placing a pharmacy in the West (not 00423's since its move to Central).
            want = admin(server.warehouse, "SELECT count(*) AS n FROM pharmacies WHERE region = 'West'")
            assert rows(conn, "SELECT count(*) AS n FROM pharmacies") == want
        finally:
            conn.close()
        client = flight.FlightClient(server.uri, tls_root_certs=pem.encode())
        try:
            header = client.authenticate_basic_token("rita", PASSWORD)
            assert header[1].startswith(b"Bearer ")
        finally:
            client.close()
        # A plain-text client gets nowhere.
        with pytest.raises(adbc.Error):
            conn = adbc_connect(f"grpc://127.0.0.1:{server.port}", "rita")
            try:
                fetch(conn, "SELECT 1")
            finally:
                conn.close()
    finally:
        server.stop(signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# The audit log.

def test_audit_log_records_logins_denials_and_queries(served, login):
    t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    ghost = f"ghost_{uuid.uuid4().hex[:8]}"
    probe = f"audit_probe_{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    for user, password in (("pat", "wrong"), (ghost, PASSWORD)):
        with pytest.raises(adbc.Error):
            adbc_connect(served.uri, user, password).close()
    pat = login("pat")
    expect_refused(pat, f"CREATE TABLE {probe} AS SELECT 1 AS x")
    assert rows(pat, f"SELECT '{marker}' AS m") == [{"m": marker}]

    admin_conn = login("admin")
    sql = (f"SELECT at, user_name, event, client, sql, rows, millis, detail FROM system.audit_log "
           f"WHERE user_name IN ('pat', '{ghost}') ORDER BY at")
    wanted = {
        "login_failed pat": lambda r: r["event"] == "login_failed" and r["user_name"] == "pat",
        "login_failed ghost": lambda r: r["event"] == "login_failed" and r["user_name"] == ghost,
        "login pat": lambda r: r["event"] == "login" and r["user_name"] == "pat",
        "denied pat": lambda r: r["event"] == "denied" and r["user_name"] == "pat" and probe in (r["sql"] or ""),
        "query pat": lambda r: r["event"] == "query" and r["user_name"] == "pat" and marker in (r["sql"] or "")
        and r["rows"] == 1,
    }
    deadline = time.monotonic() + 15
    while True:
        table = fetch(admin_conn, sql)
        log = [r for r in table.to_pylist() if r["at"] >= t0]
        missing = [name for name, match in wanted.items() if not any(match(r) for r in log)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"no audit rows for {missing}; rows since the test began:\n" + "\n".join(map(str, log))
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("rows").type == pa.int64()
    assert table.schema.field("millis").type == pa.float64()


@pytest.mark.parametrize("user", ["dana", "rita", "pat"])
def test_audit_log_needs_the_audit_privilege(as_user, user):
    expect_refused(as_user(user), "SELECT * FROM system.audit_log", naming="audit_log")


# ---------------------------------------------------------------------------------------------
# `rxcube users`.

def listed(wh):
    """{user: the line of `rxcube users list` naming it}."""
    out = users(wh, "list").stdout
    found = {}
    for line in out.splitlines():
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_.-]*", line):
            found.setdefault(word, line)
    return found


def test_users_cli_round_trip(landed, tmp_path):
    wh = copy_warehouse(landed, tmp_path / "warehouse")
    before = listed(wh)
    for user, (level, node) in DEMO_SCOPES.items():
        assert user in before, (user, before)
        assert level in before[user] and node in before[user], before[user]
    assert "administrators" in before["admin"] and "analysts" in before["dana"]

    users(wh, "add", "ivy", "--scope", "local_area:Chicago", "--group", "analysts", "--password-stdin",
          password="ivy-s3cret\n")
    line = listed(wh)["ivy"]
    assert "Chicago" in line and "local_area" in line and "analysts" in line, line
    users(wh, "grant", "ivy", "--group", "administrators")
    assert "administrators" in listed(wh)["ivy"]
    users(wh, "revoke", "ivy", "--group", "administrators")
    assert "administrators" not in listed(wh)["ivy"]
    # A group's privileges reach its members: analysts may now read the audit log.
    users(wh, "grant", "--group", "analysts", "--privilege", "audit")

    server = Server(wh)
    try:
        conn = adbc_connect(server.uri, "ivy", "ivy-s3cret")
        try:
            chicago = [r["pharmacy_id"] for r in admin(wh, "SELECT DISTINCT pharmacy_id FROM pharmacies "
                                                           "WHERE local_area = 'Chicago' ORDER BY 1")]
            got = rows(conn, "SELECT DISTINCT pharmacy_id FROM rx_fills ORDER BY 1")
            assert [r["pharmacy_id"] for r in got] == chicago
        finally:
            conn.close()
        with pytest.raises(adbc.Error):
            adbc_connect(server.uri, "ivy", "wrong").close()
        dana = adbc_connect(server.uri, "dana")
        try:
            fetch(dana, "SELECT count(*) AS n FROM system.audit_log")
        finally:
            dana.close()
    finally:
        server.stop()

    users(wh, "remove", "ivy")
    assert "ivy" not in listed(wh)
    server = Server(wh)
    try:
        with pytest.raises(adbc.Error):
            adbc_connect(server.uri, "ivy", "ivy-s3cret").close()
    finally:
        server.stop()


def test_users_add_rejects_a_bad_scope(landed, tmp_path):
    wh = copy_warehouse(landed, tmp_path / "warehouse")
    p = users(wh, "add", "mars", "--scope", "planet:Mars", "--password-stdin", password="x\n", check=False)
    assert p.returncode != 0
    assert "planet:Mars" in p.stderr + p.stdout, p.stderr
    assert "mars" not in listed(wh)
