"""Score-card pages benchmark: many pharmacy managers opening their one-page score card at once.

`rxcube serve` (release build) runs with its web pages on a warehouse: the demo chain (`rxcube
demo`, default) or, with --fills, the generated chain of benches/cube.py with its rollups built
(`rxcube rollup refresh`, so the pages are served from rollups). One user per pharmacy
(`bench_p<id>`, scope `pharmacy:<id>`) is created first. Then --clients processes, each signed
in through the HTML form at /login as one of those users (rotating through them), one keep-alive
HTTP connection each, run for a warm-up and then --seconds, one request after another:

  GET /card/pharmacy/<id>?period=<pay period>     Accept-Encoding: gzip

each client stepping through the chain's pay periods in turn (clients start at different ones).
A user's first page of a pay period plans its queries; the server keeps its answers for the
snapshot and the user, so the pages after it are read back: those first views are reported on
their own line (warm-up included). An answer counts as right when it is 200, gzipped, and its on-time value cell
(`data-metric="on_time_pct" data-field="value"`) holds the administrator's `cube.metrics` value
for that pharmacy and pay period (`rxcube sql`) as the page prints it (`83.1%`, or `n/a`). Reported: pages/s over the
measured window, p50/p99/max latency (request to the last byte of the body, as a browser on
loopback sees it), gzipped page size, errors and wrong pages, the server's CPU (cores busy) and
memory (VmRSS idle, peak VmRSS sampled every 100 ms, VmHWM). Clients and server share the
machine. Printed as Markdown for benches/RESULTS.md and written to benches/out/pages.md.

The target of issue 15: p50 <= 50 ms, p99 <= 200 ms at 20M fills with 32 clients, pages at most
100 KB gzipped.
"""

import argparse
import gzip
import http.client
import json
import multiprocessing as mp
import os
import platform
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve import (PASSWORD, Sampler, Server, add_warehouse_args, admin, ensure_users,  # noqa: E402
                   pct, pharmacies_of, publish, run, warehouse_of)

ON_TIME = re.compile(r'data-metric="on_time_pct" data-field="value">([^<]*)<')
PAGE_LIMIT = 100 * 1024


def admin_scoped(rxcube, wh, sql):
    """`sql`'s rows from the administrator, with small-cell protection on as in a pharmacy
    manager's session (`rxcube sql` prints one JSON line per statement)."""
    out = run([rxcube, "sql", "--warehouse", wh, "--format", "json", f"SET rxcube.small_cells = true; {sql}"])
    return json.loads(out.strip().splitlines()[-1])


def sign_in(conn, user):
    """The HTML form's sign-in: GET /login for its CSRF token and cookie, POST the form; the
    session cookie."""
    conn.request("GET", "/login")
    r = conn.getresponse()
    body = r.read().decode()
    if r.status != 200:
        raise RuntimeError(f"GET /login: {r.status}")
    login_cookie = r.getheader("Set-Cookie", "").split(";")[0]
    token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    form = urllib.parse.urlencode({"username": user, "password": PASSWORD, "csrf": token})
    conn.request("POST", "/login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie,
        "Sec-Fetch-Site": "same-origin"})
    r = conn.getresponse()
    r.read()
    if r.status != 303:
        raise RuntimeError(f"POST /login as {user}: {r.status}")
    return r.getheader("Set-Cookie", "").split(";")[0]


