#!/usr/bin/env bash
# Redis instructions per task: runs a private redis-server under valgrind's callgrind, lets
# `gleitzeit-bench` push N workflows through it, and prints the instructions Redis executed
# (user space) per task, with the functions that cost the most.
#
# Why: Redis CPU time per task (INFO cpu) moves by ±15 % between runs on a shared 2-core
# machine, more than most single changes to the scripts gain; the instruction count of the
# same workload is repeatable to about 1 %. Use it to compare two builds of the scripts.
#
#   bench/redis-instructions.sh [BENCH_BINARY] [WORKFLOWS] [-- extra redis-server options]
#   bench/redis-instructions.sh target/release/gleitzeit-bench 200
#   bench/redis-instructions.sh target/release/gleitzeit-bench 200 -- --stream-node-max-entries 16
#
# Needs valgrind (callgrind_control, callgrind_annotate) and redis-server on PATH. Redis runs
# about 50× slower under callgrind, so keep WORKFLOWS small (200 diamonds: about 15 s).
set -euo pipefail
bench="${1:-target/release/gleitzeit-bench}"
workflows="${2:-200}"
shift $(( $# > 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
extra=("$@")

. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_callgrind
need_bench "$bench"
dir="$(mktemp -d)"
port="$(free_port)"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  redis-server --port "$port" --save "" --appendonly no "${extra[@]}" >"$dir/redis.log" 2>&1 &
redis_pid=$!
cleanup() { redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; wait "$redis_pid" 2>/dev/null || true; }
trap cleanup EXIT
wait_up "$port"

url="redis://127.0.0.1:$port"
# A short warm-up loads the function library and creates the streams and groups; only the
# measured run is counted.
"$bench" --workflows 5 --redis-url "$url" >/dev/null 2>&1
redis-cli -p "$port" FLUSHALL >/dev/null
callgrind_control -i on "$redis_pid" >/dev/null 2>&1
"$bench" --workflows "$workflows" --redis-url "$url" >"$dir/bench.txt" 2>&1
callgrind_control -i off "$redis_pid" >/dev/null 2>&1
tasks_per_workflow="$(awk '/^  shape/ { gsub(/\(/, "", $3); print $3; exit }' "$dir/bench.txt")"
cleanup
trap - EXIT

tasks=$(( workflows * ${tasks_per_workflow:-6} ))
total="$(callgrind_total "$dir/callgrind.out")"
echo "redis instructions per task: $(( total / tasks ))  ($total for $tasks tasks, $workflows workflows)"
echo "most expensive (inclusive):"
callgrind_annotate --inclusive=yes "$dir/callgrind.out" 2>/dev/null \
  | grep -E 'Command \[|parseReply \[|lua_pcall|scriptCall \[|dictFind \[|lua_pushlstring' \
  | sed -E 's/ \[.*//; s/\?\?\?://; s/^/  /' | awk 'NR <= 14'
rm -rf "$dir"
