"""How hard should the quickstart's task be? The packaged model's accuracy and MC gap on several
reasoning-gym arithmetic settings, each measured with recipes/measure_gap.py.

    .venv/bin/python docs/scan_tasks.py [--runs runs/task_scan] [--prompts 64] [--n 4]

Each setting is a measure_gap run in `<runs>/<setting>/` (resumable: a finished one is reused);
`docs/figures.py` turns them into the table of docs/results.md. A study can show something where round 0's
accuracy leaves room both ways (between about 0.2 and 0.6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_DIGIT = {"min_digits": 1, "max_digits": 1, "allow_negation": False, "allow_parentheses": False}
SETTINGS = {
    "add_1digit_2terms": {**ONE_DIGIT, "min_terms": 2, "max_terms": 2, "operators": ["+"]},
    "add_1digit_3terms": {**ONE_DIGIT, "min_terms": 3, "max_terms": 3, "operators": ["+"]},
    "addsub_1digit_3terms": {**ONE_DIGIT, "min_terms": 3, "max_terms": 3, "operators": ["+", "-"]},
    "add_1to2digit_2terms": {
        **ONE_DIGIT,
        "max_digits": 2,
        "min_terms": 2,
        "max_terms": 2,
        "operators": ["+"],
    },
    "add_2digit_2terms": {
        "min_digits": 2,
        "max_digits": 2,
        "min_terms": 2,
        "max_terms": 2,
        "operators": ["+"],
    },
    "defaults_1digit": {"min_digits": 1, "max_digits": 1},  # negatives, parentheses, all four operators
}


def main() -> None:
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="runs/task_scan")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--only", nargs="*", help="settings to run (default: all)")
    args = ap.parse_args()
    from recipes.measure_gap import main as measure_gap

    for name, options in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        argv = [
            "--config",
            str(ROOT / "recipes" / "configs" / "gap_quickstart.yaml"),
            "--task.options",
            json.dumps(options),
            "--task.test_size",
            str(args.prompts),
            "--sampling.n",
            str(args.n),
            "--sampling.temperature",
            "0.8",
            "--sampling.max_tokens",
            "96",
            "--verifiers",
            "[mc, oracle]",
            "--output_dir",
            str(Path(args.runs) / name),
        ]
        print(f"== {name}: {options}", flush=True)
        measure_gap(argv)


if __name__ == "__main__":
    main()
