"""A warehouse on S3: rxcube lands, replaces and queries tables on a real S3-compatible server.

The server is moto's standalone S3 server on loopback (a real HTTP endpoint speaking the S3
protocol, including the conditional put that Delta commits rely on). rxcube reaches it
through object_store's S3 client, configured by the standard AWS_* environment variables.
The same files are landed in a local warehouse; both must answer the same.
"""

import os
import socket
import subprocess
import sys
import time
import uuid

import boto3
import pytest

from conftest import rxcube, rxcube_bin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "data", "demo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env():
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=endpoint,
        AWS_ALLOW_HTTP="true",
        AWS_ACCESS_KEY_ID="rxcube",
        AWS_SECRET_ACCESS_KEY="rxcube-secret",
        AWS_REGION="us-east-1",
    )
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="rxcube",
                      aws_secret_access_key="rxcube-secret", region_name="us-east-1")
    for _ in range(100):
        try:
            s3.list_buckets()
            break
        except Exception:
            time.sleep(0.1)
    bucket = f"chain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    yield env, s3, bucket
    server.terminate()
    server.wait(timeout=10)


def run(env, *args):
    return subprocess.run([rxcube_bin(), *args], capture_output=True, text=True, env=env)


def counts(env, warehouse):
    sql = ("SELECT (SELECT count(*) FROM rx_fills) AS fills, (SELECT count(DISTINCT rx_id) FROM rx_fills) AS rx_sum, "
           "(SELECT count(*) FROM rx_fills WHERE channel = 'crp') AS crp, "
           "(SELECT CAST(max(filled_at) AS VARCHAR) FROM rx_fills) AS last_fill")
    out = run(env, "sql", "-w", warehouse, "--format", "csv", sql)
    assert out.returncode == 0, out.stderr
    return out.stdout


def land(env, warehouse):
    steps = [
        ("pharmacies", [os.path.join(DEMO, "pharmacies.parquet")]),
        ("rx_fills", [os.path.join(DEMO, "rx_fills.parquet")]),
        # Corrections replace fills already on file: a MERGE commit on the object store.
        ("rx_fills", [os.path.join(DEMO, "corrections", "rx_fills.parquet")]),
    ]
    summaries = []
    for table, files in steps:
        out = run(env, "import", "-w", warehouse, table, *files)
        assert out.returncode == 0, out.stderr + out.stdout
        summaries.append(out.stdout)
    return summaries


def test_an_s3_warehouse_answers_like_a_local_one(s3_env, tmp_path):
    env, s3, bucket = s3_env
    remote = f"s3://{bucket}/warehouse"
    local = str(tmp_path / "local")

    remote_summaries = land(env, remote)
    local_summaries = land(env, local)
    # The same inserts and replacements on both.
    strip = lambda s: s.split(";")[0]
    assert [strip(s) for s in remote_summaries] == [strip(s) for s in local_summaries]
    assert "replaced 0" not in remote_summaries[2], remote_summaries[2]

    assert counts(env, remote) == counts(env, local)

    # The Delta log and the month partitions are on the server.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="warehouse/rx_fills/")["Contents"]]
    assert "warehouse/rx_fills/_delta_log/00000000000000000000.json" in keys
    assert "warehouse/rx_fills/_delta_log/00000000000000000001.json" in keys
    assert any(k.startswith("warehouse/rx_fills/event_month=2024-03-01/") for k in keys)

    # Re-importing the last file commits nothing.
    again = run(env, "import", "-w", remote, "rx_fills", os.path.join(DEMO, "corrections", "rx_fills.parquet"))
    assert again.returncode == 0 and "nothing committed" in again.stdout, again.stdout


