#!/usr/bin/env bash
# Runs the gateway in front of three built-in simulated vLLM upstreams.
# Extra arguments go to the gateway (for example --listen 0.0.0.0:8002).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-deps.sh
exec cargo run --release --quiet -- --demo "$@"
