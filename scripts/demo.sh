#!/usr/bin/env bash
# The main job end to end on one machine:
#   Redis (the one on 127.0.0.1:6379 if it answers, else a private one), a real local LLM
#   (llama.cpp's llama-server serving SmolLM2-135M as model "smollm2"), one gleitzeit-worker,
#   a Python task service (examples/python/tasks.py as "Python Tasks"), then
#   examples/analysis.yaml (an LLM chain) and examples/pipeline.yaml (a Python task feeding an
#   LLM task) submitted with --wait: live progress, then every result.
# Everything it starts is stopped when it exits.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '==> %s\n' "$*" >&2; }

"$root/scripts/bootstrap.sh"
eval "$("$root/scripts/local-llm.sh" env)"

log "building gleitzeit (cargo build --bins)"
cargo build --locked --bins -q
bin="$root/target/debug"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis_url="${GLEITZEIT_REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
  port="$(free_port)"
  log "no Redis at $redis_url: starting a private redis-server on port $port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  redis_url="redis://127.0.0.1:$port"
  for _ in $(seq 100); do redis-cli -u "$redis_url" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
export GLEITZEIT_REDIS_URL="$redis_url"
# A namespace of its own, so the demo never mixes with other work on a shared Redis.
export GLEITZEIT_NAMESPACE="demo-$$"

llm_port="$(free_port)"
log "starting llama-server (SmolLM2-135M as \"smollm2\") on port $llm_port"
"$root/scripts/local-llm.sh" start "$llm_port" >"$work/llm.log" 2>&1 &
pids+=($!)
"$root/scripts/local-llm.sh" wait "$llm_port"

# The token workers present to task services (shared secret; generated for this run).
export GLEITZEIT_SERVICE_TOKEN="demo-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
log "starting the Python task service \"Python Tasks\" (examples/python/tasks.py)"
(cd examples/python && exec "$root/.venv/bin/python" -m gleitzeit.service --name "Python Tasks" \
  --port 0 --redis-url "$redis_url" --namespace "$GLEITZEIT_NAMESPACE" tasks) \
  >"$work/service.out" 2>"$work/service.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '"ready"' "$work/service.out" 2>/dev/null && break; sleep 0.1; done
grep -q '"ready"' "$work/service.out" || { log "the task service did not start:"; cat "$work/service.log" >&2; exit 1; }

cat >"$work/worker.yaml" <<YAML
concurrency: 4
endpoints:
  - name: local-llama
    kind: openai
    url: http://127.0.0.1:$llm_port
    models: [smollm2]
YAML
metrics_port="$(free_port)"
log "starting gleitzeit-worker (metrics on http://127.0.0.1:$metrics_port/metrics)"
RUST_LOG="${RUST_LOG:-gleitzeit=info}" "$bin/gleitzeit-worker" --config "$work/worker.yaml" \
  --metrics-addr "127.0.0.1:$metrics_port" >"$work/worker.log" 2>&1 &
pids+=($!)

status=0
for example in examples/analysis.yaml examples/pipeline.yaml; do
  log "submitting $example"
  "$bin/gleitzeit-submit" submit "$example" --wait --timeout 10m || { status=$?; break; }
done
if [ "$status" -eq 0 ]; then
  log "the fleet as operators see it (gleitzeit-submit fleet)"
  "$bin/gleitzeit-submit" fleet || true
  log "a few of the worker's Prometheus metrics"
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null \
    | grep -E '^gleitzeit_(tasks_completed_total|endpoint_requests_total|endpoint_tokens_total)' || true
fi
if [ "$status" -ne 0 ]; then
  log "the workflow did not complete (exit $status); worker log:"
  tail -n 40 "$work/worker.log" >&2
fi
exit "$status"
