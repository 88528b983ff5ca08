"""Ensembles: one score from several verifiers' scores, by mean, product, or all-must-pass.

    verifiers:
      - mc
      - {name: cot_binary, options: {max_tokens: 64}}
      - name: ensemble
        id: mc_and_cot
        options:
          members: [mc, cot_binary, {name: cot_score, options: {samples: 2, temperature: 0.7}}]
          combine: mean

A member written as a string that is the id of a verifier listed earlier reuses that verifier's
score column (nothing is computed twice); any other string is a strategy name, and a mapping is a
full verifier config: both are computed inline on the ensemble's model. A member with its own
`model` must be its own entry (with an id) listed before the ensemble.

Tokens and seconds: the inline members' own; the reused members' are added by
`add_shared_member_costs` once every verifier has run (recipes call it after `verify_rows`), so an
ensemble's cost is the sum over all its members.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.config import from_dict
from core.errors import UserError
from trainer.verifiers.base import Verifier, VerifierConfig, VerifierResult, VerifyContext
from trainer.verifiers.parsing import Options
from trainer.verifiers.registry import VERIFIERS, check_verifier, make_verifier, register

COMBINES = ("mean", "product", "all")


@dataclass
class Member:
    label: str  # as written in the config: an id, a strategy name, or the mapping's id/name
    key: str  # its config key, for errors
    cfg: VerifierConfig | None  # None: a reference to an earlier verifier's column


def combine_scores(matrix: np.ndarray, how: str, rule: str = "abstain", threshold: float = 0.5) -> np.ndarray:
    """Combine member scores (rows × members, each in [0, 1], NaN = abstained) into one per row.

    NaN members follow `rule`: abstain (the ensemble abstains), reject (count as 0), accept (as 1).
    mean / product of the members; all: 1 when every member scores >= threshold, else 0.
    """
    m = np.array(matrix, dtype=float, ndmin=2)
    missing = np.isnan(m).any(axis=1)
    if rule == "reject":
        m = np.nan_to_num(m, nan=0.0)
    elif rule == "accept":
        m = np.nan_to_num(m, nan=1.0)
    filled = np.nan_to_num(m, nan=0.0)
    if how == "mean":
        out = filled.mean(axis=1)
    elif how == "product":
        out = filled.prod(axis=1)
    elif how == "all":
        out = (filled >= threshold).all(axis=1).astype(float)
    else:
        raise ValueError(f"combine must be one of {COMBINES}, got {how!r}")
    if rule == "abstain":
        out[missing] = np.nan
    return out


def parse_members(cfg: VerifierConfig, key: str, earlier_ids: tuple[str, ...] | None = None) -> list[Member]:
    """The ensemble's members, checked. `earlier_ids`: ids listed before it (None: not known here)."""
    where = f"{key}.options.members"
    value = cfg.options.get("members")
    if not isinstance(value, list) or len(value) < 2:
        raise UserError(
            f"{where}: list at least two members (verifier ids listed earlier, strategy names, "
            f"or verifier mappings), got {value!r}"
        )
    members = []
    for k, item in enumerate(value):
        sub = f"{where}.{k}"
        if isinstance(item, str):
            known = earlier_ids is None or item in earlier_ids
            if not known and item not in VERIFIERS:
                raise UserError(
                    f"{sub}: '{item}' is neither the id of a verifier listed before this one "
                    f"nor a strategy ({', '.join(VERIFIERS)})"
                )
            inline = earlier_ids is not None and item not in earlier_ids
            members.append(Member(item, sub, VerifierConfig(item) if inline else None))
        elif isinstance(item, dict):
            mcfg = from_dict(VerifierConfig, item, key=sub)
            if mcfg.model is not None and mcfg.model != cfg.model:
                raise UserError(
                    f"{sub}.model: a member with its own model must be its own verifier: list it "
                    "before the ensemble with an id, and name that id here"
                )
            check_verifier(mcfg, sub)
            members.append(Member(mcfg.id or mcfg.name, sub, mcfg))
        else:
            raise UserError(f"{sub}: expected a verifier id, a strategy name or a mapping, got {item!r}")
    return members


