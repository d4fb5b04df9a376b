"""Raw-path benchmark against the tuned DuckDB peer (the DuckDB to beat).

rxcube's raw path (`rxcube sql --no-rollups`, result cache off) against three queries written
by hand for DuckDB the way its experts would (`benches/duckdb-tuned/tuned_q*.sql`: local time
from a (zone, UTC hour) offset table joined by hash, effective-dated rows as interval runs, pay
periods as integer arithmetic, POS and payroll summed per pharmacy and UTC hour first). Both
sides run with 2 threads on the same Parquet files: DuckDB's views read exactly the files of
each Delta table's current version (from its log), plus a `<table>_meta` view of their
`parquet_metadata`. Every row is checked equal before timing.

  q1  pharmacy x pay period on_time_pct with peer_avg and peer_rank (all periods)
  q2  region x month labor_cost_per_rx with numerator and denominator
  q3  one pharmacy's five key metrics for the pay period of 2024-02-18, with peer_avg, peer_rank

  python benches/tuned.py --rxcube target/release/rxcube [--fills 4700000] [--runs 3]
"""

import argparse
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cube  # noqa: E402  (the chain, the warehouse, the views and the rxcube runner are shared)

KEY = ", ".join(f"'{m}'" for m in cube.KEY)


def tuned(name):
    with open(os.path.join(HERE, "duckdb-tuned", f"tuned_{name}.sql")) as f:
        return f.read().strip().rstrip(";")


def queries(pharmacy):
    """(rxcube SQL, DuckDB SQL) per query, both ordered the same and with text periods."""
    period = cube.PERIOD
    return {
        "q1_on_time_by_pharmacy_pay_period": (
            """SELECT node, CAST(period_start AS VARCHAR) AS p, value, peer_avg, peer_rank FROM cube.metrics
               WHERE level = 'pharmacy' AND grain = 'pay_period' AND metric = 'on_time_pct' ORDER BY node, p""",
            f"""SELECT node, CAST(CAST(period_start AS TIMESTAMP) AS VARCHAR) AS p, value, peer_avg, peer_rank
                FROM ({tuned('q1')}) ORDER BY node, p"""),
        "q2_labor_cost_per_rx_by_region_month": (
            """SELECT node, CAST(period_start AS VARCHAR) AS p, value, numerator, denominator FROM cube.metrics
               WHERE level = 'region' AND grain = 'month' AND metric = 'labor_cost_per_rx' ORDER BY node, p""",
            f"""SELECT node, CAST(CAST(period_start AS TIMESTAMP) AS VARCHAR) AS p, value, numerator, denominator
                FROM ({tuned('q2')}) ORDER BY node, p"""),
        "q3_score_card": (
            f"""SELECT metric, value, peer_avg, peer_rank FROM cube.metrics
                WHERE level = 'pharmacy' AND grain = 'pay_period' AND node = '{pharmacy}'
                  AND period_start = TIMESTAMP '{period} 00:00:00' AND metric IN ({KEY}) ORDER BY metric""",
            f"SELECT * FROM ({tuned('q3').replace('@NODE@', pharmacy)}) ORDER BY metric"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--fills", type=int, default=4_700_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", help="comma-separated query names (prefixes: q1,q2,q3)")
    args = ap.parse_args()
    os.makedirs(cube.OUT, exist_ok=True)
    chain, pharmacies = cube.chain_for(args.rxcube, args.fills)
    wh = cube.warehouse_for(args.rxcube, chain)

    import duckdb
    con = duckdb.connect()
    cube.duck_setup(con, wh, meta=True)
    fills = con.execute("SELECT count(*) FROM rx_fills").fetchone()[0]
    pharmacy = cube.pick_pharmacy(con)

    results = []
    for name, (ours_sql, theirs_sql) in queries(pharmacy).items():
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        print(f"{name} ...", flush=True)
        ours_t, header, ours_rows = cube.run_rxcube(args.rxcube, wh, ours_sql, args.runs)
        theirs_t, theirs_rows = cube.run_duck(con, theirs_sql, args.runs)
        results.append(cube.compared(name, header, ours_t, ours_rows, theirs_t, theirs_rows))

    geo = cube.geomean(results)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"chain: {pharmacies} pharmacies x {cube.DAYS} days, {fills:,} fills; 2 threads each; median of {args.runs} "
        f"warm runs; q3 on pharmacy {pharmacy}; every row checked equal",
        "",
        "| query | rows | rxcube raw s | DuckDB tuned s | rxcube / DuckDB |",
        "|---|---|---|---|---|",
        *[f"| {n} | {r} | {a:.3f} | {b:.3f} | {x:.2f}x |" for n, r, a, b, x in results],
        "",
        f"geometric mean rxcube / tuned DuckDB {duckdb.__version__}: {geo:.2f}x (goal <= 1.0)",
    ]
    print("\n".join(lines))
    with open(os.path.join(cube.OUT, "tuned.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
