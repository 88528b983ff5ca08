#!/usr/bin/env bash
# Time `make quickstart` as a new user meets it: a fresh clone (with ../shared beside it, as CI has),
# an empty .venv, the model converted into an empty cache. Writes
# DEST/runs/quickstart/make_quickstart.json, which docs/figures.py quotes in the README:
#   bash docs/fresh_quickstart.sh /tmp/fresh            # then: docs/figures.py --runs /tmp/fresh/runs
set -euo pipefail
dest=${1:?usage: docs/fresh_quickstart.sh DEST}
src=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$dest" && git clone -q "$src" "$dest"
cd "$dest"
export MINDGAP_CACHE="$dest/.cache/mindgap"   # the GGUF conversion is part of a first run
t0=$(date +%s.%N)
make setup
t1=$(date +%s.%N)
make quickstart
t2=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:])
out = {"wall_seconds": round(t2 - t0, 1), "setup_seconds": round(t1 - t0, 1), "study_seconds": round(t2 - t1, 1)}
json.dump(out, open("runs/quickstart/make_quickstart.json", "w"), indent=2)
print(out)
PY
