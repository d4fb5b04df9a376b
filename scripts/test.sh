#!/usr/bin/env bash
# Runs every test of rxcube: the Rust workspace (unit, integration, sqllogictest, end-to-end
# CLI tests) and the Python client tests. Installs what it needs on a fresh machine: a Python
# virtualenv with the clients in tests/requirements.txt.
#
#   scripts/test.sh            # everything
#   RXCUBE_SKIP_PYTHON=1 scripts/test.sh   # Rust only
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rxcube/target}"
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
  export RXCUBE_BIN="$CARGO_TARGET_DIR/debug/rxcube"
  "$venv/bin/python" -m pytest -q tests/python
fi
