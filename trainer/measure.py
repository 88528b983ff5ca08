"""Measuring the gap: one model on one task (recipes/measure_gap.py), a generator × verifier matrix
of models (recipes/cross_verify.py), and the gap against verification compute
(recipes/verify_compute.py), each stage written atomically and reused on a re-run.

    metrics = measure_gap(cfg)         # <output_dir>/generations.parquet, verification.parquet, metrics.json
    records = cross_verify(cfg)        # <output_dir>/<generator>/<verifier model>/..., gap_table.{md,json}
    records = verify_compute(cfg)      # <output_dir>/..., compute_table.{md,json}, plots/verify_compute.png
    result = scaling(cfg)              # <output_dir>/<model name>/ (a measure_gap run each), scaling.{md,json}

All are the same three stages (trainer/stages.py): generate → verify → select, then `summarize`,
run or reused through the run folder (trainer/runfolder.py), which checks a resume first. While the
stages run, the terminal shows the loop's console (trainer/console.py: the stage and its progress, a
line per finished stage) and every library's own output goes to <output_dir>/logs/run.log.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from core.config import to_dict
from core.io import read_json, write_json, write_parquet, write_text
from eval.gap import gap_markdown, summarize, unparseable
from eval.metrics import Bootstrap
from trainer.config import CrossVerifyConfig, GapConfig, ScalingConfig, VerifyComputeConfig
from trainer.console import StudyConsole
from trainer.models import count_parameters, resolve_model
from trainer.run import ENGINE_RESUMABLE, prepare_prompts, seed_everything
from trainer.runfolder import RunFolder, Stage
from trainer.stages import OneEngine, VerifierPool, generate_rows, select_rows, verify_rows
from trainer.study import engine_dtype
from trainer.verifiers.base import VerifierConfig
from trainer.verifiers.ensemble import add_shared_member_costs

# Keys that change only the summary, not the stages: they may differ on resume.
GAP_SUMMARY_ONLY = ("bootstrap", "confidence", "ci_method", "output_dir", *ENGINE_RESUMABLE)
# cross_verify may also grow its matrix on resume (folders are per model).
MATRIX_RESUMABLE = (*GAP_SUMMARY_ONLY, "generators", "verifier_models")
# scaling may add models or correct their token counts (each model's run checks its own stages).
SCALING_RESUMABLE = (*GAP_SUMMARY_ONLY, "models", "count_embeddings")


# A measurement's stages, by the name its `seconds` give them: the samples, and their verification
# (scores and the kept flags) with the verifiers' costs.
GAP_STAGES = {
    "generate": Stage("", "generations", ("generations.parquet",)),
    "verify": Stage("", "verification", ("verification.parquet", "verification_costs.json")),
}


RUN_LOG = "run.log"  # a measurement's library output, in <output_dir>/logs/


def open_run(cfg, may_change: tuple[str, ...], layout: list[Stage]) -> RunFolder:
    """A measurement's folder, checked (trainer/runfolder.py); what a resume found is in `run.notes`."""
    return RunFolder.open(cfg.output_dir, to_dict(cfg), may_change, to_dict(type(cfg)()), layout=layout)


@contextlib.contextmanager
def measuring(run: RunFolder, title: str, console: StudyConsole | None = None) -> Iterator[StudyConsole]:
    """The run's console, what a resume found shown first: a new one (library output to
    <output_dir>/logs/run.log), or `console` as it is (scaling's, around each model's run)."""
    with contextlib.ExitStack() as stack:
        if console is None:
            console = stack.enter_context(StudyConsole(run.out, title, log_name=RUN_LOG))
        for note in run.notes:
            console.round_line(note)
        yield console


def made(run: RunFolder, stage: Stage, name: str, make, console: StudyConsole, after: str = ""):
    """`run.stage(stage, make)` under the console's stage `name`; a line when it is made (`after`
    appended) or reused."""
    if run.done(stage):
        console.round_line(f"{name}: reusing {run.path(stage)}")
        return run.stage(stage, make)
    start = time.perf_counter()
    with console.stage(name):
        result = run.stage(stage, make)
    console.round_line(f"{name}: {time.perf_counter() - start:.0f} s{after}")
    return result


