#!/usr/bin/env bash
# Where today's scripts spend Redis's instructions: the hot path (submission, read + begin,
# completion with release and the workflow's end) driven through FCALL by one sequential
# client (compact_drive.py `today`: 50 submissions, 32 reads and 32 completions per round
# trip), under callgrind, with no lease scripts and no wake-ups in the count — so two builds
# of the scripts compare to about 0.1 % (the same build twice: 328,225 and 328,362 per
# task). Prints the instructions per task and the functions that cost the most, and keeps
# the callgrind file for callgrind_annotate.
#
#   bench/layout/profile.sh [BENCH_BINARY] [N] [PYTHON]
#   bench/layout/profile.sh target/release/gleitzeit-bench 300 .venv/bin/python
#
# The library comes from BENCH_BINARY (each build carries its own), so an A/B is two runs
# with two binaries. Debian's redis-server is stripped: Lua's own functions (luaV_execute,
# luaS_newlstr, str_find_aux, luaC_step, ...) only get names with a redis-server built with
# symbols first on PATH, e.g. the same version from Debian's source package (docs/benchmarks.md,
# "The twelfth round", has the commands). SUBMIT_ONLY=1 counts the submissions alone
# (compact_drive.py submits and stops). Needs valgrind, redis-server, redis-cli and a Python
# with the `redis` package (the project's .venv has it). About a minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="${1:-target/release/gleitzeit-bench}"
n="${2:-300}"
python="${3:-.venv/bin/python}"
. "$here/../common.sh"
need_callgrind
need_bench "$bench"
dir="$(mktemp -d)"
pid=""
port=""
cleanup() {
  [ -n "$port" ] && redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT

# One benchmark submission, captured, so the client submits what gleitzeit-bench submits.
port="$(free_port)"
redis-server --port "$port" --save "" --appendonly no >/dev/null 2>&1 &
pid=$!
wait_up "$port"
capture_submit "$bench" "$python" "$port" "$dir/submit.json"
cleanup

port="$(free_port)"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  redis-server --port "$port" --save "" --appendonly no >"$dir/redis.log" 2>&1 &
pid=$!
wait_up "$port"
# The library, loaded by a short benchmark run; a warm-up; then the counted run.
"$bench" --workflows 2 --redis-url "redis://127.0.0.1:$port" >/dev/null 2>&1
"$python" "$here/compact_drive.py" today "$port" 20 "$dir/submit.json" >/dev/null
callgrind_control -i on "$pid" >/dev/null 2>&1
"$python" "$here/compact_drive.py" today "$port" "$n" "$dir/submit.json" >/dev/null
callgrind_control -i off "$pid" >/dev/null 2>&1
cleanup
trap - EXIT

total="$(callgrind_total "$dir/callgrind.out")"
echo "redis instructions per task: $(( total / (n * 6) ))  ($total for $(( n * 6 )) tasks, $n diamonds, one client)"
echo "most expensive (self):"
callgrind_annotate --inclusive=no "$dir/callgrind.out" 2>/dev/null \
  | grep -E '^ *[0-9,]+ \( *[0-9.]+%\) ' | grep -v 'PROGRAM TOTALS' | head -12 \
  | sed -E 's/ \[[^]]*\]$//; s/^/  /' || true  # (head closes the pipe early: not a failure)
echo "callgrind file: $dir/callgrind.out"
