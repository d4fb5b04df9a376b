"""cube.metrics against DuckDB computing the same numbers from the raw tables with plain SQL.

DuckDB reads the landed Delta tables of the demo chain (delta_scan). For each cross-check it
recomputes the metric straight from the domain's definitions:
- local time by the pharmacy's zone (ICU `timezone()`);
- org path and peer group in effect on the local date;
- target minutes at the local received_at date;
- payroll spread over the shift pro rata by the minutes in each local hour;
- pay periods of 14 days from 2024-01-07;
- pooled ratios and interpolated medians.
It shares no code with rxcube. The slices (pharmacies, periods) are drawn at random with a
fixed seed, and each cross-check compares every row of its slice.
"""

import math
import random

import pytest

from conftest import duckdb_with_delta, rxcube_json

ANCHOR = "DATE '2024-01-07'"

# Pay period start (local) of a local timestamp `t`, by plain date arithmetic.
PAY_PERIOD = f"(CAST({ANCHOR} AS TIMESTAMP) + INTERVAL 14 DAY * CAST(floor(date_diff('day', {ANCHOR}, CAST({{t}} AS DATE)) / 14) AS BIGINT))"


def views(con, wh):
    con.execute("SET TimeZone = 'UTC'")
    for t in ["pharmacies", "peer_groups", "rx_fills", "pos", "surveys", "payroll"]:
        con.execute(f"CREATE OR REPLACE VIEW {t} AS SELECT * FROM delta_scan('{wh}/{t}')")
    con.execute("""
        CREATE OR REPLACE VIEW tz AS
        SELECT pharmacy_id, coalesce(arg_max(timezone, valid_from), 'America/Los_Angeles') AS tz
        FROM pharmacies GROUP BY pharmacy_id""")
    con.execute(f"""
        CREATE OR REPLACE VIEW fills AS
        SELECT f.pharmacy_id, f.fill_no, f.channel,
               timezone(z.tz, f.filled_at) AS local_ts,
               epoch_us(f.filled_at - f.received_at) / 60e6 AS minutes,
               coalesce((SELECT g.rx_target_minutes FROM peer_groups g
                         WHERE g.pharmacy_id = f.pharmacy_id
                           AND g.valid_from <= CAST(timezone(z.tz, f.received_at) AS DATE)
                           AND (g.valid_to IS NULL OR CAST(timezone(z.tz, f.received_at) AS DATE) < g.valid_to)), 15) AS target
        FROM rx_fills f JOIN tz z USING (pharmacy_id)""")
    # Payroll spread over the shift: one piece per UTC hour the shift touches, clipped to the
    # shift, with share = piece / shift. US zones are whole hours off UTC, so a UTC hour is a
    # local hour; local_ts is the piece's start on the pharmacy's wall clock.
    con.execute("""
        CREATE OR REPLACE VIEW labor AS
        SELECT pharmacy_id, timezone(tz, piece_start) AS local_ts,
               CAST(hours AS DOUBLE) * share AS hours, CAST(cost AS DOUBLE) * share AS cost
        FROM (
          SELECT p.pharmacy_id, z.tz, p.hours, p.cost, greatest(h.h, p.shift_start) AS piece_start,
                 epoch_us(least(h.h + INTERVAL 1 HOUR, p.shift_end) - greatest(h.h, p.shift_start))
                   / epoch_us(p.shift_end - p.shift_start) AS share
          FROM payroll p JOIN tz z USING (pharmacy_id),
               LATERAL (SELECT unnest(range(date_trunc('hour', p.shift_start), p.shift_end, INTERVAL 1 HOUR)) AS h) h)""")


def cube_rows(wh, sql):
    """rxcube's rows for `sql`, with the period `p` printed as DuckDB prints a timestamp."""
    rows = rxcube_json(wh, sql)
    for r in rows:
        r["p"] = r["p"].replace("T", " ")
    return rows


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare(ours, theirs, key):
    mine = {tuple(r[k] for k in key): r for r in ours}
    assert len(mine) == len(theirs), (len(mine), len(theirs))
    for row in theirs:
        k = tuple(row[:len(key)])
        assert k in mine, k
        for name, value in zip(("value", "numerator", "denominator"), row[len(key):]):
            assert close(mine[k][name] if name in mine[k] else None, value), (k, name, mine[k], row)