def loaded(engine: OneEngine, model_dir: Path, console: StudyConsole):
    """The engine's sampler of `model_dir` (started under a stage of the console when it is not
    loaded yet), reporting its progress to the console."""
    if engine.model_dir != model_dir:
        with console.stage(f"starting the engine ({model_dir.name})"):
            engine.get(model_dir)
    sampler = engine.get(model_dir)
    sampler.progress = console.progress
    return sampler


def stage_seconds(run: RunFolder) -> dict:
    """How long each stage of GAP_STAGES took when it was made, and their total (a run from before
    stage records: as its timings.json recorded them)."""
    legacy = run.out / "timings.json"
    old = read_json(legacy) if legacy.exists() else {}
    seconds = {}
    for name, stage in GAP_STAGES.items():
        took = run.seconds(stage) if run.seconds(stage) is not None else old.get(name)
        if took is not None:
            seconds[name] = round(took, 1)
    return {**seconds, "total": round(sum(seconds.values()), 1)}


def fits(cfg) -> tuple[str, int, int]:
    """The sampling budget every prompt must leave room for in the engine's context."""
    return ("sampling.max_tokens", cfg.sampling.max_tokens, cfg.engine.max_model_len)


def open_measurement(cfg, may_change: tuple[str, ...]) -> tuple[RunFolder, Path, tuple]:
    """One model on the held-out split (measure_gap, verify_compute): the run folder checked, the
    model and its prompts prepared (and checked), then the folder begun. Returns the run, the model
    dir and prepare_prompts' (task, problems, prompts, shots)."""
    seed_everything(cfg.seed)
    run = open_run(cfg, may_change, list(GAP_STAGES.values()))
    model_dir = resolve_model(cfg.model)
    prepared = prepare_prompts(cfg.task, model_dir, "test", cfg.seed, fits(cfg))
    run.begin()
    return run, model_dir, prepared


def generations(
    run: RunFolder,
    stage: Stage,
    engine: OneEngine,
    model_dir: Path,
    prepared: tuple,
    cfg,
    console: StudyConsole,
    name: str = "sample",
):
    """A stage of `cfg.sampling` samples of every prepared prompt, the model loaded when first needed."""
    task, problems, prompts, _ = prepared
    after = ""
    if not run.done(stage) and engine.model_dir != model_dir:  # the engine's start, timed on its own
        start = time.perf_counter()
        loaded(engine, model_dir, console)
        after = f" (after {time.perf_counter() - start:.0f} s starting the engine)"
    return made(
        run,
        stage,
        name,
        lambda: generate_rows(
            loaded(engine, model_dir, console), task, problems, prompts, cfg.sampling, cfg.seed
        ),
        console,
        after,
    )


def measure_gap(cfg: GapConfig, console: StudyConsole | None = None) -> dict:
    """generate → verify → select on the held-out split, then every metric with its interval
    (metrics.json; gap_table.md: the gap table with every column)."""
    run, model_dir, prepared = open_measurement(cfg, GAP_SUMMARY_ONLY)
    task, problems, _, shots = prepared
    title = f"{cfg.model} on {task.name}: {len(problems)} prompts x {cfg.sampling.n} samples"
    with measuring(run, title, console) as console:
        if console.title != title:  # scaling's console: a line per model
            console.round_line(title)
        engine = run.engine(cfg.engine, cfg.seed)
        try:
            rows = generations(run, GAP_STAGES["generate"], engine, model_dir, prepared, cfg, console)

            def verify() -> tuple[pd.DataFrame, dict]:
                needs_model = any(v.name != "oracle" for v in cfg.verifiers)
                sampler = loaded(engine, model_dir, console) if needs_model else None
                pool = VerifierPool(sampler, model_dir, cfg.engine, task, shots, cfg.seed)
                try:
                    scored, costs = verify_rows(rows, cfg.verifiers, pool)
                finally:
                    pool.close()
                return select_rows(scored, cfg.verifiers, cfg.filter, cfg.seed), add_shared_member_costs(
                    costs
                )

            rows, costs = made(run, GAP_STAGES["verify"], "verify", verify, console)
        finally:
            engine.close()
        ids = [v.id or v.name for v in cfg.verifiers]
        with console.stage("summarize"):
            metrics = summarize(rows, ids, costs, **cfg.boot)
    metrics["config"] = to_dict(cfg)
    metrics["engine_dtype"] = engine_dtype(metrics["config"])
    metrics["seconds"] = stage_seconds(run)
    write_json(run.out / "metrics.json", metrics)
    head = (
        f"# The generation-verification gap: {cfg.model} on {task.name}\n\n{metrics['n_prompts']} test "
        f"prompts x {metrics['n_samples_per_prompt']} samples; filter {cfg.filter.name}; "
        f"{cfg.confidence * 100:g}% bootstrap CIs over prompts."
    )
    write_text(run.out / "gap_table.md", gap_markdown(metrics, head))
    if metrics.get("score_correlations"):
        from eval.plots import plot_score_correlation

        plot_score_correlation(metrics["score_correlations"], run.out / "plots" / "score_correlation.png")
    return metrics


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


