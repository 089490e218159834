#!/usr/bin/env bash
# The whole test suite: installs what is missing (scripts/bootstrap.sh), then runs the Rust
# tests (unit, integration, end to end against real redis-server processes, simulators and the
# local llama-server) and the Python tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/bootstrap.sh"

# The local model server for the end-to-end tests that use a real LLM (they skip without it).
if llm_env="$("$root/scripts/local-llm.sh" env 2>/dev/null)"; then
  eval "$llm_env"
fi
export GLEITZEIT_PYTHON="$root/.venv/bin/python"

echo "==> cargo test (workspace)" >&2
cargo test --workspace --locked -- --test-threads="${GLEITZEIT_TEST_THREADS:-2}"

if [ -d python/tests ]; then
  # The Python tests that run a fleet drive the Rust binaries (simulator, worker, CLI).
  echo "==> cargo build --bins (for the Python fleet tests)" >&2
  cargo build --workspace --bins --locked
  echo "==> pytest (python/)" >&2
  "$root/.venv/bin/python" -m pytest -q python/tests
fi
