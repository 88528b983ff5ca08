#!/usr/bin/env bash
# The GPU check of mindgap on one lent GPU machine (one H200, no package index, 64 MiB carried per
# call): install the wheels bench/gpu_wheels.sh put in .whl/, then run bench/gpu_check.py, which
# builds a random ~0.86B Llama and checks the hf sampler in bf16, MC scoring on CUDA against CPU fp32,
# LoRA and full SFT in bf16 (tokens/s, MFU), DeepSpeed ZeRO-2 and ZeRO-3 on one GPU and a 1-round
# study on the hf backend. Sized for ~5 minutes on an H200 (at most 8). One JSON of results lands in
# $OUT/gpu_check.json ($OUT is set on the device machine), or where --out says.
#
#   bash bench/gpu_wheels.sh                    # here, once: fills .whl/ (git-ignored)
#   bash bench/gpu_check.sh                     # there, with .whl carried along
#   bash bench/gpu_check.sh --cpu               # anywhere: the same checks, small, on CPU (tested)
#
# Any other arguments go to bench/gpu_check.py (--out FILE, --only a,b, --skip a,b, --peak_tflops X).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then :; elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# The wheels where the packages are missing (a bare GPU image), never over an environment that has them.
if ls .whl/*.whl >/dev/null 2>&1 && ! "$PYTHON" -c "import trl, deepspeed, datasets, math_verify, reasoning_gym" 2>/dev/null; then
  site=${MINDGAP_WHEEL_SITE:-/tmp/mindgap-site}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
  # reasoning-gym imports pycosat (C, no wheel for this Python) for its logic puzzles only
  if ! "$PYTHON" -c "import pycosat" 2>/dev/null; then
    cat > "$site/pycosat.py" <<'EOF'
"""Stand-in written by bench/gpu_check.sh: reasoning-gym imports pycosat, the check's tasks never call it."""
def _missing(*args, **kwargs):
    raise ImportError("pycosat is not installed here (bench/gpu_check.sh stand-in)")
solve = itersolve = _missing
EOF
  fi
fi
exec "$PYTHON" bench/gpu_check.py "$@"
