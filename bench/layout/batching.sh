#!/usr/bin/env bash
# What a round trip costs Redis: today's scripts driven by compact_drive.py against a plain
# redis-server (no valgrind), the same 2,000 diamonds with more or fewer requests per round
# trip, and Redis's CPU per task (INFO cpu, system and user) and reads per task (INFO stats
# total_reads_processed) for each. The client is sequential: every round trip is a wake-up
# of Redis.
#
#   bench/layout/batching.sh [BENCH_BINARY] [N] [PYTHON]
#
# Needs redis-server and redis-cli on PATH and a Python with the `redis` package. About a
# minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="${1:-target/release/gleitzeit-bench}"
n="${2:-2000}"
python="${3:-.venv/bin/python}"
. "$here/../common.sh"
need_bench "$bench"
dir="$(mktemp -d)"
port="$(free_port)"
cleanup() { redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
start() {
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  while redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.1; done
  redis-server --port "$port" --save "" --appendonly no --daemonize yes >/dev/null
  wait_up "$port"
}
# "sys user reads": one INFO call, so the three figures are one instant's.
counters() {
  redis-cli -p "$port" INFO cpu stats | awk -F: '/^used_cpu_sys:/ {s = $2} /^used_cpu_user:/ {u = $2}
    /^total_reads_processed:/ {r = $2 + 0} END {print s, u, r}'
}

start
capture_submit "$bench" "$python" "$port" "$dir/submit.json"

printf '%-44s %8s %8s %8s %12s\n' "requests per round trip" "sys µs" "user µs" "µs/task" "reads/task"
for sizes in "50 32 32" "1 32 32" "1 32 16" "1 7 16" "1 7 4" "1 32 1" "1 7 1"; do
  set -- $sizes
  start
  "$bench" --workflows 2 --redis-url "redis://127.0.0.1:$port" >/dev/null 2>&1
  "$python" "$here/compact_drive.py" today "$port" 20 "$dir/submit.json" "$@" >/dev/null
  read -r s0 u0 r0 <<<"$(counters)"
  "$python" "$here/compact_drive.py" today "$port" "$n" "$dir/submit.json" "$@" >/dev/null
  read -r s1 u1 r1 <<<"$(counters)"
  awk -v s0="$s0" -v s1="$s1" -v u0="$u0" -v u1="$u1" -v r0="$r0" -v r1="$r1" -v t="$((n * 6))" \
    -v label="submit $1, read $2, complete $3" 'BEGIN {
    printf "%-44s %8.1f %8.1f %8.1f %12.2f\n", label, (s1 - s0) * 1e6 / t, (u1 - u0) * 1e6 / t,
      (s1 - s0 + u1 - u0) * 1e6 / t, (r1 - r0) / t }'
done