def matrix_stages(cfg: CrossVerifyConfig) -> tuple[dict[str, Stage], dict[tuple[str, str], Stage]]:
    """Each generator's samples (in its folder) and each (generator, verifier model) cell's
    verification (in the verifier's folder inside the generator's)."""
    gens = {g: Stage(model_slug(g), "generations", ("generations.parquet",)) for g in cfg.generators}
    cells = {
        (g, v): Stage(
            f"{model_slug(g)}/{model_slug(v)}",
            "verification",
            ("verification.parquet", "verification_costs.json"),
        )
        for g in cfg.generators
        for v in cfg.verifier_models
    }
    return gens, cells


def cross_verify(cfg: CrossVerifyConfig) -> list[dict]:
    """Every generator samples once; every verifier model scores every generator's samples with one
    strategy (the diagonal is self-verification). One model is loaded at a time."""
    seed_everything(cfg.seed)
    gens, cells = matrix_stages(cfg)
    run = open_run(cfg, MATRIX_RESUMABLE, [*gens.values(), *cells.values()])
    gen_dirs = {g: resolve_model(g) for g in cfg.generators}
    ver_dirs = {v: resolve_model(v) for v in cfg.verifier_models}
    prepared = {g: prepare_prompts(cfg.task, d, "test", cfg.seed, fits(cfg)) for g, d in gen_dirs.items()}
    run.begin()
    title = (
        f"cross-verification ({cfg.verifier.name}) on {cfg.task.name}: {len(cfg.generators)} generator(s) x "
        f"{len(cfg.verifier_models)} verifier model(s), {cfg.task.test_size} prompts x {cfg.sampling.n}"
    )
    with measuring(run, title) as console:
        engine = run.engine(cfg.engine, cfg.seed)
        try:
            names = model_labels(cfg.generators)
            for g in cfg.generators:
                generations(
                    run, gens[g], engine, gen_dirs[g], prepared[g], cfg, console, f"{names[g]} samples"
                )
            _verify_matrix(cfg, run, gens, cells, ver_dirs, engine, console)
        finally:
            engine.close()
        with console.stage("summarize"):
            records = _matrix_records(cfg, run, cells)
    _write_matrix(cfg, run.out, records)
    return records


def _verify_matrix(
    cfg, run: RunFolder, gens: dict, cells: dict, ver_dirs: dict, engine: OneEngine, console: StudyConsole
) -> None:
    from trainer.verifiers import VERIFIERS

    needs_model = VERIFIERS[cfg.verifier.name].needs_model
    order = sorted(ver_dirs, key=lambda v: ver_dirs[v] != engine.model_dir)  # the loaded model first
    gen_names, ver_names = model_labels(list(gens)), model_labels(list(ver_dirs))
    for v in order:
        pending = [g for g in gens if not run.done(cells[g, v])]
        if not pending:
            continue
        model_dir = ver_dirs[v]
        task, _, _, shots = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
        sampler = loaded(engine, model_dir, console) if needs_model else None
        pool = VerifierPool(sampler, model_dir, cfg.engine, task, shots, cfg.seed)
        try:
            for g in pending:

                def verify(g=g, pool=pool) -> tuple[pd.DataFrame, dict]:
                    scored, costs = verify_rows(run.read(gens[g]), [cfg.verifier], pool, keys=["verifier"])
                    kept = select_rows(scored, [cfg.verifier], cfg.filter, cfg.seed)
                    return kept, add_shared_member_costs(costs)

                made(run, cells[g, v], f"{ver_names[v]} verifies {gen_names[g]}", verify, console)
        finally:
            pool.close()


