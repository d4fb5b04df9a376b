"""Small-cell protection (issue 14) against the real `rxcube serve`, as the demo's users.

The attacks: at the hour grain, `labor_cost / labor_hours` of an hour with one employee on shift is
that employee's pay rate, which a pharmacy manager must not see (`employees.hourly_rate` and
`payroll.cost` are masked for them); and a visible cell minus the visible cells inside it (a day
minus its hours) is the pay of the hidden ones. The cube's `[[small_cells]]` rules judge pay per
local day (fewer than 3 employees is small), for users whose scope does not see employee data: a
cell shows pay only if it is made of whole days, none of them small, so no hour shows pay. Survey
shares are judged cell by cell (fewer than 5 responses).

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
    """The number of distinct employees paid in each local hour of the pharmacy."""
    return {h: len(e) for h, e in who_is_on_shift(served, pharmacy).items()}


def employees_by_day(on_shift):
    """The number of distinct employees paid in each local day, from `who_is_on_shift`."""
    days = {}
    for h, e in on_shift.items():
        days.setdefault(datetime.datetime.combine(h.date(), datetime.time()), set()).update(e)
    return {d: len(e) for d, e in days.items()}


def who_is_on_shift(served, pharmacy=PHARMACY):
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
    return on_shift


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

    pat = connect("pat")
    wide = {naive(r["period_start"]): (r["labor_cost"], r["labor_hours"])
            for r in rows(pat, HOURS.format(node=PHARMACY))}
    long = pivot(rows(pat, LONG.format(node=PHARMACY)))
    for relation, got in (("cube.pharmacy_hour", wide), ("cube.metrics", long)):
        assert set(got) == set(truth), relation
        # Pay is judged per day: no hour shows it, however many were on shift.
        shown = {h: v for h, v in got.items() if v != (None, None)}
        assert not shown, f"{relation}: pay in {len(shown)} hours, e.g. {next(iter(shown.items()))}"
    # Ratios on pay follow: labor cost per Rx is NULL in every hour, while rx sold shows.
    per_rx = rows(pat, "SELECT period_start, labor_cost_per_rx, rx_sold FROM cube.pharmacy_hour")
    assert all(r["labor_cost_per_rx"] is None for r in per_rx)
    assert any(r["rx_sold"] for r in per_rx)


DAYS = "SELECT period_start, labor_cost, labor_hours FROM cube.pharmacy_day WHERE node = '{node}'"


def test_days_show_pay_exactly_where_three_or_more_were_paid(served, connect):
    counts = employees_by_day(who_is_on_shift(served))
    truth = {naive(r["period_start"]): (r.get("labor_cost"), r.get("labor_hours"))
             for r in admin(served, DAYS.format(node=PHARMACY))}
    got = {naive(r["period_start"]): (r["labor_cost"], r["labor_hours"])
           for r in rows(connect("pat"), DAYS.format(node=PHARMACY))}
    assert set(got) == set(truth)
    shown = 0
    for d, (cost, hours) in got.items():
        n = counts.get(d, 0)
        if n < MIN_EMPLOYEES:
            assert (cost, hours) == (None, None), (d, n, cost, hours)
        else:
            shown += 1
            want = truth[d]
            assert math.isclose(cost, want[0], rel_tol=1e-9) and math.isclose(hours, want[1], rel_tol=1e-9), \
                (d, cost, hours, want)
    assert shown > 30, shown


def test_no_difference_of_visible_cells_gives_hidden_pay_away(served, connect):
    """Differencing: every pay figure pat sees at a coarser grain is exactly the sum of the days
    pat sees inside it, and it holds no day with pay that pat does not see; so subtracting
    visible cells from one another yields nothing hidden. Judged cell by cell (as before atoms),
    a day minus its visible hours is the pay of its hidden hours: the demo has such days."""
    on_shift = who_is_on_shift(served)
    by_day = {}
    for h, e in on_shift.items():
        by_day.setdefault(h.date(), []).append(len(e))
    mixed = [d for d, ns in by_day.items()
             if any(n < MIN_EMPLOYEES for n in ns) and any(n >= MIN_EMPLOYEES for n in ns)]
    assert mixed, "no day with both small and large hours: the test would prove nothing"

    pat = connect("pat")
    cells = rows(pat, "SELECT grain, period_start, metric, value FROM cube.metrics WHERE level = 'pharmacy' "
                      f"AND node = '{PHARMACY}' AND metric IN ('labor_cost', 'labor_hours')")
    days = {(naive(r["period_start"]).date(), r["metric"]): r["value"] for r in cells if r["grain"] == "day"}
    paid_days = {d for d, n in employees_by_day(on_shift).items() if n > 0}
    assert not [r for r in cells if r["grain"] == "hour" and r["value"] is not None]
    def months_on(t, k):
        m = t.month - 1 + k
        return t.replace(year=t.year + m // 12, month=m % 12 + 1)

    ends = {"week": lambda t: t + datetime.timedelta(days=7),
            "pay_period": lambda t: t + datetime.timedelta(days=14),
            "month": lambda t: months_on(t, 1),
            "quarter": lambda t: months_on(t, 3),
            "year": lambda t: months_on(t, 12)}
    checked = 0
    for r in cells:
        if r["grain"] not in ends or r["value"] is None:
            continue
        start = naive(r["period_start"])
        end = ends[r["grain"]](start)
        inside = [d for d in paid_days if start <= d < end]
        hidden = [d for d in inside if days.get((d.date(), r["metric"])) is None]
        assert not hidden, (r, hidden[:3])
        total = sum(days[(d.date(), r["metric"])] for d in inside)
        assert math.isclose(r["value"], total, rel_tol=1e-9, abs_tol=1e-6), (r, total)
        checked += 1
    assert checked > 10, checked


def test_peer_figures_do_not_give_a_suppressed_cell_away(served, connect):
    """A suppressed cell has no rank and is out of its peer group's average, size and
    pacesetters: none of them is the cell's own value (unprotected, a peer group where only
    pharmacy 423 has the hour averages to exactly its value). Every pharmacy's hours are
    suppressed for pat, so no hour has peer figures at all."""
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
    assert len(got) == len(truth)
    for r in got:
        assert (r["value"], r["peer_avg"], r["peer_rank"], r["peer_size"]) == (None, None, None, 0), r
    rankings = rows(pat, "SELECT period_start, rank, pacesetter_1_value, pacesetter_2_value FROM cube.rankings "
                         "WHERE level = 'pharmacy' AND grain = 'hour' AND metric = 'labor_cost'")
    assert rankings
    for r in rankings:
        assert (r["rank"], r["pacesetter_1_value"], r["pacesetter_2_value"]) == (None, None, None), r


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
