"""Rollup benchmark: served cube queries, rollup build and refresh, against DuckDB, in one run.

On the chain of benches/cube.py (same generation, same warehouse, default about 20M fills):

  build     `rxcube rollup build` (every rollup from scratch) against one DuckDB pass over the
            raw Parquet computing the five key metrics per pharmacy and day
  refresh   `rxcube rollup refresh` after importing one more day of fills (goal <= 2 s at 100M)
  served    the report queries of cube.py answered from the rollups in one rxcube process: the
            first run (planned and computed from the rollup) and the p50 and p99 of --runs
            repeats (served from the per-snapshot result cache), against DuckDB computing them
            from the raw Parquet, and (score card, peer ranking) against DuckDB computing them
            from the same rollup's Parquet files

The served answers are compared with DuckDB's (6 significant digits) before any time counts.
2 threads each. Reported in a table; record it in benches/RESULTS.md.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cube  # noqa: E402


def timed(cmd, env=None):
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return time.perf_counter() - start, p.stdout


def run_all(rxcube, wh, sql, runs, env):
    """Times (seconds) of 1 + runs executions of `sql` in one rxcube session, and the first answer."""
    path = os.path.join(cube.OUT, "rollups-bench.sql")
    with open(path, "w") as f:
        f.write(";\n".join([sql] * (runs + 1)) + ";\n")
    p = subprocess.run(["taskset", "-c", "0,1", rxcube, "sql", "-w", wh, "--timing", "--format", "csv", "-f", path],
                       capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"rxcube failed:\n{p.stderr}")
    times = [float(line.split(", ")[1].split(" ")[0]) for line in p.stderr.splitlines()
             if line.startswith("(") and " rows, " in line]
    served = [line for line in p.stderr.splitlines() if line.startswith("(served by")]
    rows = list(cube.csv.reader(cube.io.StringIO(p.stdout)))
    header, first = rows[0], []
    for row in rows[1:]:
        if row == header:
            break
        first.append(row)
    return times, first, served[0] if served else ""


def duck_rollup_queries(wh):
    """Score card and peer ranking from the live Parquet files of the daily rollup."""
    files = ", ".join(f"'{f}'" for f in cube.live_files(f"{wh}/_rxcube/rollups/daily"))
    hi = (cube.datetime.date.fromisoformat(cube.PERIOD) + cube.datetime.timedelta(days=14)).isoformat()
    cells = f"""
      r AS (SELECT * FROM read_parquet([{files}])
            WHERE period_start >= TIMESTAMP '{cube.PERIOD}' AND period_start < TIMESTAMP '{hi}'),
      cells AS (SELECT pharmacy_id, sum(labor_cost) AS labor_cost, sum(rx_sold) AS rx_sold,
                       sum(otc_sales) AS otc, sum(survey_responses) AS responses,
                       sum(very_satisfied) + sum(satisfied) AS happy, sum(local_fills) AS local_fills,
                       sum(local_on_time) AS on_time, sum(refills) AS refills, sum(crp_refills) AS crp
                FROM r GROUP BY pharmacy_id)"""
    peers, ranked = cube.peer_sql()
    return {
        "score_card": f"WITH {cells}, {peers}, {ranked} SELECT metric, value, peer_avg, peer_rank, peer_size "
                      f"FROM ranked WHERE pharmacy_id = '{cube.PHARMACY}' ORDER BY metric",
        "peer_ranking": f"""
            WITH {cells}, {peers},
            ranked AS (SELECT pharmacy_id, peer_group, {cube.ratio('on_time', 'local_fills', 100.0)} AS value,
                              {cube.ratio('sum(on_time) OVER (PARTITION BY peer_group)', 'sum(local_fills) OVER (PARTITION BY peer_group)', 100.0)} AS peer_avg
                       FROM peered)
            SELECT CAST(pharmacy_id AS VARCHAR), peer_group, value, peer_avg,
                   CASE WHEN value IS NOT NULL THEN rank() OVER (PARTITION BY peer_group, value IS NULL ORDER BY value DESC) END,
                   count(value) OVER (PARTITION BY peer_group)
            FROM ranked ORDER BY 1""",
    }


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--fills", type=int, default=20_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", help="comma-separated query names")
    ap.add_argument("--pharmacy", help="pharmacy id of the one-pharmacy queries (default: the seventh in text order)")
    args = ap.parse_args()
    os.makedirs(cube.OUT, exist_ok=True)
    chain, pharmacies = cube.chain_for(args.rxcube, args.fills)
    wh = cube.warehouse_for(args.rxcube, chain)
    env = dict(os.environ, DATAFUSION_EXECUTION_TARGET_PARTITIONS="2", TOKIO_WORKER_THREADS="2")
    pin = ["taskset", "-c", "0,1"]

    import duckdb
    con = duckdb.connect()
    cube.duck_setup(con, wh)
    fills = con.execute("SELECT count(*) FROM rx_fills").fetchone()[0]
    cube.pick_pharmacy(con, args.pharmacy)

    print("rollup build ...", flush=True)
    build_s, build_out = timed(pin + [args.rxcube, "rollup", "build", "-w", wh], env)
    print(build_out, flush=True)
    # One DuckDB pass: every key metric per pharmacy and local day, from the raw Parquet.
    pid = ["pharmacy_id", "day"]
    keyed = "pharmacy_id, CAST(lt AS DATE) AS day"
    one_pass = (f"WITH {cube.facts_sql()}, {cube.cells_sql(keyed, keyed, keyed, keyed, pid)} "
                "SELECT count(*), sum(local_fills), sum(rx_sold) FROM cells")
    start = time.perf_counter()
    con.execute(one_pass).fetchall()
    duck_pass_s = time.perf_counter() - start
    print(f"rollup build {build_s:.1f} s; one DuckDB pass {duck_pass_s:.1f} s", flush=True)

    ours_q, theirs_q, rollup_q = cube.rxcube_queries(), cube.duck_queries(), duck_rollup_queries(wh)
    names = args.only.split(",") if args.only else list(ours_q)
    rows = []
    for name in names:
        print(f"{name} ...", flush=True)
        times, ours_rows, served = run_all(args.rxcube, wh, ours_q[name], args.runs, env)
        assert "rollup" in served, (name, served)
        start = time.perf_counter()
        theirs_rows = con.execute(theirs_q[name]).fetchall()
        duck_raw = time.perf_counter() - start
        assert len(ours_rows) == len(theirs_rows), (name, len(ours_rows), len(theirs_rows))
        for o, t in zip(ours_rows, theirs_rows):
            assert all(cube.same(a, b) for a, b in zip(o, t)), (name, o, t)
        duck_rollup = None
        if name in rollup_q:
            _, rolled = cube.run_duck(con, rollup_q[name], 0)
            for o, t in zip(ours_rows, rolled):
                assert all(cube.same(a, b) for a, b in zip(o, t)), (name, "rollup parquet", o, t)
            duck_rollup = statistics.median(cube.run_duck(con, rollup_q[name], 5)[0])
        cold, warm = times[0], times[1:]
        rows.append((name, len(ours_rows), cold, pct(warm, 0.5), pct(warm, 0.99), duck_raw, duck_rollup))
        print(f"  {name}: rxcube first {cold * 1e3:.1f} ms, p50 {pct(warm, 0.5) * 1e3:.2f} ms, "
              f"p99 {pct(warm, 0.99) * 1e3:.2f} ms; DuckDB raw {duck_raw * 1e3:.0f} ms; "
              f"DuckDB on rollup {duck_rollup * 1e3 if duck_rollup else float('nan'):.1f} ms", flush=True)

    # One more day of fills (a full day's fills from before the end, moved to the day after
    # the last fill, under new prescription numbers), imported, then an incremental refresh.
    extra = os.path.join(cube.OUT, "one-more-day.parquet")
    con.execute(f"""COPY (SELECT 'D' || rx_id AS rx_id, fill_no, pharmacy_id, channel,
                               received_at + INTERVAL 5 DAY AS received_at, filled_at + INTERVAL 5 DAY AS filled_at
                        FROM rx_fills, (SELECT max(filled_at) AS m FROM rx_fills)
                        WHERE filled_at >= m - INTERVAL 5 DAY AND filled_at < m - INTERVAL 4 DAY)
                    TO '{extra}' (FORMAT parquet)""")
    day_fills = con.execute(f"SELECT count(*) FROM read_parquet('{extra}')").fetchone()[0]
    start = time.perf_counter()
    imported = subprocess.run(pin + [args.rxcube, "import", "-w", wh, "rx_fills", extra],
                              capture_output=True, text=True, env=env)
    import_s = time.perf_counter() - start
    if imported.returncode == 0:
        refresh_s, refresh_out = timed(pin + [args.rxcube, "rollup", "refresh", "-w", wh], env)
    else:
        refresh_s, refresh_out = float("nan"), "the extra day was rejected:\n" + imported.stderr[-2000:]
    print(refresh_out, flush=True)

    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"chain: {pharmacies} pharmacies x {cube.DAYS} days, {fills:,} fills; 2 threads each; "
        f"rxcube p50/p99 of {args.runs} warm runs in one session",
        "",
        "| served query | rows | rxcube first ms | rxcube p50 ms | rxcube p99 ms | DuckDB raw ms | raw / p50 | raw / first | DuckDB on rollup ms | rxcube first / DuckDB rollup |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {n} | {r} | {c * 1e3:.1f} | {a * 1e3:.1f} | {b * 1e3:.1f} | {d * 1e3:.0f} | {d / a:.0f}x | {d / c:.0f}x | "
          + (f"{u * 1e3:.1f} | {c / u:.2f}x |" if u else "- | - |")
          for n, r, c, a, b, d, u in rows],
        "",
        f"rollup build: {build_s:.1f} s; one DuckDB pass (key metrics per pharmacy and day): {duck_pass_s:.1f} s; "
        f"ratio {build_s / duck_pass_s:.2f}x (goal <= 1.5x); DuckDB {duckdb.__version__}",
        f"one more day ({day_fills:,} fills): import {import_s:.1f} s, then rollup refresh {refresh_s:.2f} s "
        "(whole command: process start, log read, recompute, commit)",
        "",
        "refresh:",
        refresh_out.strip(),
    ]
    print("\n".join(lines))
    with open(os.path.join(cube.OUT, "rollups.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