@register("ensemble")
class EnsembleVerifier(Verifier):
    """Ensemble: combines its members' scores (each in [0, 1]) into one.

    Options (`verifiers.<i>.options`):
      members      (required) two or more: ids of verifiers listed earlier (their columns are reused),
                   strategy names, or verifier mappings ({name, options, ...}) computed inline
      combine      mean | product | all (all-must-pass: 1 when every member scores >= threshold)
      threshold    the pass mark of `all` (0.5)
      unparseable  abstain | reject | accept: a member that abstained (NaN) makes the ensemble abstain /
                   counts as 0 / counts as 1
    Members' scores must lie in [0, 1] (cot_score with `normalize: false` does not).
    """

    option_names = ("members", "combine", "threshold", "unparseable")

    def __init__(
        self,
        cfg: VerifierConfig,
        ctx: VerifyContext,
        key: str | None = None,
        earlier_ids: tuple[str, ...] | None = None,
    ):
        super().__init__(cfg, ctx, key)
        if cfg.template or cfg.n_shots:
            field = "template" if cfg.template else "n_shots"
            raise UserError(
                f"{self.key}.{field}: an ensemble has no prompt of its own; set it on its members"
            )
        self.members = parse_members(cfg, self.key, earlier_ids)

    def read_options(self, opts: Options) -> None:
        self.combine = opts.choice("combine", "mean", COMBINES)
        self.threshold = opts.number("threshold", 0.5, low=0.0, high=1.0)
        self.rule = opts.unparseable()

    @classmethod
    def check_options(cls, cfg: VerifierConfig, key: str, earlier_ids: tuple[str, ...] = ()) -> None:
        cls(cfg, VerifyContext(None, None, "chat", None), key, tuple(earlier_ids))

    def score(self, rows: pd.DataFrame) -> VerifierResult:
        columns, shared = [], []
        tokens, seconds, member_unparseable = 0, 0.0, 0
        for m in self.members:
            column = f"score_{m.label}"
            if m.cfg is None and column in rows.columns:
                scores = rows[column].to_numpy(dtype=float)
                shared.append(m.label)
            else:
                if m.cfg is None and m.label not in VERIFIERS:
                    raise UserError(
                        f"{m.key}: no verifier with id '{m.label}' was listed before this ensemble"
                    )
                mcfg = m.cfg or VerifierConfig(m.label)
                result = make_verifier(mcfg, self.ctx, m.key).score(rows)
                scores = np.asarray(result.scores, dtype=float)
                tokens += int(result.tokens)
                seconds += float(result.seconds)
                member_unparseable += int(result.extra.get("unparseable", 0))
            finite = scores[~np.isnan(scores)]
            if finite.size and (finite.min() < 0 or finite.max() > 1):
                raise UserError(
                    f"{m.key}: the scores of '{m.label}' fall outside [0, 1] "
                    "(a cot_score member needs options.normalize: true)"
                )
            columns.append(scores)
        matrix = np.stack(columns, axis=1) if columns else np.zeros((len(rows), 0))
        scores = combine_scores(matrix, self.combine, self.rule, self.threshold)
        return VerifierResult(
            scores=scores,
            tokens=tokens,
            seconds=seconds,
            extra={
                "unparseable": int(np.isnan(matrix).any(axis=1).sum()),
                "member_unparseable": member_unparseable,
                "members": [m.label for m in self.members],
                "shared_members": shared,
            },
        )


def add_shared_member_costs(costs: dict[str, dict]) -> dict[str, dict]:
    """Costs with each ensemble's reused members' tokens and seconds added to its own.

    `costs` is verify_rows' {verifier id: {tokens, seconds, ...}} in verifier order. The ensemble's own
    (inline) share stays in `own_tokens` / `own_seconds`; calling this again changes nothing.
    """
    out = {vid: dict(c) for vid, c in costs.items()}
    for c in out.values():
        shared = c.get("shared_members")
        if not shared or "own_tokens" in c:
            continue
        c["own_tokens"], c["own_seconds"] = c.get("tokens", 0), c.get("seconds", 0.0)
        c["tokens"] = int(c["own_tokens"] + sum(out[s].get("tokens", 0) for s in shared if s in out))
        c["seconds"] = round(
            float(c["own_seconds"] + sum(out[s].get("seconds", 0.0) for s in shared if s in out)), 3
        )
    return out
