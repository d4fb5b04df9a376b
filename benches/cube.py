"""Cube benchmark: raw-path cube queries in rxcube against DuckDB computing them from the same Parquet.

A generated chain (default about 20M fills) is imported into a warehouse once. Four report
queries then run on both sides, 2 threads each, on a warm process (one warm-up run, then
--runs timed runs; the median counts):

  score_card      one pharmacy's five key metrics for one pay period, with the peer average,
                  rank and peers ranked (every pharmacy of the period is computed)
  peer_ranking    on-time processing of every pharmacy ranked within its peer group, one pay period
  region_month    the five key metrics per region and month over the whole chain, as was
  hourly_medians  median processing minutes per local hour of one pharmacy for one month

rxcube answers from cube.metrics (`rxcube sql --timing`); DuckDB runs straightforward SQL from
the domain's definitions over the tables' Parquet files (read_parquet), with instant bounds
written by hand where a query is about one period. The answers are compared (6 significant
digits) before any time is reported. Reported: median seconds per side, the ratio
rxcube / DuckDB per query, and their geometric mean (goal <= 1.0).

The DuckDB side is a **strawman**: straightforward SQL with a per-row ICU `timezone()` call and
range joins, not DuckDB written as its experts would write it (a small (zone, UTC hour) offset
table, interval joins), which answers the same rows several times faster. The output says so.
"""

import argparse
import csv
import datetime
import io
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
ORDER = ["pharmacies", "peer_groups", "targets", "employees", "payroll", "pos", "rx_fills", "surveys"]
DAYS = 120
# The pharmacy of the one-pharmacy queries: the seventh id in text order (ids are labels such as
# RX107 or 00423), picked from the data by `pick_pharmacy`.
PHARMACY = None
PERIOD = "2024-02-18"      # a pay period (anchor 2024-01-07)
MONTH = ("2024-02-01", "2024-03-01")
KEY = ["labor_cost_per_rx", "csat_pct", "on_time_pct", "otc_sales_per_rx", "crp_usage_pct"]


def chain_for(rxcube, fills):
    """Generates (once) a Parquet chain of about `fills` fills (~390 per pharmacy-day)."""
    pharmacies = max(8, round(fills / (DAYS * 390)))
    chain = os.path.join(OUT, f"chain-{pharmacies}x{DAYS}-parquet")
    if not os.path.exists(os.path.join(chain, ".done")):
        shutil.rmtree(chain, ignore_errors=True)
        print(f"generating {pharmacies} pharmacies x {DAYS} days into {chain} ...", flush=True)
        subprocess.run([rxcube, "generate", "--out", chain, "--pharmacies", str(pharmacies),
                        "--days", str(DAYS), "--format", "parquet"], check=True)
        open(os.path.join(chain, ".done"), "w").close()
    return chain, pharmacies


def warehouse_for(rxcube, chain):
    """Imports the chain (once) into a warehouse next to it."""
    wh = chain + "-warehouse"
    if not os.path.exists(os.path.join(wh, ".done")):
        shutil.rmtree(wh, ignore_errors=True)
        for t in ORDER:
            print(f"importing {t} ...", flush=True)
            subprocess.run([rxcube, "import", "-w", wh, t, os.path.join(chain, f"{t}.parquet")],
                           check=True, stdout=subprocess.DEVNULL)
        open(os.path.join(wh, ".done"), "w").close()
    return wh


def live_files(table_dir):
    """The Parquet files of a Delta table's current version, replayed from its JSON log."""
    import glob
    import json
    from urllib.parse import unquote
    log = os.path.join(table_dir, "_delta_log")
    if os.path.exists(os.path.join(log, "_last_checkpoint")):
        sys.exit(f"{table_dir}: the log has a checkpoint; this script replays JSON commits only")
    files = set()
    for commit in sorted(glob.glob(os.path.join(log, "*.json"))):
        with open(commit) as f:
            for line in f:
                action = json.loads(line)
                if "add" in action:
                    files.add(action["add"]["path"])
                elif "remove" in action:
                    files.discard(action["remove"]["path"])
    return sorted(os.path.join(table_dir, unquote(p)) for p in files)


# ---------------------------------------------------------------------------------------------
# rxcube: the cube relations.

