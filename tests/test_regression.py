"""The numbers of one seeded tiny study, pinned: an unintended change of any metric fails loudly.

The study (the tiny random Llama, the hf backend, 2 rounds; its config is tests/data/regression/study.yaml,
not a recipe's default, which may change for its own reasons) runs in the machine's CPU regime
(`engine.dtype: auto`, or MINDGAP_CPU_DTYPE), and its metrics.jsonl (timings and memory aside) is
compared with the values recorded for that dtype in tests/data/regression/, to rtol 1e-4.

fp32 gives the same numbers on every x86 CPU (checked on an AVX512 EPYC, and there with torch's and
oneDNN's kernels held to AVX2: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2), so it is compared to
rtol 1e-4. bf16 is computed by other kernels on other kinds of CPU (AMX, AVX512-BF16, emulated): they
round differently, so its floats are compared to rtol 1e-2 (a few of bf16's unit roundoff, 2^-8), and
only on the kinds of CPU where the recorded tokens were seen to come out the same (AVX512-BF16, and
emulated on the AVX2 kernels as above); on another kind (AMX) a rounding may turn a sampled token,
and the test says it skips. To record (after a change of numbers that is intended, and said in its commit):

    MINDGAP_RECORD_REGRESSION=1 .venv/bin/python -m pytest tests/test_regression.py
    MINDGAP_CPU_DTYPE=bfloat16 MINDGAP_RECORD_REGRESSION=1 .venv/bin/python -m pytest tests/test_regression.py
"""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.conftest import ROOT
from tests.test_iterate import run, stable, study_args

DATA = ROOT / "tests" / "data" / "regression"


def cpu_kind() -> str:
    from trainer.samplers.base import cpu_flags

    flags = cpu_flags()
    return "amx_bf16" if "amx_bf16" in flags else "avx512_bf16" if "avx512_bf16" in flags else "bf16_emulated"


# The kinds of CPU on which the recorded bf16 study was reproduced token for token.
BF16_REPRODUCED_ON = ("avx512_bf16", "bf16_emulated")
RTOL = {"float32": 1e-4, "bfloat16": 1e-2}


def compare(got, want, path: str = "", rtol: float = 1e-4) -> list[str]:
    """Where `got` differs from `want`: floats beyond `rtol` (or 1e-9 absolute), anything else."""
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = [f"{path}: keys {sorted(set(got) ^ set(want))}"] if set(got) != set(want) else []
        return diffs + [d for k in want if k in got for d in compare(got[k], want[k], f"{path}.{k}", rtol)]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} items, expected {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{path}[{i}]", rtol)]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(got, want, rel_tol=rtol, abs_tol=1e-9) else [f"{path}: {got} != {want}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.slow
def test_a_seeded_tiny_study_gives_the_recorded_numbers(tmp_path, tiny_model_dir):
    from trainer.samplers.base import cpu_auto_dtype

    dtype = cpu_auto_dtype()
    out = tmp_path / "study"
    run(
        ["--config", str(DATA / "study.yaml")]
        + study_args(tiny_model_dir, out, rounds=2)
        + ["--bootstrap", "200"]
    )
    got = stable(out / "metrics.jsonl")
    path = DATA / f"{dtype}.json"
    if os.environ.get("MINDGAP_RECORD_REGRESSION"):
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cpu": cpu_kind(), "rounds": got}, indent=1) + "\n")
        pytest.skip(f"recorded {path}")
    recorded = json.loads(path.read_text())
    if dtype == "bfloat16" and cpu_kind() not in BF16_REPRODUCED_ON:
        pytest.skip(
            f"bf16 numbers are reproduced on {', '.join(BF16_REPRODUCED_ON)} CPUs; this one is {cpu_kind()}"
        )
    diffs = compare(got, recorded["rounds"], rtol=RTOL[dtype])
    assert not diffs, "the study's numbers changed:\n" + "\n".join(diffs[:20])
