"""Serving benchmark: many pharmacy managers reading their score cards over Flight SQL at once.

`rxcube serve` (release build) runs on a warehouse: the demo chain (`rxcube demo`, default) or,
with --fills, the generated chain of benches/cube.py with its rollups. One user per pharmacy
(`bench_p<id>`, scope `pharmacy:<id>`) is created first. Then --clients processes, each one ADBC
Flight SQL connection logged in as one of those users (rotating through them), run for a warm-up
and then --seconds, one query after another, alternating:

  score_card   SELECT metric, value, peer_avg, peer_rank, peer_size FROM cube.metrics
               WHERE level = 'pharmacy' AND node = ? AND grain = 'month' AND period_start = ?
               (one prepared statement per client, re-bound for each month in turn)
  wide_view    the user's row per month of cube.pharmacy_month (the five key metrics)

Every answer's row count is checked against the administrator's (`rxcube sql`) for that
pharmacy and month before it counts as right. Reported: queries/s over the measured window,
p50/p99/max latency (execute and fetch of the whole result, as a client sees it), errors and
wrong answers, the server's CPU (cores busy) and memory (VmRSS idle, peak VmRSS sampled every
100 ms, VmHWM at the end, from /proc/<pid>/status). Clients and server share the machine.
Printed as Markdown for benches/RESULTS.md and written to benches/out/serve.md.
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
PASSWORD = "bench-serve"
SCORE_CARD = ("SELECT metric, value, peer_avg, peer_rank, peer_size FROM cube.metrics "
              "WHERE level = 'pharmacy' AND node = ? AND grain = 'month' AND period_start = CAST(? AS TIMESTAMP) "
              "ORDER BY metric")
WIDE_VIEW = ("SELECT node, period_start, labor_cost_per_rx, csat_pct, on_time_pct, otc_sales_per_rx, crp_usage_pct "
             "FROM cube.pharmacy_month ORDER BY period_start")


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def admin(rxcube, wh, sql):
    return json.loads(run([rxcube, "sql", "--warehouse", wh, "--format", "json", sql]) or "[]")


def demo_warehouse(rxcube):
    wh = os.path.join(OUT, "serve-demo")
    if not os.path.exists(os.path.join(wh, ".done")):
        shutil.rmtree(wh, ignore_errors=True)
        print(f"landing the demo chain in {wh} ...", flush=True)
        run([rxcube, "demo", "--warehouse", wh])
        open(os.path.join(wh, ".done"), "w").close()
    return wh


def generated_warehouse(rxcube, fills):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cube

    chain, _ = cube.chain_for(rxcube, fills)
    wh = cube.warehouse_for(rxcube, chain)
    print("rxcube rollup refresh ...", flush=True)
    print(run([rxcube, "rollup", "refresh", "--warehouse", wh]), flush=True)
    return wh


def add_warehouse_args(ap):
    """The serving benches' --rxcube, --warehouse and --fills: the binary and what it serves."""
    ap.add_argument("--rxcube", required=True)
    ap.add_argument("--warehouse", help="serve this warehouse (default: the demo chain in benches/out/serve-demo)")
    ap.add_argument("--fills", type=int, help="serve the generated chain of benches/cube.py with about this many fills")


def warehouse_of(args):
    """(the rxcube binary's absolute path, the warehouse to serve) for add_warehouse_args' flags:
    --warehouse as given, the generated chain of --fills (landed and rolled up when missing), or
    the demo chain."""
    os.makedirs(OUT, exist_ok=True)
    rxcube = os.path.abspath(args.rxcube)
    if args.warehouse:
        return rxcube, args.warehouse
    if args.fills:
        return rxcube, generated_warehouse(rxcube, args.fills)
    return rxcube, demo_warehouse(rxcube)


def pharmacies_of(rxcube, wh):
    """The warehouse's pharmacy ids, sorted."""
    return [r["pharmacy_id"] for r in admin(rxcube, wh, "SELECT DISTINCT pharmacy_id FROM pharmacies ORDER BY 1")]


def ensure_users(rxcube, wh, pharmacies):
    """One pharmacy manager per pharmacy, `bench_p<id>`; those already there are kept."""
    # `users list` is tab-separated, the user first; pharmacy ids are text (RX101, 00423).
    listed = {line.split("\t", 1)[0] for line in run([rxcube, "users", "list", "--warehouse", wh]).splitlines()}
    users = []
    for pid in pharmacies:
        name = f"bench_p{pid}"
        if name not in listed:
            run([rxcube, "users", "add", name, "--scope", f"pharmacy:{pid}", "--group", "analysts",
                 "--password-stdin", "--warehouse", wh], input=PASSWORD + "\n")
        users.append((name, str(pid)))
    return users


