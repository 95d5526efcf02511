#!/usr/bin/env bash
# Streaming load benchmark, all on this machine in one run: two paced vLLM
# stand-ins (examples/paced_upstream.rs) streaming every answer as 22 SSE
# events (a role chunk, 20 tokens 50 ms apart, [DONE]: about 0.95 s a
# stream), nginx (Debian, `proxy_buffering off`) and the gateway in front of
# them, side by side.
# examples/stream_load.rs holds CONCURRENCY streams open against each target
# (each connection starts its next stream when one ends) and reads the
# target's CPU time and peak memory from /proc.
#
#   scripts/stream-bench.sh                       # 1,000 and 4,000 streams
#   LEVELS="1000 4000 10000" MEASURE=15 scripts/stream-bench.sh
#
# Prints, per target and level: streams/s, stream time p50/p99, time to
# first chunk p50/p99, CPU ms per stream, peak RSS, errors, and the ratios
# to nginx; writes the same table to target/stream-bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

LEVELS=${LEVELS:-1000 4000}
WARMUP=${WARMUP:-3}
MEASURE=${MEASURE:-10}
THREADS=${THREADS:-2}
# Each case runs this many times, interleaved, and the run with the median
# streams/s is reported: a shared 2-core machine is noisy.
REPEAT=${REPEAT:-3}
TOKENS=20
GAP_MS=50
EVENTS=$((TOKENS + 2))

source scripts/build-deps.sh
echo "==> cargo build --profile dist (fat LTO, as shipped; with the load generator)"
cargo build --profile dist --quiet --bin context7-lb --example stream_load --example paced_upstream
BIN=target/dist/context7-lb
LOAD=target/dist/examples/stream_load
UPSTREAM=target/dist/examples/paced_upstream

out=target/stream-bench
source scripts/bench-common.sh

S1=$(free_port); S2=$(free_port); NGINX_PORT=$(free_port); GW_PORT=$(free_port)
"$UPSTREAM" "127.0.0.1:$S1" "$TOKENS" "$GAP_MS" >"$out/upstream1.log" 2>&1 & pids+=($!)
"$UPSTREAM" "127.0.0.1:$S2" "$TOKENS" "$GAP_MS" >"$out/upstream2.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$S1/ping"
wait_http "http://127.0.0.1:$S2/ping"

# Enough connections (a client's and an upstream's per stream, spread over
# the workers, with a quarter to spare) and kept-alive upstream connections
# for the largest level, so that neither proxy reconnects between streams,
# and no more: nginx allocates its connection table up front, and a larger
# one would only add to its memory.
MAX_LEVEL=$(printf '%s\n' $LEVELS | sort -n | tail -1)
WORKER_CONNECTIONS=$(( (MAX_LEVEL * 2 / THREADS) * 5 / 4 + 256 ))
cat >"$out/nginx.conf" <<EOF
worker_processes $THREADS;
worker_rlimit_nofile 65536;
pid $PWD/$out/nginx.pid;
error_log $PWD/$out/nginx-error.log warn;
daemon off;
events { worker_connections $WORKER_CONNECTIONS; }
http {
  access_log off;
  client_body_temp_path $PWD/$out/nginx-body;
  proxy_temp_path $PWD/$out/nginx-proxy;
  upstream sims {
    server 127.0.0.1:$S1;
    server 127.0.0.1:$S2;
    keepalive $MAX_LEVEL;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://sims;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 30s;
    }
  }
}
EOF
nginx -c "$PWD/$out/nginx.conf" -p "$PWD/$out" & pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/ping"
NGINX_MASTER=$(cat "$out/nginx.pid")

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

BODY="{\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"messages\":[{\"role\":\"user\",\"content\":\"What is vLLM?\"}],\"max_tokens\":$TOKENS,\"stream\":true}"

