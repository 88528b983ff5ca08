"""The distillation stage of a quickstart round on one kept set: this code against an earlier commit
(the main of 2026-12-01, before the SFT work), side by side in one run.

The earlier commit is exported with `git archive` into a temporary folder and each variant runs in its
own process with that tree (or this one) first on sys.path: the whole stage, load to save, with the
quickstart's SFT settings on the same 48 kept samples, alternating, repeated.

    .venv/bin/python bench/bench_vs_main.py [--baseline a53905d] [--rows 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, Result, command_line, interleave, median, spread

DRIVER = """
import json, sys, time, tempfile, shutil
sys.path.insert(0, {tree!r})
import pandas as pd
from trainer.distill import SFTOptions, distill
rows = pd.read_parquet({rows!r})
opts = SFTOptions(method="lora", learning_rate=2e-4, epochs=2.0, batch_size=8{extra})
out = tempfile.mkdtemp(prefix="vs-main-")
start = time.perf_counter()
stats = distill(rows, {base!r}, out + "/ckpt", opts, seed=1)
seconds = time.perf_counter() - start
shutil.rmtree(out, ignore_errors=True)
print("RESULT " + json.dumps({{"seconds": seconds, "train_seconds": stats["seconds"], "loss": stats["train_loss"]}}))
"""


def run_stage(tree: Path, rows: Path, base: Path, extra: str = "") -> dict:
    code = DRIVER.format(tree=str(tree), rows=str(rows), base=str(base), extra=extra)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the stage failed in {tree}:\n{r.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--baseline", default="a53905d", help="the earlier commit (default: main before the SFT work)"
    )
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from bench_distill import kept_rows

    from trainer.models import resolve_model
    from trainer.samplers.base import cpu_flags, cpu_has_native_bf16

    res = Result(
        "sft_vs_main",
        f"The SFT stage of a quickstart round: this code against {args.baseline}",
        command_line(),
    )
    work = Path(tempfile.mkdtemp(prefix="bench-vs-main-"))
    old = work / "baseline"
    old.mkdir()
    archive = subprocess.run(
        ["git", "archive", args.baseline], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    rows = work / "kept.parquet"
    kept_rows(args.rows).to_parquet(rows)
    base = resolve_model("smollm2-135m-instruct")
    variants = {
        f"baseline {args.baseline}": lambda: run_stage(old, rows, base),
        "this code, fp32": lambda: run_stage(ROOT, rows, base, ", bf16=False"),
        "this code, bf16": lambda: run_stage(ROOT, rows, base, ", bf16=True"),
        "this code, default (sft.bf16 auto)": lambda: run_stage(ROOT, rows, base),
    }
    runs = interleave(variants, args.repeats, warmup=0)
    ref = median(runs[f"baseline {args.baseline}"], "seconds")
    for name, rr in runs.items():
        res.add(f"stage seconds, {name}", median(rr, "seconds"), "s")
        res.add(f"training loss, {name}", median(rr, "loss"), "")
    flags = cpu_flags()
    kind = "AMX" if "amx_bf16" in flags else "AVX512-BF16 without AMX" if cpu_has_native_bf16() else "AVX2"
    target = {"AMX": ">= 3", "AVX2": ">= 1.3"}.get(kind)  # the targets are set for these two kinds
    for name in ("this code, fp32", "this code, bf16", "this code, default (sft.bf16 auto)"):
        speed = ref / median(runs[name], "seconds")
        res.add(
            f"speed-up over {args.baseline}, {name}", speed, "x", target=target if "default" in name else None
        )
    res.notes.append(
        f"This CPU: {kind}. Targets: >= 1.3x on an AVX2-only CPU, >= 3x on one with AMX; on other kinds "
        "the figures are reported without a target."
    )
    res.details = {"runs": runs, "spread_seconds": {k: spread(v, "seconds") for k, v in runs.items()}}
    res.write()


if __name__ == "__main__":
    main()