class Server:
    def __init__(self, cmd, timeout=120):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(os.path.join(OUT, "serve.stderr"), "w"),
                                     stdin=subprocess.DEVNULL, text=True)
        lines = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        m = re.fullmatch(r"listening on (grpc(?:\+tls)?://127\.0\.0\.1:\d+)", (line or "").strip())
        if not m:
            self.proc.kill()
            sys.exit(f"rxcube serve did not start (stdout {line!r}); see {OUT}/serve.stderr")
        self.uri = m.group(1)
        self.lines = lines  # what the server prints after its Flight SQL address

    def status(self):
        """(VmRSS, VmHWM) in MiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            kv = dict(line.split(":", 1) for line in f if ":" in line)
        return int(kv["VmRSS"].split()[0]) / 1024, int(kv["VmHWM"].split()[0]) / 1024

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "killed after 60 s"


def client(index, uri, user, node, periods, expected, barrier, go, start, warmup, seconds, results):
    """One client process: log in, then alternate the two queries until the window closes."""
    out = {"lat": {"score_card": [], "wide_view": []}, "errors": 0, "messages": [], "wrong": 0, "raw": 0,
           "login_s": None}
    conn = None
    try:
        import adbc_driver_flightsql.dbapi as adbc

        t = time.perf_counter()
        conn = adbc.connect(uri, db_kwargs={"username": user, "password": PASSWORD}, autocommit=True)
        out["login_s"] = time.perf_counter() - t
        card, wide = conn.cursor(), conn.cursor()
    except Exception as e:  # noqa: BLE001 - reported, not raised: the run goes on without this client
        out["errors"] += 1
        out["messages"].append(f"login as {user}: {e}")
        barrier.wait()
        results.put(out)
        return
    barrier.wait()
    go.wait()
    lo = start.value + warmup
    hi = lo + seconds
    i = index  # clients start at different months
    while True:
        began = time.time()
        if began >= hi:
            break
        kind = "score_card" if i % 2 == 0 else "wide_view"
        period = periods[(i // 2) % len(periods)]
        i += 1
        t = time.perf_counter()
        try:
            if kind == "score_card":
                card.execute(SCORE_CARD, (node, period))
                table = card.fetch_arrow_table()
                want = expected["score_card"].get(period, 0)
            else:
                wide.execute(WIDE_VIEW)
                table = wide.fetch_arrow_table()
                want = expected["wide_view"]
            n = table.num_rows
            elapsed = time.perf_counter() - t
        except Exception as e:  # noqa: BLE001
            if began >= lo:
                out["errors"] += 1
                if len(out["messages"]) < 3:
                    out["messages"].append(f"{kind} as {user}: {e}")
            continue
        if began >= lo:
            out["lat"][kind].append(elapsed)
            # Answered from the raw tables, not a rollup (the server's `rxcube.served_by`).
            out["raw"] += b"rollup" not in (table.schema.metadata or {}).get(b"rxcube.served_by", b"")
            if n != want:
                out["wrong"] += 1
                if len(out["messages"]) < 3:
                    out["messages"].append(f"{kind} as {user} ({period}): {n} rows, expected {want}")
    for cur in (card, wide):
        cur.close()
    conn.close()
    results.put(out)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_warehouse_args(ap)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--users", type=int, default=64, help="pharmacy managers to rotate through (at most one per pharmacy)")
    ap.add_argument("--taskset", help="CPUs to pin the server to, e.g. 0,1 (default: not pinned)")
    args = ap.parse_args()
    rxcube, wh = warehouse_of(args)
    pharmacies = pharmacies_of(rxcube, wh)
    fills = admin(rxcube, wh, "SELECT count(*) AS n FROM rx_fills")[0]["n"]
    users = ensure_users(rxcube, wh, pharmacies[:args.users])
    # What each answer must hold, from the administrator.
    card_rows = {}
    for r in admin(rxcube, wh, "SELECT node, CAST(period_start AS VARCHAR) AS p, count(*) AS n FROM cube.metrics "
                               "WHERE level = 'pharmacy' AND grain = 'month' GROUP BY 1, 2"):
        card_rows.setdefault(r["node"], {})[r["p"]] = r["n"]
    wide_rows = {r["node"]: r["n"] for r in admin(rxcube, wh, "SELECT node, count(*) AS n FROM cube.pharmacy_month GROUP BY 1")}
    periods = sorted({p for by_period in card_rows.values() for p in by_period})
    print(f"warehouse {wh}: {len(pharmacies)} pharmacies, {fills:,} fills, {len(periods)} months; "
          f"{len(users)} pharmacy users", flush=True)

    cmd = [rxcube, "serve", "--warehouse", wh, "--flight", "127.0.0.1:0", "--no-http"]
    if args.taskset:
        cmd = ["taskset", "-c", args.taskset] + cmd
    server = Server(cmd)
    try:
        report = load(args, server, users, card_rows, wide_rows, periods)
    finally:
        code = server.stop()
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"warehouse: {wh} ({len(pharmacies)} pharmacies, {fills:,} fills); `rxcube serve` release"
        + (f", pinned to CPUs {args.taskset}" if args.taskset else "") + "; "
        f"{args.clients} ADBC client processes on the same machine, each one connection as one of {len(users)} "
        f"pharmacy managers, alternating score_card and wide_view; {args.warmup:g} s warm-up, {args.seconds:g} s measured",
    ]
    publish("serve.md", lines, report, code)
    if code != 0 or report["errors"] or report["wrong"]:
        sys.exit(1)


def publish(name, head, report, code):
    """Prints a run's Markdown (its `head` lines, the report, the first errors) and writes it to
    benches/out/`name`."""
    lines = [*head, "", *report["lines"], f"server exit after SIGTERM: {code}"]
    if report["messages"]:
        lines += ["", "first errors:", *[f"- {m}" for m in report["messages"]]]
    print("\n".join(lines))
    with open(os.path.join(OUT, name), "w") as f:
        f.write("\n".join(lines) + "\n")


class Sampler:
    """Samples a server while clients run: its VmRSS every 100 ms and its CPU time, both from
    `measuring_from` (epoch seconds) on."""

    def __init__(self, server, measuring_from):
        self.server, self.measuring_from = server, measuring_from
        self.peak_rss = 0.0
        self.cpu_from = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            now = time.time()
            if self.cpu_from is None and now >= self.measuring_from:
                self.cpu_from = (now, self.server.cpu_seconds())
            rss, _ = self.server.status()
            if now >= self.measuring_from:
                self.peak_rss = max(self.peak_rss, rss)
            time.sleep(0.1)

    def cores(self):
        """The server's cores busy from `measuring_from` until now."""
        t1, c1 = time.time(), self.server.cpu_seconds()
        t0, c0 = self.cpu_from or (t1, c1)
        return (c1 - c0) / (t1 - t0) if t1 > t0 else float("nan")

    def stop(self):
        """Stops sampling; the peak VmRSS (MiB) seen."""
        self.done.set()
        self.thread.join()
        return self.peak_rss


