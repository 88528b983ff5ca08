"""Cross-verification: the gap of every generator model verified by every verifier model.

    python recipes/cross_verify.py --config recipes/configs/cross_verify.yaml [--key value ...]

Each generator samples once (generations.parquet in its folder); each verifier model then scores
every generator's samples with one strategy (`verifier:`), so the diagonal is self-verification and
the rest is cross-verification. Only one model is loaded at a time. Writes into --output_dir:

    config.json
    <generator>/generations.parquet
    <generator>/<verifier model>/verification.parquet, verification_costs.json, metrics.json
    gap_table.md, gap_table.json     gap, relative gap (CIs), AUROC, precision, tokens per pair
    plots/cross_verify_gap.png       generator × verifier heatmaps of the gap and relative gap

Re-running resumes: a stage whose file exists is not recomputed, and models may be added to either
list (their folders are keyed by model name).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from eval.gap import fmt_ci, summarize, unparseable
from trainer.config import (
    EngineConfig,
    FilterConfig,
    SamplingConfig,
    TaskConfig,
    VerifierConfig,
    check_token_budget,
    load_config,
    to_dict,
)
from trainer.errors import UserError, exit_on_user_error
from trainer.io import read_json, write_json, write_parquet, write_text
from trainer.models import DEFAULT_MODEL
from trainer.run import check_resume

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "cross_verify.yaml"
# Keys that may change on resume: the summary's, and the matrix's extent (folders are per model).
RESUMABLE = ("bootstrap", "confidence", "output_dir", "generators", "verifier_models")

console = Console(stderr=True)


@dataclass
class CrossVerifyConfig:
    """recipes/cross_verify.py: a generator × verifier matrix of generation-verification gaps."""

    generators: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])  # models that sample
    verifier_models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])  # models that verify
    verifier: VerifierConfig = field(default_factory=lambda: VerifierConfig("mc"))  # the strategy
    task: TaskConfig = field(default_factory=TaskConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    seed: int = 0
    output_dir: str = "runs/cross_verify"
    bootstrap: int = 1000
    confidence: float = 0.95

    def validate(self, key: str = "") -> None:
        for name in ("generators", "verifier_models"):
            models = getattr(self, name)
            if not models:
                raise UserError(f"{name}: list at least one model, e.g. [{DEFAULT_MODEL}]")
            dup = sorted({m for m in models if models.count(m) > 1})
            if dup:
                raise UserError(f"{name}: {dup[0]} appears twice")
        check_token_budget(self)
        if self.verifier.model is not None:
            raise UserError("verifier.model: the verifier models come from `verifier_models`; leave it unset")
        if not 0 < self.confidence < 1:
            raise UserError(f"confidence: must be in (0, 1), got {self.confidence}")


def model_slug(ref: str) -> str:
    """A folder name for a model reference: its readable name plus a short hash of the reference."""
    name = Path(ref.rstrip("/")).name or ref
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:40] or "model"
    return f"{readable}-{hashlib.sha1(ref.rstrip('/').encode()).hexdigest()[:6]}"


def model_labels(refs: list[str]) -> dict[str, str]:
    """Short display names (the folder or alias name; the full reference where names collide)."""
    names = {r: Path(r.rstrip("/")).name or r for r in refs}
    return {r: n if list(names.values()).count(n) == 1 else r for r, n in names.items()}


class OneEngine:
    """At most one loaded model: asking for another closes the current one first."""

    def __init__(self, engine: EngineConfig, seed: int):
        self.engine, self.seed = engine, seed
        self.model_dir: Path | None = None
        self.sampler = None

    def get(self, model_dir: Path):
        if self.model_dir != model_dir:
            self.close()
            from trainer.samplers import build_sampler

            self.sampler = build_sampler(model_dir, self.engine, self.seed)
            self.model_dir = model_dir
        return self.sampler

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
        self.sampler, self.model_dir = None, None


@exit_on_user_error
def main(argv: list[str] | None = None) -> list[dict]:
    from trainer.models import resolve_model
    from trainer.run import seed_everything
    from trainer.verifiers import check_verifier

    cfg = load_config(CrossVerifyConfig, argv, default_config=str(DEFAULT_CONFIG))
    check_verifier(cfg.verifier, "verifier")
    seed_everything(cfg.seed)
    out = Path(cfg.output_dir)
    check_resume(out, out / "config.json", to_dict(cfg), RESUMABLE)
    write_json(out / "config.json", to_dict(cfg))
    gen_dirs = {g: resolve_model(g) for g in cfg.generators}
    ver_dirs = {v: resolve_model(v) for v in cfg.verifier_models}
    engines = OneEngine(cfg.engine, cfg.seed)
    try:
        generate_all(cfg, out, gen_dirs, engines)
        verify_all(cfg, out, gen_dirs, ver_dirs, engines)
    finally:
        engines.close()
    records = summarize_all(cfg, out)
    write_outputs(cfg, out, records)
    return records


def generate_all(cfg: CrossVerifyConfig, out: Path, gen_dirs: dict[str, Path], engines: OneEngine) -> None:
    """Sample once per generator (skipped where its generations.parquet exists)."""
    from trainer.run import prepare_prompts
    from trainer.stages import generate_rows

    for g, model_dir in gen_dirs.items():
        path = out / model_slug(g) / "generations.parquet"
        if path.exists():
            console.print(f"reusing {path}")
            continue
        task, problems, prompts, _ = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
        console.print(
            f"[bold]{g}[/] generates on [bold]{task.name}[/]: {len(problems)} prompts x {cfg.sampling.n}"
        )
        rows = generate_rows(engines.get(model_dir), task, problems, prompts, cfg.sampling, cfg.seed)
        write_parquet(path, rows)


def verify_all(
    cfg: CrossVerifyConfig,
    out: Path,
    gen_dirs: dict[str, Path],
    ver_dirs: dict[str, Path],
    engines: OneEngine,
) -> None:
    """Each verifier model scores every generator's samples (one engine start per verifier model)."""
    from trainer.run import prepare_prompts
    from trainer.stages import VerifierPool, select_rows, verify_rows
    from trainer.verifiers import VERIFIERS
    from trainer.verifiers.ensemble import add_shared_member_costs

    needs_model = VERIFIERS[cfg.verifier.name].needs_model
    # the model still loaded from generating goes first: no restart
    order = sorted(ver_dirs, key=lambda v: ver_dirs[v] != engines.model_dir)
    for v in order:
        pending = [g for g in gen_dirs if not _cell_done(out / model_slug(g) / model_slug(v))]
        if not pending:
            continue
        model_dir = ver_dirs[v]
        task, _, _, shots = prepare_prompts(cfg.task, model_dir, "test", cfg.seed)
        sampler = engines.get(model_dir) if needs_model else None
        pool = VerifierPool(sampler, model_dir, cfg.engine, task, shots, cfg.seed)
        try:
            for g in pending:
                console.print(f"[bold]{v}[/] verifies the samples of [bold]{g}[/] ({cfg.verifier.name})")
                cell = out / model_slug(g) / model_slug(v)
                rows = pd.read_parquet(out / model_slug(g) / "generations.parquet")
                rows, costs = verify_rows(rows, [cfg.verifier], pool)
                rows = select_rows(rows, [cfg.verifier], cfg.filter, cfg.seed)
                write_json(cell / "verification_costs.json", add_shared_member_costs(costs))
                write_parquet(cell / "verification.parquet", rows)
        finally:
            pool.close()


