"""Tracking: one W&B run per study (offline unless the user is logged in) beside local files."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from core.errors import UserError
from eval.metrics import ANSWER_SHARE_BUCKETS


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """`{"gap": {"value": .1}, "pass_at_k": {"1": .2}}` -> `{"gap": .1, "pass_at_k/1": .2}`."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if set(value) >= {"value", "ci_low", "ci_high"}:
                flat[name] = value["value"]
                flat[f"{name}/ci_low"] = value["ci_low"]
                flat[f"{name}/ci_high"] = value["ci_high"]
            else:
                flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            flat[name] = value
    return flat


class Tracker:
    """Logs a round's metrics under `step=round`; `report_to` is `wandb` or `none`.

    Besides the scalars (every metric flattened, with its CI bounds), each round logs the pass@k curve
    of every round so far as one line-series chart (k on the x axis, a line per round: effective
    diversity collapsing shows as the curves crossing), what the verifier adds to the held-out recall on
    correct samples by how common their answer is as another (recall minus a no-signal verifier's at
    the same budget; answer-share bucket on the x axis, a line per round: a verifier that fails on rare
    correct answers shows as a curve rising to the right), and a table of sample generations. Runs of
    one comparison share a W&B `group`.
    """

    def __init__(
        self,
        report_to: str,
        out_dir: Path,
        project: str,
        name: str,
        run_id: str | None,
        config: dict,
        group: str | None = None,
    ):
        self.run = None
        self.curves: dict[int, dict[int, float]] = {}  # round -> {k: pass@k}
        self.recalls: dict[int, list[float | None]] = {}  # round -> held-out lift per answer-share bucket
        if report_to == "none":
            return
        if report_to != "wandb":
            raise UserError(f"report_to: unknown value '{report_to}'; choose wandb or none")
        import wandb

        if "WANDB_MODE" not in os.environ and not os.environ.get("WANDB_API_KEY"):
            os.environ["WANDB_MODE"] = "offline"
        self.run = wandb.init(
            project=project,
            name=name,
            id=run_id,
            resume="allow",
            config=config,
            dir=str(out_dir),
            group=group,
            reinit="finish_previous",
        )

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log_round(self, round_idx: int, metrics: dict, samples: pd.DataFrame | None = None) -> None:
        if self.run is None:
            return
        import wandb

        data = flatten(metrics)
        if samples is not None and len(samples):
            data["samples"] = wandb.Table(dataframe=samples.reset_index(drop=True))
        self.remember(round_idx, metrics)
        ks = sorted({k for c in self.curves.values() for k in c})
        data["pass_at_k_curves"] = wandb.plot.line_series(
            xs=ks,
            ys=[[self.curves[t].get(k) for k in ks] for t in sorted(self.curves)],
            keys=[f"round {t}" for t in sorted(self.curves)],
            title="held-out pass@k by round",
            xname="k",
        )
        if self.recalls:
            data["rare_answer_recall_curves"] = wandb.plot.line_series(
                xs=list(range(1, len(ANSWER_SHARE_BUCKETS) + 1)),
                ys=[self.recalls[t] for t in sorted(self.recalls)],
                keys=[f"round {t}" for t in sorted(self.recalls)],
                title="held-out recall on correct samples minus a no-signal verifier's, by answer share "
                "(1 singleton, 2 ≤25%, 3 ≤50%, 4 >50%)",
                xname="answer share bucket",
            )
        self.run.log(data, step=round_idx)

    def remember(self, round_idx: int, metrics: dict) -> None:
        """Keep a round's pass@k and recall curves for the charts (also a round finished before a resume)."""
        self.curves[round_idx] = {
            int(k): v.get("value") if isinstance(v, dict) else v for k, v in metrics["pass_at_k"].items()
        }
        recall = metrics.get("rare_answer_recall")
        if recall:
            self.recalls[round_idx] = [
                ((recall.get(b) or {}).get("lift") or {}).get("value") for b in ANSWER_SHARE_BUCKETS
            ]

    def log_summary(self, summary: dict) -> None:
        if self.run is not None:
            self.run.summary.update(summary)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
