# common.sh — sourced by the benchmark scripts (redis-instructions.sh, layout/run.sh,
# layout/compact.sh, layout/batching.sh, layout/profile.sh): their checks of what they need,
# a free port, waiting for a server, and one benchmark submission captured from MONITOR, so
# the layout experiments submit exactly what `gleitzeit-bench` submits (layout/compact_drive.py
# capture).

layout_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/layout"

# The tools a callgrind measurement runs: exits 2 naming the first one missing.
need_callgrind() {
  for tool in valgrind callgrind_control callgrind_annotate redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
  done
}

# need_bench BENCH: exits 2 unless BENCH is an executable.
need_bench() {
  [ -x "$1" ] || { echo "error: $1 is not an executable (cargo build --release -p gleitzeit-bench)" >&2; exit 2; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_up PORT: until the server on PORT answers (at most 30 s).
wait_up() {
  for _ in $(seq 1 150); do redis-cli -p "$1" PING >/dev/null 2>&1 && return; sleep 0.2; done
  echo "error: no redis-server answers on port $1" >&2
  return 1
}

# callgrind_total FILE: the instructions callgrind counted in FILE (its PROGRAM TOTALS).
# (awk reads to the end: stopping early would fail the pipe under pipefail.)
callgrind_total() {
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }'
}

# capture_submit BENCH PYTHON PORT OUT: runs one benchmark workflow against the server on
# PORT with MONITOR attached and writes the first `submit` call's arguments to OUT.
capture_submit() {
  local bench="$1" python="$2" port="$3" out="$4" mon
  redis-cli -p "$port" MONITOR >"$out.monitor" 2>/dev/null &
  mon=$!
  # The benchmark starts only once the monitor is attached, or its calls go unseen.
  until redis-cli -p "$port" CLIENT LIST | grep -q 'cmd=monitor'; do sleep 0.05; done
  "$bench" --workflows 1 --redis-url "redis://127.0.0.1:$port" >/dev/null 2>&1
  kill "$mon" 2>/dev/null || true
  wait "$mon" 2>/dev/null || true
  "$python" "$layout_dir/compact_drive.py" capture "$out.monitor" "$out"
}
