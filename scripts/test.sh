#!/usr/bin/env bash
# Runs every test of rxcube: the Rust workspace (unit, integration, sqllogictest, end-to-end
# CLI tests) and the Python client tests. Installs what it needs on a fresh machine: a Python
# virtualenv with the clients in tests/requirements.txt, and Debian's chromium for the browser
# tests (Playwright drives it; no browser is ever downloaded).
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
  # The browser of tests/python/test_web.py: Debian's chromium, installed when missing (as root).
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "== installing chromium (Debian package) for the browser tests"
      export DEBIAN_FRONTEND=noninteractive
      (apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }) >/dev/null
    else
      echo "warning: /usr/bin/chromium is missing (apt-get install chromium as root); the browser tests will fail" >&2
    fi
  fi
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  stamp="$venv/.requirements.sha"
  want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
    echo "$want" > "$stamp"
  fi
  export RXCUBE_PYTHON="$venv/bin/python"

  # Apache Superset for tests/python/test_superset.py, in a virtualenv of its own (it pins its
  # own pandas, pyarrow, SQLAlchemy and Flask), with rxcube's engine spec (clients/superset)
  # installed by path: both again only when the requirements or the package change.
  superset_venv="${RXCUBE_SUPERSET_VENV:-$HOME/.cache/rxcube/superset-venv}"
  echo "== superset ($superset_venv)"
  if [ ! -x "$superset_venv/bin/python" ]; then
    python3 -m venv "$superset_venv"
  fi
  stamp="$superset_venv/.requirements.sha"
  want=$(cat tests/superset-requirements.txt clients/superset/pyproject.toml clients/superset/rxcube_superset/*.py |
    sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$superset_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/superset-requirements.txt
    "$superset_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./clients/superset
    echo "$want" > "$stamp"
  fi
  export RXCUBE_SUPERSET_VENV="$superset_venv"
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