# run NAME URL CONCURRENCY [PID]: one load run, a JSON line in all-runs.jsonl.
run() {
  local name=$1 url=$2 concurrency=$3 pid=${4:-}
  local pid_args=()
  [ -n "$pid" ] && pid_args=(--pid "$pid")
  "$LOAD" "$url" "$BODY" "$concurrency" "$WARMUP" "$MEASURE" "$EVENTS" "${pid_args[@]}" \
    | python3 -c "import json,sys; r=json.load(sys.stdin); r['name']='$name'; print(json.dumps(r))" \
    >>"$out/all-runs.jsonl"
  tail -n 1 "$out/all-runs.jsonl"
}

for level in $LEVELS; do
  echo "==> $level concurrent streams, $MEASURE s measured (after $WARMUP s), median of $REPEAT interleaved runs"
  for i in $(seq 1 "$REPEAT"); do
    # One upstream directly with half the streams: what each carries behind a proxy.
    run "upstream-direct@$level" "http://127.0.0.1:$S1/v1/chat/completions" $((level / 2))
    run "nginx@$level" "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" "$level" "$NGINX_MASTER"
    run "gateway@$level" "http://127.0.0.1:$GW_PORT/v1/chat/completions" "$level" "$GW_PID"
  done
done

python3 - "$out/all-runs.jsonl" "$out/results.md" "$LEVELS" "$MEASURE" "$TOKENS" "$GAP_MS" <<'PY'
import json, sys, os
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[r["name"]].append(r)
by = {}
for name, rs in runs.items():
    rs.sort(key=lambda r: r["streams_per_s"])
    by[name] = rs[len(rs) // 2]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
tokens, gap = int(sys.argv[5]), int(sys.argv[6])
lines = [f"Machine: {cpu}, {os.cpu_count()} cores; {sys.argv[4]} s measured per case; each stream {tokens + 2} events, "
         f"{tokens} tokens {gap} ms apart (the upstream's own pacing: {(tokens - 1) * gap} ms); load generator, upstreams and proxies on the same machine.", "",
         "| case | streams/s | stream p50 ms | stream p99 ms | first chunk p50 ms | first chunk p99 ms | CPU ms/stream | peak RSS MB | errors |",
         "|---|---|---|---|---|---|---|---|---|"]
ratios = []
for level in sys.argv[3].split():
    for target in ["upstream-direct", "nginx", "gateway"]:
        r = by[f"{target}@{level}"]
        label = f"{target} @ {level}" + (" (half the streams, one upstream)" if target == "upstream-direct" else "")
        cpu_cell = f"{r['cpu_ms_per_stream']:.3f}" if target != "upstream-direct" else ""
        rss_cell = f"{r['peak_rss_mb']:.1f}" if target != "upstream-direct" else ""
        lines.append(f"| {label} | {r['streams_per_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['first_chunk_p50_ms']:.1f} | {r['first_chunk_p99_ms']:.1f} | {cpu_cell} | {rss_cell} | {r['errors']} |")
    n, g = by[f"nginx@{level}"], by[f"gateway@{level}"]
    ratios.append(f"| {level} | {g['streams_per_s'] / n['streams_per_s']:.2f} | {g['p50_ms'] / n['p50_ms']:.2f} | "
                  f"{g['p99_ms'] / n['p99_ms']:.2f} | {g['first_chunk_p50_ms'] - n['first_chunk_p50_ms']:+.1f} | "
                  f"{g['cpu_ms_per_stream'] / n['cpu_ms_per_stream']:.2f} | {g['peak_rss_mb'] / n['peak_rss_mb']:.2f} | "
                  f"{(g['peak_rss_mb'] * 1024) / int(level):.1f} |")
lines += ["", "Gateway against nginx (targets at 4,000 streams: streams/s ≥ 0.95, median ≤ 1.1, CPU ≤ 1.2, RSS ≤ 1.5):", "",
          "| streams | streams/s × | p50 × | p99 × | first chunk p50 ± ms | CPU/stream × | peak RSS × | gateway KiB per open stream |",
          "|---|---|---|---|---|---|---|---|"] + ratios
text = "\n".join(lines)
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
