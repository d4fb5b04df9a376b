#!/usr/bin/env bash
# Runs every test of rxcube: the Rust workspace (unit, integration, sqllogictest, end-to-end
# CLI tests) and the Python client tests. Installs what it needs on a fresh machine: a Python
# virtualenv with the clients in tests/requirements.txt.
#
#   scripts/test.sh            # everything
#   RXCUBE_SKIP_PYTHON=1 scripts/test.sh   # Rust only
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds go where `cargo run` puts them (./target, or $CARGO_TARGET_DIR when set), so running
# the quick start's `cargo run -- demo` first and then this script builds the workspace once.
venv="${RXCUBE_VENV:-$HOME/.cache/rxcube/venv}"

echo "== building rxcube"
cargo build --workspace --all-targets

if [ -z "${RXCUBE_SKIP_PYTHON:-}" ]; then
  echo "== python clients ($venv)"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  stamp="$venv/.requirements.sha"
  want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" > "$stamp"
  fi
  export RXCUBE_PYTHON="$venv/bin/python"
fi

echo "== rust tests"
cargo test --workspace --all-targets --no-fail-fast

if [ -z "${RXCUBE_SKIP_PYTHON:-}" ]; then
  echo "== python client tests"
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export RXCUBE_BIN="$target_dir/debug/rxcube"
  "$venv/bin/python" -m pytest -q tests/python
fi
