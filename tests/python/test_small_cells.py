"""Small-cell protection (issue 14) against the real `rxcube serve`, as the demo's users.

The attack: at the hour grain, `labor_cost / labor_hours` of an hour with one employee on shift is
that employee's pay rate, which a pharmacy manager must not see (`employees.hourly_rate` and
`payroll.cost` are masked for them). The cube's `[[small_cells]]` rules suppress, for users whose
scope does not see employee data, the pay of a cell pooled over fewer than 3 employees and the
survey shares of a cell with fewer than 5 responses.

Every expected answer is worked out here from what the local administrator reads
(`rxcube sql`, which protects nothing): the rates from `employees` and `payroll`, the employees
on shift in each local hour from the payroll shifts and the pharmacy's zone, the cells' values
from the unprotected cube. pat manages pharmacy 423; lena manages the local area Chicago.
"""

import datetime
import math
import signal
import zoneinfo

import pytest

from conftest import rxcube
from test_flight_sql import Server, adbc_connect, copy_warehouse, rows
from test_flight_sql import admin as admin_rows

PASSWORD = "demo"
PHARMACY = "423"
MIN_EMPLOYEES = 3
MIN_RESPONSES = 5


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("small_cells") / "demo")
    rxcube("demo", "--warehouse", path)
    server = Server(copy_warehouse(path, tmp_path_factory.mktemp("served") / "warehouse"))
    yield server
    server.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def connect(served):
    opened = {}

    def make(user):
        if user not in opened:
            opened[user] = adbc_connect(served.uri, user, PASSWORD)
        return opened[user]

    yield make
    for conn in opened.values():
        conn.close()


def admin(served, sql):
    return admin_rows(served.warehouse, sql)


def naive(value):
    """A period start as the naive local datetime it is (ADBC: datetime; JSON: ISO text)."""
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None)
    return datetime.datetime.fromisoformat(value)


def instant(value):
    t = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def pay_rates(served):
    """Every individual rate at the pharmacy: the employees' hourly rates, and what each shift
    paid per hour (overtime, call-in minimums): an hour with one employee on one shift shows it."""
    rates = {float(r["hourly_rate"]) for r in admin(
        served, "SELECT DISTINCT e.hourly_rate FROM employees e JOIN payroll p ON p.employee_id = e.employee_id "
                f"WHERE p.pharmacy_id = '{PHARMACY}'")}
    rates |= {float(r["paid"]) for r in admin(
        served, "SELECT DISTINCT CAST(cost AS DOUBLE) / CAST(hours AS DOUBLE) AS paid FROM payroll "
                f"WHERE pharmacy_id = '{PHARMACY}' AND hours > 0")}
    assert len(rates) > 5, rates
    return rates


