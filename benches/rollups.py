"""Rollup benchmark: served cube queries, rollup build and refresh, against DuckDB, in one run.

On the chain of benches/cube.py (same generation, same warehouse, default about 20M fills):

  build     `rxcube rollup build` (every rollup from scratch) against one DuckDB pass over the
            raw Parquet computing the five key metrics per pharmacy and day
  served    the report queries of cube.py answered from the rollups (p50 and p99 of --runs warm
            runs in one process) against DuckDB computing them from the raw Parquet

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


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--fills", type=int, default=20_000_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", help="comma-separated query names")
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

    ours_q, theirs_q = cube.rxcube_queries(), cube.duck_queries()
    names = args.only.split(",") if args.only else list(ours_q)
    rows = []
    for name in names:
        print(f"{name} ...", flush=True)
        ours_t, header, ours_rows = cube.run_rxcube(args.rxcube, wh, ours_q[name], args.runs)
        theirs_t, theirs_rows = cube.run_duck(con, theirs_q[name], 1)
        assert len(ours_rows) == len(theirs_rows), (name, len(ours_rows), len(theirs_rows))
        for o, t in zip(ours_rows, theirs_rows):
            assert all(cube.same(a, b) for a, b in zip(o, t)), (name, header, o, t)
        p50, p99, duck = pct(ours_t, 0.5), pct(ours_t, 0.99), statistics.median(theirs_t)
        rows.append((name, len(ours_rows), p50, p99, duck, duck / p50))

    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"chain: {pharmacies} pharmacies x {cube.DAYS} days, {fills:,} fills; 2 threads each; "
        f"rxcube p50/p99 of {args.runs} warm runs in one session",
        "",
        "| served query | rows | rxcube p50 ms | rxcube p99 ms | DuckDB raw ms | DuckDB / rxcube |",
        "|---|---|---|---|---|---|",
        *[f"| {n} | {r} | {a * 1e3:.1f} | {b * 1e3:.1f} | {d * 1e3:.0f} | {x:.0f}x |" for n, r, a, b, d, x in rows],
        "",
        f"rollup build: {build_s:.1f} s; one DuckDB pass (key metrics per pharmacy and day): {duck_pass_s:.1f} s; "
        f"ratio {build_s / duck_pass_s:.2f}x (goal <= 1.5x); DuckDB {duckdb.__version__}",
    ]
    print("\n".join(lines))
    with open(os.path.join(cube.OUT, "rollups.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