def start_clients(n, uri, users, card_rows, wide_rows, periods, warmup, seconds):
    """Starts `n` client processes (rotating through `users`) and waits until all have logged in;
    they run once `go` is set, from `start.value`. Returns (processes, go, start, results)."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    results = ctx.Queue()
    procs = []
    for i in range(n):
        user, node = users[i % len(users)]
        expected = {"score_card": card_rows.get(node, {}), "wide_view": wide_rows.get(node, 0)}
        p = ctx.Process(target=client, args=(i, uri, user, node, periods, expected, barrier, go, start,
                                             warmup, seconds, results), daemon=True)
        p.start()
        procs.append(p)
    barrier.wait(timeout=300)
    return procs, go, start, results


def load(args, server, users, card_rows, wide_rows, periods):
    """Runs the clients against the server; the report's table lines and its error counts."""
    time.sleep(0.5)
    idle_rss, _ = server.status()
    print(f"server {server.uri}, pid {server.proc.pid}, VmRSS {idle_rss:.0f} MiB idle", flush=True)

    procs, go, start, results = start_clients(args.clients, server.uri, users, card_rows, wide_rows, periods,
                                              args.warmup, args.seconds)
    logged_in_rss, _ = server.status()
    start.value = time.time()
    go.set()

    # Sample the server while the clients run.
    sampler = Sampler(server, start.value + args.warmup)
    time.sleep(args.warmup + args.seconds)
    cores = sampler.cores()
    outs = [results.get(timeout=120) for _ in procs]
    peak_rss = sampler.stop()
    for p in procs:
        p.join(timeout=30)
    final_rss, hwm = server.status()

    lat = {k: [x for o in outs for x in o["lat"][k]] for k in ("score_card", "wide_view")}
    every = lat["score_card"] + lat["wide_view"]
    errors = sum(o["errors"] for o in outs)
    wrong = sum(o["wrong"] for o in outs)
    raw = sum(o["raw"] for o in outs)
    logins = [o["login_s"] for o in outs if o["login_s"] is not None]
    lines = [
        "| clients | queries | queries/s | p50 ms | p99 ms | max ms | errors | wrong | server CPU cores | "
        "server VmRSS idle MiB | peak VmRSS MiB | VmHWM MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.clients} | {len(every):,} | {len(every) / args.seconds:,.0f} | {pct(every, 0.5) * 1e3:.1f} | "
        f"{pct(every, 0.99) * 1e3:.1f} | {max(every, default=float('nan')) * 1e3:.1f} | {errors} | {wrong} | {cores:.2f} | "
        f"{idle_rss:.0f} | {peak_rss:.0f} | {hwm:.0f} |",
        "",
        "| query | queries | queries/s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
        *[f"| {k} | {len(v):,} | {len(v) / args.seconds:,.0f} | {pct(v, 0.5) * 1e3:.1f} | {pct(v, 0.99) * 1e3:.1f} | "
          f"{max(v, default=float('nan')) * 1e3:.1f} |" for k, v in lat.items()],
        "",
        f"logins: {len(logins)} of {args.clients}, p50 {pct(logins, 0.5) * 1e3:.0f} ms, max "
        f"{max(logins, default=float('nan')) * 1e3:.0f} ms; {raw} answers not from a rollup; server VmRSS after the logins {logged_in_rss:.0f} MiB, "
        f"at the end {final_rss:.0f} MiB (peak VmRSS sampled every 100 ms over the measured window)",
    ]
    return {"lines": lines, "errors": errors, "wrong": wrong,
            "messages": [m for o in outs for m in o["messages"]][:5]}


if __name__ == "__main__":
    main()