def cube_answer(env, warehouse, *flags):
    sql = ("SELECT node, grain, CAST(period_start AS VARCHAR) AS p, metric, round(value, 6) AS v FROM cube.metrics "
           "WHERE level = 'region' AND grain IN ('day', 'month') AND metric IN ('local_fills', 'on_time_pct', "
           "'median_processing_minutes') ORDER BY node, grain, p, metric")
    out = run(env, "sql", "-w", warehouse, "--format", "csv", "--timing", *flags, sql)
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def test_rollups_on_s3_are_built_refreshed_and_served(s3_env, tmp_path):
    """Rollup jobs write their Delta tables on the object store, read its log to refresh, and
    serve the raw answer."""
    env, s3, bucket = s3_env
    remote = f"s3://{bucket}/rollups-warehouse"
    steps = [("pharmacies", "pharmacies.parquet"), ("peer_groups", "peer_groups.parquet"),
             ("rx_fills", "rx_fills.parquet")]
    for table, f in steps:
        out = run(env, "import", "-w", remote, table, os.path.join(DEMO, f))
        assert out.returncode == 0, out.stderr
    built = run(env, "rollup", "build", "-w", remote)
    assert built.returncode == 0, built.stderr
    served, timing = cube_answer(env, remote)
    assert "(served by cube.metrics: rollup daily" in timing, timing
    raw, timing = cube_answer(env, remote, "--no-rollups")
    assert "raw tables (rxcube.rollups is off)" in timing, timing
    assert served == raw and served.count("\n") > 50, served
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="rollups-warehouse/_rxcube/rollups/")["Contents"]]
    assert "rollups-warehouse/_rxcube/rollups/daily/_delta_log/00000000000000000000.json" in keys, keys

    # The corrections: an incremental refresh from the log on S3.
    out = run(env, "import", "-w", remote, "rx_fills", os.path.join(DEMO, "corrections", "rx_fills.parquet"),
              "--refresh")
    assert out.returncode == 0, out.stderr
    assert "hourly     refreshed  periods" in out.stdout, out.stdout
    served, timing = cube_answer(env, remote)
    assert "rollup daily (version 1" in timing, timing
    assert served == cube_answer(env, remote, "--no-rollups")[0]


def test_an_unreachable_s3_endpoint_is_a_clear_error(tmp_path):
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ALLOW_HTTP="true",
               AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1",
               AWS_MAX_RETRIES="0")
    out = run(env, "import", "-w", "s3://nowhere/wh", "pharmacies", os.path.join(DEMO, "pharmacies.parquet"))
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "s3://nowhere/wh" in out.stderr, out.stderr


def test_a_store_that_fails_a_read_is_unavailable_to_flight_sql_clients(s3_env, monkeypatch):
    """The store fails to serve a table's files while the server runs: the query gets
    UNAVAILABLE (worth retrying), not INVALID_ARGUMENT or INTERNAL; a bad statement is still
    INVALID_ARGUMENT, and the server goes on."""
    from test_flight_sql import PASSWORD, Server, flight_login, statement
    import pyarrow as pa
    import pyarrow.flight as flight

    env, s3, bucket = s3_env
    for key in ("AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("AWS_MAX_RETRIES", "0")
    remote = f"s3://{bucket}/outage"
    for table in ("pharmacies", "rx_fills"):
        out = run(dict(os.environ), "import", "-w", remote, table, os.path.join(DEMO, f"{table}.parquet"))
        assert out.returncode == 0, out.stderr + out.stdout
    p = subprocess.run([rxcube_bin(), "users", "add", "ana", "--scope", "division:ALL", "--group", "analysts",
                        "--password-stdin", "--warehouse", remote], input=PASSWORD + "\n", capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    expected = run(dict(os.environ), "sql", "-w", remote, "--format", "csv",
                   "SELECT sum(fill_no) AS n FROM rx_fills WHERE channel = 'crp'")
    assert expected.returncode == 0, expected.stderr
    server = Server(remote, "--no-http")
    try:
        client, options = flight_login(server, "ana", PASSWORD)

        def answer(sql):
            info = client.get_flight_info(statement(sql), options)
            return client.do_get(info.endpoints[0].ticket, options).read_all()

        n = answer("SELECT sum(fill_no) AS n FROM rx_fills WHERE channel = 'crp'").column(0)[0].as_py()
        assert expected.stdout == f"n\n{n}\n", (expected.stdout, n)
        # The store loses the table's data files (the log still names them).
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="outage/rx_fills/")["Contents"]
        data = [o["Key"] for o in listed if o["Key"].endswith(".parquet")]
        assert data, listed
        for key in data:
            s3.delete_object(Bucket=bucket, Key=key)
        with pytest.raises(flight.FlightUnavailableError) as err:
            answer("SELECT sum(fill_no) AS n FROM rx_fills WHERE channel = 'local'")
        assert "the warehouse could not be read; try again" in str(err.value), err.value
        # ana is no administrator: the store's message names the files it failed on, but not
        # the bucket or the warehouse's prefix in it (the audit log keeps the whole message).
        assert "<warehouse>/rx_fills/" in str(err.value), err.value
        assert bucket not in str(err.value) and "outage/" not in str(err.value), err.value
        with pytest.raises(pa.ArrowInvalid) as err:  # INVALID_ARGUMENT
            answer("SELECT nope FROM rx_fills")
        assert "nope" in str(err.value), err.value
        assert server.proc.poll() is None, server.stderr()
    finally:
        server.stop()
