"""Config loading: YAML + command-line overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from trainer.config import GapConfig, IterateConfig, load_config, to_dict
from trainer.errors import UserError


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
    assert cfg.sft.method == "full" and cfg.saturation.diversity_drop is None and cfg.rounds == 2
    again = load_config(IterateConfig, [f"--{k}={v}" for k, v in [("rounds", 2)]])
    assert to_dict(again)["rounds"] == 2
    with pytest.raises(UserError, match="report_to"):
        load_config(IterateConfig, ["--report_to", "tensorboardd"])
    with pytest.raises(UserError, match="sft.method"):
        load_config(IterateConfig, ["--sft.method", "qlora"])


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "recipes" / "configs"
    load_config(GapConfig, ["--config", str(root / "gap_quickstart.yaml")])
    for name in ("quickstart.yaml", "oracle_control.yaml"):
        load_config(IterateConfig, ["--config", str(root / name)])
