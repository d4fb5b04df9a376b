"""Freshness benchmark (issue 17, item 4): how soon a fill dropped into a landing directory shows in
`cube.metrics`, through the server, to a Flight SQL client, while managers read score cards.

On a warehouse (the demo chain by default, or with --fills the generated chain of benches/cube.py
with its rollups built) this runs, on one machine:

- `rxcube import rx_fills --follow LANDING --poll P`: continuous ingestion;
- `rxcube serve --reload R` (auto-refresh on, its default debounce unless --refresh-debounce);
- --clients ADBC client processes reading score cards and the wide view as in benches/serve.py;
- a dropper: every --interval seconds for --seconds, one CSV file with one local fill of the probe
  pharmacy (the seventh pharmacy id of the chain) in the chain's last month, written aside and
  renamed into LANDING (so it appears whole, as a landing job's files do);
- a probe: the probe pharmacy's manager, polling every --probe-every seconds
    SELECT denominator FROM cube.metrics WHERE level = 'pharmacy' AND node = ? AND grain = 'month'
      AND period_start = ? AND metric = 'on_time_pct'
  (the month's local fills): when it has grown by k, the first k files are visible.

A file's latency is the time from its rename into LANDING to the first probe answer that counts
it. Reported: p50/p99/max latency over the files, files never seen (within --drain seconds after
the last), the clients' queries/s and p50/p99, and every answer, probe or client, that was not
served from a rollup (`rxcube.served_by` metadata without "rollup": a fallback to the raw tables).
Printed as Markdown for benches/RESULTS.md and written to benches/out/freshness.md.
"""

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve  # noqa: E402  (the server, the users and the score-card clients of benches/serve.py)

OUT = serve.OUT
PROBE = ("SELECT denominator FROM cube.metrics WHERE level = 'pharmacy' AND node = ? AND grain = 'month' "
         "AND period_start = CAST(? AS TIMESTAMP) AND metric = 'on_time_pct'")
HEADER = "rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n"


def served_from_rollup(table):
    return b"rollup" in (table.schema.metadata or {}).get(b"rxcube.served_by", b"")


