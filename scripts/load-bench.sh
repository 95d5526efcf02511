#!/usr/bin/env bash
# Load benchmark, all on this machine in one run: two simulated vLLM upstreams
# answering at once, nginx (Debian) as a plain reverse proxy to them, Pingora's
# own proxy with nothing of ours in it (examples/bare_pingora.rs, the floor
# under the gateway), and the gateway in front of the same upstreams. oha drives each target at a fixed
# concurrency for a bounded time, then at half the gateway's saturation rate.
#
#   scripts/load-bench.sh                  # 10 s per case, 64 connections
#   DURATION=30s CONCURRENCY=128 scripts/load-bench.sh
#
# A second gateway keeps its limits (requests and tokens, high enough that
# nothing is refused) and its research cache in a redis-server of its own,
# to measure what sharing state between replicas costs per request.
#
# Prints requests/s, p50, p99, p99.9, errors and peak RSS per case, and the
# ratios to nginx; writes the same table to target/load-bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-64}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
# Each case runs this many times, interleaved with the others, and the run
# with the median requests/s is reported: a shared 2-core machine is noisy.
REPEAT=${REPEAT:-3}

source scripts/build-deps.sh
if ! command -v redis-server >/dev/null 2>&1; then
  echo "==> installing redis-server"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  as_root service redis-server stop >/dev/null 2>&1 || true
fi
OHA=target/tools/bin/oha
if [ ! -x "$OHA" ]; then
  echo "==> installing oha (load generator) into target/tools"
  CARGO_TARGET_DIR=target/oha-build cargo install oha --locked --root target/tools --quiet
fi
echo "==> cargo build --profile dist (fat LTO, as shipped; with the bare Pingora example)"
cargo build --profile dist --quiet --bin context7-lb --example bare_pingora
BIN=target/dist/context7-lb
BARE=target/dist/examples/bare_pingora

out=target/load-bench
source scripts/bench-common.sh

S1=$(free_port); S2=$(free_port); NGINX_PORT=$(free_port); GW_PORT=$(free_port); BARE_PORT=$(free_port)
REDIS_PORT=$(free_port); GW_REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$PWD/$out" >"$out/redis.log" 2>&1 & pids+=($!)
"$BIN" --sim-upstream "127.0.0.1:$S1" >"$out/sim1.log" 2>&1 & pids+=($!)
"$BIN" --sim-upstream "127.0.0.1:$S2" >"$out/sim2.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$S1/ping"
wait_http "http://127.0.0.1:$S2/ping"

cat >"$out/nginx.conf" <<EOF
worker_processes $THREADS;
pid $PWD/$out/nginx.pid;
error_log $PWD/$out/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $PWD/$out/nginx-body;
  proxy_temp_path $PWD/$out/nginx-proxy;
  upstream sims {
    server 127.0.0.1:$S1;
    server 127.0.0.1:$S2;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://sims;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
nginx -c "$PWD/$out/nginx.conf" -p "$PWD/$out" & pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/ping"

cat >"$out/gateway.yaml" <<EOF
listen: "127.0.0.1:$GW_PORT"
threads: $THREADS
access_log:
  enabled: false
upstreams:
  - name: sim1
    base_url: "http://127.0.0.1:$S1/v1"
  - name: sim2
    base_url: "http://127.0.0.1:$S2/v1"
EOF
RUST_LOG=warn "$BIN" --config "$out/gateway.yaml" >"$out/gateway.log" 2>&1 & GW_PID=$!; pids+=($GW_PID)
wait_ping "$GW_PORT" 'p["upstreams"]["healthy"]' 2
# The same gateway with its limits and cache in Redis: rates no request
# reaches, so that every request pays the check (one script call) and the
# charge of its tokens (another), and a local cache level too small to hold
# an answer, so that every cacheable research request is a Redis hit.
cat >"$out/gateway-redis.yaml" <<EOF
listen: "127.0.0.1:$GW_REDIS_PORT"
threads: $THREADS
access_log:
  enabled: false
rate_limit:
  requests_per_second: 1000000
  burst: 1000000
  tokens_per_minute: 1000000000000
cache:
  enabled: true
  max_entries: 1
  max_bytes: 1
redis:
  url: "redis://127.0.0.1:$REDIS_PORT"
upstreams:
  - name: sim1
    base_url: "http://127.0.0.1:$S1/v1"
  - name: sim2
    base_url: "http://127.0.0.1:$S2/v1"
EOF
RUST_LOG=warn "$BIN" --config "$out/gateway-redis.yaml" >"$out/gateway-redis.log" 2>&1 & GW_REDIS_PID=$!; pids+=($GW_REDIS_PID)
wait_ping "$GW_REDIS_PORT" 'p["redis"]' up
NGINX_MASTER=$(cat "$out/nginx.pid")
"$BARE" "127.0.0.1:$BARE_PORT" "$THREADS" "127.0.0.1:$S1" "127.0.0.1:$S2" >"$out/bare.log" 2>&1 & BARE_PID=$!; pids+=($BARE_PID)
wait_http "http://127.0.0.1:$BARE_PORT/ping"

CHAT='{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"What is vLLM?"}],"max_tokens":16}'
RESEARCH='{"query":"What is vLLM?","max_tokens":100}'
RESEARCH_CACHED='{"query":"What is vLLM?","max_tokens":100,"temperature":0}'
curl -fsS -o /dev/null -H 'Content-Type: application/json' -d "$RESEARCH_CACHED" "http://127.0.0.1:$GW_REDIS_PORT/v1/research"

# Peak resident memory (VmHWM) of a process and its children, in MB.
peak_rss() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    local kb; kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + kb))
  done
  awk -v kb="$total" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# run NAME URL BODY [RATE]: one oha run, summarised as a JSON line.
