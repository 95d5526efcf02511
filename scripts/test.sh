#!/usr/bin/env bash
# The whole test suite, from nothing: installs what the build needs, then runs
# formatting, lints and every test. This is the command the README gives and
# the one .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build-deps.sh
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test --all-targets"
cargo test --all-targets
