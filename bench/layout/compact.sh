#!/usr/bin/env bash
# Today's scripts against compact.lua — the most compact layout of the task state we could
# write (one hash per workflow, each task's state packed in one field) — in Redis instructions
# per task, the hot path end to end through FCALL: submission, read + begin, completion with
# release and the workflow's end, driven by one client the same way for both
# (compact_drive.py). Three runs: today's library, compact.lua as written (FULL: events,
# counters, indexes, checks kept), and compact.lua with FULL = false (all of those dropped: a
# bound, not a design).
#
#   bench/layout/compact.sh [BENCH_BINARY] [N] [PYTHON]
#   bench/layout/compact.sh target/release/gleitzeit-bench 300 .venv/bin/python
#
# Needs valgrind (callgrind_control, callgrind_annotate), redis-server and redis-cli on PATH,
# and a Python with the `redis` package (the project's .venv has it). About a minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="${1:-target/release/gleitzeit-bench}"
n="${2:-300}"
python="${3:-.venv/bin/python}"
. "$here/../common.sh"
need_callgrind
need_bench "$bench"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${ports[@]:-}"; do redis-cli -p "$p" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; done
  for p in "${pids[@]:-}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
ports=()
trap cleanup EXIT
# One benchmark submission, as the benchmark sends it.
port="$(free_port)"; ports+=("$port")
redis-server --port "$port" --save "" --appendonly no >/dev/null 2>&1 & pids+=($!)
wait_up "$port"
capture_submit "$bench" "$python" "$port" "$dir/submit.json"
redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true

measure() {
  local label="$1" backend="$2" full="$3" port pid total
  per_task=""
  port="$(free_port)"; ports+=("$port")
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.$label" \
    redis-server --port "$port" --save "" --appendonly no >"$dir/redis.$label.log" 2>&1 &
  pid=$!; pids+=("$pid")
  wait_up "$port"
  # Today's library, loaded by a short benchmark run; compact.lua beside it.
  "$bench" --workflows 2 --redis-url "redis://127.0.0.1:$port" >/dev/null 2>&1
  sed "s/^local FULL = true$/local FULL = $full/" "$here/compact.lua" \
    | redis-cli -p "$port" -x FUNCTION LOAD REPLACE >/dev/null
  "$python" "$here/compact_drive.py" "$backend" "$port" 20 "$dir/submit.json" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$python" "$here/compact_drive.py" "$backend" "$port" "$n" "$dir/submit.json" >/dev/null
  callgrind_control -i off "$pid" >/dev/null 2>&1
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$pid" 2>/dev/null || true
  total="$(callgrind_total "$dir/cg.$label")"
  per_task=$(( total / (n * 6) ))
}
# (Called directly, not in $(...): a server started in a subshell would escape cleanup.)
measure today today true; today="$per_task"
measure compact compact true; compact="$per_task"
measure bare compact false; bare="$per_task"
echo "Redis instructions per task ($n diamonds, one client):"
echo "  today's scripts              $today"
awk -v t="$today" -v c="$compact" -v b="$bare" 'BEGIN {
  printf "  compact.lua                  %d  (%.1f %% of today)\n", c, 100 * c / t
  printf "  compact.lua, FULL = false    %d  (%.1f %% of today)\n", b, 100 * b / t
}'
