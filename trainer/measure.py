"""Measuring the gap: one model on one task (recipes/measure_gap.py), and a generator × verifier
matrix of models (recipes/cross_verify.py), each stage written atomically and reused on a re-run.

    metrics = measure_gap(cfg)         # <output_dir>/generations.parquet, verification.parquet, metrics.json
    records = cross_verify(cfg)        # <output_dir>/<generator>/<verifier model>/..., gap_table.{md,json}

Both are the same three stages (trainer/stages.py): generate → verify → select, then `summarize`.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pandas as pd

from core.config import to_dict
from core.io import read_json, write_json, write_parquet, write_text
from eval.gap import summarize, unparseable
from trainer.config import CrossVerifyConfig, GapConfig
from trainer.models import resolve_model
from trainer.run import check_resume, prepare_prompts, seed_everything
from trainer.stages import OneEngine, VerifierPool, generate_rows, select_rows, verify_rows
from trainer.study import engine_dtype, study_metadata
from trainer.verifiers.ensemble import add_shared_member_costs

# Keys that change only the summary, not the stages: they may differ on resume.
GAP_SUMMARY_ONLY = ("bootstrap", "confidence", "ci_method", "output_dir")
# cross_verify may also grow its matrix on resume (folders are per model).
MATRIX_RESUMABLE = (*GAP_SUMMARY_ONLY, "generators", "verifier_models")


def measure_gap(cfg: GapConfig, log=print) -> dict:
    """generate → verify → select on the held-out split, then every metric with its interval."""
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    check_resume(out, out / "config.json", to_dict(cfg), GAP_SUMMARY_ONLY)
    write_json(out / "config.json", to_dict(cfg))
    if not (out / "run.json").exists():  # what made the files: versions, commit, CPU, engine dtype
        write_json(out / "run.json", study_metadata(to_dict(cfg)))
    timings = read_json(out / "timings.json") if (out / "timings.json").exists() else {}
    model_dir = resolve_model(cfg.model)
    task, problems, prompts, shots = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
    log(f"{cfg.model} on {task.name}: {len(problems)} prompts x {cfg.sampling.n} samples")
    engine = OneEngine(cfg.engine, cfg.seed, log_dir=out / "logs")
    try:
        rows = _stage(
            out / "generations.parquet",
            timings,
            "generate",
            out,
            log,
            lambda: generate_rows(engine.get(model_dir), task, problems, prompts, cfg.sampling, cfg.seed),
        )
        ver_path, cost_path = out / "verification.parquet", out / "verification_costs.json"
        if ver_path.exists() and cost_path.exists():
            rows, costs = pd.read_parquet(ver_path), read_json(cost_path)
            log(f"reusing {ver_path}")
        else:
            clock = time.perf_counter()
            needs_model = any(v.name != "oracle" for v in cfg.verifiers)
            pool = VerifierPool(
                engine.get(model_dir) if needs_model else None, model_dir, cfg.engine, task, shots, cfg.seed
            )
            try:
                rows, costs = verify_rows(rows, cfg.verifiers, pool)
            finally:
                pool.close()
            costs = add_shared_member_costs(costs)
            rows = select_rows(rows, cfg.verifiers, cfg.filter, cfg.seed)
            write_json(cost_path, costs)
            write_parquet(ver_path, rows)
            timings["verify"] = round(time.perf_counter() - clock, 1)
            write_json(out / "timings.json", timings)
    finally:
        engine.close()
    ids = [v.id or v.name for v in cfg.verifiers]
    metrics = summarize(rows, ids, costs, **boot(cfg))
    metrics["config"] = to_dict(cfg)
    metrics["engine_dtype"] = engine_dtype(metrics["config"])
    metrics["seconds"] = {**timings, "total": round(sum(timings.values()), 1)}
    write_json(out / "metrics.json", metrics)
    if metrics.get("score_correlations"):
        from eval.plots import plot_score_correlation

        plot_score_correlation(metrics["score_correlations"], out / "plots" / "score_correlation.png")
    return metrics


def boot(cfg) -> dict:
    """The bootstrap settings of a config, as `summarize` takes them."""
    return {"n_boot": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.seed, "method": cfg.ci_method}


def _stage(path: Path, timings: dict, name: str, out: Path, log, run) -> pd.DataFrame:
    """A stage's rows: read from `path` when it exists, else computed by `run()`, written and timed."""
    if path.exists():
        log(f"reusing {path}")
        return pd.read_parquet(path)
    clock = time.perf_counter()
    rows = run()
    write_parquet(path, rows)
    timings[name] = round(time.perf_counter() - clock, 1)  # an engine start included
    write_json(out / "timings.json", timings)
    return rows


# ---------------------------------------------------------------- cross-verification


def model_slug(ref: str) -> str:
    """A folder name for a model reference: its readable name plus a short hash of the reference."""
    name = Path(ref.rstrip("/")).name or ref
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:40] or "model"
    return f"{readable}-{hashlib.sha1(ref.rstrip('/').encode()).hexdigest()[:6]}"


def model_labels(refs: list[str]) -> dict[str, str]:
    """Short display names (the folder or alias name; the full reference where names collide)."""
    names = {r: Path(r.rstrip("/")).name or r for r in refs}
    return {r: n if list(names.values()).count(n) == 1 else r for r, n in names.items()}


