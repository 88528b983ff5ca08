"""Measure the generation-verification gap of a model on a task.

    python recipes/measure_gap.py --config recipes/configs/gap_quickstart.yaml [--key value ...]

Writes generations.parquet, verification.parquet and metrics.json into --output_dir and prints the
gap table. Re-running the same command reuses the stages already written.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from eval.gap import confidence_label, fmt_ci, gap_table, summarize
from trainer.config import GapConfig, load_config, to_dict
from trainer.errors import exit_on_user_error
from trainer.io import read_json, write_json, write_parquet
from trainer.models import resolve_model
from trainer.run import check_resume, prepare_prompts, seed_everything
from trainer.stages import VerifierPool, generate_rows, select_rows, verify_rows
from trainer.study import engine_dtype, study_metadata
from trainer.verifiers.ensemble import add_shared_member_costs

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "gap_quickstart.yaml"
# Keys that change only the summary, not the stages: they may differ on resume.
SUMMARY_ONLY = ("bootstrap", "confidence", "ci_method", "output_dir")

console = Console(stderr=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(GapConfig, argv, default_config=str(DEFAULT_CONFIG))
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    check_resume(out, out / "config.json", to_dict(cfg), SUMMARY_ONLY)
    write_json(out / "config.json", to_dict(cfg))
    if not (out / "run.json").exists():  # what made the files: versions, commit, CPU, engine dtype
        write_json(out / "run.json", study_metadata(to_dict(cfg)))
    timings = read_json(out / "timings.json") if (out / "timings.json").exists() else {}
    clock = time.perf_counter()

    model_dir = resolve_model(cfg.model)
    task, problems, prompts, shots = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
    console.print(
        f"[bold]{cfg.model}[/] on [bold]{task.name}[/]: {len(problems)} prompts x {cfg.sampling.n} samples"
    )

    sampler = None
    gen_path = out / "generations.parquet"
    if gen_path.exists():
        rows = pd.read_parquet(gen_path)
        console.print(f"reusing {gen_path}")
    else:
        from trainer.samplers import build_sampler

        sampler = build_sampler(model_dir, cfg.engine, cfg.seed)
        rows = generate_rows(sampler, task, problems, prompts, cfg.sampling, cfg.seed)
        write_parquet(gen_path, rows)
        timings["generate"] = round(time.perf_counter() - clock, 1)  # engine start included
        write_json(out / "timings.json", timings)
    clock = time.perf_counter()

    ver_path, cost_path = out / "verification.parquet", out / "verification_costs.json"
    if ver_path.exists() and cost_path.exists():
        rows = pd.read_parquet(ver_path)
        costs = read_json(cost_path)
        console.print(f"reusing {ver_path}")
    else:
        needs_model = any(v.name != "oracle" for v in cfg.verifiers)
        if sampler is None and needs_model:
            from trainer.samplers import build_sampler

            sampler = build_sampler(model_dir, cfg.engine, cfg.seed)
        pool = VerifierPool(sampler, model_dir, cfg.engine, task, shots, cfg.seed)
        try:
            rows, costs = verify_rows(rows, cfg.verifiers, pool)
            costs = add_shared_member_costs(costs)
        finally:
            pool.close()
        rows = select_rows(rows, cfg.verifiers, cfg.filter, cfg.seed)
        write_json(cost_path, costs)
        write_parquet(ver_path, rows)
        timings["verify"] = round(time.perf_counter() - clock, 1)
        write_json(out / "timings.json", timings)
    if sampler is not None:
        sampler.close()

    ids = [v.id or v.name for v in cfg.verifiers]
    metrics = summarize(
        rows, ids, costs, n_boot=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed, method=cfg.ci_method
    )
    metrics["config"] = to_dict(cfg)
    metrics["engine_dtype"] = engine_dtype(metrics["config"])
    metrics["seconds"] = {**timings, "total": round(sum(timings.values()), 1)}
    write_json(out / "metrics.json", metrics)
    if metrics.get("score_correlations"):
        from eval.plots import plot_score_correlation

        plot_score_correlation(metrics["score_correlations"], out / "plots" / "score_correlation.png")
    stdout = Console(width=None if Console().is_terminal else 250)
    level = confidence_label(metrics)
    stdout.print(gap_table(metrics, title=f"{cfg.model} on {task.name}: gap ({level} CI)"))
    pk = ", ".join(f"pass@{k} {fmt_ci(v, signed=False)}" for k, v in metrics["pass_at_k"].items())
    maj = fmt_ci(metrics["maj_at_k"], signed=False)
    stdout.print(f"{pk}; maj@{metrics['n_samples_per_prompt']} {maj} ({level} CIs); wrote {out}/metrics.json")
    return metrics


if __name__ == "__main__":
    main()
