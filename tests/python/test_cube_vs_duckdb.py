"""cube.metrics against DuckDB computing the same numbers from the raw tables with plain SQL.

DuckDB reads the landed Delta tables of the demo chain (delta_scan). For each cross-check it
recomputes the metric straight from the domain's definitions:
- local time by the pharmacy's zone (ICU `timezone()`);
- org path and peer group in effect on the local date;
- target minutes at the local received_at date;
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
    for t in ["pharmacies", "peer_groups", "rx_fills", "pos", "surveys"]:
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
    ours = rxcube_json(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct'
          AND node IN ({', '.join(f"'{p}'" for p in picked)})""")
    for r in ours:
        r["p"] = r["p"].replace("T", " ")
    theirs = con.execute(f"""
        SELECT CAST(pharmacy_id AS VARCHAR), strftime({PAY_PERIOD.format(t='local_ts')}, '%Y-%m-%d %H:%M:%S'),
               CASE WHEN count(*) FILTER (WHERE channel = 'local') > 0 THEN
                 100.0 * count(*) FILTER (WHERE channel = 'local' AND minutes < target)
                       / count(*) FILTER (WHERE channel = 'local') END,
               count(*) FILTER (WHERE channel = 'local' AND minutes < target),
               count(*) FILTER (WHERE channel = 'local')
        FROM fills WHERE pharmacy_id IN ({', '.join(map(str, picked))})
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) > 10
    compare(ours, theirs, ("node", "p"))


def test_region_consolidation_of_otc_sales_per_rx_by_month_as_was(demo_warehouse, con):
    ours = rxcube_json(demo_warehouse, """
        SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator
        FROM cube.metrics WHERE level = 'region' AND grain = 'month' AND metric = 'otc_sales_per_rx'""")
    for r in ours:
        r["p"] = r["p"].replace("T", " ")
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
        f"WHERE pharmacy_id = {pharmacy} AND channel = 'local' GROUP BY 1 "
        f"HAVING count(DISTINCT date_trunc('hour', local_ts)) > 5 ORDER BY 1").fetchall()]
    day = rng.choice(days)
    ours = rxcube_json(demo_warehouse, f"""
        SELECT node, CAST(period_start AS VARCHAR) AS p, value FROM cube.metrics
        WHERE level = 'pharmacy' AND node = '{pharmacy}' AND grain = 'hour'
          AND metric = 'median_processing_minutes'
          AND period_start >= TIMESTAMP '{day} 00:00:00' AND period_start < TIMESTAMP '{day} 00:00:00' + INTERVAL '1 day'""")
    for r in ours:
        r["p"] = r["p"].replace("T", " ")
    theirs = con.execute(f"""
        SELECT CAST(pharmacy_id AS VARCHAR), strftime(date_trunc('hour', local_ts), '%Y-%m-%d %H:%M:%S'),
               quantile_cont(minutes, 0.5), NULL, NULL
        FROM fills WHERE pharmacy_id = {pharmacy} AND channel = 'local'
          AND CAST(local_ts AS DATE) = DATE '{day}'
        GROUP BY 1, 2""").fetchall()
    assert len(theirs) > 5
    compare(ours, theirs, ("node", "p"))
