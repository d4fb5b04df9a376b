"""Import benchmark: rxcube's import utility against DuckDB converting the same CSV to Parquet.

Both read the same generated CSV (rx_fills, or pos with --table pos) with 2 threads; rxcube
validates every record, checks references and duplicate keys, and commits a partitioned, sorted
Delta table within its memory budget (--memory-limit, default rxcube's own); DuckDB parses the
CSV with the contract's types and writes one zstd Parquet file. Reported: wall time, rows/s and
peak resident memory of each, and the ratio of rates. Both outputs are read back to check they
hold the same rows.

  --fills N         size the chain by fills (~390 per pharmacy-day over 120 days)
  --pharmacies N    or by pharmacies (120 days): `--table pos --pharmacies 170` is the 19.4M-line
                    POS file of `rxcube generate --pharmacies 170 --days 120`
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def run_measured(cmd, env=None):
    """Runs cmd, returning (seconds, peak RSS in MiB) of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    return elapsed, usage.ru_maxrss / 1024, out


def generate(rxcube, pharmacies):
    """The generated CSV chain of `pharmacies` pharmacies over 120 days."""
    days = 120
    chain = os.path.join(OUT, f"chain-{pharmacies}x{days}")
    marker = os.path.join(chain, ".done")
    if not os.path.exists(marker):
        shutil.rmtree(chain, ignore_errors=True)
        print(f"generating {pharmacies} pharmacies x {days} days into {chain} ...", flush=True)
        subprocess.run([rxcube, "generate", "--out", chain, "--pharmacies", str(pharmacies), "--days", str(days)], check=True)
        open(marker, "w").close()
    return chain


# The contract's columns and types (ids are text), per table, and a check both outputs must pass.
TABLES = {
    "rx_fills": {
        "columns": "'rx_id': 'VARCHAR', 'fill_no': 'INTEGER', 'pharmacy_id': 'VARCHAR', 'channel': 'VARCHAR', "
                   "'received_at': 'TIMESTAMPTZ', 'filled_at': 'TIMESTAMPTZ'",
        "check": "SELECT count(*), count(DISTINCT rx_id), sum(fill_no), CAST(min(filled_at) AS VARCHAR), "
                 "CAST(max(filled_at) AS VARCHAR), max(rx_id)",
    },
    "pos": {
        "columns": "'txn_id': 'VARCHAR', 'line_no': 'INTEGER', 'pharmacy_id': 'VARCHAR', 'sold_at': 'TIMESTAMPTZ', "
                   "'kind': 'VARCHAR', 'quantity': 'INTEGER', 'amount': 'DECIMAL(18, 2)', 'rx_id': 'VARCHAR'",
        "check": "SELECT count(*), count(DISTINCT txn_id), sum(line_no), sum(quantity), CAST(sum(amount) AS VARCHAR), "
                 "CAST(min(sold_at) AS VARCHAR), max(txn_id)",
    },
}

DUCKDB_CONVERT = """
import duckdb, sys
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(f'''COPY (SELECT * FROM read_csv('{sys.argv[1]}', header = true, columns = {{{sys.argv[3]}}}))
  TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)''')
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--fills", type=int, default=10_000_000)
    ap.add_argument("--pharmacies", type=int, help="size the chain by pharmacies instead of fills")
    ap.add_argument("--table", choices=sorted(TABLES), default="rx_fills")
    ap.add_argument("--memory-limit", help="rxcube import's --memory-limit (default: rxcube's own)")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    pharmacies = args.pharmacies or max(1, round(args.fills / (120 * 390)))
    chain = generate(args.rxcube, pharmacies)
    table = args.table
    csv = os.path.join(chain, f"{table}.csv")
    rows = sum(1 for _ in open(csv, "rb")) - 1
    size_mb = os.path.getsize(csv) / 2**20

    wh = os.path.join(OUT, "import-warehouse")
    shutil.rmtree(wh, ignore_errors=True)
    subprocess.run([args.rxcube, "import", "-w", wh, "pharmacies", os.path.join(chain, "pharmacies.csv")], check=True, capture_output=True)
    env = dict(os.environ, TOKIO_WORKER_THREADS="2", DATAFUSION_EXECUTION_TARGET_PARTITIONS="2")
    limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    ours_s, ours_mb, summary = run_measured(
        ["taskset", "-c", "0,1", args.rxcube, "import", "-w", wh, *limit, table, csv], env)

    parquet = os.path.join(OUT, f"duckdb-{table}.parquet")
    if os.path.exists(parquet):
        os.remove(parquet)
    theirs_s, theirs_mb, _ = run_measured([sys.executable, "-c", DUCKDB_CONVERT, csv, parquet, TABLES[table]["columns"]])

    # Same rows on both sides.
    import duckdb
    check = TABLES[table]["check"]
    con = duckdb.connect()
    theirs = con.execute(f"{check} FROM read_parquet('{parquet}')").fetchone()
    ext = [p for p in sys.path if os.path.isdir(os.path.join(p, "duckdb_ext"))]
    con.execute(f"LOAD '{ext[0]}/duckdb_ext/extensions/v{duckdb.__version__}/linux_amd64/delta.duckdb_extension'")
    ours = con.execute(f"{check} FROM delta_scan('{wh}/{table}')").fetchone()
    assert ours == theirs, (ours, theirs)

    ratio = (rows / ours_s) / (rows / theirs_s)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"input: {rows:,} {table} records ({pharmacies} pharmacies x 120 days), {size_mb:,.0f} MiB of CSV; "
        f"rxcube --memory-limit {args.memory_limit or 'default'}",
        "",
        "| tool | wall s | rows/s | peak RSS MiB |",
        "|---|---|---|---|",
        f"| rxcube import (validate + Delta commit) | {ours_s:.2f} | {rows / ours_s:,.0f} | {ours_mb:,.0f} |",
        f"| DuckDB {duckdb.__version__} CSV -> Parquet | {theirs_s:.2f} | {rows / theirs_s:,.0f} | {theirs_mb:,.0f} |",
        "",
        f"rate ratio rxcube / DuckDB: {ratio:.2f}x (goal >= 1.0)",
        f"rxcube summary: {summary.strip()}",
    ]
    print("\n".join(lines))
    with open(os.path.join(OUT, "import.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
