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


def test_config_file_mistakes_say_where_and_what(tmp_path):
    """A YAML error gives its line and column; a folder, an empty file and a typo given on the command
    line (beside a config file) are named as what they are."""
    path = write(tmp_path, "seed: 1\nsampling:\n  n: 2\n   temperature: 0.5\n")
    with pytest.raises(
        UserError, match=r"is not valid YAML at line 4, column 15: mapping values are not allowed"
    ):
        load_config(GapConfig, ["--config", path])
    with pytest.raises(
        UserError, match=rf"^--config: {tmp_path} is a folder; name a YAML config file in it$"
    ):
        load_config(GapConfig, ["--config", str(tmp_path)])
    empty = write(tmp_path, "# nothing set yet\n")
    with pytest.raises(UserError, match=r"^--config: .*c.yaml is empty; put the keys to set in it"):
        load_config(GapConfig, ["--config", empty])
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(UserError) as e:
        load_config(GapConfig, ["--config", path, "--sampling.temprature", "0.5", "--verifiers.0.nam", "x"])
    assert str(e.value).splitlines() == [
        "unknown config key 'sampling.temprature' (given as --sampling.temprature); valid keys under "
        "sampling: max_tokens, n, temperature, top_p",
        "unknown config key 'verifiers.0.nam' (given as --verifiers.0.nam); valid keys under verifiers.0: "
        "filter, id, model, n_shots, name, options, template",
    ]
    assert load_config(GapConfig, ["--config", path, "--task.options.min_digits", "2"]).task.options == {
        "min_digits": 2
    }  # a free mapping takes any key


