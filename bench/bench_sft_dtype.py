"""Does SFT in bf16 learn what SFT in fp32 learns? One kept set, the two dtypes, the same seeds.

The packaged model samples the quickstart's train prompts; its correct samples (the oracle's choice)
are distilled twice, in fp32 and in bf16 (autocast, fp32 master weights for what trains), with the
quickstart's SFT settings. Then the base model and both checkpoints are evaluated on the same
held-out prompts with the same sampling seeds: the loss curves side by side, each model's held-out
accuracy with its CI, and the paired difference bf16 − fp32 (same prompts). bf16 may become the CPU
default where it is native only if that difference's interval contains 0 and the curves agree.

    .venv/bin/python bench/bench_sft_dtype.py [--train 48] [--test 128] [--n 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import Result, command_line, vllm_quiet

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "quickstart.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--test", type=int, default=128)
    ap.add_argument("--n", type=int, default=4)
    args = ap.parse_args()
    vllm_quiet()

    import numpy as np

    from eval.metrics import bootstrap_ci, paired_difference_ci
    from trainer.config import IterateConfig, load_config
    from trainer.distill import SFTOptions, distill
    from trainer.models import resolve_model
    from trainer.run import prepare_prompts
    from trainer.samplers import build_sampler
    from trainer.stages import generate_rows

    cfg = load_config(
        IterateConfig,
        ["--task.train_size", str(args.train), "--task.test_size", str(args.test)],
        str(QUICKSTART),
    )
    res = Result(
        "sft_dtype",
        "SFT in bf16 against fp32: the same kept set, loss curves and held-out accuracy",
        command_line(),
    )
    base = resolve_model(cfg.model)
    task, train, train_prompts, _ = prepare_prompts(cfg.task, base, "train", cfg.seed)
    _, test, test_prompts, _ = prepare_prompts(cfg.task, base, "test", cfg.seed)
    sampling = cfg.sampling.__class__(
        n=args.n, temperature=cfg.sampling.temperature, max_tokens=cfg.sampling.max_tokens
    )
    sampler = build_sampler(base, cfg.engine, cfg.seed)
    rows = generate_rows(sampler, task, train, train_prompts, sampling, seed=1)
    kept = rows[rows["correct"] & (rows["finish_reason"] != "length")]
    print(f"{len(kept)} correct samples of {len(rows)} to distill", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-sft-dtype-"))
    stats, accuracy = {}, {}

    def held_out(model_dir: Path) -> np.ndarray:
        if model_dir != base:
            sampler.load_weights(model_dir)
        out = generate_rows(sampler, task, test, test_prompts, sampling, seed=2)
        return out.groupby("prompt_id", sort=True)["correct"].mean().to_numpy()

    accuracy["base"] = held_out(base)
    for dtype, bf16 in (("fp32", False), ("bf16", True)):
        opts = SFTOptions(**{**cfg.update.sft.__dict__, "bf16": bf16})
        sampler.sleep()
        start = time.perf_counter()
        stats[dtype] = distill(kept[["prompt", "completion"]], base, work / dtype, opts, seed=cfg.seed + 1)
        stats[dtype]["stage_s"] = time.perf_counter() - start
        sampler.wake_up()
        accuracy[dtype] = held_out(work / dtype)
    sampler.close()
    shutil.rmtree(work, ignore_errors=True)

    for name, acc in accuracy.items():
        ci = bootstrap_ci(acc, n_boot=2000, seed=0, proportion=True)
        res.add(
            f"held-out accuracy, {name}",
            ci["value"],
            "",
            note=f"95% CI [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]",
        )
    for a, b in (("bf16", "fp32"), ("fp32", "base"), ("bf16", "base")):
        d = paired_difference_ci(accuracy[a], accuracy[b], n_boot=2000, seed=0)
        res.add(
            f"held-out accuracy, {a} - {b} (paired)",
            d["value"],
            "",
            note=f"95% CI [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
        )
    for dtype in ("fp32", "bf16"):
        res.add(f"SFT loss (mean over the run), {dtype}", stats[dtype]["train_loss"], "")
        res.add(f"SFT stage seconds, {dtype}", stats[dtype]["stage_s"], "s")
    curves = {d: stats[d]["loss_history"] for d in stats}
    gaps = [abs(x - y) for x, y in zip(curves["bf16"], curves["fp32"])]
    res.add("loss curves: largest step-wise |bf16 - fp32|", max(gaps) if gaps else float("nan"), "")
    res.details = {
        "kept": len(kept),
        "sampled": len(rows),
        "loss_history": curves,
        "accuracy_per_prompt": {k: v.tolist() for k, v in accuracy.items()},
    }
    res.write()


if __name__ == "__main__":
    main()
