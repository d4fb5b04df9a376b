#!/usr/bin/env bash
# Runs rxcube's benchmarks against DuckDB on the same data, in one run, and prints ratios.
#
#   benches/bench.sh import [--fills 10000000]    # import of generated fills vs DuckDB CSV->Parquet
#   benches/bench.sh cube [--fills 20000000]      # raw-path cube queries vs DuckDB SQL on the same Parquet
#   benches/bench.sh tuned [--fills 4700000]      # raw-path cube queries vs the tuned DuckDB peer (benches/duckdb-tuned/)
#   benches/bench.sh rollups [--fills 20000000]   # rollup build, and queries served from rollups, vs DuckDB
#   benches/bench.sh serve [--warehouse W] [--clients 32] [--seconds 30]   # concurrent ADBC clients over Flight SQL
#   benches/bench.sh pages [--fills 20000000] [--clients 32]   # score-card pages over HTTP, signed-in managers
#   benches/bench.sh freshness [--fills 20000000] [--seconds 600]   # a dropped fill's time to the score card, under load
#
# Builds rxcube in release mode and creates a Python venv with DuckDB (benches/requirements.txt).
# Data and outputs go to benches/out/ (ignored by git). Record figures in benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds where `cargo build` puts them: ./target, or $CARGO_TARGET_DIR when set.
venv="${RXCUBE_BENCH_VENV:-$HOME/.cache/rxcube/bench-venv}"
cargo build --release -p rxcube
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/requirements.txt
target_dir=$(cargo metadata --format-version 1 --no-deps |
  "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
what="${1:-import}"; shift || true
exec "$venv/bin/python" "benches/$what.py" --rxcube "$target_dir/release/rxcube" "$@"
