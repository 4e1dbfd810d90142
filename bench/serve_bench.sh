#!/usr/bin/env bash
# Benchmark of `vigil serve` (auth and access log on) against a minimal FastAPI + PyTorch server
# for the same trained digits-mlp, in one sitting, alternating the two (vigil, fastapi, vigil,
# ...) so that other load on the machine hits both alike; prints every round and the medians.
#
# Each vigil round: wrk (64 connections, WRK_THREADS threads, 2 by default) for the throughput and latency figures, then
# h2load sending an exact number of requests, to check that the access log got exactly one line
# per request, then `vigil audit verify` on the whole log.
#
#   cargo build --release && bench/serve_bench.sh            # ROUNDS=3 DURATION=10s by default
#
# Needs wrk and h2load (apt-get install -y wrk nghttp2-client) and a Python with the reference's
# packages (bench/requirements-fastapi.txt), named by PY (default /opt/refpy/bin/python):
#   python3 -m venv /opt/refpy && /opt/refpy/bin/pip install -r bench/requirements-fastapi.txt
set -euo pipefail
cd "$(dirname "$0")/.."
VIGIL=${VIGIL:-$PWD/target/release/vigil}
PY=${PY:-/opt/refpy/bin/python}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
EXACT=${EXACT:-100000}
CONNS=64
VPORT=${VPORT:-7878}
WRK_THREADS=${WRK_THREADS:-2}
SERVE_ARGS=${SERVE_ARGS:-}   # e.g. "--threads 1"
FPORT=${FPORT:-7879}
# The reference as the issue measured it: one uvicorn worker, a Bearer check, a JSON-lines log.
FASTAPI_WORKERS=${FASTAPI_WORKERS:-1}

RUNS=$(mktemp -d /tmp/vigil-serve-bench.XXXXXX)
trap 'rm -rf "$RUNS"' EXIT
"$VIGIL" --runs-dir "$RUNS" train digits-mlp -q > /dev/null
RUN=$(ls -d "$RUNS"/digits-mlp-*)
KEY=$("$VIGIL" --runs-dir "$RUNS" keys create --name bench --scope predict --rate none 2>/dev/null)
export VIGIL_KEY=$KEY
BODY=$RUNS/body.json
printf '%s' '{"inputs": [[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]]}' > "$BODY"
RESULTS=$RUNS/results.txt
: > "$RESULTS"

lines() { cat "$RUNS"/access*.jsonl 2>/dev/null | wc -l; }

wait_up() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/v1/models/digits-mlp/predict" -H "Authorization: Bearer $KEY" \
         -H 'Content-Type: application/json' --data-binary @"$BODY"; then return 0; fi
    sleep 0.2
  done
  echo "server on port $1 did not start" >&2; exit 1
}

measure() { # name port -> appends "name RESULT ..." to $RESULTS
  wrk -t"$WRK_THREADS" -c$CONNS -d2s -s bench/predict.lua "http://127.0.0.1:$2" > /dev/null 2>&1
  local r
  r=$(wrk -t"$WRK_THREADS" -c$CONNS -d"$DURATION" -s bench/predict.lua "http://127.0.0.1:$2" 2>&1 | grep '^RESULT')
  echo "$1 $r" | tee -a "$RESULTS"
}

for round in $(seq 1 "$ROUNDS"); do
  "$VIGIL" --runs-dir "$RUNS" serve "$(basename "$RUN")" --addr "127.0.0.1:$VPORT" $SERVE_ARGS > "$RUNS/serve.out" 2>&1 &
  VPID=$!
  wait_up "$VPORT"
  measure vigil "$VPORT"
  sleep 0.5
  before=$(lines)
  h2=$(h2load --h1 -n "$EXACT" -c $CONNS -t 2 -d "$BODY" -H "authorization: Bearer $KEY" \
        -H 'content-type: application/json' "http://127.0.0.1:$VPORT/v1/models/digits-mlp/predict" 2>&1)
  kill -INT "$VPID"; wait "$VPID"
  after=$(lines)
  ok=$(echo "$h2" | sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
  echo "vigil-log round=$round h2load_sent=$EXACT h2load_succeeded=$ok log_lines_added=$((after - before)) $(echo "$h2" | grep '^status codes')" | tee -a "$RESULTS"
  "$VIGIL" --runs-dir "$RUNS" audit verify | tee -a "$RESULTS"

  "$PY" bench/fastapi_reference.py "$RUN" --port "$FPORT" --workers "$FASTAPI_WORKERS" \
    --log "$RUNS/ref-access.jsonl" > "$RUNS/ref.out" 2>&1 &
  FPID=$!
  wait_up "$FPORT"
  measure fastapi "$FPORT"
  kill -INT "$FPID"; wait "$FPID" || true
done

python3 - "$RESULTS" <<'EOF'
import re, statistics, sys
rows = {"vigil": [], "fastapi": []}
for line in open(sys.argv[1]):
    name = line.split()[0]
    if name in rows and "RESULT" in line:
        rows[name].append({k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)})
print()
print(f"{'server':8} {'rounds':>6} {'req/s (median)':>15} {'p50 ms':>8} {'p99 ms':>8} {'non-200':>8} {'socket errors':>14}")
med = {}
for name, rs in rows.items():
    m = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    med[name] = m
    print(f"{name:8} {len(rs):>6} {m['rps']:>15.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
          f"{sum(r['non200'] for r in rs):>8.0f} {sum(r['socket_errors'] for r in rs):>14.0f}")
ratio = med['vigil']['rps'] / med['fastapi']['rps']
print(f"throughput ratio vigil/fastapi: {ratio:.1f}x; "
      f"p99 ratio fastapi/vigil: {med['fastapi']['p99_ms'] / med['vigil']['p99_ms']:.1f}x")
ok = ratio >= 10 and med['vigil']['p99_ms'] < 5
print(f"target (>= 10x the FastAPI server, vigil p99 < 5 ms): {'met' if ok else 'not met'} "
      f"({ratio:.1f}x, p99 {med['vigil']['p99_ms']:.2f} ms)")
EOF