@pytest.fixture(scope="module")
def con(demo_warehouse):
    c = duckdb_with_delta()
    views(c, demo_warehouse)
    return c


def pharmacy_ids(con):
    return [r[0] for r in con.execute("SELECT DISTINCT pharmacy_id FROM pharmacies ORDER BY 1").fetchall()]


def test_on_time_per_pharmacy_and_pay_period(demo_warehouse, con):
    rng = random.Random(7)
    picked = sorted(rng.sample(pharmacy_ids(con), 3))
    ours = cube_rows(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct'
          AND node IN ({', '.join(f"'{p}'" for p in picked)})""")
    theirs = con.execute(f"""
        SELECT CAST(pharmacy_id AS VARCHAR), strftime({PAY_PERIOD.format(t='local_ts')}, '%Y-%m-%d %H:%M:%S'),
               CASE WHEN count(*) FILTER (WHERE channel = 'local') > 0 THEN
                 100.0 * count(*) FILTER (WHERE channel = 'local' AND minutes < target)
                       / count(*) FILTER (WHERE channel = 'local') END,
               count(*) FILTER (WHERE channel = 'local' AND minutes < target),
               count(*) FILTER (WHERE channel = 'local')
        FROM fills WHERE pharmacy_id IN ({', '.join(f"'{p}'" for p in picked)})
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) > 10
    compare(ours, theirs, ("node", "p"))


def test_region_consolidation_of_otc_sales_per_rx_by_month_as_was(demo_warehouse, con):
    ours = cube_rows(demo_warehouse, """
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'region' AND grain = 'month' AND metric = 'otc_sales_per_rx'""")
    theirs = con.execute("""
        WITH s AS (
          SELECT s.*, timezone(z.tz, s.sold_at) AS local_ts FROM pos s JOIN tz z USING (pharmacy_id))
        SELECT o.region, strftime(date_trunc('month', local_ts), '%Y-%m-%d %H:%M:%S'),
               CASE WHEN sum(CASE WHEN kind = 'rx' THEN quantity ELSE 0 END) > 0 THEN
                 CAST(sum(CASE WHEN kind = 'otc' THEN amount ELSE 0 END) AS DOUBLE)
                   / sum(CASE WHEN kind = 'rx' THEN quantity ELSE 0 END) END,
               CAST(sum(CASE WHEN kind = 'otc' THEN amount ELSE 0 END) AS DOUBLE),
               CAST(sum(CASE WHEN kind = 'rx' THEN quantity ELSE 0 END) AS DOUBLE)
        FROM s JOIN pharmacies o ON o.pharmacy_id = s.pharmacy_id
          AND o.valid_from <= CAST(local_ts AS DATE)
          AND (o.valid_to IS NULL OR CAST(local_ts AS DATE) < o.valid_to)
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) >= 2
    compare(ours, theirs, ("node", "p"))


def test_hourly_median_processing_minutes_for_a_random_day(demo_warehouse, con):
    rng = random.Random(11)
    pharmacy = rng.choice(pharmacy_ids(con))
    days = [r[0] for r in con.execute(
        f"SELECT strftime(CAST(local_ts AS DATE), '%Y-%m-%d') FROM fills "
        f"WHERE pharmacy_id = '{pharmacy}' AND channel = 'local' GROUP BY 1 "
        f"HAVING count(DISTINCT date_trunc('hour', local_ts)) > 5 ORDER BY 1").fetchall()]
    day = rng.choice(days)
    ours = cube_rows(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value FROM cube.metrics
        WHERE level = 'pharmacy' AND node = '{pharmacy}' AND grain = 'hour'
          AND metric = 'median_processing_minutes'
          AND period_start >= TIMESTAMP '{day} 00:00:00' AND period_start < TIMESTAMP '{day} 00:00:00' + INTERVAL '1 day'""")
    theirs = con.execute(f"""
        SELECT CAST(pharmacy_id AS VARCHAR), strftime(date_trunc('hour', local_ts), '%Y-%m-%d %H:%M:%S'),
               quantile_cont(minutes, 0.5), NULL, NULL
        FROM fills WHERE pharmacy_id = '{pharmacy}' AND channel = 'local'
          AND CAST(local_ts AS DATE) = DATE '{day}'
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) > 5
    compare(ours, theirs, ("node", "p"))


def test_labor_cost_per_rx_per_pharmacy_and_pay_period(demo_warehouse, con):
    rng = random.Random(23)
    picked = sorted(rng.sample(pharmacy_ids(con), 3))
    ours = cube_rows(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'labor_cost_per_rx'
          AND node IN ({', '.join(f"'{p}'" for p in picked)})""")
    # A cell exists where the pharmacy has any payroll piece or any sale in the period.
    theirs = con.execute(f"""
        WITH l AS (
          SELECT pharmacy_id, {PAY_PERIOD.format(t='local_ts')} AS p, sum(cost) AS cost
          FROM labor GROUP BY 1, 2),
        s AS (
          SELECT s.pharmacy_id, {PAY_PERIOD.format(t='timezone(z.tz, s.sold_at)')} AS p,
                 CAST(sum(CASE WHEN kind = 'rx' THEN quantity ELSE 0 END) AS DOUBLE) AS rx
          FROM pos s JOIN tz z USING (pharmacy_id) GROUP BY 1, 2)
        SELECT CAST(pharmacy_id AS VARCHAR), strftime(p, '%Y-%m-%d %H:%M:%S'),
               CASE WHEN coalesce(rx, 0) > 0 THEN coalesce(cost, 0) / rx END,
               coalesce(cost, 0), coalesce(rx, 0)
        FROM l FULL JOIN s USING (pharmacy_id, p)
        WHERE pharmacy_id IN ({', '.join(f"'{p}'" for p in picked)})""").fetchall()
    assert len(theirs) > 10
    assert any(row[3] > 0 for row in theirs) and any(row[4] > 0 for row in theirs)
    compare(ours, theirs, ("node", "p"))


