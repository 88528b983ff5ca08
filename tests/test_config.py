"""Config loading: YAML + command-line overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from core.errors import UserError
from trainer.config import GapConfig, IterateConfig, load_config, to_dict


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "task: countdown\nsampling: {n: 2}\nverifiers: [mc, oracle]\n")
    cfg = load_config(
        GapConfig,
        [
            "--config",
            path,
            "--sampling.temperature",
            "0.3",
            "--task.test_size=5",
            "--output_dir",
            str(tmp_path / "out"),
        ],
    )
    assert cfg.task.name == "countdown" and cfg.task.test_size == 5
    assert cfg.sampling.n == 2 and cfg.sampling.temperature == 0.3
    assert [v.name for v in cfg.verifiers] == ["mc", "oracle"]
    assert cfg.output_dir == str(tmp_path / "out")


def test_list_override_and_index(tmp_path):
    cfg = load_config(GapConfig, ["--verifiers", "[oracle]"])
    assert [v.name for v in cfg.verifiers] == ["oracle"]
    cfg = load_config(GapConfig, ["--verifiers.0.n_shots", "2"])
    assert cfg.verifiers[0].n_shots == 2 and cfg.verifiers[0].name == "mc"


def test_default_config_file_used(tmp_path):
    path = write(tmp_path, "seed: 7\n")
    assert load_config(GapConfig, [], default_config=path).seed == 7
    assert load_config(GapConfig, ["--seed", "3"], default_config=path).seed == 3


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--sampling.temprature", "1"], "unknown config key 'sampling.temprature'"),
        (["--bogus", "1"], "unknown config key 'bogus'"),
        (["--sampling.n", "many"], "sampling.n: expected an integer"),
        (["--sampling.n", "0"], "sampling.n: must be > 0"),
        (["--verifiers", "[telepathy]"], "verifiers.0.name: unknown value 'telepathy'"),
        (["--filter.name", "best"], "filter.name: unknown value 'best'"),
        (["--engine.backend", "tpu"], "engine.backend: unknown value 'tpu'"),
        (["--config", "/nonexistent.yaml"], "--config: file /nonexistent.yaml does not exist"),
        (["--seed"], "--seed: missing value"),
        (["positional"], "unexpected argument 'positional'"),
    ],
)
def test_errors_name_the_key(argv, needle):
    with pytest.raises(UserError, match=None) as e:
        load_config(GapConfig, argv)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = write(tmp_path, "sampling:\n  nn: 3\n")
    with pytest.raises(UserError) as e:
        load_config(GapConfig, ["--config", path])
    assert "sampling.nn" in str(e.value) and path in str(e.value)


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "task: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(GapConfig, ["--config", path])


def test_iterate_config_sections_and_roundtrip():
    cfg = load_config(
        IterateConfig,
        [
            "--sft.method",
            "full",
            "--saturation.diversity_drop",
            "null",
            "--rounds",
            "2",
            "--report_to",
            "none",
        ],
    )
    assert cfg.update.sft.method == "full" and cfg.saturation.diversity_drop is None and cfg.rounds == 2
    again = load_config(IterateConfig, [f"--{k}={v}" for k, v in [("rounds", 2)]])
    assert to_dict(again)["rounds"] == 2
    with pytest.raises(UserError, match="report_to"):
        load_config(IterateConfig, ["--report_to", "tensorboardd"])
    with pytest.raises(UserError, match="sft.method"):
        load_config(IterateConfig, ["--sft.method", "qlora"])


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    for name in ("gap_quickstart.yaml", "gap_gemma.yaml", "gap_open_qa.yaml", "gap_sudoku.yaml"):
        load_config(GapConfig, ["--config", str(root / name)])
    from trainer.config import CrossVerifyConfig

    families = load_config(CrossVerifyConfig, ["--config", str(root / "cross_verify_families.yaml")])
    assert families.generators == families.verifier_models == ["smollm2-135m-instruct", "gemma3-270m"]
    for name in ("quickstart.yaml", "oracle_control.yaml"):
        load_config(IterateConfig, ["--config", str(root / name)])


def test_every_mistake_is_reported_at_once():
    with pytest.raises(UserError) as e:
        load_config(
            IterateConfig, ["--rounds", "-1", "--sampling.n", "0", "--sft.epochs", "0", "--sampling.nn", "2"]
        )
    lines = str(e.value).splitlines()
    assert any(line.startswith("unknown config key 'sampling.nn'") for line in lines), lines
    # type errors and unknown keys first; the checks of each section once the values parse
    with pytest.raises(UserError) as e:
        load_config(IterateConfig, ["--rounds", "-1", "--sampling.n", "0", "--sft.epochs", "0"])
    lines = str(e.value).splitlines()
    assert {line.split(":")[0] for line in lines} == {"rounds", "sampling.n", "update.sft.epochs"}, lines


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--verifiers", "[{name: mc, options: {yess: Sure}}]"], "verifiers.0.options.yess: unknown option"),
        (["--verifiers", "[oracle, {name: mc, options: {yes: A, no: a}}]"], "verifiers.1.options.no"),
        (
            ["--sft.trl", "{lr_scheduler_typ: cosine}"],
            "sft.trl.lr_scheduler_typ: TRL's SFTConfig has no field",
        ),
        (["--sft.trl", "{learning_rate: 0.1}"], "sft.trl.learning_rate: set by mindgap"),
    ],
)
def test_verifier_and_trl_options_are_checked(argv, needle):
    with pytest.raises(UserError) as e:
        load_config(IterateConfig, argv)
    assert needle in str(e.value)


def test_trl_fields_pass_through_to_sft_config(tmp_path, tiny_model_dir):
    import pandas as pd

    from trainer.distill import build_trainer

    cfg = load_config(IterateConfig, ["--sft.trl", "{lr_scheduler_type: cosine, max_grad_norm: 0.5}"])
    rows = pd.DataFrame({"prompt": ["1 + 1 ="], "completion": [" 2"]})
    trainer = build_trainer(rows, tiny_model_dir, cfg.update.sft, seed=0, work_dir=tmp_path)
    assert trainer.args.lr_scheduler_type == "cosine" and trainer.args.max_grad_norm == 0.5


def test_help_prints_every_key_with_its_type_default_and_help():
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "iterate.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    for key in (
        "--task.train_size",
        "--sampling.n",
        "--eval_sampling.max_tokens",
        "--verifiers.<i>.name",
        "--update.sft.trl",
        "--update.dpo.beta",
    ):
        assert key in out, key
    assert "--sampling.n" in out and "int = 4" in out and "samples per prompt" in out
    # where the default config file sets a key otherwise, its value is shown beside the default
    import yaml

    shipped = yaml.safe_load((ROOT / "recipes" / "configs" / "quickstart.yaml").read_text())
    line = next(x for x in out.splitlines() if x.strip().startswith("--task.test_size "))
    assert line.endswith(f"int = 32; config file: {shipped['task']['test_size']}"), line
    line = next(x for x in out.splitlines() if x.strip().startswith("--seed "))
    assert "config file" not in line, line  # the file gives the default's own value
    # every field of every section is there, each with a line of help
    from core.config import _help_rows

    rows = list(_help_rows(IterateConfig, ""))
    assert all(f"--{key}" in out for key, _, _, _ in rows)
    assert all(text for key, tp, _, text in rows if not tp.startswith("list of")), [
        key for key, _, _, text in rows if not text
    ]