def _matrix_records(cfg: CrossVerifyConfig, run: RunFolder, cells: dict) -> list[dict]:
    """One record per (generator, verifier model), with each cell's metrics.json written."""
    vid = cfg.verifier.id or cfg.verifier.name
    gen_labels, ver_labels = model_labels(cfg.generators), model_labels(cfg.verifier_models)
    records = []
    for g in cfg.generators:
        for v in cfg.verifier_models:
            rows, costs = (run.read(cells[g, v], o) for o in cells[g, v].outputs)
            metrics = summarize(rows, [vid], costs, **cfg.boot)
            write_json(run.path(cells[g, v], "metrics.json"), metrics)
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


# ---------------------------------------------------------------- verification compute

# verify_compute may also change which k's it reports and how it filters: both only re-read the
# sampled verdicts.
COMPUTE_SUMMARY_ONLY = (*GAP_SUMMARY_ONLY, "ks", "filters")


def first_k_scores(verdicts: pd.Series, k: int) -> np.ndarray:
    """Each row's score from its first k sampled verifications: the mean of the parsed ones (NaN when
    none of the k parsed), the rule the verifier applies to all of them (trainer/verifiers/cot.py)."""
    first = (
        np.stack([np.asarray(v, dtype=float)[:k] for v in verdicts]) if len(verdicts) else np.zeros((0, k))
    )
    parsed = ~np.isnan(first)
    sums = np.where(parsed, first, 0.0).sum(axis=1)
    counts = parsed.sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def first_k_tokens(verdict_tokens: pd.Series, k: int) -> int:
    """The tokens the first k verifications of every row cost (each: its prompt + what it generated)."""
    return int(sum(int(np.asarray(t)[:k].sum()) for t in verdict_tokens))


def verify_compute(cfg: VerifyComputeConfig) -> list[dict]:
    """generate → verify (`verdicts` sampled verifications per generation, once) → select under each k
    (the mean of the first k verdicts) and each filter → the gap, AUROC and cost of every k, with the
    paired difference from the smallest k; the oracle under the same filter as the ceiling. One record
    per (filter, k), in `cfg.filters` order."""
    run, model_dir, prepared = open_measurement(cfg, COMPUTE_SUMMARY_ONLY)
    task, problems, _, shots = prepared
    vcfg = cfg.sampled_verifier
    title = (
        f"{cfg.model} on {task.name}: {len(problems)} prompts x {cfg.sampling.n} samples, "
        f"{cfg.verdicts} {vcfg.name} verifications each"
    )
    with measuring(run, title) as console:
        engine = run.engine(cfg.engine, cfg.seed)
        try:
            rows = generations(run, GAP_STAGES["generate"], engine, model_dir, prepared, cfg, console)

            def verify() -> tuple[pd.DataFrame, dict]:
                pool = VerifierPool(
                    loaded(engine, model_dir, console), model_dir, cfg.engine, task, shots, cfg.seed
                )
                try:
                    return verify_rows(rows, [vcfg], pool, keys=["verifier"])
                finally:
                    pool.close()

            rows, _ = made(run, GAP_STAGES["verify"], "verify", verify, console)
        finally:
            engine.close()
        with console.stage("summarize"):
            records = _compute_summary(cfg, run, rows, vcfg, task.name)
    return records


