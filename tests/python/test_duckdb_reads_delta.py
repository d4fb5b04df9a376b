"""Other engines read rxcube's tables: DuckDB's delta reader sees exactly what rxcube's SQL sees."""

from conftest import duckdb_with_delta, rxcube_json


def test_duckdb_delta_scan_reads_the_landed_fills_after_corrections(demo_warehouse):
    ours = rxcube_json(
        demo_warehouse,
        "SELECT count(*) AS n, count(DISTINCT rx_id) AS ids, sum(fill_no) AS fills, "
        "count(DISTINCT event_month) AS months, "
        "CAST(min(filled_at) AS VARCHAR) AS first, sum(CASE WHEN channel = 'crp' THEN 1 ELSE 0 END) AS crp "
        "FROM rx_fills",
    )[0]
    con = duckdb_with_delta()
    n, ids, fills, months, first, crp = con.execute(
        "SELECT count(*), count(DISTINCT rx_id), sum(fill_no), count(DISTINCT event_month), "
        "strftime(min(filled_at) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ'), "
        "sum(CASE WHEN channel = 'crp' THEN 1 ELSE 0 END) "
        f"FROM delta_scan('{demo_warehouse}/rx_fills')"
    ).fetchone()
    assert n > 0
    assert (n, ids, fills, months, crp) == (ours["n"], ours["ids"], ours["fills"], ours["months"], ours["crp"])
    assert first == ours["first"]


def test_duckdb_reads_every_contract_table_with_the_same_row_count(demo_warehouse):
    con = duckdb_with_delta()
    for table in ["pharmacies", "peer_groups", "targets", "employees", "payroll", "pos", "rx_fills", "surveys"]:
        ours = rxcube_json(demo_warehouse, f"SELECT count(*) AS n FROM {table}")[0]["n"]
        theirs = con.execute(f"SELECT count(*) FROM delta_scan('{demo_warehouse}/{table}')").fetchone()[0]
        assert theirs == ours, table
