"""The verification strategies by name: each strategy's module registers its class
(`@register("mc")`), a config names it (`verifiers: [mc]`), and `make_verifier` builds it.

A strategy of your own: subclass `Verifier` (trainer/verifiers/base.py), register it under a new name,
and import its module before the config is loaded (the built-in ones are imported by the package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from core.config import Problems, one_of
from trainer.verifiers.base import Verifier, VerifierConfig, VerifyContext

V = TypeVar("V", bound=type[Verifier])

VERIFIERS: dict[str, type[Verifier]] = {}


def register(name: str) -> Callable[[V], V]:
    """Register a Verifier class as the strategy `name` (a class decorator)."""

    def add(cls: V) -> V:
        if VERIFIERS.get(name, cls) is not cls:
            raise ValueError(
                f"verifier '{name}' is registered twice: {VERIFIERS[name].__name__}, {cls.__name__}"
            )
        VERIFIERS[name] = cls
        return cls

    return add


def make_verifier(cfg: VerifierConfig, ctx: VerifyContext, key: str | None = None) -> Verifier:
    """The verifier `cfg` names, built on `ctx`; `key` (`verifiers.2`) is what its errors name."""
    return VERIFIERS[cfg.name](cfg, ctx, key)


def check_verifier(cfg: VerifierConfig, key: str, earlier_ids: tuple[str, ...] = ()) -> None:
    """Validate one verifier's name, options and template (a UserError names `key.options.<option>`)."""
    one_of(f"{key}.name", cfg.name, tuple(VERIFIERS))
    VERIFIERS[cfg.name].check_options(cfg, key, earlier_ids)


def validate_verifiers(cfgs: list[VerifierConfig], key: str = "verifiers") -> None:
    """Validate every verifier's options at config time, before any model is loaded; every verifier's
    mistakes are reported together."""
    problems = Problems()
    ids: list[str] = []
    for i, cfg in enumerate(cfgs):
        with problems.check():
            check_verifier(cfg, f"{key}.{i}", tuple(ids))
        ids.append(cfg.id or cfg.name)
    problems.raise_any()
