#!/usr/bin/env bash
# What shared limits in Redis add to one request, with nothing queueing: one
# connection, closed loop, the same gateway binary with and without limits in
# a redis-server of its own (a request rate and a token budget no request
# reaches, so every request pays the check and the charge). Three runs of
# each case, interleaved; one JSON line per run.
#
#   scripts/redis-latency.sh                 # after scripts/load-bench.sh built the binary and oha
#   D=8s scripts/redis-latency.sh
#
# Figures and how to read them: docs/performance.md, "Shared state in Redis".
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/dist/context7-lb}
OHA=${OHA:-target/tools/bin/oha}
D=${D:-8s}
[ -x "$BIN" ] && [ -x "$OHA" ] || { echo "run scripts/load-bench.sh first (it builds $BIN and $OHA)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is needed (Debian's package)" >&2; exit 1; }
out=target/redis-latency
rm -rf "$out" && mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
S=$(fp); R=$(fp); G1=$(fp); G2=$(fp)
"$BIN" --sim-upstream "127.0.0.1:$S" >"$out/sim.log" 2>&1 & pids+=($!)
redis-server --bind 127.0.0.1 --port "$R" --save "" --appendonly no --dir "$PWD/$out" >"$out/redis.log" 2>&1 & pids+=($!)
printf 'listen: "127.0.0.1:%s"\nthreads: 2\naccess_log: {enabled: false}\nupstreams: [{name: s, base_url: "http://127.0.0.1:%s/v1"}]\n' "$G1" "$S" >"$out/plain.yaml"
printf 'listen: "127.0.0.1:%s"\nthreads: 2\naccess_log: {enabled: false}\nrate_limit: {requests_per_second: 1000000, burst: 1000000, tokens_per_minute: 1000000000000}\nredis: {url: "redis://127.0.0.1:%s"}\nupstreams: [{name: s, base_url: "http://127.0.0.1:%s/v1"}]\n' "$G2" "$R" "$S" >"$out/redis.yaml"
RUST_LOG=warn "$BIN" --config "$out/plain.yaml" >"$out/plain.log" 2>&1 & pids+=($!)
RUST_LOG=warn "$BIN" --config "$out/redis.yaml" >"$out/redis-gw.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$G1/ping"; wait_http "http://127.0.0.1:$G2/ping"; sleep 1
CHAT='{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"What is vLLM?"}],"max_tokens":16}'
RES='{"query":"What is vLLM?","max_tokens":100}'
# run NAME PORT PATH BODY: one closed-loop run, one JSON line.
run() {
  "$OHA" --no-tui --output-format json -c 1 -z "$D" -m POST -H 'Content-Type: application/json' -d "$4" "http://127.0.0.1:$2$3" >"$out/$1.json"
  python3 - "$out/$1.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print(json.dumps({"name": sys.argv[2], "rps": round(d["summary"]["requestsPerSec"]),
                  "p50": round(p["p50"] * 1000, 3), "p99": round(p["p99"] * 1000, 3),
                  "ok": sum(v for k, v in codes.items() if str(k).startswith("2")),
                  "errors": sum(v for k, v in codes.items() if not str(k).startswith("2"))}))
PY
}
for i in 1 2 3; do
  run plain-chat "$G1" /v1/chat/completions "$CHAT"
  run redis-chat "$G2" /v1/chat/completions "$CHAT"
  run plain-research "$G1" /v1/research "$RES"
  run redis-research "$G2" /v1/research "$RES"
done