def cross_verify(cfg: CrossVerifyConfig, log=print) -> list[dict]:
    """Every generator samples once; every verifier model scores every generator's samples with one
    strategy (the diagonal is self-verification). One model is loaded at a time."""
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    check_resume(out, out / "config.json", to_dict(cfg), MATRIX_RESUMABLE)
    write_json(out / "config.json", to_dict(cfg))
    if not (out / "run.json").exists():
        write_json(out / "run.json", study_metadata(to_dict(cfg)))
    gen_dirs = {g: resolve_model(g) for g in cfg.generators}
    ver_dirs = {v: resolve_model(v) for v in cfg.verifier_models}
    engine = OneEngine(cfg.engine, cfg.seed, log_dir=out / "logs")
    try:
        for g, model_dir in gen_dirs.items():
            path = out / model_slug(g) / "generations.parquet"
            if path.exists():
                log(f"reusing {path}")
                continue
            task, problems, prompts, _ = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
            log(f"{g} generates on {task.name}: {len(problems)} prompts x {cfg.sampling.n}")
            write_parquet(
                path, generate_rows(engine.get(model_dir), task, problems, prompts, cfg.sampling, cfg.seed)
            )
        _verify_matrix(cfg, out, gen_dirs, ver_dirs, engine, log)
    finally:
        engine.close()
    records = _matrix_records(cfg, out)
    _write_matrix(cfg, out, records)
    return records


def _cell_done(cell: Path) -> bool:
    return (cell / "verification.parquet").exists() and (cell / "verification_costs.json").exists()


def _verify_matrix(cfg, out: Path, gen_dirs: dict, ver_dirs: dict, engine: OneEngine, log) -> None:
    from trainer.verifiers import VERIFIERS

    needs_model = VERIFIERS[cfg.verifier.name].needs_model
    order = sorted(ver_dirs, key=lambda v: ver_dirs[v] != engine.model_dir)  # the loaded model first
    for v in order:
        pending = [g for g in gen_dirs if not _cell_done(out / model_slug(g) / model_slug(v))]
        if not pending:
            continue
        model_dir = ver_dirs[v]
        task, _, _, shots = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
        pool = VerifierPool(
            engine.get(model_dir) if needs_model else None, model_dir, cfg.engine, task, shots, cfg.seed
        )
        try:
            for g in pending:
                log(f"{v} verifies the samples of {g} ({cfg.verifier.name})")
                cell = out / model_slug(g) / model_slug(v)
                rows = pd.read_parquet(out / model_slug(g) / "generations.parquet")
                rows, costs = verify_rows(rows, [cfg.verifier], pool, keys=["verifier"])
                rows = select_rows(rows, [cfg.verifier], cfg.filter, cfg.seed)
                write_json(cell / "verification_costs.json", add_shared_member_costs(costs))
                write_parquet(cell / "verification.parquet", rows)
        finally:
            pool.close()


def _matrix_records(cfg: CrossVerifyConfig, out: Path) -> list[dict]:
    """One record per (generator, verifier model), with each cell's metrics.json written."""
    vid = cfg.verifier.id or cfg.verifier.name
    gen_labels, ver_labels = model_labels(cfg.generators), model_labels(cfg.verifier_models)
    records = []
    for g in cfg.generators:
        for v in cfg.verifier_models:
            cell = out / model_slug(g) / model_slug(v)
            rows = pd.read_parquet(cell / "verification.parquet")
            metrics = summarize(rows, [vid], read_json(cell / "verification_costs.json"), **boot(cfg))
            write_json(cell / "metrics.json", metrics)
            vm = metrics["verifiers"][vid]
            records.append(
                {
                    "generator": gen_labels[g],
                    "verifier_model": ver_labels[v],
                    "generator_ref": g,
                    "verifier_ref": v,
                    "self_verification": g == v,
                    "strategy": cfg.verifier.name,
                    **{
                        k: vm[k]
                        for k in ("generation_utility", "verification_utility", "gap", "relative_gap")
                    },
                    "auroc": vm.get("auroc"),
                    "auroc_per_prompt": vm.get("auroc_per_prompt"),
                    "kept": vm.get("kept"),
                    "kept_precision": vm.get("kept_precision"),
                    "verification_tokens": vm.get("verification_tokens"),
                    "unparseable": unparseable(vm),
                    "prompts_empty_filter": vm.get("prompts_empty_filter"),
                }
            )
    return records


def _write_matrix(cfg: CrossVerifyConfig, out: Path, records: list[dict]) -> None:
    from eval.gap import matrix_markdown
    from eval.plots import plot_cross_verify

    generators = list(model_labels(cfg.generators).values())
    verifiers = list(model_labels(cfg.verifier_models).values())
    write_json(out / "gap_table.json", records)
    head = (
        f"# Cross-verification: {cfg.verifier.name} on {cfg.task.name}\n\n{cfg.task.test_size} test prompts x "
        f"{cfg.sampling.n} samples; filter {cfg.filter.name}; {cfg.confidence * 100:g}% bootstrap CIs over prompts."
    )
    write_text(
        out / "gap_table.md",
        matrix_markdown(records, head) + "\n![gap heatmap](plots/cross_verify_gap.png)\n",
    )
    plot_cross_verify(records, generators, verifiers, out / "plots" / "cross_verify_gap.png")
