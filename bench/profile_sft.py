"""Where the SFT stage's time goes: one quickstart-sized SFT stage under torch.profiler.

The stage is mindgap's own (`trainer.distill.build_trainer`, then `train()`), on the kept rows of
bench/bench_distill.py, in the dtype `sft.bf16: auto` picks here (`--bf16 true|false` forces one).
The profile's operators are grouped into what they do (matmuls of the layers, the LM head's log-softmax,
attention, element-wise work, the optimizer, the data pipeline) and each group's share of the training
loop's wall time is reported, with the top operators by self time; the rest of the wall time is Python
and framework overhead outside any operator.

    .venv/bin/python bench/profile_sft.py [--rows 48] [--method lora] [--bf16 auto]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench_distill import HYPER, kept_rows
from common import Result, command_line

# Operator name fragments -> the group they count in (first match wins).
GROUPS = (
    ("optimizer", ("Optimizer.step", "_foreach_", "adam")),
    ("data pipeline", ("DataLoader", "collate", "enumerate(DataLoader)")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::_weight")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "aten::baddbmm")),
    ("softmax / log-softmax", ("softmax", "log_softmax", "nll_loss", "cross_entropy", "gather")),
    ("element-wise and copies", ("aten::", "")),
)


def group_of(name: str) -> str:
    for group, fragments in GROUPS:
        if any(f.lower() in name.lower() for f in fragments if f):
            return group
    return "element-wise and copies"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--method", default="lora", choices=["lora", "full"])
    ap.add_argument("--bf16", default="auto")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from trainer.distill import SFTOptions, build_trainer
    from trainer.models import resolve_model

    base = resolve_model("smollm2-135m-instruct")
    rows = kept_rows(args.rows)
    opts = SFTOptions(method=args.method, bf16=args.bf16, **HYPER)
    res = Result(
        "profile_sft",
        f"Where an SFT stage's time goes ({args.method}, {args.rows} kept rows, torch.profiler)",
        command_line(),
    )
    work = Path(tempfile.mkdtemp(prefix="profile-sft-"))
    try:
        trainer = build_trainer(rows, base, opts, seed=0, work_dir=work)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train()
        wall = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = wall * 1e6
    by_group: dict[str, float] = {}
    for e in events:
        by_group[group_of(e.key)] = by_group.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    # Self times add up over operators; on 2 threads intra-op work runs beside the Python thread, so
    # the shares are of the sum of self times, and the wall time outside them is named separately.
    counted = sum(by_group.values())
    res.add(
        "training loop wall time",
        wall,
        "s",
        note=f"bf16: {trainer.args.bf16}, threads {torch.get_num_threads()}",
    )
    for group, us in sorted(by_group.items(), key=lambda kv: -kv[1]):
        res.add(f"share of operator time: {group}", 100 * us / counted, "%")
    res.add(
        "operator time / wall time",
        counted / total_us,
        "x",
        note="below 1: Python and framework time outside any operator",
    )
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]
    res.details["top_operators"] = [
        {
            "name": e.key,
            "group": group_of(e.key),
            "calls": e.count,
            "self_seconds": round(e.self_cpu_time_total / 1e6, 3),
            "share_percent": round(100 * e.self_cpu_time_total / counted, 1),
        }
        for e in top
    ]
    for row in res.details["top_operators"]:
        print(
            f"  {row['share_percent']:5.1f}%  {row['self_seconds']:7.2f}s  {row['calls']:6d}  {row['name']}"
        )
    res.details["groups_seconds"] = {g: round(us / 1e6, 3) for g, us in by_group.items()}
    res.write()


if __name__ == "__main__":
    main()