def employees_on_shift(served, pharmacy=PHARMACY):
    """The distinct employees paid in each local hour of the pharmacy, from its payroll shifts
    (a shift is paid in every local hour it overlaps; the demo's zones are whole hours off UTC,
    so local hours are UTC hours)."""
    tz = admin(served, f"SELECT timezone FROM pharmacies WHERE pharmacy_id = '{pharmacy}' "
                       "ORDER BY valid_from DESC LIMIT 1")[0]["timezone"]
    zone = zoneinfo.ZoneInfo(tz)
    shifts = admin(served, "SELECT employee_id, shift_start, shift_end FROM payroll "
                           f"WHERE pharmacy_id = '{pharmacy}'")
    on_shift = {}
    hour = datetime.timedelta(hours=1)
    for s in shifts:
        start, end = instant(s["shift_start"]), instant(s["shift_end"])
        bucket = start.astimezone(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
        while bucket < end:
            if min(end, bucket + hour) > max(start, bucket):
                local = bucket.astimezone(zone).replace(tzinfo=None)
                on_shift.setdefault(local, set()).add(s["employee_id"])
            bucket += hour
    return {h: len(e) for h, e in on_shift.items()}


def is_rate(cost, hours, rates):
    return cost is not None and hours and any(math.isclose(cost / hours, r, rel_tol=1e-9) for r in rates)


HOURS = "SELECT period_start, labor_cost, labor_hours FROM cube.pharmacy_hour WHERE node = '{node}'"
LONG = ("SELECT period_start, metric, value FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'hour' "
        "AND metric IN ('labor_cost', 'labor_hours') AND node = '{node}'")


def pivot(long_rows):
    cells = {}
    for r in long_rows:
        cells.setdefault(naive(r["period_start"]), {})[r["metric"]] = r["value"]
    return {h: (c.get("labor_cost"), c.get("labor_hours")) for h, c in cells.items()}


def test_cost_over_hours_is_never_an_employees_rate_for_a_pharmacy_manager(served, connect):
    rates = pay_rates(served)
    counts = employees_on_shift(served)
    truth = {naive(r["period_start"]): (r.get("labor_cost"), r.get("labor_hours"))
             for r in admin(served, HOURS.format(node=PHARMACY))}
    assert set(truth) == set(counts), "the cube's hour cells are the hours with a shift"
    # Unprotected, the attack works: some hours give a rate away.
    leaking = {h for h, (cost, hours) in truth.items() if is_rate(cost, hours, rates)}
    assert leaking, "the demo has no hour whose cost / hours is a rate: the test would prove nothing"
    assert all(counts[h] < MIN_EMPLOYEES for h in leaking)
    small = {h for h, n in counts.items() if n < MIN_EMPLOYEES}
    assert small and len(small) < len(counts), (len(small), len(counts))

    pat = connect("pat")
    wide = {naive(r["period_start"]): (r["labor_cost"], r["labor_hours"])
            for r in rows(pat, HOURS.format(node=PHARMACY))}
    long = pivot(rows(pat, LONG.format(node=PHARMACY)))
    for relation, got in (("cube.pharmacy_hour", wide), ("cube.metrics", long)):
        assert set(got) == set(truth), relation
        for h, (cost, hours) in got.items():
            assert not is_rate(cost, hours, rates), f"{relation} {h}: {cost} / {hours} is a rate"
            if counts[h] < MIN_EMPLOYEES:
                assert (cost, hours) == (None, None), f"{relation} {h}: {counts[h]} employees, {cost} / {hours}"
            else:
                want = truth[h]
                assert math.isclose(cost, want[0], rel_tol=1e-9) and math.isclose(hours, want[1], rel_tol=1e-9), \
                    f"{relation} {h}: got {cost} / {hours}, expected {want}"
    # Ratios on pay follow: labor cost per Rx is NULL wherever the cost is.
    per_rx = rows(pat, "SELECT period_start, labor_cost_per_rx FROM cube.pharmacy_hour")
    assert all(r["labor_cost_per_rx"] is None for r in per_rx if naive(r["period_start"]) in small)
    assert any(r["labor_cost_per_rx"] is not None for r in per_rx)


def test_peer_figures_do_not_give_a_suppressed_cell_away(served, connect):
    """A suppressed cell has no rank and is out of its peer group's average, size and
    pacesetters: none of them is the cell's own value (unprotected, a peer group where only
    pharmacy 423 has the hour averages to exactly its value)."""
    counts = employees_on_shift(served)
    truth = {naive(r["period_start"]): r.get("labor_cost") for r in admin(served, HOURS.format(node=PHARMACY))}
    small = {h for h, n in counts.items() if n < MIN_EMPLOYEES}

    def near(x, y):
        return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9)

    unprotected = admin(served, "SELECT period_start, peer_avg FROM cube.metrics WHERE level = 'pharmacy' "
                                f"AND grain = 'hour' AND metric = 'labor_cost' AND node = '{PHARMACY}'")
    assert any(near(r.get("peer_avg"), truth[naive(r["period_start"])])
               for r in unprotected if naive(r["period_start"]) in small), "no one-member peer group to test"

    pat = connect("pat")
    got = rows(pat, "SELECT period_start, value, peer_avg, peer_rank, peer_size FROM cube.metrics "
                    "WHERE level = 'pharmacy' AND grain = 'hour' AND metric = 'labor_cost'")
    checked = 0
    for r in got:
        h = naive(r["period_start"])
        if h not in small:
            continue
        checked += 1
        assert r["value"] is None and r["peer_rank"] is None, r
        assert not near(r["peer_avg"], truth[h]), (r, truth[h])
    assert checked == len(small)
    rankings = rows(pat, "SELECT period_start, rank, pacesetter_1_value, pacesetter_2_value FROM cube.rankings "
                         "WHERE level = 'pharmacy' AND grain = 'hour' AND metric = 'labor_cost'")
    for r in rankings:
        h = naive(r["period_start"])
        if h in small:
            assert r["rank"] is None, r
            assert not near(r["pacesetter_1_value"], truth[h]) and not near(r["pacesetter_2_value"], truth[h]), r


def test_survey_shares_of_few_responses_are_null_for_a_pharmacy_manager(served, connect):
    sql = "SELECT period_start, survey_responses, csat_pct, pct_dissatisfied FROM cube.pharmacy_day WHERE node = '{node}'"
    truth = {naive(r["period_start"]): r for r in admin(served, sql.format(node=PHARMACY))}
    got = {naive(r["period_start"]): r for r in rows(connect("pat"), sql.format(node=PHARMACY))}
    assert set(got) == set(truth)
    few = [h for h, r in truth.items() if 0 < (r.get("survey_responses") or 0) < MIN_RESPONSES]
    many = [h for h, r in truth.items() if (r.get("survey_responses") or 0) >= MIN_RESPONSES]
    assert few and many, (len(few), len(many))
    for h, r in got.items():
        want = truth[h]
        assert r["survey_responses"] == want.get("survey_responses"), h
        if (want.get("survey_responses") or 0) < MIN_RESPONSES:
            assert (r["csat_pct"], r["pct_dissatisfied"]) == (None, None), (h, r)
        else:
            assert math.isclose(r["csat_pct"], want["csat_pct"], rel_tol=1e-9), (h, r, want)
            assert math.isclose(r["pct_dissatisfied"], want["pct_dissatisfied"], rel_tol=1e-9), (h, r, want)


def test_an_area_manager_sees_every_cell(served, connect):
    """lena (local area Chicago) is above the pharmacy: she sees employee data, so every hour of
    her pharmacies has its pay, small or not, exactly as the administrator's."""
    sql = ("SELECT node, period_start, labor_cost, labor_hours FROM cube.pharmacy_hour "
           "WHERE node IN (SELECT DISTINCT pharmacy_id FROM pharmacies WHERE local_area = 'Chicago')")
    want = {(r["node"], naive(r["period_start"])): r for r in admin(served, sql)}
    got = rows(connect("lena"), sql)
    assert len(got) > 100
    for g in got:
        w = want[(g["node"], naive(g["period_start"]))]
        assert math.isclose(g["labor_cost"], w["labor_cost"], rel_tol=1e-9), (g, w)
        assert math.isclose(g["labor_hours"], w["labor_hours"], rel_tol=1e-9), (g, w)
    # Among them, hours with fewer than 3 employees on shift: a pharmacy manager gets no pay there.
    small = 0
    for node in {g["node"] for g in got}:
        counts = employees_on_shift(served, node)
        small += sum(1 for g in got if g["node"] == node and counts[naive(g["period_start"])] < MIN_EMPLOYEES)
    assert small > 0
