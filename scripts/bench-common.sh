#!/usr/bin/env bash
# What the benchmarks that run servers side by side share (sourced by
# scripts/load-bench.sh and scripts/stream-bench.sh, with `out` set to their
# output folder): nginx installed when missing, every process they start
# stopped on exit, a free port, and waits for an HTTP answer and for a
# gateway's /ping to say what is expected.
if ! command -v nginx >/dev/null 2>&1; then
  echo "==> installing nginx-light"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nginx-light >/dev/null
fi

rm -rf "$out" && mkdir -p "$out"
# The processes started, stopped on exit (nginx by its pid file).
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$out/nginx.pid" ]; then kill "$(cat "$out/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}
# wait_ping PORT EXPRESSION VALUE: until the gateway's /ping, read as JSON
# into `p`, gives EXPRESSION == VALUE (for up to 10 s).
wait_ping() {
  for _ in $(seq 1 100); do
    [ "$(curl -fsS "http://127.0.0.1:$1/ping" 2>/dev/null | python3 -c "import json,sys; p=json.load(sys.stdin); print($2)" 2>/dev/null)" = "$3" ] && return 0
    sleep 0.1
  done
  echo "the gateway on port $1 never had $2 = $3" >&2
  return 1
}