def rxcube_queries():
    key = ", ".join(f"'{m}'" for m in KEY)
    return {
        "score_card": f"""
            WITH card AS (
              SELECT * FROM cube.metrics
              WHERE level = 'pharmacy' AND grain = 'pay_period'
                AND period_start = TIMESTAMP '{PERIOD} 00:00:00' AND metric IN ({key}))
            SELECT metric, value, peer_avg, peer_rank, peer_size FROM card
            WHERE node = '{PHARMACY}' ORDER BY metric""",
        "peer_ranking": f"""
            SELECT node, peer_group, value, peer_avg, peer_rank, peer_size FROM cube.metrics
            WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct'
              AND period_start = TIMESTAMP '{PERIOD} 00:00:00'
            ORDER BY node""",
        "region_month": f"""
            SELECT node, CAST(period_start AS VARCHAR) AS month, {', '.join(KEY)}
            FROM cube.region_month ORDER BY node, month""",
        "hourly_medians": f"""
            SELECT CAST(period_start AS VARCHAR) AS hour, value FROM cube.metrics
            WHERE level = 'pharmacy' AND node = '{PHARMACY}' AND grain = 'hour'
              AND metric = 'median_processing_minutes'
              AND period_start >= TIMESTAMP '{MONTH[0]} 00:00:00' AND period_start < TIMESTAMP '{MONTH[1]} 00:00:00'
            ORDER BY hour""",
    }


def run_rxcube(rxcube, wh, sql, runs):
    # The raw path, computed every time: no rollups, no result cache.
    script = "SET rxcube.result_cache = false;\n" + ";\n".join([sql] * (runs + 1)) + ";\n"
    path = os.path.join(OUT, "cube-bench.sql")
    with open(path, "w") as f:
        f.write(script)
    env = dict(os.environ, DATAFUSION_EXECUTION_TARGET_PARTITIONS="2", TOKIO_WORKER_THREADS="2")
    p = subprocess.run(["taskset", "-c", "0,1", rxcube, "sql", "-w", wh, "--no-rollups", "--timing", "--format", "csv", "-f", path],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"rxcube failed:\n{p.stderr}")
    times = [float(line.split(", ")[1].split(" ")[0]) for line in p.stderr.splitlines()
             if line.startswith("(") and " rows, " in line][1:]
    rows = list(csv.reader(io.StringIO(p.stdout)))
    header = rows[0]
    first = []
    for row in rows[1:]:
        if row == header:  # the next run's result
            break
        first.append(row)
    return times[1:], header, first


# ---------------------------------------------------------------------------------------------
# DuckDB: the same numbers from the domain's definitions, in plain SQL over the Parquet files.

ANCHOR = "DATE '2024-01-07'"


def pick_pharmacy(con, pharmacy=None):
    """Sets PHARMACY: `pharmacy` if given (it must be in the chain), else the seventh pharmacy id
    of the chain in text order."""
    global PHARMACY
    if pharmacy is None:
        pharmacy = con.execute("SELECT DISTINCT pharmacy_id FROM pharmacies ORDER BY 1 LIMIT 1 OFFSET 6").fetchone()[0]
    assert con.execute("SELECT count(*) FROM pharmacies WHERE pharmacy_id = ?", [pharmacy]).fetchone()[0], pharmacy
    PHARMACY = pharmacy
    return PHARMACY


def duck_setup(con, wh, meta=False):
    """One view per contract table over its live Parquet files (`live_files`: a glob would also
    read files a correction replaced), with `meta` a `<table>_meta` view of their
    `parquet_metadata` too, and the `tz` view of each pharmacy's zone."""
    con.execute("SET threads = 2")
    con.execute("SET TimeZone = 'UTC'")
    for t in ORDER:
        files = live_files(os.path.join(wh, t))
        assert files, f"{wh}/{t}: no live files"
        listed = "[" + ", ".join(f"'{p}'" for p in files) + "]"
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet({listed}, hive_partitioning = false)")
        if meta:
            con.execute(f"CREATE VIEW {t}_meta AS SELECT * FROM parquet_metadata({listed})")
    con.execute("""CREATE VIEW tz AS SELECT pharmacy_id, coalesce(arg_max(timezone, valid_from), 'America/Los_Angeles') AS tz
                   FROM pharmacies GROUP BY pharmacy_id""")


def window(lo, hi):
    """Instant bounds (as SQL) holding every fact of local times [lo, hi) in any zone."""
    return (f"TIMESTAMPTZ '{lo} 00:00:00+00' - INTERVAL 15 HOUR", f"TIMESTAMPTZ '{hi} 00:00:00+00' + INTERVAL 15 HOUR")


