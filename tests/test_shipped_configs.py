"""Every shipped config (recipes/configs/*.yaml) loads, through its recipe's config class, to the
values recorded in tests/data/shipped_configs.json: a change of a file's layout (a `base:` it starts
from, a key moved to a shared file) or of a default must not move what a recipe runs. A comparison's
record also holds each condition's resolved study.

The record was made on the code before the configs shared their settings through `base:`. To record
again (after a change of a config or a default that is intended, and said in its commit):

    MINDGAP_RECORD_CONFIGS=1 .venv/bin/python -m pytest tests/test_shipped_configs.py
"""

from __future__ import annotations

import json
import os

import pytest

from core.config import load_config, to_dict
from tests.conftest import ROOT
from trainer.config import (
    CompareConfig,
    CrossVerifyConfig,
    GapConfig,
    IterateConfig,
    ScalingConfig,
    VerifyComputeConfig,
)

RECORD = ROOT / "tests" / "data" / "shipped_configs.json"

# Each shipped config and the recipe that runs it.
RECIPES = {
    "compare_quickstart.yaml": CompareConfig,
    "compare_update_rules.yaml": CompareConfig,
    "cross_verify.yaml": CrossVerifyConfig,
    "cross_verify_families.yaml": CrossVerifyConfig,
    "gap_gemma.yaml": GapConfig,
    "gap_open_qa.yaml": GapConfig,
    "gap_quickstart.yaml": GapConfig,
    "gap_strategies.yaml": GapConfig,
    "gap_sudoku.yaml": GapConfig,
    "oracle_control.yaml": IterateConfig,
    "quickstart.yaml": IterateConfig,
    "scaling.yaml": ScalingConfig,
    "verify_compute.yaml": VerifyComputeConfig,
}
# Files that only hold settings other configs start from (`base:`), not a recipe's whole config.
SHARED = {"quickstart_task.yaml"}


def resolved(name: str) -> dict:
    """What `--config recipes/configs/<name>` resolves to, run from the repository root as the
    recipes' docstrings say."""
    cfg = load_config(RECIPES[name], ["--config", f"recipes/configs/{name}"])
    out = {"config": to_dict(cfg)}
    if isinstance(cfg, CompareConfig):
        out["studies"] = {c: [to_dict(s) for s in runs] for c, runs in cfg.studies().items()}
    return out


def test_every_shipped_config_has_its_recipe():
    shipped = {p.name for p in (ROOT / "recipes" / "configs").glob("*.yaml")}
    assert shipped - SHARED == set(RECIPES), "name the recipe of a new config in RECIPES (or SHARED)"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_shipped_config_resolves_to_the_recorded_values(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    got = json.loads(json.dumps(resolved(name)))  # tuples -> lists, as recorded
    if os.environ.get("MINDGAP_RECORD_CONFIGS"):
        record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        record[name] = got
        RECORD.write_text(json.dumps(dict(sorted(record.items())), indent=1) + "\n")
        pytest.skip(f"recorded {name}")
    assert got == json.loads(RECORD.read_text())[name]
