#!/usr/bin/env bash
# Every measured run docs/results.md shows, one after another, each timed into <run>/wall.json (what
# docs/figures.py quotes as its wall time); then the blocks of README.md and docs/results.md are regenerated.
#
#   bash docs/measure_all.sh [RUNS]        # RUNS defaults to runs/; a finished run is skipped
#   bash docs/measure_all.sh runs gap_strategies quickstart    # only these
#
# Each command resumes where it stopped, so re-running after a crash finishes the rest. The quickstart's
# fresh-clone time comes from docs/fresh_quickstart.sh (it clones, installs and runs `make quickstart`).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-runs}
shift || true
only=("$@")
py=.venv/bin/python
launch=(.venv/bin/accelerate launch -q --config_file launch/one_process.yaml)

measure() {  # measure NAME RUN_DIR COMMAND...
  local name=$1 dir=$2
  shift 2
  if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " =~ " ${name} " ]]; then return; fi
  if [ -f "$dir/wall.json" ]; then echo "$name: done before ($dir/wall.json)"; return; fi
  echo "$name: $* (from $(date -u +%H:%M:%S) UTC)"
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  "$py" - "$dir" "$t0" "$t1" "$*" <<'PY'
import json, sys, datetime
from pathlib import Path
out, t0, t1, cmd = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
out.mkdir(parents=True, exist_ok=True)
rec = {"command": cmd, "wall_seconds": round(t1 - t0, 1),
       "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
(out / "wall.json").write_text(json.dumps(rec, indent=2) + "\n")
print(f"{out}: {rec['wall_seconds']} s")
PY
}

cfg=recipes/configs
measure scaling "$runs/scaling" "$py" recipes/scaling.py --config $cfg/scaling.yaml --output_dir "$runs/scaling"
measure cross_verify_families "$runs/cross_verify_families" \
  "$py" recipes/cross_verify.py --config $cfg/cross_verify_families.yaml --output_dir "$runs/cross_verify_families"
measure verify_compute "$runs/verify_compute" \
  "$py" recipes/verify_compute.py --config $cfg/verify_compute.yaml --output_dir "$runs/verify_compute"
measure gap_open_qa "$runs/gap_open_qa" \
  "$py" recipes/measure_gap.py --config $cfg/gap_open_qa.yaml --output_dir "$runs/gap_open_qa"
measure gap_sudoku "$runs/gap_sudoku" \
  "$py" recipes/measure_gap.py --config $cfg/gap_sudoku.yaml --output_dir "$runs/gap_sudoku"
measure task_scan "$runs/task_scan" "$py" docs/scan_tasks.py --runs "$runs/task_scan"
measure gap_strategies "$runs/gap_strategies" \
  "$py" recipes/measure_gap.py --config $cfg/gap_strategies.yaml --output_dir "$runs/gap_strategies"
measure compare_quickstart "$runs/compare_quickstart" \
  "${launch[@]}" recipes/compare.py --config $cfg/compare_quickstart.yaml --output_dir "$runs/compare_quickstart"
measure compare_update_rules "$runs/compare_update_rules" \
  "${launch[@]}" recipes/compare.py --config $cfg/compare_update_rules.yaml --output_dir "$runs/compare_update_rules"
"$py" docs/figures.py --runs "$runs"