run() {
  local name=$1 url=$2 body=$3 rate=${4:-}
  local args=(--no-tui --output-format json -c "$CONCURRENCY" -m POST -H 'Content-Type: application/json' -d "$body")
  [ -n "$rate" ] && args+=(-q "$rate")
  "$OHA" "${args[@]}" -z "$WARMUP" "$url" >/dev/null
  "$OHA" "${args[@]}" -z "$DURATION" "$url" >"$out/$name.json"
  python3 - "$out/$name.json" "$name" >>"$out/all-runs.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
# Requests still in flight when the run's time is up are cut by oha itself.
cut = {"aborted due to deadline"}
errors = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(
    v for k, v in r.get("errorDistribution", {}).items() if k not in cut)
print(json.dumps({"name": sys.argv[2], "rps": s["requestsPerSec"], "p50": p["p50"] * 1000,
                  "p99": p["p99"] * 1000, "p999": p["p99.9"] * 1000, "ok": ok, "errors": errors}))
PY
  tail -n 1 "$out/all-runs.jsonl"
}

# The run with the median requests/s of each case.
medians() {
  python3 - "$out/all-runs.jsonl" <<'PY'
import json, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[r["name"]].append(r)
for name, rs in runs.items():
    rs.sort(key=lambda r: r["rps"])
    print(json.dumps(rs[len(rs) // 2]))
PY
}

echo "==> $CONCURRENCY connections, $DURATION per case (after $WARMUP warm-up), best of $REPEAT by median, $THREADS worker threads for nginx, bare Pingora and the gateway"
for i in $(seq 1 "$REPEAT"); do
  run upstream-direct "http://127.0.0.1:$S1/v1/chat/completions" "$CHAT"
  run nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$CHAT"
  run bare-pingora "http://127.0.0.1:$BARE_PORT/v1/chat/completions" "$CHAT"
  run gateway-chat "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$CHAT"
  run gateway-research "http://127.0.0.1:$GW_PORT/v1/research" "$RESEARCH"
  run redis-chat "http://127.0.0.1:$GW_REDIS_PORT/v1/chat/completions" "$CHAT"
  run redis-research-hit "http://127.0.0.1:$GW_REDIS_PORT/v1/research" "$RESEARCH_CACHED"
done
{
  medians
  echo "{\"rss\": \"nginx\", \"mb\": $(peak_rss "$NGINX_MASTER")}"
  echo "{\"rss\": \"gateway\", \"mb\": $(peak_rss "$GW_PID")}"
  echo "{\"rss\": \"bare\", \"mb\": $(peak_rss "$BARE_PID")}"
  echo "{\"rss\": \"redis-gateway\", \"mb\": $(peak_rss "$GW_REDIS_PID")}"
} >"$out/runs.jsonl"

# Half the gateway's saturation rate: what the gateway adds at p99 when it is not the bottleneck.
HALF=$(python3 -c "import json; rs=[json.loads(l) for l in open('$out/runs.jsonl')]; print(int(next(r['rps'] for r in rs if r.get('name')=='gateway-chat')/2))")
echo "==> at half the gateway's saturation rate: $HALF requests/s"
for i in $(seq 1 "$REPEAT"); do
  run half-upstream-direct "http://127.0.0.1:$S1/v1/chat/completions" "$CHAT" "$HALF"
  run half-nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$CHAT" "$HALF"
  run half-gateway-chat "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$CHAT" "$HALF"
  run half-redis-chat "http://127.0.0.1:$GW_REDIS_PORT/v1/chat/completions" "$CHAT" "$HALF"
done
medians | grep '"half-' >>"$out/runs.jsonl"

# What Redis adds when neither gateway is near its limit: a quarter of the
# plain gateway's saturation rate.
QUARTER=$((HALF / 2))
echo "==> at a quarter of the gateway's saturation rate: $QUARTER requests/s"
for i in $(seq 1 "$REPEAT"); do
  run quarter-gateway-chat "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$CHAT" "$QUARTER"
  run quarter-redis-chat "http://127.0.0.1:$GW_REDIS_PORT/v1/chat/completions" "$CHAT" "$QUARTER"
done
medians | grep '"quarter-' >>"$out/runs.jsonl"

python3 - "$out/runs.jsonl" "$out/results.md" "$CONCURRENCY" "$DURATION" <<'PY'
import json, sys, platform, os
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["name"]: r for r in runs if "name" in r}
rss = {r["rss"]: r["mb"] for r in runs if "rss" in r}
nginx = by["nginx"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = [f"Machine: {cpu}, {os.cpu_count()} cores; {sys.argv[3]} connections, {sys.argv[4]} per case; load generator, upstreams and proxies on the same machine.", "",
         "| case | requests/s | p50 ms | p99 ms | p99.9 ms | errors | peak RSS MB | rps / nginx | p99 / nginx |",
         "|---|---|---|---|---|---|---|---|---|"]
for name, label, mem in [("upstream-direct", "upstream directly", ""), ("nginx", "nginx → upstreams", rss.get("nginx", "")),
                         ("bare-pingora", "bare Pingora proxy → upstreams", rss.get("bare", "")),
                         ("gateway-chat", "gateway /v1/chat/completions", rss.get("gateway", "")), ("gateway-research", "gateway /v1/research", rss.get("gateway", "")),
                         ("redis-chat", "gateway + Redis limits, /v1/chat/completions", rss.get("redis-gateway", "")),
                         ("redis-research-hit", "gateway + Redis, /v1/research answered from Redis's cache", rss.get("redis-gateway", ""))]:
    r = by[name]
    lines.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {r['errors']} | {mem} | "
                 f"{r['rps']/nginx['rps']:.2f} | {r['p99']/nginx['p99']:.2f} |")
h = {k[5:]: v for k, v in by.items() if k.startswith("half-")}
lines += ["", f"At half the gateway's saturation rate ({int(by['gateway-chat']['rps']/2)} requests/s):", "",
          "| case | p50 ms | p99 ms | p99.9 ms | errors |", "|---|---|---|---|---|"]
for name in ["upstream-direct", "nginx", "gateway-chat", "redis-chat"]:
    r = h[name]
    lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {r['errors']} |")
lines += ["", f"Gateway-added p99 at half saturation: {h['gateway-chat']['p99'] - h['upstream-direct']['p99']:.2f} ms "
          f"(nginx adds {h['nginx']['p99'] - h['upstream-direct']['p99']:.2f} ms).",
          f"Redis-backed limits add, at the same rate: p50 {h['redis-chat']['p50'] - h['gateway-chat']['p50']:.3f} ms, "
          f"p99 {h['redis-chat']['p99'] - h['gateway-chat']['p99']:.3f} ms per request (a check per request, charges in batches)."]
q = {k[8:]: v for k, v in by.items() if k.startswith("quarter-")}
lines += ["", f"At a quarter of the gateway's saturation rate ({int(by['gateway-chat']['rps']/4)} requests/s):", "",
          "| case | p50 ms | p99 ms | p99.9 ms | errors |", "|---|---|---|---|---|"]
for name in ["gateway-chat", "redis-chat"]:
    r = q[name]
    lines.append(f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} | {r['errors']} |")
lines += ["", f"Redis-backed limits add, at a quarter: p50 {q['redis-chat']['p50'] - q['gateway-chat']['p50']:.3f} ms, "
          f"p99 {q['redis-chat']['p99'] - q['gateway-chat']['p99']:.3f} ms per request."]
text = "\n".join(lines)
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
