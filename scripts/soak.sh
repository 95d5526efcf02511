#!/usr/bin/env bash
# Soak: the release binary under mixed traffic (research, streamed chat, MCP)
# while one of three simulated upstreams restarts every minute; the gateway's
# RSS and open descriptors are sampled every 10 s, then a table and a verdict
# are printed. Not part of scripts/test.sh.
#
#   SOAK_SECONDS=600          how long (default 600, about ten minutes)
#   SOAK_RESTART_SECONDS=60   how often the upstream restarts
#
# The driver is benches/soak.rs; the gateway's own log goes to
# target/tmp/soak/gateway.log. Exit status 1 when memory or descriptors grew.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/build-deps.sh
echo "==> cargo build --profile dist (fat LTO, as shipped)"
cargo build --profile dist --bin context7-lb
echo "==> soak for ${SOAK_SECONDS:-600} s"
SOAK_BINARY="$PWD/target/dist/context7-lb" cargo bench --bench soak