class Probe(threading.Thread):
    """Polls the probe pharmacy's month; `seen[k]` is when the k+1-th dropped fill was first counted."""

    def __init__(self, uri, user, node, month, every):
        super().__init__(daemon=True)
        import adbc_driver_flightsql.dbapi as adbc

        self.conn = adbc.connect(uri, db_kwargs={"username": user, "password": serve.PASSWORD}, autocommit=True)
        self.cur = self.conn.cursor()
        self.node, self.month, self.every = node, month, every
        self.base = self.count()
        self.seen = []
        self.queries = 0
        self.raw = 0
        self.errors = []
        self.done = threading.Event()

    def count(self):
        self.cur.execute(PROBE, (self.node, self.month))
        table = self.cur.fetch_arrow_table()
        self.last_from_rollup = served_from_rollup(table)
        rows = table.to_pylist()
        return rows[0]["denominator"] if rows else 0

    def run(self):
        while not self.done.is_set():
            t = time.time()
            try:
                n = self.count() - self.base
                self.queries += 1
                self.raw += 0 if self.last_from_rollup else 1
                while len(self.seen) < n:
                    self.seen.append(t)
            except Exception as e:  # noqa: BLE001 - counted and reported; the run goes on
                if len(self.errors) < 3:
                    self.errors.append(str(e))
            time.sleep(max(0.0, self.every - (time.time() - t)))
        self.cur.close()
        self.conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_warehouse_args(ap)
    ap.add_argument("--seconds", type=float, default=600, help="how long files keep arriving")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between files")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--poll", type=float, default=0.2, help="the follower's --poll")
    ap.add_argument("--reload", type=int, default=1, help="the server's --reload")
    ap.add_argument("--refresh-debounce", type=int, help="the server's --refresh-debounce (default: its own)")
    ap.add_argument("--probe-every", type=float, default=0.1)
    ap.add_argument("--drain", type=float, default=60, help="seconds to wait for the last files")
    args = ap.parse_args()
    rxcube, wh = serve.warehouse_of(args)
    pharmacies = serve.pharmacies_of(rxcube, wh)
    probe_node = pharmacies[min(6, len(pharmacies) - 1)]
    users = serve.ensure_users(rxcube, wh, pharmacies[:args.users])
    if probe_node not in {n for _, n in users}:
        users += serve.ensure_users(rxcube, wh, [probe_node])
    probe_user = f"bench_p{probe_node}"
    month = serve.admin(rxcube, wh, "SELECT CAST(max(period_start) AS VARCHAR) AS p FROM cube.metrics "
                                    f"WHERE level = 'pharmacy' AND node = '{probe_node}' AND grain = 'month' "
                                    "AND metric = 'on_time_pct'")[0]["p"]
    # Mid-month at 18:00 UTC: the 15th in every American zone, inside the month's targets.
    day = month[:8] + "15"
    card_rows = {}
    for r in serve.admin(rxcube, wh, "SELECT node, CAST(period_start AS VARCHAR) AS p, count(*) AS n FROM cube.metrics "
                                     "WHERE level = 'pharmacy' AND grain = 'month' GROUP BY 1, 2"):
        card_rows.setdefault(r["node"], {})[r["p"]] = r["n"]
    wide_rows = {r["node"]: r["n"] for r in serve.admin(rxcube, wh, "SELECT node, count(*) AS n FROM cube.pharmacy_month GROUP BY 1")}
    periods = sorted({p for by_period in card_rows.values() for p in by_period})
    fills = serve.admin(rxcube, wh, "SELECT count(*) AS n FROM rx_fills")[0]["n"]
    print(f"warehouse {wh}: {len(pharmacies)} pharmacies, {fills:,} fills; probe pharmacy {probe_node}, month {month}",
          flush=True)

    landing = os.path.join(OUT, "freshness-landing")
    aside = os.path.join(OUT, "freshness-aside")
    for d in (landing, aside):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    follower = subprocess.Popen([rxcube, "import", "--warehouse", wh, "rx_fills", "--follow", landing,
                                 "--poll", str(args.poll)], stdout=open(os.path.join(OUT, "freshness-follow.out"), "w"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    cmd = [rxcube, "serve", "--warehouse", wh, "--flight", "127.0.0.1:0", "--no-http", "--reload", str(args.reload)]
    if args.refresh_debounce is not None:
        cmd += ["--refresh-debounce", str(args.refresh_debounce)]
    server = serve.Server(cmd)
    try:
        report = run(args, server, users, probe_user, probe_node, month, day, card_rows, wide_rows, periods, landing, aside)
    finally:
        code = server.stop()
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"warehouse: {wh} ({len(pharmacies)} pharmacies, {fills:,} fills); `rxcube serve --reload {args.reload}` ({rxcube})"
        + (f" --refresh-debounce {args.refresh_debounce}" if args.refresh_debounce is not None else "")
        + f" and `rxcube import rx_fills --follow --poll {args.poll:g}`; one file of one fill every {args.interval:g} s "
          f"for {args.seconds:g} s; probe every {args.probe_every:g} s as {probe_user}; {args.clients} ADBC clients "
          "reading score cards (benches/serve.py's queries) meanwhile; all on the same machine",
    ]
    serve.publish("freshness.md", lines, report, code)
    if code != 0 or report["failed"]:
        sys.exit(1)


def run(args, server, users, probe_user, probe_node, month, day, card_rows, wide_rows, periods, landing, aside):
    procs, go, start, results = serve.start_clients(args.clients, server.uri, users, card_rows, wide_rows, periods,
                                                    0.0, args.seconds + args.drain)
    probe = Probe(server.uri, probe_user, probe_node, month, args.probe_every)
    start.value = time.time()
    go.set()
    probe.start()

    dropped = []
    t0 = time.time()
    for i in range(int(args.seconds / args.interval)):
        wait = t0 + i * args.interval - time.time()
        if wait > 0:
            time.sleep(wait)
        name = f"fresh-{os.getpid()}-{i:06}.csv"
        with open(os.path.join(aside, name), "w") as f:
            f.write(HEADER + f"FRESH-{os.getpid()}-{i:06},0,{probe_node},local,{day}T18:00:00Z,{day}T18:05:00Z\n")
        os.rename(os.path.join(aside, name), os.path.join(landing, name))
        dropped.append(time.time())
    deadline = time.time() + args.drain
    while len(probe.seen) < len(dropped) and time.time() < deadline:
        time.sleep(0.2)
    probe.done.set()
    probe.join(timeout=30)
    outs = [results.get(timeout=args.drain + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)

    lat = [seen - at for at, seen in zip(dropped, probe.seen)]
    unseen = len(dropped) - len(lat)
    every = [x for o in outs for k in ("score_card", "wide_view") for x in o["lat"][k]]
    window = time.time() - start.value
    errors = sum(o["errors"] for o in outs) + len(probe.errors)
    wrong = sum(o["wrong"] for o in outs)
    raw = sum(o.get("raw", 0) for o in outs) + probe.raw
    pct = serve.pct
    lines = [
        "| files | seen | latency p50 s | p99 s | max s | probe queries | client queries | client queries/s | "
        "client p50 ms | client p99 ms | errors | wrong | answers not from a rollup |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {len(dropped)} | {len(lat)} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | {max(lat, default=float('nan')):.2f} | "
        f"{probe.queries:,} | {len(every):,} | {len(every) / window:,.0f} | {pct(every, 0.5) * 1e3:.1f} | "
        f"{pct(every, 0.99) * 1e3:.1f} | {errors} | {wrong} | {raw} |",
    ]
    return {"lines": lines, "failed": bool(unseen or errors or wrong),
            "messages": (probe.errors + [m for o in outs for m in o["messages"]])[:5]}


if __name__ == "__main__":
    main()