def test_daily_labor_hours_over_a_random_pay_period(demo_warehouse, con):
    rng = random.Random(31)
    pharmacy = rng.choice(pharmacy_ids(con))
    periods = [r[0] for r in con.execute(
        f"SELECT strftime({PAY_PERIOD.format(t='local_ts')}, '%Y-%m-%d') FROM labor "
        f"WHERE pharmacy_id = '{pharmacy}' GROUP BY 1 ORDER BY 1").fetchall()]
    start = rng.choice(periods)
    ours = cube_rows(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator FROM cube.metrics
        WHERE level = 'pharmacy' AND node = '{pharmacy}' AND grain = 'day' AND metric = 'labor_hours'
          AND period_start >= TIMESTAMP '{start} 00:00:00' AND period_start < TIMESTAMP '{start} 00:00:00' + INTERVAL '14 days'""")
    theirs = con.execute(f"""
        SELECT CAST(pharmacy_id AS VARCHAR), strftime(date_trunc('day', local_ts), '%Y-%m-%d %H:%M:%S'),
               sum(hours), NULL, NULL
        FROM labor WHERE pharmacy_id = '{pharmacy}'
          AND CAST(local_ts AS DATE) >= DATE '{start}' AND CAST(local_ts AS DATE) < DATE '{start}' + 14
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) > 5
    compare(ours, theirs, ("node", "p"))


def test_region_consolidation_of_labor_cost_by_month_as_was(demo_warehouse, con):
    ours = cube_rows(demo_warehouse, """
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'region' AND grain = 'month' AND metric = 'labor_cost'""")
    theirs = con.execute("""
        SELECT o.region, strftime(date_trunc('month', local_ts), '%Y-%m-%d %H:%M:%S'), sum(l.cost), NULL, NULL
        FROM labor l JOIN pharmacies o ON o.pharmacy_id = l.pharmacy_id
          AND o.valid_from <= CAST(local_ts AS DATE)
          AND (o.valid_to IS NULL OR CAST(local_ts AS DATE) < o.valid_to)
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) >= 2
    compare(ours, theirs, ("node", "p"))
