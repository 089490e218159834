#!/usr/bin/env bash
# The hot path's Redis work in three layouts, in Redis instructions per workflow: today's (a
# hash per task, `today.lua`), every task's hot state in the workflow hash, encoded as a
# hash table (`onehash.lua`), and today's without the long values in the task hashes, which
# then stay listpacks (`slim.lua`: specs, names and results in one more hash per workflow). Each script begins and completes every task of N diamond
# workflows (root -> 4 -> join, unwatched) inside one EVAL, so what is counted is the
# commands, their bridge to Lua and the Lua around them, not the network or the FCALL entry.
# `setup.lua` writes all three layouts first; `driver.lua` is appended to each to run it. Acks and the workflow's end are left out of both
# (the same in either layout).
#
#   bench/layout/run.sh [N]      (N workflows, default 300; about a minute under callgrind)
#
# Needs valgrind (callgrind_control, callgrind_annotate), redis-server and redis-cli on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n="${1:-300}"
. "$here/../common.sh"
need_callgrind
dir="$(mktemp -d)"
port="$(free_port)"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
  redis-server --port "$port" --save "" --appendonly no >"$dir/redis.log" 2>&1 &
redis_pid=$!
cleanup() { redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
wait_up "$port"

measure() {
  local name="${*: -1}"
  redis-cli -p "$port" FLUSHALL >/dev/null
  redis-cli -p "$port" EVAL "$(cat "$here/setup.lua")" 0 "$n" >/dev/null
  rm -f "$dir"/cg.out.*
  callgrind_control -z "$redis_pid" >/dev/null 2>&1
  callgrind_control -i on "$redis_pid" >/dev/null 2>&1
  redis-cli -p "$port" EVAL "$(for f in "$@"; do cat "$here/$f"; done; cat "$here/driver.lua")" 0 "$n" >/dev/null
  callgrind_control -i off "$redis_pid" >/dev/null 2>&1
  callgrind_control -d "$redis_pid" >/dev/null 2>&1
  local dump total
  dump="$(ls -t "$dir"/cg.out.* | head -1)"
  total="$(callgrind_total "$dump")"
  echo "$name: $(( total / n )) instructions per workflow"
}
for _ in 1 2; do
  measure today.lua
  measure onehash.lua
  measure today.lua slim.lua
done
