#!/usr/bin/env bash
# Runs the gateway in front of three built-in simulated vLLM upstreams.
# Extra arguments go to the gateway (for example --listen 0.0.0.0:8002).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-deps.sh
echo "==> cargo build --profile demo (the first build takes about 2 minutes on 2 cores; later ones seconds)"
cargo build --profile demo --bin context7-lb
exec target/demo/context7-lb --demo "$@"