def _compute_summary(
    cfg: VerifyComputeConfig, run: RunFolder, rows: pd.DataFrame, vcfg, task_name: str
) -> list[dict]:
    """Each k's scores from the stored verdicts, each filter's selection, every record and file."""
    out = run.out
    vid = vcfg.id or vcfg.name
    verdicts, verdict_tokens = rows[f"verdicts_{vid}"], rows[f"verdict_tokens_{vid}"]
    ids, k_costs = [f"k{k}" for k in cfg.ks], {}
    for k in cfg.ks:
        rows[f"score_k{k}"] = first_k_scores(verdicts, k)
        k_costs[f"k{k}"] = {
            "tokens": first_k_tokens(verdict_tokens, k),
            "calls": len(rows) * k,
            # abstentions among the first k (under `unparseable: reject|accept` a failed verdict is scored)
            "unparseable": int(sum(np.isnan(np.asarray(v, dtype=float)[:k]).sum() for v in verdicts)),
        }
    rows["score_oracle"] = rows["correct"].astype(float)  # the ceiling, under each filter
    per_k = [VerifierConfig(vcfg.name, id=i) for i in ids] + [VerifierConfig("oracle")]
    metrics = {"filters": {}}
    records, selection = [], rows.drop(columns="kept", errors="ignore")
    for filt in cfg.filters:
        label = filt.label
        kept = select_rows(rows, per_k, filt, cfg.seed)
        summary = summarize(kept, [*ids, "oracle"], k_costs, **cfg.boot)
        metrics["filters"][label] = summary
        records += [{"filter": label, **r} for r in compute_records(kept, summary, ids, cfg.boot)]
        for i in [*ids, "oracle"]:
            selection[f"kept_{i}_{label}"] = kept[f"kept_{i}"]
    write_parquet(out / "selection.parquet", selection)
    metrics.update(
        config=to_dict(cfg),
        engine_dtype=engine_dtype(to_dict(cfg)),
        seconds=stage_seconds(run),
        compute=records,
    )
    write_json(out / "metrics.json", metrics)
    _write_compute(cfg, out, records, task_name)
    return records


def compute_records(rows: pd.DataFrame, metrics: dict, ids: list[str], boot: Bootstrap) -> list[dict]:
    """One record per k (`ids`: k1, k2, ...) and the oracle: gap, relative gap, AUROC, kept precision,
    tokens, and for each k after the first its paired difference from the first (the same
    generations; the same prompts in every resample)."""
    from eval.metrics import auroc_difference, json_safe, paired_difference_ci

    pp = metrics["per_prompt"]
    gen = np.array(pp["correct"], dtype=float) / np.array(pp["n"], dtype=float)
    open_ = gen < 1
    ver = {i: np.array(pp["verification_utility"][i], dtype=float) for i in pp["verification_utility"]}
    relative = {i: (v[open_] - gen[open_]) / (1 - gen[open_]) for i, v in ver.items()}
    paired = {key: boot[key] for key in ("n_boot", "confidence", "seed")}
    base = ids[0]
    records = []
    for i in [*ids, "oracle"]:
        vm = metrics["verifiers"][i]
        record = {
            "verifier": i,
            "k": int(i[1:]) if i != "oracle" else None,
            **{key: vm[key] for key in ("generation_utility", "verification_utility", "gap", "relative_gap")},
            "auroc": vm["auroc"],
            "auroc_per_prompt": vm["auroc_per_prompt"],
            "kept": vm["kept"],
            "kept_precision": vm["kept_precision"],
            "prompts_empty_filter": vm["prompts_empty_filter"],
            "unparseable": vm.get("verification_unparseable", 0),
            "verification_tokens": vm.get("verification_tokens", 0),
            "tokens_per_generation": vm.get("verification_tokens", 0) / max(len(rows), 1),
        }
        if i in ids[1:]:
            record[f"gap_vs_{base}"] = paired_difference_ci(ver[i], ver[base], **paired)
            record[f"relative_gap_vs_{base}"] = paired_difference_ci(relative[i], relative[base], **paired)
            record[f"auroc_vs_{base}"] = auroc_difference(rows, f"score_{i}", f"score_{base}", **boot)
        records.append(json_safe(record))
    return records


