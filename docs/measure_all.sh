#!/usr/bin/env bash
# Every measured run docs/results.md shows, one after another, each timed into <run>/wall.json (what
# docs/figures.py quotes as its wall time); then the blocks of README.md and docs/results.md are regenerated.
#
#   bash docs/measure_all.sh [RUNS]        # RUNS defaults to runs/; a finished run is skipped
#   bash docs/measure_all.sh runs gap_strategies quickstart    # only these
#
# Each command resumes where it stopped, so re-running after a crash finishes the rest. A command stopped
# part-way (Ctrl-C, a kill, a crash) has that part's time kept in <run>/wall_parts.jsonl; the run's
# wall.json, once it finishes, sums its parts (and says how many). The quickstart's fresh-clone time
# comes from docs/fresh_quickstart.sh (it clones, installs and runs `make quickstart`).
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
  local t0 rc=0
  t0=$(date +%s.%N)
  trap 'record "$dir" "$t0" 130 "$*"; exit 130' INT TERM
  "$@" || rc=$?
  trap - INT TERM
  record "$dir" "$t0" "$rc" "$*"
  [ "$rc" -eq 0 ] || exit "$rc"
}

record() {  # record RUN_DIR T0 RC COMMAND: one part's time; when RC is 0, the run's wall.json
  "$py" - "$1" "$2" "$(date +%s.%N)" "$3" "$4" <<'PY'
import datetime, json, sys
from pathlib import Path
out, t0, t1, rc, cmd = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
out.mkdir(parents=True, exist_ok=True)
parts_file = out / "wall_parts.jsonl"
with parts_file.open("a") as f:
    f.write(json.dumps({"seconds": round(t1 - t0, 1), "exit_code": rc, "ended": now}) + "\n")
if rc == 0:
    parts = [json.loads(line) for line in parts_file.read_text().splitlines() if line.strip()]
    rec = {"command": cmd, "wall_seconds": round(sum(p["seconds"] for p in parts), 1),
           "parts": len(parts), "finished": now}
    tmp = out / ".wall.json.tmp"
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(out / "wall.json")
    print(f"{out}: {rec['wall_seconds']} s in {len(parts)} part(s)")
else:
    print(f"{out}: stopped (exit {rc}) after {t1 - t0:.0f} s; the same command resumes it")
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