def _cell_done(cell: Path) -> bool:
    return (cell / "verification.parquet").exists() and (cell / "verification_costs.json").exists()


def summarize_all(cfg: CrossVerifyConfig, out: Path) -> list[dict]:
    """One record per (generator, verifier model), with each cell's metrics.json written."""
    vid = cfg.verifier.id or cfg.verifier.name
    gen_labels, ver_labels = model_labels(cfg.generators), model_labels(cfg.verifier_models)
    records = []
    for g in cfg.generators:
        for v in cfg.verifier_models:
            cell = out / model_slug(g) / model_slug(v)
            rows = pd.read_parquet(cell / "verification.parquet")
            metrics = summarize(
                rows,
                [vid],
                read_json(cell / "verification_costs.json"),
                n_boot=cfg.bootstrap,
                confidence=cfg.confidence,
                seed=cfg.seed,
            )
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


def write_outputs(cfg: CrossVerifyConfig, out: Path, records: list[dict]) -> None:
    from eval.plots import plot_cross_verify

    generators = list(model_labels(cfg.generators).values())
    verifiers = list(model_labels(cfg.verifier_models).values())
    write_json(out / "gap_table.json", records)
    write_text(out / "gap_table.md", markdown_table(records, cfg))
    plot_cross_verify(records, generators, verifiers, out / "plots" / "cross_verify_gap.png")
    stdout = Console(width=None if Console().is_terminal else 250)
    stdout.print(
        rich_table(records, f"cross-verification ({cfg.verifier.name}): gap ({cfg.confidence * 100:g}% CI)")
    )
    stdout.print(f"wrote {out}/gap_table.md, {out}/gap_table.json and {out}/plots/cross_verify_gap.png")


COLUMNS = (
    "generator",
    "verifier model",
    "gen utility",
    "gap [CI]",
    "relative gap [CI]",
    "AUROC",
    "AUROC per prompt",
    "kept precision",
    "verify tokens",
    "unparseable",
)


def _cells(r: dict) -> list[str]:
    return [
        r["generator"],
        r["verifier_model"] + (" (self)" if r["self_verification"] else ""),
        fmt_ci(r["generation_utility"], signed=False),
        fmt_ci(r["gap"]),
        fmt_ci(r["relative_gap"]),
        fmt_ci(r["auroc"], signed=False, digits=2),
        fmt_ci(r.get("auroc_per_prompt"), signed=False, digits=2),
        fmt_ci(r["kept_precision"], signed=False, digits=2),
        str(r["verification_tokens"]),
        str(r["unparseable"]),
    ]


def markdown_table(records: list[dict], cfg: CrossVerifyConfig) -> str:
    lines = [
        f"# Cross-verification: {cfg.verifier.name} on {cfg.task.name}",
        "",
        f"{cfg.task.test_size} test prompts x {cfg.sampling.n} samples; filter {cfg.filter.name}; "
        f"{cfg.confidence * 100:g}% bootstrap CIs over prompts.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in records]
    return "\n".join(lines + ["", "![gap heatmap](plots/cross_verify_gap.png)", ""])


def rich_table(records: list[dict], title: str) -> Table:
    table = Table(title=title)
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    for r in records:
        table.add_row(*_cells(r))
    return table


if __name__ == "__main__":
    main()