def client(index, host, port, user, node, periods, expected, barrier, go, start, warmup, seconds, results):
    """One client process: sign in, then open the score card of each pay period in turn until
    the window closes."""
    out = {"lat": [], "first": [], "bytes": [], "errors": 0, "wrong": 0, "messages": [], "login_s": None}
    try:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        t = time.perf_counter()
        cookie = sign_in(conn, user)
        out["login_s"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - reported, not raised: the run goes on without this client
        out["errors"] += 1
        out["messages"].append(f"sign-in as {user}: {e}")
        barrier.wait()
        results.put(out)
        return
    barrier.wait()
    go.wait()
    lo = start.value + warmup
    hi = lo + seconds
    path = f"/card/pharmacy/{urllib.parse.quote(node, safe='')}?period="
    i = index
    seen = set()
    while True:
        began = time.time()
        if began >= hi:
            break
        period = periods[i % len(periods)]
        i += 1
        t = time.perf_counter()
        try:
            conn.request("GET", path + period, headers={"Cookie": cookie, "Accept-Encoding": "gzip"})
            r = conn.getresponse()
            body = r.read()
            elapsed = time.perf_counter() - t
            status, encoding = r.status, r.getheader("Content-Encoding")
        except Exception as e:  # noqa: BLE001
            if began >= lo:
                out["errors"] += 1
                if len(out["messages"]) < 3:
                    out["messages"].append(f"{path}{period} as {user}: {e}")
            conn.close()
            conn = http.client.HTTPConnection(host, port, timeout=120)
            continue
        if period not in seen and status == 200:
            seen.add(period)
            out["first"].append(elapsed)
        if began < lo:
            continue
        out["lat"].append(elapsed)
        out["bytes"].append(len(body))
        problem = None
        if status != 200:
            problem = f"status {status}"
        elif encoding != "gzip":
            problem = f"Content-Encoding {encoding!r}"
        else:
            m = ON_TIME.search(gzip.decompress(body).decode())
            want = expected.get(period, "n/a")
            if m is None:
                problem = "no on-time value cell"
            elif m.group(1).strip() != want:
                problem = f"on-time {m.group(1)!r}, expected {want}"
        if problem:
            out["wrong"] += 1
            if len(out["messages"]) < 3:
                out["messages"].append(f"{path}{period} as {user}: {problem}")
    conn.close()
    results.put(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_warehouse_args(ap)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--users", type=int, default=64, help="pharmacy managers to rotate through (at most one per pharmacy)")
    ap.add_argument("--periods", type=int, default=6, help="the latest pay periods the clients step through")
    args = ap.parse_args()
    rxcube, wh = warehouse_of(args)
    pharmacies = pharmacies_of(rxcube, wh)
    fills = admin(rxcube, wh, "SELECT count(*) AS n FROM rx_fills")[0]["n"]
    users = ensure_users(rxcube, wh, pharmacies[:args.users])
    nodes = {node for _, node in users}
    # The on-time value each page must show, from the administrator.
    on_time = {}
    for r in admin_scoped(rxcube, wh, "SELECT node, CAST(CAST(period_start AS DATE) AS VARCHAR) AS p, value "
                                      "FROM cube.metrics WHERE level = 'pharmacy' AND grain = 'pay_period' "
                                      "AND metric = 'on_time_pct'"):
        if r["node"] in nodes:
            on_time.setdefault(r["node"], {})[r["p"]] = "n/a" if r.get("value") is None else f"{r['value']:.1f}%"
    periods = sorted({p for by_period in on_time.values() for p in by_period})[-args.periods:]
    rollups = ", ".join(r["rollup"] + ("" if r.get("fresh") else " (stale)")
                        for r in admin(rxcube, wh, "SELECT rollup, fresh FROM system.rollups ORDER BY rollup"))
    print(f"warehouse {wh}: {len(pharmacies)} pharmacies, {fills:,} fills, pay periods {periods[0]} .. {periods[-1]}; "
          f"{len(users)} pharmacy users; rollups: {rollups or 'none'}",
          flush=True)

    server = Server([rxcube, "serve", "--warehouse", wh, "--flight", "127.0.0.1:0", "--http", "127.0.0.1:0"])
    line = (server.lines.get(timeout=60) or "").strip()
    m = re.fullmatch(r"listening on http://(127\.0\.0\.1):(\d+)", line)
    if not m:
        server.stop()
        sys.exit(f"rxcube serve printed {line!r}, not its web address")
    host, port = m.group(1), int(m.group(2))
    try:
        report = load(args, server, host, port, users, on_time, periods)
    finally:
        code = server.stop()
    build = "release" if f"{os.sep}release{os.sep}" in rxcube else f"NOT a release build ({rxcube})"
    head = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        f"warehouse: {wh} ({len(pharmacies)} pharmacies, {fills:,} fills); `rxcube serve` {build} with its pages; "
        f"{args.clients} HTTP client processes on the same machine, each signed in as one of {len(users)} pharmacy "
        f"managers, opening their score card for the last {len(periods)} pay periods in turn; {args.warmup:g} s warm-up, "
        f"{args.seconds:g} s measured",
    ]
    publish("pages.md", head, report, code)
    if code != 0 or report["errors"] or report["wrong"]:
        sys.exit(1)


def load(args, server, host, port, users, on_time, periods):
    """Runs the clients against the server's pages; the report's lines and its error counts."""
    time.sleep(0.5)
    idle_rss, _ = server.status()
    print(f"server http://{host}:{port}, pid {server.proc.pid}, VmRSS {idle_rss:.0f} MiB idle", flush=True)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.clients + 1)
    go = ctx.Event()
    start = ctx.Value("d", 0.0)
    results = ctx.Queue()
    procs = []
    for i in range(args.clients):
        user, node = users[i % len(users)]
        p = ctx.Process(target=client, args=(i, host, port, user, node, periods, on_time.get(node, {}), barrier, go,
                                             start, args.warmup, args.seconds, results), daemon=True)
        p.start()
        procs.append(p)
    barrier.wait(timeout=300)
    start.value = time.time()
    go.set()

    sampler = Sampler(server, start.value + args.warmup)
    time.sleep(args.warmup + args.seconds)
    cores = sampler.cores()
    outs = [results.get(timeout=180) for _ in procs]
    peak_rss = sampler.stop()
    for p in procs:
        p.join(timeout=30)
    final_rss, hwm = server.status()

    lat = [x for o in outs for x in o["lat"]]
    first = [x for o in outs for x in o["first"]]
    sizes = [x for o in outs for x in o["bytes"]]
    errors = sum(o["errors"] for o in outs)
    wrong = sum(o["wrong"] for o in outs)
    oversized = sum(s > PAGE_LIMIT for s in sizes)
    logins = [o["login_s"] for o in outs if o["login_s"] is not None]
    lines = [
        "| clients | pages | pages/s | p50 ms | p99 ms | max ms | gzipped KB p50 / max | errors | wrong | "
        "server CPU cores | server VmRSS idle MiB | peak VmRSS MiB | VmHWM MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.clients} | {len(lat):,} | {len(lat) / args.seconds:,.1f} | {pct(lat, 0.5) * 1e3:.1f} | "
        f"{pct(lat, 0.99) * 1e3:.1f} | {max(lat, default=float('nan')) * 1e3:.1f} | "
        f"{pct(sizes, 0.5) / 1024:.1f} / {max(sizes, default=0) / 1024:.1f} | {errors} | {wrong} | {cores:.2f} | "
        f"{idle_rss:.0f} | {peak_rss:.0f} | {hwm:.0f} |",
        "",
        f"sign-ins: {len(logins)} of {args.clients}, p50 {pct(logins, 0.5) * 1e3:.0f} ms, max "
        f"{max(logins, default=float('nan')) * 1e3:.0f} ms; pages over 100 KB gzipped: {oversized}; server VmRSS at the "
        f"end {final_rss:.0f} MiB (peak VmRSS sampled every 100 ms over the measured window)",
        "",
        f"first views (each user's first page of a pay period, warm-up included; the server keeps a user's page "
        f"answers per snapshot, so only these plan their queries): {len(first)}, p50 {pct(first, 0.5) * 1e3:.1f} ms, "
        f"p99 {pct(first, 0.99) * 1e3:.1f} ms, max {max(first, default=float('nan')) * 1e3:.1f} ms",
    ]
    return {"lines": lines, "errors": errors + oversized, "wrong": wrong,
            "messages": [m for o in outs for m in o["messages"]][:5]}


if __name__ == "__main__":
    main()
