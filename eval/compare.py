"""A controlled comparison: the same study under several conditions, side by side.

Every condition evaluates on the same held-out prompts (same task, seed and evaluation sampling), so
differences between conditions are paired: per prompt, the condition's held-out accuracy minus the
control's, resampled over prompts (`paired_difference_ci`). A comparison is stated as a finding only
where that interval excludes 0; otherwise the report says the data cannot tell the two apart.

    histories = {name: read_history(run_dir / name) for name in conditions}
    write_comparison(run_dir, histories, control="random", title="...")
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from core.io import write_json, write_text  # noqa: E402
from eval.metrics import paired_difference_ci, pass_at_k_per_prompt  # noqa: E402
from eval.report import band, fmt_interval, level, round_ticks, save_figure  # noqa: E402


def read_history(study_dir: Path) -> list[dict]:
    """The rounds a study has finished (its metrics.jsonl), in order; [] before round 0 is done."""
    path = Path(study_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _aligned(a: dict, b: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt values of `key` ("accuracy" or "pass@k") of two rounds, on the prompts both hold."""
    pa, pb = a["per_prompt"], b["per_prompt"]
    common = sorted(set(pa["prompt_id"]) & set(pb["prompt_id"]))

    def values(pp: dict) -> np.ndarray:
        pos = {p: i for i, p in enumerate(pp["prompt_id"])}
        n = np.array([pp["n"][pos[p]] for p in common], dtype=float)
        c = np.array([pp["correct"][pos[p]] for p in common], dtype=float)
        if key == "accuracy":
            return c / n
        k = int(key.split("@")[1])
        return pass_at_k_per_prompt(n.astype(int), c.astype(int), k)

    return values(pa), values(pb)


