#!/usr/bin/env bash
# Instructions per request, counted by callgrind: deterministic, whatever else
# the machine is doing, so two builds can be compared on a noisy shared box.
#
#   scripts/callgrind.sh GATEWAY_BINARY [BARE_PINGORA_BINARY]
#   scripts/callgrind.sh target/dist/context7-lb target/dist/examples/bare_pingora
#
# For each case the server runs under `valgrind --tool=callgrind` with one
# worker thread, in front of one simulated vLLM upstream (GATEWAY_BINARY
# --sim-upstream, a separate process, not under valgrind). A python3 client
# sends WARMUP requests, then REQUESTS more, one after the other over one
# keep-alive connection; the same run with the warm-up only is subtracted and
# the difference divided by REQUESTS. Cases: the gateway's
# /v1/chat/completions (non-streamed) and /v1/research, and, when a second
# binary is given, examples/bare_pingora.rs with the chat request (the floor);
# `redis-chat` (not run by default) is the chat case with its limits,
# requests and tokens, in a redis-server of its own: what the gateway itself
# spends on shared limits (Redis's own work is not counted).
#
# The gateway's health checks run every 60 s here (health_check.interval), so
# that after the first round at start-up, which both runs share, none falls
# inside a measurement; the access log is off, as in scripts/load-bench.sh.
# Since the one-upstream-call refactor the probes share the requests' client,
# so the requests reuse the connection the first probe (or model discovery)
# opened on the health-check runtime: that is counted, as a deployment would
# see it (docs/performance.md, "After the one-upstream-call refactor").
#
# Environment: WARMUP (300), REQUESTS (4000), OUT (target/callgrind; the
# callgrind.out.* files stay there for callgrind_annotate), SIM_BIN (the
# upstream simulator, default GATEWAY_BINARY), CASES (chat research bare).
# Prints a table and writes it to $OUT/results.md.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 GATEWAY_BINARY [BARE_PINGORA_BINARY]" >&2
  exit 2
fi
GW_BIN=$(realpath "$1")
BARE_BIN=${2:+$(realpath "$2")}
SIM_BIN=$(realpath "${SIM_BIN:-$GW_BIN}")
WARMUP=${WARMUP:-300}
REQUESTS=${REQUESTS:-4000}
OUT=${OUT:-target/callgrind}
CASES=${CASES:-chat research bare}
# Bounds: start-up under valgrind and a whole run (4 300 requests take about a
# minute under callgrind on the 2-core box).
START_TIMEOUT=${START_TIMEOUT:-120}
RUN_TIMEOUT=${RUN_TIMEOUT:-900}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v valgrind >/dev/null 2>&1; then
  echo "==> installing valgrind"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq valgrind >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed for the client" >&2; exit 1; }
[ -x "$GW_BIN" ] || { echo "not an executable: $GW_BIN" >&2; exit 1; }

mkdir -p "$OUT"
OUT=$(realpath "$OUT")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until something listens on 127.0.0.1:PORT, read from /proc/net/tcp so
# that the server under measurement gets no connection from the wait itself.
wait_listen() {
  local port=$1 deadline=$((SECONDS + START_TIMEOUT))
  local hex; hex=$(printf '0100007F:%04X' "$port")
  while ! awk -v a="$hex" '$2 == a && $4 == "0A" { found = 1 } END { exit !found }' /proc/net/tcp; do
    if ((SECONDS > deadline)); then echo "nothing listens on port $port" >&2; return 1; fi
    sleep 0.2
  done
}

# Waits until FILE contains PATTERN (the gateway's first health round).
wait_log() {
  local file=$1 pattern=$2 deadline=$((SECONDS + START_TIMEOUT))
  until grep -q "$pattern" "$file" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "no '$pattern' in $file" >&2; cat "$file" >&2; return 1; fi
    sleep 0.2
  done
}

