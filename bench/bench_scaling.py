"""Scaling: time per round at three sizes of (train prompts x samples), and the fitted slope.

A round's cost should grow linearly with the number of samples it draws, verifies, filters and
distills. One vLLM engine serves every run (its start-up is not part of a round); each run is a
fresh `trainer.loop.Study` at one size, whose round 1 runs exactly as in `recipes/iterate.py`
(sample, verify, select, distill, swap, evaluate), starting from the base model each time. Sizes
alternate (small, medium, large, large, medium, small, ...) so the machine's load falls on all of them,
after a discarded warm-up round.
The evaluation stage samples the same held-out prompts at every size: it is the intercept.

    .venv/bin/python bench/bench_scaling.py [--prompts 8,16,32] [--n 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import Result, command_line, median, vllm_quiet

from core.io import read_json


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares line y = a + b x: (a, b, R^2)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return a, b, 1 - ss_res / ss_tot if ss_tot else 1.0


def max_row_tokens(selection: Path, sampler) -> int:
    """Tokens of the longest kept prompt + completion: a padded batch costs its longest row."""
    import pandas as pd

    kept = pd.read_parquet(selection).query("kept")
    return max(len(sampler.encode(p + c)) for p, c in zip(kept["prompt"], kept["completion"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", default="8,16,32", help="train prompts per size, comma-separated")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--test_size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    vllm_quiet()

    from eval.saturation import SaturationConfig
    from trainer.config import (
        EngineConfig,
        FilterConfig,
        IterateConfig,
        SamplingConfig,
        SFTOptions,
        TaskConfig,
        UpdateConfig,
    )
    from trainer.loop import Study
    from trainer.models import resolve_model
    from trainer.samplers import build_sampler
    from trainer.stages import VerifierPool

    sizes = [int(p) for p in args.prompts.split(",")]
    res = Result("scaling", "Time per round against prompts x samples", command_line())
    base = resolve_model("smollm2-135m-instruct")
    engine = EngineConfig(backend="vllm")
    sampler = build_sampler(base, engine, seed=0)
    print(f"vLLM engine started in {sampler.start_seconds:.1f} s", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-scaling-"))

    def config(prompts: int, out: Path) -> IterateConfig:
        return IterateConfig(
            task=TaskConfig(
                name="basic_arithmetic",
                train_size=prompts,
                test_size=args.test_size,
                options={
                    "min_terms": 2,
                    "max_terms": 2,
                    "min_digits": 2,
                    "max_digits": 2,
                    "operators": ["+"],
                },
            ),
            sampling=SamplingConfig(n=args.n, temperature=0.8, max_tokens=64),
            eval_sampling=SamplingConfig(n=2, temperature=0.8, max_tokens=64),
            engine=engine,
            filter=FilterConfig("quantile", q=0.5),
            update=UpdateConfig(sft=SFTOptions(method="lora", learning_rate=2e-4, epochs=1, batch_size=8)),
            saturation=SaturationConfig(relative_gap_below=None, pass_at_k_drop=None, diversity_drop=None),
            rounds=1,
            output_dir=str(out),
            report_to="none",
            bootstrap=100,
        )

    def one_round(prompts: int, rep: int) -> dict:
        cfg = config(prompts, scratch / f"p{prompts}-r{rep}")
        study = Study(cfg)
        sampler.load_weights(study.base_dir)  # every run starts from the base model
        study.sampler, study.loaded = sampler, study.base_dir
        study.pool = VerifierPool(sampler, study.base_dir, engine, study.task, study.shots, cfg.seed)
        try:
            metrics, _, _ = study.run_round(1, study.base_dir)
        finally:
            study.pool.close()  # leaves the shared generator engine open
        seconds = dict(metrics["seconds"])
        samples = metrics["train"]["sampled"]
        row = {"prompts": prompts, "samples": samples, "kept": metrics["train"]["kept"], **seconds}
        row["total"] = sum(seconds.values())
        # What the SFT stage did: its training loop alone, the tokens it trained on, and its steps.
        rd = Path(cfg.output_dir) / "round_001"
        sft = read_json(rd / "sft.json")
        row.update(
            sft_train=sft["seconds"],
            sft_tokens=sft["train_tokens"],
            sft_steps=sft["steps"],
            sft_rows_max_tokens=max_row_tokens(rd / "selection.parquet", sampler),
        )
        print(f"  {prompts} prompts x {args.n}: {row['total']:.1f} s {seconds}", flush=True)
        print(
            f"    sft: {sft['steps']} steps, {sft['train_tokens']} tokens, {sft['seconds']:.1f} s in "
            f"the training loop, longest kept row {row['sft_rows_max_tokens']} tokens",
            flush=True,
        )
        return row

    # The first round in a process pays one-time costs (its first SFT step took 17 s where the same
    # step took 9 s later): a discarded warm-up round keeps them off the smallest size.
    print("warm-up round (discarded)", flush=True)
    one_round(sizes[0], -1)
    runs = []
    order = sizes
    for rep in range(args.repeats):
        for prompts in order:
            runs.append(one_round(prompts, rep))
        order = order[::-1]
    sampler.close()
    shutil.rmtree(scratch, ignore_errors=True)

    per_size = {}
    for prompts in sizes:
        mine = [r for r in runs if r["prompts"] == prompts]
        per_size[prompts] = {
            "samples": mine[0]["samples"],
            **{
                k: median(mine, k)
                for k in ("sample", "verify", "distill", "evaluate", "total", "sft_train", "sft_tokens")
            },
            "sft_steps": mine[0]["sft_steps"],
            "sft_rows_max_tokens": max(r["sft_rows_max_tokens"] for r in mine),
        }
    xs = [per_size[p]["samples"] for p in sizes]
    for prompts in sizes:
        s = per_size[prompts]
        res.add(f"round time at {prompts} prompts x {args.n} = {s['samples']} samples", s["total"], "s")
    a, b, r2 = fit(xs, [per_size[p]["total"] for p in sizes])
    res.add("fitted slope (whole round)", b, "s/sample", note=f"intercept {a:.1f} s, R^2 {r2:.3f}")
    res.add("linear fit R^2 (whole round)", r2, "", target=">= 0.95")
    for stage in ("sample", "verify", "distill"):
        a_s, b_s, r2_s = fit(xs, [per_size[p][stage] for p in sizes])
        res.add(f"fitted slope ({stage})", b_s, "s/sample", note=f"intercept {a_s:.2f} s, R^2 {r2_s:.3f}")
    # Linear means the cost per extra sample does not grow: compare the two halves of the range.
    lo, mid, hi = (per_size[p] for p in sizes)
    first = (mid["total"] - lo["total"]) / (mid["samples"] - lo["samples"])
    second = (hi["total"] - mid["total"]) / (hi["samples"] - mid["samples"])
    res.add("marginal cost per sample, upper half / lower half", second / first, "x", target="<= 1.25")
    # SFT is the one stage whose work is not proportional to the samples: it trains on the kept
    # ones, in padded batches. Its cost per trained token tells a growing per-token cost (not linear)
    # apart from more tokens per sample (longer kept completions at the larger sizes).
    for prompts in sizes:
        s = per_size[prompts]
        res.add(
            f"SFT training loop at {s['samples']} samples",
            s["sft_train"],
            "s",
            note=f"{s['sft_steps']} steps, {s['sft_tokens']:.0f} tokens, longest row "
            f"{s['sft_rows_max_tokens']} tokens, stage total {s['distill']:.1f} s",
        )
    per_token = [1000 * per_size[p]["sft_train"] / per_size[p]["sft_tokens"] for p in sizes]
    res.add("SFT training loop per 1k tokens, largest / smallest size", per_token[-1] / per_token[0], "x")
    res.details = {"per_size": per_size, "runs": runs, "args": vars(args)}
    res.write()


if __name__ == "__main__":
    main()
