"""The server keeps the rollups fresh itself (issue 17, item 2), seen by a Flight SQL client.

A fill lands by `rxcube import` while `rxcube serve` runs on the demo warehouse (rollups built):
the server sees the new table version at its next reload, shows the rollups stale in
`system.rollups` (behind since the import's commit, as the Delta log records it), refreshes
them in the background once the debounce has passed, and serves the cube from the new rollup
versions again, with the answer the raw tables give. With `--no-auto-refresh` the rollups stay
stale, and queries are answered from them caught up with the raw facts of what changed.
"""

import glob
import json
import os
import signal
import time

import adbc_driver_flightsql.dbapi as adbc

from conftest import rxcube
from test_flight_sql import PASSWORD, Server, copy_warehouse, fetch

SCORE = ("SELECT node, metric, value, numerator, denominator FROM cube.metrics WHERE level = 'pharmacy' "
         "AND node = '423' AND grain = 'month' AND period_start = TIMESTAMP '2024-02-01T00:00:00' "
         "AND metric = 'on_time_pct'")
STATUS = ("SELECT rollup, version, fresh, stale, behind_since, caught_up, lag_seconds FROM system.rollups "
          "ORDER BY rollup")


def land_fill(wh, tmp_path, rx_id):
    """Imports one on-time local fill of pharmacy 423 in February 2024; returns the commit time
    (ms since the epoch) of the rx_fills version it made, read from the Delta log itself."""
    csv = tmp_path / f"{rx_id}.csv"
    csv.write_text("rx_id,fill_no,pharmacy_id,channel,received_at,filled_at\n"
                   f"{rx_id},0,423,local,2024-02-14T10:00:00-06:00,2024-02-14T10:05:00-06:00\n")
    out = rxcube("import", "--warehouse", wh, "rx_fills", str(csv), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    last = sorted(glob.glob(os.path.join(wh, "rx_fills", "_delta_log", "*.json")))[-1]
    with open(last) as f:
        info = next(json.loads(line)["commitInfo"] for line in f if '"commitInfo"' in line)
    return info["timestamp"]


def connect(server, user="admin"):
    return adbc.connect(server.uri, db_kwargs={"username": user, "password": PASSWORD}, autocommit=True)


def status(conn):
    return fetch(conn, STATUS).to_pylist()


def served_by(table):
    return (table.schema.metadata or {}).get(b"rxcube.served_by", b"").decode()


def raw_answer(wh):
    """The answer of the raw tables (`rxcube sql --no-rollups`)."""
    return json.loads(rxcube("sql", "--warehouse", wh, "--no-rollups", "--format", "json", SCORE).stdout)


def test_the_server_refreshes_stale_rollups_itself(demo_warehouse, tmp_path):
    wh = copy_warehouse(demo_warehouse, tmp_path / "warehouse")
    server = Server(wh, "--no-http", "--reload", "1", "--refresh-debounce", "3")
    try:
        conn = connect(server)
        before = status(conn)
        assert before and all(r["fresh"] and r["lag_seconds"] == 0 and r["behind_since"] is None for r in before), before
        old = fetch(conn, SCORE)
        assert "rollup" in served_by(old), served_by(old)
        old = old.to_pylist()
        assert len(old) == 1, old

        committed = land_fill(wh, tmp_path, "AUTO-1")
        seen_stale, deadline = [], time.monotonic() + 120
        while True:
            now = status(conn)
            stale = [r for r in now if not r["fresh"]]
            if stale:
                seen_stale = stale
            elif any(r["version"] > b["version"] for r, b in zip(now, before)):
                break
            assert time.monotonic() < deadline, (now, server.stderr())
            time.sleep(0.2)
        # While stale (the debounce holds the refresh back 3 s), each rollup said why and since
        # when: the commit time of the import, to the millisecond.
        assert seen_stale, "the rollups were never seen stale"
        for r in seen_stale:
            assert "rx_fills is at version" in r["stale"], r
            assert int(r["behind_since"].timestamp() * 1000) == committed, (r, committed)
            assert 0 <= r["lag_seconds"] <= 120, r
        assert all(r["fresh"] and r["lag_seconds"] == 0 for r in now), now
        # Every rollup that was stale is at a new version (one refresh commit each).
        was = {r["rollup"]: r["version"] for r in before}
        assert all(r["version"] > was[r["rollup"]] for r in now if r["rollup"] in {x["rollup"] for x in seen_stale}), now

        new = fetch(conn, SCORE)
        assert "rollup" in served_by(new), served_by(new)
        new = new.to_pylist()
        raw = raw_answer(wh)
        assert len(new) == 1 and len(raw) == 1, (new, raw)
        # The new fill is one more on-time fill of the month: the rollup's answer is the raw one.
        assert new[0]["denominator"] == old[0]["denominator"] + 1, (old, new)
        assert new[0]["numerator"] == old[0]["numerator"] + 1, (old, new)
        assert new[0]["denominator"] == raw[0]["denominator"] and new[0]["numerator"] == raw[0]["numerator"], raw
        assert abs(new[0]["value"] - raw[0]["value"]) < 1e-9, (new, raw)
        conn.close()
    finally:
        server.stop(signal.SIGTERM)


def test_without_auto_refresh_the_rollups_stay_stale_and_say_for_how_long(demo_warehouse, tmp_path):
    wh = copy_warehouse(demo_warehouse, tmp_path / "warehouse")
    server = Server(wh, "--no-http", "--reload", "1", "--no-auto-refresh")
    try:
        conn = connect(server)
        committed = land_fill(wh, tmp_path, "MANUAL-1")
        deadline = time.monotonic() + 60
        while not all(not r["fresh"] for r in status(conn)):
            assert time.monotonic() < deadline, server.stderr()
            time.sleep(0.2)
        time.sleep(3)
        now = status(conn)
        assert all(not r["fresh"] and int(r["behind_since"].timestamp() * 1000) == committed for r in now), now
        # The lag is measured when the relation is read: at least the 3 s slept.
        assert all(r["lag_seconds"] >= 3 for r in now), now
        # Stale, the rollups still serve, caught up with the raw facts of the periods the
        # import touched: the answer is the raw tables' own.
        assert all(r["caught_up"] and r["caught_up"].startswith("periods ") for r in now), now
        table = fetch(conn, SCORE)
        assert "rollup monthly" in served_by(table) and " + raw tables for periods " in served_by(table), \
            served_by(table)
        got, raw = table.to_pylist(), raw_answer(wh)
        assert len(got) == 1 and (got[0]["numerator"], got[0]["denominator"]) == (raw[0]["numerator"], raw[0]["denominator"]), (got, raw)
        conn.close()
    finally:
        server.stop(signal.SIGTERM)
    out = rxcube("rollup", "status", "--warehouse", wh)
    stale = [line for line in out.stdout.splitlines() if "stale for" in line]
    assert len(stale) == len(now), out.stdout
    assert all("rx_fills is at version" in line for line in stale), out.stdout