def facts_sql(lo=None, hi=None, only=("fills", "sales", "survey", "pieces")):
    """CTEs: per-pharmacy local facts (fills, sales, surveys, payroll pieces) in [lo, hi) local."""
    if lo:
        a, b = window(lo, hi)
        fw, sw, rw = (f"WHERE {c} >= {a} AND {c} < {b}" for c in ("f.filled_at", "s.sold_at", "s.responded_at"))
        pw = f"WHERE p.shift_end > {a} AND p.shift_start < {b}"
        lw = f"WHERE lt >= TIMESTAMP '{lo}' AND lt < TIMESTAMP '{hi}'"
    else:
        fw = sw = rw = pw = lw = ""
    ctes = {
        "fills": f"""
      f0 AS (SELECT f.pharmacy_id, f.fill_no, f.channel, timezone(z.tz, f.filled_at) AS lt,
                    CAST(timezone(z.tz, f.received_at) AS DATE) AS rd,
                    epoch_us(f.filled_at - f.received_at) / 60e6 AS minutes
             FROM rx_fills f JOIN tz z USING (pharmacy_id) {fw}),
      fills AS (SELECT f0.*, coalesce(g.rx_target_minutes, 15) AS target FROM f0
                LEFT JOIN peer_groups g ON g.pharmacy_id = f0.pharmacy_id AND g.valid_from <= f0.rd
                  AND (g.valid_to IS NULL OR f0.rd < g.valid_to) {lw})""",
        "sales": f"""
      sales AS (SELECT * FROM (SELECT s.pharmacy_id, s.kind, s.quantity, CAST(s.amount AS DOUBLE) AS amount,
                                      timezone(z.tz, s.sold_at) AS lt
                               FROM pos s JOIN tz z USING (pharmacy_id) {sw}) {lw})""",
        "survey": f"""
      survey AS (SELECT * FROM (SELECT s.pharmacy_id, s.rating, timezone(z.tz, s.responded_at) AS lt
                                FROM surveys s JOIN tz z USING (pharmacy_id) {rw}) {lw})""",
        # A shift's pieces: each UTC hour it touches (US zones have whole-hour offsets, so these
        # are local hours), with the share of the shift's minutes worked in it.
        "pieces": f"""
      pieces AS (SELECT * FROM (
                   SELECT p.pharmacy_id,
                          timezone(z.tz, greatest(h, p.shift_start)) AS lt,
                          epoch_us(least(h + INTERVAL 1 HOUR, p.shift_end) - greatest(h, p.shift_start))
                            / epoch_us(p.shift_end - p.shift_start) AS share,
                          CAST(p.cost AS DOUBLE) AS cost
                   FROM payroll p JOIN tz z USING (pharmacy_id),
                        unnest(generate_series(date_trunc('hour', p.shift_start), p.shift_end - INTERVAL 1 MICROSECOND, INTERVAL 1 HOUR)) AS t(h)
                   {pw}) {lw})""",
    }
    return ",".join(ctes[k] for k in only)


def cells_sql(key_expr_fills, key_expr_sales, key_expr_survey, key_expr_pieces, keys):
    """Per-cell components and the five key metrics, cells keyed by `keys`."""
    k = ", ".join(keys)
    return f"""
      fc AS (SELECT {key_expr_fills}, count(*) FILTER (WHERE channel = 'local') AS local_fills,
                    count(*) FILTER (WHERE channel = 'local' AND minutes < target) AS on_time,
                    count(*) FILTER (WHERE fill_no >= 1) AS refills,
                    count(*) FILTER (WHERE fill_no >= 1 AND channel = 'crp') AS crp
             FROM fills GROUP BY ALL),
      sc AS (SELECT {key_expr_sales}, sum(CASE WHEN kind = 'rx' THEN quantity ELSE 0 END) AS rx_sold,
                    sum(CASE WHEN kind = 'otc' THEN amount ELSE 0 END) AS otc
             FROM sales GROUP BY ALL),
      vc AS (SELECT {key_expr_survey}, count(*) AS responses,
                    count(*) FILTER (WHERE rating IN ('very_satisfied', 'satisfied')) AS happy
             FROM survey GROUP BY ALL),
      pc AS (SELECT {key_expr_pieces}, sum(cost * share) AS labor_cost FROM pieces GROUP BY ALL),
      allkeys AS (SELECT {k} FROM fc UNION SELECT {k} FROM sc UNION SELECT {k} FROM vc UNION SELECT {k} FROM pc),
      cells AS (
        SELECT {', '.join('a.' + x for x in keys)},
               coalesce(labor_cost, 0) AS labor_cost, coalesce(rx_sold, 0) AS rx_sold, coalesce(otc, 0) AS otc,
               coalesce(responses, 0) AS responses, coalesce(happy, 0) AS happy,
               coalesce(local_fills, 0) AS local_fills, coalesce(on_time, 0) AS on_time,
               coalesce(refills, 0) AS refills, coalesce(crp, 0) AS crp
        FROM allkeys a LEFT JOIN fc USING ({k}) LEFT JOIN sc USING ({k}) LEFT JOIN vc USING ({k}) LEFT JOIN pc USING ({k}))"""


