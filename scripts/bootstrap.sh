#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo Gleitzeit.
# Idempotent: every step checks first, so running it again costs seconds.
#   - Debian packages: redis-server, libssl-dev, pkg-config, python3-venv (apt-get, as root)
#   - the Python virtual environment .venv with the test dependencies and the gleitzeit package
#   - the local LLM server (llama.cpp's llama-server + SmolLM2-135M) via scripts/local-llm.sh
# Set GLEITZEIT_SKIP_LLM=1 to skip the local LLM (its end-to-end tests then skip with a message).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install the Rust toolchain (https://rustup.rs) and run this again"
  exit 1
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  log "creating Python virtual environment $venv"
  python3 -m venv "$venv"
fi
if [ ! -f "$venv/.deps-installed" ] || [ requirements-dev.txt -nt "$venv/.deps-installed" ]; then
  log "installing Python test dependencies"
  "$venv/bin/pip" install -q -r requirements-dev.txt
  touch "$venv/.deps-installed"
fi
if [ -f python/pyproject.toml ]; then
  "$venv/bin/pip" install -q -e python >/dev/null
fi

if [ "${GLEITZEIT_SKIP_LLM:-0}" != "1" ]; then
  "$root/scripts/local-llm.sh" install
fi
