"""The study report: report.md and plots/*.png, rewritten after every round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trainer.io import atomic_write, write_text  # noqa: E402


def _v(m):
    return m.get("value") if isinstance(m, dict) else m


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def plot_accuracy_gap(history: list[dict], path: Path) -> None:
    rounds = [h["round"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (
        ("generation_utility", "accuracy (generation utility)"),
        ("verification_utility", "after verification filter"),
    ):
        vals = [_v(h[key]) for h in history]
        lo = [h[key]["ci_low"] for h in history]
        hi = [h[key]["ci_high"] for h in history]
        ax1.plot(rounds, vals, marker="o", label=label)
        ax1.fill_between(rounds, lo, hi, alpha=0.15)
    ax1.set(xlabel="round", ylabel="held-out utility", title="Accuracy by round")
    ax1.legend(fontsize=8)
    for key, label in (("gap", "gap"), ("relative_gap", "relative gap")):
        vals = [_v(h[key]) for h in history]
        ax2.plot(rounds, [float("nan") if v is None else v for v in vals], marker="o", label=label)
        lo = [h[key]["ci_low"] for h in history]
        hi = [h[key]["ci_high"] for h in history]
        if all(x is not None for x in lo + hi):
            ax2.fill_between(rounds, lo, hi, alpha=0.15)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xlabel="round", title="Generation-verification gap (95% CI)")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        _round_ticks(ax, rounds)
    _save(fig, path)


def plot_pass_at_k(history: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cmap = plt.get_cmap("viridis")
    for i, h in enumerate(history):
        ks = sorted(int(k) for k in h["pass_at_k"])
        ax.plot(
            ks,
            [h["pass_at_k"][str(k)] for k in ks],
            marker="o",
            color=cmap(i / max(1, len(history) - 1)),
            label=f"round {h['round']}",
        )
    ax.set_xscale("log", base=2)
    ks = sorted({int(k) for h in history for k in h["pass_at_k"]})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set(xlabel="k", ylabel="held-out pass@k", title="pass@k curves by round")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_diversity(history: list[dict], path: Path) -> None:
    rounds = [h["round"] for h in history]
    keys = [
        k
        for k in ("distinct_answers", "answer_entropy", "distinct_1", "distinct_2")
        if k in history[0]["answer_diversity"]
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys):
        ax.plot(rounds, [h["answer_diversity"].get(key) for h in history], marker="o")
        ax.set(xlabel="round", title=key.replace("_", " "))
        _round_ticks(ax, rounds)
    fig.suptitle("Diversity of held-out samples by round")
    _save(fig, path)


def write_report(
    out_dir: Path,
    history: list[dict],
    title: str,
    stop_reason: str | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Plot the rounds so far and write report.md beside metrics.jsonl."""
    plots = out_dir / "plots"
    plot_accuracy_gap(history, plots / "accuracy_gap.png")
    plot_pass_at_k(history, plots / "pass_at_k.png")
    plot_diversity(history, plots / "diversity.png")
    kmax = max((int(k) for k in history[-1]["pass_at_k"]), default=1)
    lines = [f"# {title}", ""]
    if stop_reason:
        lines += [f"**Stopped:** {stop_reason}", ""]
    lines += notes or []
    lines += [
        f"| round | accuracy | verified | gap [95% CI] | relative gap | AUROC | pass@{kmax} | maj@k | distinct answers "
        "| kept / sampled | kept precision | SFT loss | seconds |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in history:
        gap = h["gap"]
        train = h.get("train", {})
        lines.append(
            f"| {h['round']} | {_fmt(_v(h['generation_utility']))} | {_fmt(_v(h['verification_utility']))} "
            f"| {_fmt(gap['value'], '+.3f')} [{_fmt(gap['ci_low'], '+.3f')}, {_fmt(gap['ci_high'], '+.3f')}] "
            f"| {_fmt(_v(h['relative_gap']), '+.3f')} | {_fmt(h.get('verifier_auroc'))} "
            f"| {_fmt(h['pass_at_k'].get(str(kmax)))} | {_fmt(h.get('maj_at_k'))} "
            f"| {_fmt(h['answer_diversity'].get('distinct_answers'), '.2f')} "
            f"| {train.get('kept', '–')} / {train.get('sampled', '–')} | {_fmt(train.get('kept_precision'))} "
            f"| {_fmt(train.get('sft_loss'))} | {sum(h.get('seconds', {}).values()):.0f} |"
        )
    lines += [
        "",
        "Accuracy and verified accuracy are on held-out test prompts; the gap is the verifier's, "
        "measured with the round's own model.",
        "",
        "![accuracy and gap](plots/accuracy_gap.png)",
        "",
        "![pass@k](plots/pass_at_k.png)",
        "",
        "![diversity](plots/diversity.png)",
        "",
    ]
    return write_text(out_dir / "report.md", "\n".join(lines))


def _round_ticks(ax, rounds: list[int]) -> None:
    """Whole rounds on the x axis (matplotlib would put ticks at 0.5, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(len(rounds), 10)))


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
