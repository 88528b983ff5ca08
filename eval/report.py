"""The study report: report.md and plots/*.png, rewritten after every round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from core.io import atomic_write, write_text  # noqa: E402
from eval.gap import fmt_ci  # noqa: E402
from eval.metrics import ANSWER_SHARE_BUCKETS, BUCKET_LABELS  # noqa: E402


def _v(m):
    return m.get("value") if isinstance(m, dict) else m


def _fmt(x, spec: str = ".3f") -> str:
    x = _v(x)
    return "n/a" if x is None else format(x, spec)


def fmt_interval(m, spec: str = ".3f") -> str:
    """`0.123 [0.050, 0.200]` for a {value, ci_low, ci_high} (a plain number as itself)."""
    if not isinstance(m, dict):
        return _fmt(m, spec)
    return fmt_ci(m, signed=spec.startswith("+"), digits=int(spec.rstrip("f")[-1]))


def level(history: list[dict]) -> str:
    """The confidence level of the rounds' intervals, as `95%`."""
    conf = (history[-1].get("ci") or {}).get("confidence", 0.95) if history else 0.95
    return f"{conf * 100:g}%"


def band(ax, x, metrics: list, label: str, **kw) -> None:
    """A line of values with its confidence band (where the intervals are defined)."""
    vals = [_nan(_v(m)) for m in metrics]
    lo = [_nan(m.get("ci_low")) if isinstance(m, dict) else float("nan") for m in metrics]
    hi = [_nan(m.get("ci_high")) if isinstance(m, dict) else float("nan") for m in metrics]
    (line,) = ax.plot(x, vals, marker="o", label=label, **kw)
    ax.fill_between(x, lo, hi, alpha=0.15, color=line.get_color())


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def plot_accuracy_gap(history: list[dict], path: Path) -> None:
    rounds = [h["round"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    band(ax1, rounds, [h["generation_utility"] for h in history], "accuracy (generation utility)")
    band(ax1, rounds, [h["verification_utility"] for h in history], "after verification filter")
    ax1.set(xlabel="round", ylabel="held-out utility", title=f"Accuracy by round ({level(history)} CI)")
    ax1.legend(fontsize=8)
    band(ax2, rounds, [h["gap"] for h in history], "gap")
    band(ax2, rounds, [h["relative_gap"] for h in history], "relative gap")
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set(xlabel="round", title=f"Generation-verification gap ({level(history)} CI)")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        round_ticks(ax, rounds)
    save_figure(fig, path)


def plot_pass_at_k(history: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cmap = plt.get_cmap("viridis")
    for i, h in enumerate(history):
        ks = sorted(int(k) for k in h["pass_at_k"])
        points = [h["pass_at_k"][str(k)] for k in ks]
        vals = [_nan(_v(p)) for p in points]
        err = [
            [v - _nan(p.get("ci_low")) for v, p in zip(vals, points)],
            [_nan(p.get("ci_high")) - v for v, p in zip(vals, points)],
        ]
        shift = 1 + 0.03 * (i - (len(history) - 1) / 2)  # rounds side by side at each k
        ax.errorbar(
            [k * shift for k in ks],
            vals,
            yerr=err if all(isinstance(p, dict) for p in points) else None,
            marker="o",
            capsize=2,
            color=cmap(i / max(1, len(history) - 1)),
            label=f"round {h['round']}",
        )
    ax.set_xscale("log", base=2)
    ks = sorted({int(k) for h in history for k in h["pass_at_k"]})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set(xlabel="k", ylabel="held-out pass@k", title=f"pass@k curves by round ({level(history)} CI)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_diversity(history: list[dict], path: Path) -> None:
    rounds = [h["round"] for h in history]
    keys = [
        k
        for k in ("distinct_answers", "answer_entropy", "distinct_1", "distinct_2")
        if k in history[0]["answer_diversity"]
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(axes if len(keys) > 1 else [axes], keys):
        band(ax, rounds, [h["answer_diversity"].get(key) or {} for h in history], key)
        ax.set(xlabel="round", title=key.replace("_", " "))
        round_ticks(ax, rounds)
    fig.suptitle(f"Diversity of held-out samples by round ({level(history)} CI)")
    save_figure(fig, path)


def _rare(h: dict, where: str) -> tuple[dict, dict]:
    """A round's rare-answer recall and kept-entropy records, of its held-out samples (`eval`) or of
    its train samples (`train`); empty where the round has none (round 0's train, older studies)."""
    src = h if where == "eval" else h.get("train") or {}
    return src.get("rare_answer_recall") or {}, src.get("kept_answer_entropy") or {}


def entropy_na(entropy: dict) -> str | None:
    """Why a kept-answer-entropy record has no numbers (no prompt kept two samples or more), else None."""
    if not entropy or (entropy.get("sampled") or {}).get("value") is not None:
        return None
    one, empty = entropy.get("prompts_one", 0), entropy.get("prompts_empty", 0)
    if one and empty:
        return f"n/a: the filter keeps at most one sample a prompt ({one} kept one, {empty} none)"
    if one:
        return "n/a: the filter keeps one sample a prompt"
    return "n/a: the filter kept nothing"


def plot_rare_answers(history: list[dict], path: Path) -> None:
    """What the verifier adds to the filter's recall on correct samples, by how common their answer is
    (recall minus a no-signal verifier's at the same per-prompt budget), and the answer entropy of the
    kept set against the sampled set where the filter keeps two or more a prompt, by round: held-out
    samples on the left, train samples on the right."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    for col, (where, name) in enumerate((("eval", "held-out"), ("train", "train"))):
        rounds = [h for h in history if _rare(h, where)[0]]
        x = [h["round"] for h in rounds]
        ax_r, ax_e = axes[0, col], axes[1, col]
        with_entropy = [h for h in rounds if not entropy_na(_rare(h, where)[1])]
        if not rounds:
            empty = {ax_r: f"no {name} samples verified yet", ax_e: f"no {name} samples verified yet"}
        else:
            empty = {ax_e: entropy_na(_rare(rounds[-1], where)[1])} if not with_entropy else {}
        for ax, text in empty.items():
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)
        for j, bucket in enumerate((*ANSWER_SHARE_BUCKETS, "all")):
            if rounds:
                points = [(_rare(h, where)[0].get(bucket) or {}).get("lift") or {} for h in rounds]
                style = {"ls": "--", "color": "grey"} if bucket == "all" else {}
                shifted = [t + 0.03 * (j - 2) for t in x]  # buckets side by side: equal lifts stay visible
                band(ax_r, shifted, points, BUCKET_LABELS.get(bucket, "all correct"), **style)
        ax_r.axhline(0, color="grey", lw=0.8)
        ax_r.set(ylabel="recall − no-signal recall", title=f"{name}: recall over no signal, by answer share")
        for key, label in (("sampled", "sampled"), ("kept", "kept")):
            if with_entropy:
                xs = [h["round"] for h in with_entropy]
                band(ax_e, xs, [_rare(h, where)[1].get(key) or {} for h in with_entropy], label)
        ax_e.set(
            xlabel="round",
            ylabel="answer entropy (nats)",
            title=f"{name}: answer entropy (prompts keeping ≥ 2)",
        )
        for ax in (ax_r, ax_e):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
            ax.set_xticks([h["round"] for h in history])  # whole rounds (the buckets sit beside them)
    fig.suptitle(f"Rare correct answers by round ({level(history)} CI)")
    save_figure(fig, path)


def rare_rows(history: list[dict]) -> list[dict[str, str]]:
    """The rare-answer recall table: a row per round, sample set (held-out; train from round 1) and
    answer-share bucket that holds a correct sample, its recall beside a no-signal verifier's and a
    perfect one's at the same per-prompt budget, and the lift over no signal."""
    rows = []
    for h in history:
        for where, name in (("eval", "held-out"), ("train", "train")):
            recall = _rare(h, where)[0]
            for bucket in (*ANSWER_SHARE_BUCKETS, "all"):
                r = recall.get(bucket) or {}
                if not r.get("correct"):
                    continue
                rows.append(
                    {
                        "round": str(h["round"]),
                        "samples": name,
                        "answer share": BUCKET_LABELS.get(bucket, "all correct"),
                        "kept / correct": f"{r.get('kept', 0)} / {r['correct']}",
                        "recall": fmt_interval(r.get("recall"), ".2f"),
                        "no signal": _fmt(r.get("no_signal"), ".2f"),
                        "oracle": _fmt(r.get("oracle"), ".2f"),
                        "lift over no signal": fmt_interval(r.get("lift"), "+.2f"),
                    }
                )
    return rows


def entropy_rows(history: list[dict]) -> list[dict[str, str]]:
    """The kept-answer-entropy table: a row per round and sample set, over the prompts where the filter
    kept two samples or more (n/a, with the reason, where none did)."""
    rows = []
    for h in history:
        for where, name in (("eval", "held-out"), ("train", "train")):
            recall, entropy = _rare(h, where)
            if not recall or not entropy:
                continue
            na = entropy_na(entropy)
            total = sum(entropy.get(k, 0) for k in ("prompts", "prompts_one", "prompts_empty"))
            rows.append(
                {
                    "round": str(h["round"]),
                    "samples": name,
                    "prompts keeping ≥ 2": f"{entropy.get('prompts', 0)} of {total}",
                    "sampled": "n/a" if na else fmt_interval(entropy.get("sampled"), ".2f"),
                    "kept": na or fmt_interval(entropy.get("kept"), ".2f"),  # the reason, once
                    "kept − sampled": "n/a" if na else fmt_interval(entropy.get("change"), "+.2f"),
                }
            )
    return rows


def markdown_table(rows: list[dict[str, str]], right: tuple[str, ...] = ("round",)) -> list[str]:
    """A pipe table of `rows` (dicts keyed by the columns), one line each."""
    header = list(rows[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if c in right else "---" for c in header) + "|",
        *("| " + " | ".join(r[c] for c in header) + " |" for r in rows),
    ]


def table_rows(history: list[dict]) -> list[dict[str, str]]:
    """The report table, one dict per round keyed by its column names."""
    kmax = max((int(k) for k in history[-1]["pass_at_k"]), default=1)
    gap = f"gap [{level(history)} CI]"
    rules = {h.get("train", {}).get("rule") for h in history}
    dpo, grpo = "dpo" in rules, "grpo" in rules
    rows = []
    for h in history:
        train = h.get("train", {})
        trunc = "–" if h.get("truncated") is None else str(h["truncated"])
        if train:
            trunc = f"{train.get('truncated_sampled', '–')} / {trunc}"
        rows.append(
            {
                "round": str(h["round"]),
                "accuracy": fmt_interval(h["generation_utility"]),
                "verified": fmt_interval(h["verification_utility"]),
                gap: fmt_interval(h["gap"], "+.3f"),
                "relative gap": fmt_interval(h["relative_gap"], "+.3f"),
                "AUROC": fmt_interval(h.get("verifier_auroc"), ".2f"),
                "AUROC per prompt": fmt_interval(h.get("verifier_auroc_per_prompt"), ".2f"),
                f"pass@{kmax}": fmt_interval(h["pass_at_k"].get(str(kmax))),
                "maj@k": fmt_interval(h.get("maj_at_k")),
                "distinct answers": _fmt(h["answer_diversity"].get("distinct_answers"), ".2f"),
                "kept / sampled": f"{train.get('kept', '–')} / {train.get('sampled', '–')}",
                **(_dpo_cells(train) if dpo else {}),
                **(_grpo_cells(train) if grpo else {}),
                **({} if dpo or grpo else {"distilled": str(train.get("distilled", "–"))}),
                "truncated": trunc,
                "kept precision": fmt_interval(train.get("kept_precision")),
                **({} if dpo or grpo else {"SFT loss": _fmt(train.get("sft_loss"))}),
                "seconds": f"{sum(h.get('seconds', {}).values()):.0f}",
            }
        )
    return rows


def _dpo_cells(train: dict) -> dict[str, str]:
    """A DPO round's columns: its pairs (and prompts without one), how many pair a correct sample
    over an incorrect one, and TRL's loss, reward margin and preference accuracy over its steps."""
    pairs = train.get("dpo_pairs")
    return {
        "pairs (unpaired prompts)": "–"
        if pairs is None
        else f"{pairs} ({train.get('dpo_prompts_unpaired')})",
        "pair precision": _fmt(train.get("dpo_pair_precision"), ".2f"),
        "DPO loss": _fmt(train.get("dpo_loss")),
        "reward margin": _fmt(train.get("dpo_reward_margin")),
        "preference accuracy": _fmt(train.get("dpo_reward_accuracy"), ".2f"),
    }


def _grpo_cells(train: dict) -> dict[str, str]:
    """A GRPO round's columns: its rollouts' mean reward (± std), the share of groups whose rewards do
    not vary, how often the reward agreed with the task's checker (its CI), the rollouts' accuracy,
    and the tokens generated in its rollouts."""
    reward, std = train.get("grpo_reward"), train.get("grpo_reward_std")
    return {
        "reward (std)": "–" if reward is None else f"{reward:.3f} ({std:.3f})",
        "flat groups": _fmt(train.get("grpo_zero_std_groups"), ".2f"),
        "reward accuracy": fmt_interval(train.get("grpo_reward_accuracy")),
        "reward AUROC": _fmt(train.get("grpo_reward_auroc"), ".2f"),
        "rollout accuracy": _fmt(train.get("grpo_rollout_accuracy"), ".3f"),
        "tokens generated": str(train.get("grpo_tokens_generated", "–")),
    }


def saturation_lines(history: list[dict]) -> list[str]:
    """What each stopping rule found after the last round, fired or not."""
    verdicts = history[-1].get("saturation") or {}
    if not verdicts:
        return []
    lines = [
        "Stopping rules after the last round (each holds its error rate over the whole study: it tests "
        "every round at its share of 1 − confidence; docs/definitions.md):",
        "",
    ]
    for v in verdicts.values():
        lines.append(f"- {'**fired**' if v['fired'] else 'not fired'} — {v['reason']}")
    return lines + [""]


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
    plot_rare_answers(history, plots / "rare_answers.png")
    lines = [f"# {title}", ""]
    if stop_reason:
        lines += [f"**Stopped:** {stop_reason}", ""]
    lines += notes or []
    lines += markdown_table(table_rows(history))
    lines += [
        "",
        f"Every interval is a {level(history)} bootstrap CI over prompts. Accuracy, verified accuracy, the "
        "gap, AUROC, pass@k and maj@k are on the held-out test prompts, each round's self-verification "
        "by its own model; kept, distilled and kept precision are of the round's train samples "
        "(truncated: train samples cut off at the token budget / held-out ones; truncated samples are "
        "not trained on unless the rule's `train_on_truncated`).",
        "",
    ]
    if any(h.get("train", {}).get("rule") == "dpo" for h in history):
        lines[-1:] = [
            "DPO rounds (update rule `dpo`): pairs are a prompt's kept samples against its dropped ones "
            "(trainer/update/dpo.py); pair precision is the share whose chosen sample is correct and "
            "rejected one incorrect; reward margin and preference accuracy are TRL's rewards/margins and "
            "rewards/accuracies, means over the round's training steps (each on that step's batch).",
            "",
        ]
    if any(h.get("train", {}).get("rule") == "grpo" for h in history):
        lines[-1:] = [
            "GRPO rounds (update rule `grpo`, trainer/update/grpo.py): reward is the mean (std) of the "
            "rewards of the round's rollouts; flat groups, the share of a step's groups (a prompt's "
            "completions) whose rewards did not vary, which teach nothing; reward accuracy, the share of "
            "rollouts where the reward (at 0.5) agreed with the task's checker (CI over the groups); "
            "reward AUROC, how well the rewards rank right over wrong rollouts; rollout accuracy, the "
            "rollouts' accuracy under the checker.",
            "",
        ]
    lines += saturation_lines(history)
    lines += [
        "![accuracy and gap](plots/accuracy_gap.png)",
        "",
        "![pass@k](plots/pass_at_k.png)",
        "",
        "![diversity](plots/diversity.png)",
        "",
    ]
    rare, entropy = rare_rows(history), entropy_rows(history)
    if entropy:
        lines += [
            "## Rare correct answers",
            "",
            "Recall: the share of correct samples the filter kept (kept / correct), by how many of the "
            "prompt's samples give the same answer (singleton: that sample alone; ≤25%, ≤50%, >50% of "
            "them; a share without correct samples is left out). A filter's budget alone moves recall, so "
            "each is shown beside what the same number of samples kept per prompt gives with no signal "
            "(chosen at random: k/n of each prompt's correct samples) and with a perfect verifier (min(k, "
            "c)/c of them); the lift is recall minus no signal, with its interval (docs/definitions.md).",
            "",
            *(markdown_table(rare) if rare else ["No correct sample to recall yet."]),
            "",
            "Answer entropy (nats) of the kept samples against all sampled, per prompt, averaged over "
            "the prompts where the filter kept two samples or more (one kept sample has entropy 0 "
            "whatever the verifier).",
            "",
            *markdown_table(entropy),
            "",
            "![rare correct answers](plots/rare_answers.png)",
            "",
        ]
    return write_text(out_dir / "report.md", "\n".join(lines))


def round_ticks(ax, rounds: list[int]) -> None:
    """Whole rounds on the x axis (matplotlib would put ticks at 0.5, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(len(rounds), 10)))


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    outside = "tight" if fig.legends else None  # a legend beside the panels is kept in the picture
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png", bbox_inches=outside))
    plt.close(fig)