METRICS = {
    "labor_cost_per_rx": ("labor_cost", "rx_sold", 1.0),
    "csat_pct": ("happy", "responses", 100.0),
    "on_time_pct": ("on_time", "local_fills", 100.0),
    "otc_sales_per_rx": ("otc", "rx_sold", 1.0),
    "crp_usage_pct": ("crp", "refills", 100.0),
}


def ratio(num, den, scale):
    return f"CASE WHEN {den} > 0 THEN {scale} * {num} / {den} END"


def peer_sql():
    """CTEs `peered`, `long` and `ranked` over a CTE `cells` keyed by pharmacy_id (one pay period):
    each pharmacy's key metrics with the peer group's pooled value, rank and peers ranked."""
    last_day = f"DATE '{PERIOD}' + INTERVAL 13 DAY"
    peers = f"""
      peered AS (SELECT c.*, g.peer_group FROM cells c JOIN peer_groups g ON g.pharmacy_id = c.pharmacy_id
                 AND g.valid_from <= CAST({last_day} AS DATE) AND (g.valid_to IS NULL OR CAST({last_day} AS DATE) < g.valid_to))"""
    unpivot = " UNION ALL ".join(
        f"""SELECT pharmacy_id, peer_group, '{m}' AS metric, {ratio(n, d, s)} AS value,
                   {ratio(f'sum({n}) OVER (PARTITION BY peer_group)', f'sum({d}) OVER (PARTITION BY peer_group)', s)} AS peer_avg
            FROM peered"""
        for m, (n, d, s) in METRICS.items())
    ranked = f"""
      long AS ({unpivot}),
      ranked AS (SELECT *, CASE WHEN value IS NOT NULL THEN rank() OVER (PARTITION BY metric, peer_group, value IS NULL
                             ORDER BY CASE WHEN metric = 'labor_cost_per_rx' THEN value ELSE -value END) END AS peer_rank,
                        count(value) OVER (PARTITION BY metric, peer_group) AS peer_size FROM long)"""
    return peers, ranked


def duck_queries():
    hi = (datetime.date.fromisoformat(PERIOD) + datetime.timedelta(days=14)).isoformat()
    pid = "pharmacy_id"
    period = facts_sql(PERIOD, hi) + "," + cells_sql(pid, pid, pid, pid, [pid])
    peers, ranked = peer_sql()
    # The org path in effect on each fact's local date ("as was"), then cells per region and month.
    def placed(src):
        return (f"(SELECT x.*, o.region, date_trunc('month', x.lt) AS month FROM {src} x JOIN pharmacies o "
                f"ON o.pharmacy_id = x.pharmacy_id AND o.valid_from <= CAST(x.lt AS DATE) "
                f"AND (o.valid_to IS NULL OR CAST(x.lt AS DATE) < o.valid_to))")
    cells = cells_sql("region, month", "region, month", "region, month", "region, month", ["region", "month"])
    for src in ("fills", "sales", "survey", "pieces"):
        cells = cells.replace(f"FROM {src} GROUP", f"FROM {src}_r GROUP")
    region = (facts_sql() + ", " + ", ".join(f"{src}_r AS {placed(src)}" for src in ("fills", "sales", "survey", "pieces"))
              + "," + cells)
    return {
        "score_card": f"WITH {period}, {peers}, {ranked} SELECT metric, value, peer_avg, peer_rank, peer_size FROM ranked WHERE pharmacy_id = '{PHARMACY}' ORDER BY metric",
        "peer_ranking": f"""
            WITH {facts_sql(PERIOD, hi, only=("fills",))},
            cells AS (SELECT pharmacy_id, count(*) FILTER (WHERE channel = 'local') AS local_fills,
                             count(*) FILTER (WHERE channel = 'local' AND minutes < target) AS on_time
                      FROM fills GROUP BY pharmacy_id),
            {peers},
            ranked AS (SELECT pharmacy_id, peer_group, {ratio('on_time', 'local_fills', 100.0)} AS value,
                              {ratio('sum(on_time) OVER (PARTITION BY peer_group)', 'sum(local_fills) OVER (PARTITION BY peer_group)', 100.0)} AS peer_avg
                       FROM peered)
            SELECT CAST(pharmacy_id AS VARCHAR), peer_group, value, peer_avg,
                   CASE WHEN value IS NOT NULL THEN rank() OVER (PARTITION BY peer_group, value IS NULL ORDER BY value DESC) END,
                   count(value) OVER (PARTITION BY peer_group)
            FROM ranked ORDER BY 1""",
        "region_month": f"WITH {region} SELECT region, strftime(month, '%Y-%m-%dT%H:%M:%S'), "
                        + ", ".join(f"{ratio(n, d, s)}" for n, d, s in METRICS.values())
                        + " FROM cells ORDER BY 1, 2",
        "hourly_medians": f"""
            WITH {facts_sql(MONTH[0], MONTH[1], only=("fills",))}
            SELECT strftime(date_trunc('hour', lt), '%Y-%m-%dT%H:%M:%S'), quantile_cont(minutes, 0.5)
            FROM fills WHERE pharmacy_id = '{PHARMACY}' AND channel = 'local' GROUP BY 1 ORDER BY 1""",
    }