def _write_compute(cfg: VerifyComputeConfig, out: Path, records: list[dict], task_name: str) -> None:
    from eval.gap import compute_markdown
    from eval.plots import plot_verify_compute

    write_json(out / "compute_table.json", records)
    head = (
        f"# Verification compute: {cfg.verifier.name} on {task_name}\n\n{cfg.model}: {cfg.task.test_size} "
        f"test prompts x {cfg.sampling.n} samples, {cfg.verdicts} verifications sampled per sample; k = the "
        f"first k averaged; filters {', '.join(f.label for f in cfg.filters)}; "
        f"{cfg.confidence * 100:g}% bootstrap CIs over prompts, differences paired on the same prompts."
    )
    write_text(
        out / "compute_table.md",
        compute_markdown(records, head) + "\n![gap against verification compute](plots/verify_compute.png)\n",
    )
    plot_verify_compute(records, out / "plots" / "verify_compute.png")


# ---------------------------------------------------------------- scaling with pretraining compute


def scaling_gap_config(cfg: ScalingConfig, i: int) -> GapConfig:
    """Model i's measure_gap run: the study's task, sampling, engine, verifier and filter, in its folder."""
    m = cfg.models[i]
    return GapConfig(
        model=m.model,
        task=cfg.task,
        sampling=cfg.sampling,
        engine=cfg.engine,
        verifiers=[cfg.verifier]
        + ([VerifierConfig("oracle")] if cfg.oracle and cfg.verifier.name != "oracle" else []),
        filter=cfg.filter,
        seed=cfg.seed,
        output_dir=str(Path(cfg.output_dir) / (m.name or model_slug(m.model))),
        bootstrap=cfg.bootstrap,
        confidence=cfg.confidence,
        ci_method=cfg.ci_method,
    )


def scaling(cfg: ScalingConfig) -> dict:
    """Every model's gap (a resumable measure_gap run in its own folder), its parameters and compute,
    and the relative gap fitted against log10(6·N·D) with a bootstrap CI on the slope."""
    from eval.plots import plot_scaling
    from eval.scaling import ScalingPoint, fit_scaling, relative_gaps_per_prompt, scaling_markdown

    run = open_run(cfg, SCALING_RESUMABLE, [])  # no stages of its own: a measure_gap run per model
    run.begin()
    out = run.out
    vid = cfg.verifier.id or cfg.verifier.name
    points = []
    title = f"scaling ({cfg.verifier.name}) on {cfg.task.name}: {len(cfg.models)} models"
    with measuring(run, title) as console:
        runs = [measure_gap(scaling_gap_config(cfg, i), console) for i in range(len(cfg.models))]
    for i, (m, name, metrics) in enumerate(zip(cfg.models, cfg.labels(), runs)):
        gap_cfg = scaling_gap_config(cfg, i)
        n_params = m.n_params or count_parameters(resolve_model(m.model), embeddings=cfg.count_embeddings)
        vm = metrics["verifiers"][vid]
        points.append(
            ScalingPoint(
                name=name,
                n_params=float(n_params),
                tokens=float(m.pretraining_tokens),
                relative_gaps=relative_gaps_per_prompt(metrics["per_prompt"], vid),
                extra={
                    "model": m.model,
                    "n_params_from": "config" if m.n_params else "checkpoint",
                    "output_dir": gap_cfg.output_dir,
                    # the run's own numbers (its relative gap's interval never zero-width: eval/gap.py)
                    **{
                        k: vm[k]
                        for k in ("generation_utility", "verification_utility", "gap", "relative_gap")
                    },
                    "auroc": vm.get("auroc"),
                    "oracle_gap": metrics["verifiers"].get("oracle", {}).get("gap"),
                },
            )
        )
    result = fit_scaling(points, n_boot=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed)
    result["config"] = to_dict(cfg)
    write_json(out / "scaling.json", result)
    head = (
        f"# The gap against pretraining compute: {cfg.verifier.name} on {cfg.task.name}\n\n"
        f"{cfg.task.test_size} test prompts x {cfg.sampling.n} samples per model; filter {cfg.filter.name}; "
        f"N = {'all' if cfg.count_embeddings else 'non-embedding'} parameters, D = pretraining tokens from "
        f"the config; {cfg.confidence * 100:g}% bootstrap CIs over prompts."
    )
    write_text(out / "scaling.md", scaling_markdown(result, head) + "\n![scaling](plots/scaling.png)\n")
    plot_scaling(result, out / "plots" / "scaling.png")
    return result
