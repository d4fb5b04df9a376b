"""Shared fixtures for the client tests: the rxcube binary and a landed demo warehouse."""

import functools
import glob
import json
import os
import subprocess

import duckdb
import pytest


@functools.cache
def rxcube_bin() -> str:
    """The built rxcube: $RXCUBE_BIN (scripts/test.sh sets it), else the debug build in the
    directory cargo builds into (./target, or $CARGO_TARGET_DIR), as `cargo run` leaves it."""
    path = os.environ.get("RXCUBE_BIN")
    if not path:
        meta = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--no-deps"],
            capture_output=True, text=True, check=False, cwd=os.path.dirname(__file__),
        )
        if meta.returncode == 0:
            path = os.path.join(json.loads(meta.stdout)["target_directory"], "debug", "rxcube")
    if not path or not os.path.exists(path):
        pytest.fail("RXCUBE_BIN must name the built rxcube binary (scripts/test.sh sets it; "
                    "else `cargo build` first)")
    return path


def rxcube(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([rxcube_bin(), *args], capture_output=True, text=True, check=check)


def users(wh, *args, password=None, check=True):
    """Runs `rxcube users ...` on warehouse `wh` (the password, if any, on standard input)."""
    p = subprocess.run([rxcube_bin(), "users", *args, "--warehouse", wh], capture_output=True, text=True,
                       input=password if password is not None else "")
    if check:
        assert p.returncode == 0, f"rxcube users {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def rxcube_json(warehouse: str, sql: str):
    out = rxcube("sql", "--warehouse", warehouse, "--format", "json", sql).stdout
    return json.loads(out)


def duckdb_with_delta() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the delta extension from the duckdb-ext-delta wheel (offline)."""
    import duckdb_ext  # the namespace the wheel installs into

    roots = list(getattr(duckdb_ext, "__path__", []))
    found = [p for r in roots for p in glob.glob(os.path.join(r, "extensions", "*", "*", "delta.duckdb_extension"))]
    if not found:
        pytest.fail("the duckdb-ext-delta wheel is not installed (tests/requirements.txt)")
    con = duckdb.connect()
    con.execute(f"LOAD '{found[0]}'")
    return con


@pytest.fixture(scope="session")
def demo_warehouse(tmp_path_factory) -> str:
    """The embedded demo chain, landed once for the session."""
    path = str(tmp_path_factory.mktemp("demo") / "warehouse")
    rxcube("demo", "--warehouse", path)
    return path