def differences(
    histories: dict[str, list[dict]],
    control: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Each condition's held-out accuracy and pass@k (largest k) minus the control's, round by round,
    with paired bootstrap CIs over the held-out prompts."""
    records = []
    base = {h["round"]: h for h in histories.get(control, [])}
    for name, history in histories.items():
        if name == control:
            continue
        for h in history:
            ref = base.get(h["round"])
            if ref is None or "per_prompt" not in h or "per_prompt" not in ref:
                continue
            kmax = max(int(k) for k in h["pass_at_k"])
            row = {"condition": name, "round": h["round"], "prompts": len(h["per_prompt"]["prompt_id"])}
            for key in ("accuracy", f"pass@{kmax}"):
                a, b = _aligned(h, ref, key)
                row[key] = paired_difference_ci(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
            records.append(row)
    return records


def verdict(d: dict, name: str, control: str, key: str = "accuracy", conf: str = "95%") -> str:
    """One sentence on a difference, that holds only where its interval excludes 0."""
    m = d[key]
    shown = f"{m['value']:+.3f} [{conf} CI {m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"
    if m["ci_low"] > 0:
        return f"{name} beats {control} on held-out {key} after round {d['round']}: {shown}."
    if m["ci_high"] < 0:
        return f"{name} is worse than {control} on held-out {key} after round {d['round']}: {shown}."
    return (
        f"{name} and {control} cannot be told apart on held-out {key} after round {d['round']}: "
        f"{shown} contains 0."
    )


def plot_conditions(histories: dict[str, list[dict]], plots: Path) -> list[Path]:
    """Accuracy and gap by round, the last round's pass@k curves and diversity by round, one line per
    condition, each with its confidence band."""
    conf = level(next(h for h in histories.values() if h))
    paths = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, history in histories.items():
        rounds = [h["round"] for h in history]
        band(ax1, rounds, [h["generation_utility"] for h in history], name)
        band(ax2, rounds, [h["gap"] for h in history], name)
    ax1.set(xlabel="round", ylabel="held-out accuracy", title=f"Accuracy by condition ({conf} CI)")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xlabel="round", title=f"Gap of each condition's verifier ({conf} CI)")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        round_ticks(ax, sorted({h["round"] for hs in histories.values() for h in hs}))
    paths.append(plots / "compare_accuracy_gap.png")
    save_figure(fig, paths[-1])

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (name, history) in enumerate(histories.items()):
        if not history:
            continue
        last = history[-1]
        ks = sorted(int(k) for k in last["pass_at_k"])
        pts = [last["pass_at_k"][str(k)] for k in ks]
        vals = np.array([p["value"] for p in pts], dtype=float)
        lo = np.array([p["ci_low"] if p.get("ci_low") is not None else np.nan for p in pts], dtype=float)
        hi = np.array([p["ci_high"] if p.get("ci_high") is not None else np.nan for p in pts], dtype=float)
        shift = 1 + 0.03 * (i - (len(histories) - 1) / 2)
        ax.errorbar(
            [k * shift for k in ks],
            vals,
            yerr=[vals - lo, hi - vals],
            marker="o",
            capsize=2,
            label=f"{name} (round {last['round']})",
        )
    ax.set_xscale("log", base=2)
    ks = sorted({int(k) for hs in histories.values() for h in hs for k in h["pass_at_k"]})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set(xlabel="k", ylabel="held-out pass@k", title=f"pass@k after the last round ({conf} CI)")
    ax.legend(fontsize=8)
    paths.append(plots / "compare_pass_at_k.png")
    save_figure(fig, paths[-1])

    keys = ("distinct_answers", "answer_entropy", "distinct_1", "distinct_2")
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(axes, keys):
        for name, history in histories.items():
            rounds = [h["round"] for h in history]
            band(ax, rounds, [h["answer_diversity"].get(key) or {} for h in history], name)
        ax.set(xlabel="round", title=key.replace("_", " "))
        round_ticks(ax, sorted({h["round"] for hs in histories.values() for h in hs}))
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Diversity of held-out samples by condition ({conf} CI)")
    paths.append(plots / "compare_diversity.png")
    save_figure(fig, paths[-1])
    return paths


def comparison_rows(histories: dict[str, list[dict]]) -> list[dict[str, str]]:
    """condition × round: held-out accuracy, the condition's gap, pass@k, diversity, kept."""
    rows = []
    for name, history in histories.items():
        for h in history:
            kmax = max(int(k) for k in h["pass_at_k"])
            train = h.get("train", {})
            rows.append(
                {
                    "condition": name,
                    "round": str(h["round"]),
                    "accuracy": fmt_interval(h["generation_utility"]),
                    "gap of its verifier": fmt_interval(h["gap"], "+.3f"),
                    f"pass@{kmax}": fmt_interval(h["pass_at_k"][str(kmax)]),
                    "distinct answers": fmt_interval(h["answer_diversity"].get("distinct_answers"), ".2f"),
                    "distinct-1": fmt_interval(h["answer_diversity"].get("distinct_1"), ".2f"),
                    "kept / sampled": f"{train.get('kept', '–')} / {train.get('sampled', '–')}",
                    "kept precision": fmt_interval(train.get("kept_precision")),
                }
            )
    return rows


def write_comparison(
    out: Path,
    histories: dict[str, list[dict]],
    control: str,
    title: str,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Path:
    """comparison.md, comparison.json and plots/compare_*.png in `out`."""
    out = Path(out)
    histories = {name: h for name, h in histories.items() if h}
    conf = f"{confidence * 100:g}%"
    diffs = differences(histories, control, n_boot, confidence, seed)
    plots = plot_conditions(histories, out / "plots")
    rows = comparison_rows(histories)
    lines = [f"# {title}", ""]
    last = {}
    for d in diffs:
        last[d["condition"]] = d  # rounds come in order: the last one stays
    if last:
        lines += [f"**Against the {control} control** (paired over the same held-out prompts):", ""]
        lines += [f"- {verdict(d, name, control, conf=conf)}" for name, d in last.items()]
        lines.append("")
    header = list(rows[0])
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r[c] for c in header) + " |" for r in rows]
    if diffs:
        keys = [k for k in diffs[0] if "@" in k]
        lines += [
            "",
            f"Difference from `{control}`, round by round ({conf} paired bootstrap CI over held-out prompts):",
            "",
            "| condition | round | accuracy − control | " + " | ".join(f"{k} − control" for k in keys) + " |",
            "|---|---:|---|" + "---|" * len(keys),
        ]
        for d in diffs:
            cells = [fmt_interval(d["accuracy"], "+.3f")] + [fmt_interval(d[k], "+.3f") for k in keys]
            lines.append(f"| {d['condition']} | {d['round']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    write_json(out / "comparison.json", {"control": control, "differences": diffs, "rows": rows})
    return write_text(out / "comparison.md", "\n".join(lines))
