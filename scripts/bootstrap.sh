#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and demo Gleitzeit.
# Idempotent: every step checks first, so running it again costs seconds.
#   - Debian packages: redis-server, libssl-dev, pkg-config, python3-venv, prometheus, openssl
#     (apt-get, as root; prometheus for the real-scrape test tests/tests/prometheus.rs; the
#     openssl command makes the certificates of the TLS tests)
#   - the Python virtual environment .venv with the test dependencies and the gleitzeit package
#   - the local LLM server (llama.cpp's llama-server + SmolLM2-135M) via scripts/local-llm.sh
# Set GLEITZEIT_SKIP_LLM=1 to skip the local LLM (its end-to-end tests then skip with a message).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '==> %s\n' "$*" >&2; }

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
dpkg -s libssl-dev >/dev/null 2>&1 || need_apt+=(libssl-dev)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
need_prometheus=0
{ command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ]; } || need_prometheus=1
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
if [ ${#need_apt[@]} -gt 0 ] || [ "$need_prometheus" = 1 ]; then
  $sudo_cmd apt-get update -qq
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ "$need_prometheus" = 1 ]; then
  # Optional: only the real-scrape test needs it, and it skips with a message without it.
  log "installing Debian package: prometheus"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq prometheus >/dev/null \
    || log "prometheus could not be installed; tests/tests/prometheus.rs will skip"
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
