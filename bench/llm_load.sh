#!/usr/bin/env bash
# The issue's load check of a served language model, in one command: `vigil serve --llm` on the
# real Gemma 3 270M, 16 clients streaming chat completions back to back for 60 s (`vigil traffic
# --profile chat`), then `vigil audit verify` on the access log. Prints the four facts the issue
# asks for: errors, access-log lines against requests, streams ending with a finish reason, and
# time to first token p50/p99; exits 1 when one of them fails.
#
#   cargo build --release && bench/llm_load.sh
#   CLIENTS=16 DURATION=60s MAX_TOKENS=64 MODEL=path/to.gguf SERVE_ARGS="--llm-workers 2" bench/llm_load.sh
#
# The model comes from scripts/fetch_models.sh (~/.cache/vigil/models by default).
set -euo pipefail
cd "$(dirname "$0")/.."
VIGIL=${VIGIL:-$PWD/target/release/vigil}
MODEL=${MODEL:-${VIGIL_MODEL_CACHE:-$HOME/.cache/vigil/models}/gemma-3-270m-q4_k_m.gguf}
CLIENTS=${CLIENTS:-16}
DURATION=${DURATION:-60s}
MAX_TOKENS=${MAX_TOKENS:-64}
PORT=${PORT:-7941}
SERVE_ARGS=${SERVE_ARGS:-}

[ -f "$MODEL" ] || { echo "no model at $MODEL: run scripts/fetch_models.sh" >&2; exit 2; }
RUNS=$(mktemp -d /tmp/vigil-llm-load.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$RUNS"; }
trap cleanup EXIT
KEY=$("$VIGIL" --runs-dir "$RUNS" keys create --name load --scope generate --rate none 2>/dev/null)
"$VIGIL" --runs-dir "$RUNS" serve --llm "$MODEL" --addr "127.0.0.1:$PORT" $SERVE_ARGS > "$RUNS/serve.out" 2>&1 &
SERVER=$!
for _ in $(seq 1 150); do
  curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/v1/models" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$RUNS/serve.out" >&2; exit 1; }
  sleep 0.2
done
head -3 "$RUNS/serve.out"
status=0
"$VIGIL" --runs-dir "$RUNS" traffic --profile chat --addr "127.0.0.1:$PORT" --key "$KEY" \
  --clients "$CLIENTS" --duration "$DURATION" --max-tokens "$MAX_TOKENS" || status=$?
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
"$VIGIL" --runs-dir "$RUNS" audit verify || status=1
exit $status