def run_duck(con, sql, runs):
    times, rows = [], None
    for i in range(runs + 1):
        start = time.perf_counter()
        rows = con.execute(sql).fetchall()
        if i:
            times.append(time.perf_counter() - start)
    return times, rows


# ---------------------------------------------------------------------------------------------

def same(a, b):
    """Cells equal: text exactly, numbers to 6 significant digits, empty = NULL."""
    if a in ("", None) or b in ("", None):
        return a in ("", None) and b in ("", None)
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def compared(name, header, ours_t, ours_rows, theirs_t, theirs_rows):
    """Checks both sides' rows equal (`same`, DuckDB's timestamps as rxcube prints them) and
    returns (name, rows, rxcube median s, DuckDB median s, ratio)."""
    assert ours_rows, name
    assert len(ours_rows) == len(theirs_rows), (name, len(ours_rows), len(theirs_rows))
    def text(c):  # an ISO timestamp as either side prints it: '2024-02-18T00:00:00' or with a space
        return c[:10] + " " + c[11:] if isinstance(c, str) and len(c) == 19 and c[10] == "T" else c
    for o, t in zip(ours_rows, theirs_rows):
        assert all(same(text(a), text(b)) for a, b in zip(o, t)), (name, header, o, t)
    a, b = statistics.median(ours_t), statistics.median(theirs_t)
    return name, len(ours_rows), a, b, a / b


def geomean(results):
    return math.exp(sum(math.log(r[4]) for r in results) / len(results))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--fills", type=int, default=20_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated query names")
    ap.add_argument("--pharmacy", help="pharmacy id of the one-pharmacy queries (default: the seventh in text order)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    chain, pharmacies = chain_for(args.rxcube, args.fills)
    wh = warehouse_for(args.rxcube, chain)

    import duckdb
    con = duckdb.connect()
    duck_setup(con, wh)
    fills = con.execute("SELECT count(*) FROM rx_fills").fetchone()[0]
    pick_pharmacy(con, args.pharmacy)

    ours_q, theirs_q = rxcube_queries(), duck_queries()
    names = args.only.split(",") if args.only else list(ours_q)
    results = []
    for name in names:
        print(f"{name} ...", flush=True)
        ours_t, header, ours_rows = run_rxcube(args.rxcube, wh, ours_q[name], args.runs)
        theirs_t, theirs_rows = run_duck(con, theirs_q[name], args.runs)
        results.append(compared(name, header, ours_t, ours_rows, theirs_t, theirs_rows))

    geo = geomean(results)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"chain: {pharmacies} pharmacies x {DAYS} days, {fills:,} fills; 2 threads each; median of {args.runs} warm runs; "
        f"one-pharmacy queries on pharmacy {PHARMACY}",
        "",
        "| query | rows | rxcube s | DuckDB (strawman SQL) s | rxcube / DuckDB |",
        "|---|---|---|---|---|",
        *[f"| {n} | {r} | {a:.3f} | {b:.3f} | {x:.2f}x |" for n, r, a, b, x in results],
        "",
        f"geometric mean rxcube / DuckDB: {geo:.2f}x (goal <= 1.0); DuckDB {duckdb.__version__}, strawman SQL "
        "(per-row timezone(), range joins: not the tuned peer)",
    ]
    print("\n".join(lines))
    with open(os.path.join(OUT, "cube.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