# client PORT PATH BODY COUNT: COUNT POSTs over one keep-alive connection,
# one at a time; fails on anything but 200 or a closed connection.
client() {
  python3 - "$@" <<'PY'
import http.client, sys
port, path, body, count = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
headers = {"Content-Type": "application/json"}
for i in range(count):
    conn.request("POST", path, body, headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or r.will_close:
        sys.exit(f"request {i}: status {r.status}, will_close={r.will_close}: {data[:200]!r}")
conn.close()
PY
}

SIM_PORT=$(free_port)
"$SIM_BIN" --sim-upstream "127.0.0.1:$SIM_PORT" >"$OUT/sim.log" 2>&1 &
pids+=($!)
wait_listen "$SIM_PORT"

CHAT='{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}]}'
RESEARCH='{"query":"What is vLLM?"}'

# measure NAME KIND PATH BODY COUNT: one server under callgrind, WARMUP + COUNT
# requests, then SIGINT (Pingora's fast shutdown, so callgrind writes its
# file); leaves the total instructions in TOTAL.
measure() {
  local name=$1 kind=$2 path=$3 body=$4 count=$5 extra=${6:-}
  local port; port=$(free_port)
  local log="$OUT/$name.log" file="$OUT/callgrind.out.$name"
  local cmd
  if [ "$kind" = gateway ]; then
    cat >"$OUT/$name.yaml" <<EOF
listen: "127.0.0.1:$port"
threads: 1
access_log:
  enabled: false
health_check:
  interval: 60s
shutdown:
  upgrade_sock: $OUT/$name.upgrade.sock
$extra
upstreams:
  - name: sim
    base_url: "http://127.0.0.1:$SIM_PORT/v1"
EOF
    cmd=("$GW_BIN" --config "$OUT/$name.yaml")
  else
    cmd=("$BARE_BIN" "127.0.0.1:$port" 1 "127.0.0.1:$SIM_PORT")
  fi
  rm -f "$file"
  RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$file" "${cmd[@]}" >"$log" 2>&1 &
  local vpid=$!
  pids+=($vpid)
  wait_listen "$port"
  # The gateway routes once its first health round has found the upstream.
  if [ "$kind" = gateway ]; then wait_log "$log" "upstream sim is healthy"; fi
  client "$port" "$path" "$body" "$WARMUP"
  if [ "$count" -gt 0 ]; then client "$port" "$path" "$body" "$count"; fi
  kill -INT "$vpid"
  local deadline=$((SECONDS + RUN_TIMEOUT))
  while kill -0 "$vpid" 2>/dev/null; do
    if ((SECONDS > deadline)); then echo "$name did not exit" >&2; kill -KILL "$vpid"; return 1; fi
    sleep 0.2
  done
  wait "$vpid" || true
  # One file for all threads: its totals line is the whole process's count.
  TOTAL=$(awk '/^(totals|summary):/ { print $2; exit }' "$file")
  [ -n "$TOTAL" ] || { echo "no total in $file" >&2; return 1; }
}

results=()
case_run() {
  local name=$1 kind=$2 path=$3 body=$4 extra=${5:-}
  echo "==> $name: $WARMUP warm-up requests only" >&2
  measure "$name-warmup" "$kind" "$path" "$body" 0 "$extra"
  local base=$TOTAL
  echo "==> $name: $WARMUP warm-up + $REQUESTS requests" >&2
  measure "$name-full" "$kind" "$path" "$body" "$REQUESTS" "$extra"
  local full=$TOTAL
  local per=$(((full - base) / REQUESTS))
  echo "    $name: $full - $base = $((full - base)) instructions, $per per request" >&2
  results+=("| $name | $base | $full | $per |")
}

REDIS_LIMITS=""
if [[ " $CASES " == *" redis-chat "* ]]; then
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
  pids+=($!)
  wait_listen "$REDIS_PORT"
  REDIS_LIMITS="rate_limit:
  requests_per_second: 1000000
  burst: 1000000
  tokens_per_minute: 1000000000000
redis:
  url: \"redis://127.0.0.1:$REDIS_PORT\""
fi

for c in $CASES; do
  case $c in
    chat) case_run gateway-chat gateway /v1/chat/completions "$CHAT" ;;
    redis-chat) case_run gateway-redis-chat gateway /v1/chat/completions "$CHAT" "$REDIS_LIMITS" ;;
    research) case_run gateway-research gateway /v1/research "$RESEARCH" ;;
    bare) if [ -n "$BARE_BIN" ]; then case_run bare-pingora bare /v1/chat/completions "$CHAT"; fi ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done

{
  echo "Binary: $GW_BIN${BARE_BIN:+ (bare Pingora: $BARE_BIN)}; $WARMUP warm-up, $REQUESTS measured requests, one keep-alive connection, one worker thread."
  echo
  echo "| case | instructions, warm-up only | instructions, warm-up + $REQUESTS | per request |"
  echo "|---|---|---|---|"
  printf '%s\n' "${results[@]}"
} | tee "$OUT/results.md"