def test_a_config_file_starts_from_its_base(tmp_path, monkeypatch, capsys):
    """`base: FILE` names the file a config starts from, relative to the file (whatever the working
    directory); the file's keys merge over the base's (mappings key by key, lists replaced), a base may
    have a base, and the command line overrides them all; --help shows the merged values."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "task.yaml").write_text(
        "task: {name: countdown, test_size: 9, options: {min_numbers: 3}}\nverifiers: [mc, oracle]\n"
    )
    (shared / "gap.yaml").write_text("base: task.yaml\nsampling: {n: 2, temperature: 0.3}\nseed: 4\n")
    (tmp_path / "mine.yaml").write_text(
        "base: shared/gap.yaml\ntask: {test_size: 5}\nsampling: {n: 3}\nverifiers: [oracle]\n"
    )
    monkeypatch.chdir(shared)  # not where mine.yaml is: its base resolves against the file
    cfg = load_config(GapConfig, ["--config", str(tmp_path / "mine.yaml"), "--seed", "7"])
    assert (cfg.task.name, cfg.task.test_size, cfg.task.options) == ("countdown", 5, {"min_numbers": 3})
    assert (cfg.sampling.n, cfg.sampling.temperature) == (3, 0.3)
    assert [v.name for v in cfg.verifiers] == ["oracle"] and cfg.seed == 7
    with pytest.raises(SystemExit):
        load_config(GapConfig, ["--config", str(tmp_path / "mine.yaml"), "--help"])
    out = capsys.readouterr().out
    assert "`base: FILE`" in out
    lines = {x.split()[0]: x for x in out.splitlines() if x.strip().startswith("--")}
    assert lines["--task.name"].endswith("config file: 'countdown'")  # from the base's base
    assert lines["--sampling.temperature"].endswith("config file: 0.3")
    assert lines["--task.test_size"].endswith("config file: 5")


def test_a_cycle_of_bases_and_a_missing_base_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\nseed: 1\n")
    with pytest.raises(UserError) as e:
        load_config(GapConfig, ["--config", str(tmp_path / "a.yaml")])
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert str(e.value).startswith(
        f"base: the config files start from each other in a cycle ({a} -> {b} -> {a})"
    )
    assert "\n" not in str(e.value)
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(UserError) as e:
        load_config(GapConfig, ["--config", str(tmp_path / "c.yaml")])
    assert str(e.value).startswith(
        f"base: file {tmp_path / 'missing.yaml'} (the base of {tmp_path / 'c.yaml'})"
    )
    (tmp_path / "d.yaml").write_text("base: [a.yaml]\n")
    with pytest.raises(UserError, match=r"^base: expected the path of a config file"):
        load_config(GapConfig, ["--config", str(tmp_path / "d.yaml")])
    (tmp_path / "e.yaml").write_text("base: f.yaml\n")
    (tmp_path / "f.yaml").write_text("sampling: {nn: 2}\n")
    with pytest.raises(UserError) as e:  # a mistake in a base: the files it may be in are named
        load_config(GapConfig, ["--config", str(tmp_path / "e.yaml")])
    assert "sampling.nn" in str(e.value) and str(tmp_path / "f.yaml") in str(e.value)


def test_a_comparisons_base_study_resolves_against_its_file(tmp_path, monkeypatch):
    """recipes/compare.py's `base` (the study the conditions start from) is a path relative to the
    comparison's file too, and that study may start from a base of its own."""
    from trainer.config import CompareConfig

    (tmp_path / "studies").mkdir()
    (tmp_path / "task.yaml").write_text("task: {name: countdown, test_size: 6}\n")
    (tmp_path / "studies" / "study.yaml").write_text("base: ../task.yaml\nrounds: 1\nreport_to: none\n")
    (tmp_path / "studies" / "cmp.yaml").write_text(
        "base: study.yaml\nconditions: [{name: mc}, {name: random, overrides: {filter: {name: random}}}]\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CompareConfig, ["--config", "studies/cmp.yaml"])
    assert cfg.base == "studies/study.yaml"
    runs = cfg.studies()
    assert {name: (r[0].task.name, r[0].task.test_size, r[0].rounds) for name, r in runs.items()} == {
        "mc": ("countdown", 6, 1),
        "random": ("countdown", 6, 1),
    }
    assert runs["random"][0].filter.name == "random"
    with pytest.raises(UserError, match=r"^base: file studies/nostudy.yaml does not exist"):
        load_config(CompareConfig, ["--config", "studies/cmp.yaml", "--base", "studies/nostudy.yaml"])


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
    assert all(f"--{key}" in out for key, *_ in rows)
    assert all(text for key, tp, _, text, _ in rows if not tp.startswith("list of")), [
        key for key, _, _, text, _ in rows if not text
    ]


def test_help_shows_the_engine_keys_in_groups_and_the_keys_stay_flat(capsys):
    import dataclasses

    from trainer.config import EngineConfig

    with pytest.raises(SystemExit):
        load_config(IterateConfig, ["--help"])
    lines = [x.strip() for x in capsys.readouterr().out.splitlines()]
    engine = [x for x in lines if x.startswith(("[engine:", "--engine."))]
    heads = [i for i, x in enumerate(engine) if x.startswith("[")]
    assert [engine[i] for i in heads] == [
        "[engine: backend and precision]",
        "[engine: vLLM memory, compilation and parallelism]",
        "[engine: vLLM server (backend vllm_server)]",
    ]
    group = {
        x.split()[0]: engine[max(h for h in heads if h < i)] for i, x in enumerate(engine) if i not in heads
    }
    keys = [f.name for f in dataclasses.fields(EngineConfig)]
    assert list(group) == [f"--engine.{k}" for k in keys] and heads[0] == 0  # every key under a heading
    assert group["--engine.dtype"] == "[engine: backend and precision]"
    assert group["--engine.tensor_parallel_size"] == "[engine: vLLM memory, compilation and parallelism]"
    assert (
        group["--engine.retries"]
        == group["--engine.server_url"]
        == "[engine: vLLM server (backend vllm_server)]"
    )
    # the keys are what they were: flat under engine, on the command line and in study.json
    cfg = load_config(IterateConfig, ["--engine.backend", "vllm_server", "--engine.server_url", "http://h:1"])
    assert to_dict(cfg)["engine"]["server_url"] == "http://h:1" and list(to_dict(cfg)["engine"]) == keys


def test_a_number_in_e_notation_without_a_dot_or_sign_is_a_number(tmp_path):
    """YAML 1.1 reads 5e-5 and 2.0e12 as text; a float field takes them as the numbers they are."""
    from core.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("update: {sft: {learning_rate: 5e-5}}\n")
    cfg = load_config(IterateConfig, ["--config", str(path), "--update.dpo.beta", "1e-1"])
    assert cfg.update.sft.learning_rate == 5e-5 and cfg.update.dpo.beta == 0.1
    with pytest.raises(UserError, match="update.dpo.beta: expected a number, got 'e5'"):
        load_config(IterateConfig, ["--update.dpo.beta", "e5"])
