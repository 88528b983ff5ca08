"""The run folder (trainer/runfolder.py) on real files: what a finished stage records, what a resume
checks, what --redo deletes, and a run from before stage records. No model: the stages write tables
and JSON as the recipes' do (their end-to-end resume: tests/test_iterate.py, test_measure_gap.py)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from core.config import REDO_ENV, to_dict
from core.errors import UserError
from core.io import write_json, write_parquet
from trainer.config import IterateConfig
from trainer.runfolder import RunFolder, Stage, changed_key

DEFAULTS = to_dict(IterateConfig())


def layout(rounds: int = 2) -> list[Stage]:
    """Two stages a round (a table; a table and its JSON), each round made from the one before."""
    out = []
    for t in range(rounds + 1):
        rd = f"round_{t:03d}"
        out += [Stage(rd, "gen", ("gen.parquet",)), Stage(rd, "score", ("score.parquet", "costs.json"))]
    return out


def open_run(out, config=None, rounds=2, **kw) -> RunFolder:
    return RunFolder.open(
        out,
        config or to_dict(IterateConfig()),
        ("rounds",),
        DEFAULTS,
        layout=layout(rounds),
        chain=True,
        study=True,
        **kw,
    )


def finished(out, rounds: int = 2) -> RunFolder:
    """A run whose every stage finished."""
    run = open_run(out, rounds=rounds)
    run.begin()
    for stage in run.layout:
        run.stage(stage, lambda stage=stage: made(stage))
    return run


def made(stage: Stage):
    """What a stage of `layout` makes: a table of 10 rows per round, and a JSON of its costs."""
    t = int(stage.folder[-3:])
    rows = pd.DataFrame({"x": list(range(10 * (t + 1)))})
    return rows if len(stage.outputs) == 1 else (rows, {"tokens": t})


def test_a_finished_stage_records_its_files_and_config_and_is_reused(tmp_path):
    run = finished(tmp_path)
    record = json.loads((tmp_path / "round_001" / "stages.json").read_text())
    assert record["config"] == to_dict(IterateConfig())
    files = record["stages"]["score"]["files"]
    assert set(files) == {"score.parquet", "costs.json"}
    assert files["score.parquet"]["bytes"] == (tmp_path / "round_001" / "score.parquet").stat().st_size
    assert len(files["costs.json"]["sha256"]) == 64 and record["stages"]["gen"]["seconds"] is not None

    again = open_run(tmp_path)
    assert again.done(run.layout[3]) and not again.notes
    calls = []
    rows = again.stage(run.layout[2], lambda: calls.append(1))
    assert not calls and list(rows["x"]) == list(range(20))  # read, not made
    assert json.loads((tmp_path / "study.json").read_text())["stage_records"] is True


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "bytes where"),
        (lambda p: p.unlink(), "is missing (written by stage round_001/gen)"),
        (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\x00"), "changed since it was written (SHA-256"),
    ],
    ids=["truncated", "deleted", "same size, other bytes"],
)
def test_a_damaged_file_is_one_line_naming_it_and_the_redo(tmp_path, damage, needle):
    finished(tmp_path)
    path = tmp_path / "round_001" / "gen.parquet"
    damage(path)
    with pytest.raises(UserError) as e:
        open_run(tmp_path)
    (line,) = str(e.value).splitlines()
    assert line.startswith(f"{path}: ") and needle in line, line
    assert f"rerun with --redo {path} to make stage round_001/gen again" in line


def test_redo_deletes_the_stage_and_what_was_made_from_it_then_remakes_only_those(tmp_path, monkeypatch):
    finished(tmp_path)
    (tmp_path / "round_001" / "score.parquet").write_bytes(b"garbage")
    monkeypatch.setenv(REDO_ENV, str(tmp_path / "round_001" / "score.parquet"))
    run = open_run(tmp_path)
    assert REDO_ENV not in os.environ  # applied once
    assert run.notes == [f"{tmp_path}: --redo: deleted stage round_001/score and the stages made from it"]
    kept = {s.key for s in run.layout if run.done(s)}
    assert kept == {"round_000/gen", "round_000/score", "round_001/gen"}
    assert not (tmp_path / "round_002").exists()  # a chain: the rounds after it go too
    assert not (tmp_path / "round_001" / "score.parquet").exists()
    assert set(json.loads((tmp_path / "round_001" / "stages.json").read_text())["stages"]) == {"gen"}


def test_redo_of_a_path_that_no_stage_wrote_is_refused(tmp_path, monkeypatch):
    finished(tmp_path)
    monkeypatch.setenv(REDO_ENV, str(tmp_path / "round_001" / "notes.txt"))
    with pytest.raises(UserError, match=r"^--redo: .*notes.txt is not a file or folder of a stage"):
        open_run(tmp_path)
    monkeypatch.setenv(REDO_ENV, str(tmp_path.parent / "elsewhere"))  # another run's: not this one's concern
    assert open_run(tmp_path).done(layout()[-1])


def test_changed_settings_are_refused_by_key_even_without_study_json(tmp_path):
    finished(tmp_path)
    changed = to_dict(IterateConfig())
    changed["sampling"]["temperature"] = 0.5
    with pytest.raises(UserError, match=r"different 'sampling.temperature' \(0.7 in .*study.json, now 0.5\)"):
        open_run(tmp_path, changed)
    (tmp_path / "study.json").unlink()
    with pytest.raises(UserError) as e:
        open_run(tmp_path, changed)
    assert "different 'sampling.temperature' (0.7 in " in str(e.value)
    assert f"{tmp_path / 'round_000' / 'stages.json'}, now 0.5)" in str(e.value)
    more = to_dict(IterateConfig())
    more["rounds"] = 9  # a key that may change
    assert open_run(tmp_path, more).done(layout()[-1])


def test_changed_key_names_the_first_difference_by_its_dotted_key():
    a = {
        "task": {"options": {"min": 1}},
        "verifiers": [{"name": "mc"}],
        "engine": {"server_url": "x", "dtype": "a"},
    }
    b = json.loads(json.dumps(a))
    assert changed_key(a, b, ()) is None
    b["engine"]["server_url"] = "y"
    assert changed_key(a, b, ("engine.server_url",)) is None and changed_key(a, b, ()) == "engine.server_url"
    b["verifiers"][0]["name"] = "oracle"
    assert changed_key(a, b, ("engine.server_url",)) == "verifiers.0.name"
    b["verifiers"].append({"name": "mc"})
    assert changed_key(a, b, ("engine.server_url",)) == "verifiers"
    c = json.loads(json.dumps(a))
    del c["task"]["options"]["min"]  # a free mapping lost a key: that is a change
    assert changed_key(a, c, ()) == "task.options.min"
    assert changed_key({**a, "gone": 1}, a, ()) is None  # a top-level key the config no longer has


def test_a_round_made_from_an_unfinished_one_is_refused(tmp_path):
    finished(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "round_001")
    with pytest.raises(UserError, match=r"round_002: made from .*round_001, whose stage round_001/score"):
        open_run(tmp_path)


def test_a_run_from_before_stage_records_is_recorded_as_it_is(tmp_path):
    """A folder as an earlier mindgap left it (study.json without the marker, stage files, no
    stages.json): it resumes; complete stages are recorded, an incomplete one is made again."""
    write_json(tmp_path / "study.json", {"config": to_dict(IterateConfig())})
    rd = tmp_path / "round_000"
    write_parquet(rd / "gen.parquet", pd.DataFrame({"x": [1]}))
    write_parquet(rd / "score.parquet", pd.DataFrame({"x": [1]}))  # its costs.json is missing
    run = open_run(tmp_path)
    assert run.done(layout()[0]) and not run.done(layout()[1])
    assert run.notes == [
        f"{tmp_path}: made before mindgap recorded its stages; recorded the 1 finished stages found as they are"
    ]
    assert json.loads((rd / "stages.json").read_text())["stages"]["gen"]["adopted"] is True
    assert not open_run(tmp_path).notes  # recorded once

    # an older run's damaged table is caught when recorded: by reading it back
    other = tmp_path / "old"
    write_json(other / "study.json", {"config": to_dict(IterateConfig())})
    write_parquet(other / "round_000" / "gen.parquet", pd.DataFrame({"x": list(range(100))}))
    table = other / "round_000" / "gen.parquet"
    table.write_bytes(table.read_bytes()[:-20])
    with pytest.raises(UserError, match=rf"^{table}: cannot be read .*--redo {table}"):
        open_run(other)


def test_output_dir_that_cannot_be_created_is_one_line(tmp_path):
    afile = tmp_path / "taken"
    afile.write_text("a file")
    with pytest.raises(UserError, match=rf"^output_dir: cannot create {afile / 'sub'} \(Not a directory"):
        open_run(afile / "sub")
    with pytest.raises(UserError, match=rf"^output_dir: {afile} is a file, not a folder"):
        open_run(afile)


def test_large_files_are_sized_on_open_and_hashed_before_they_are_read(tmp_path, monkeypatch):
    """A resume does not re-read every round's weights: files over HASH_AT_OPEN bytes are checked by
    size on open, and by hash when the run reads them (a table, or a checkpoint an engine loads)."""
    import trainer.runfolder as runfolder

    finished(tmp_path)
    table = tmp_path / "round_001" / "gen.parquet"
    table.write_bytes(table.read_bytes()[:-1] + b"\x00")  # same size, other bytes
    monkeypatch.setattr(runfolder, "HASH_AT_OPEN", 16)
    run = open_run(tmp_path)  # sized only
    run.check_use(tmp_path / "round_000" / "gen.parquet")  # intact: passes
    run.check_use(tmp_path / "elsewhere")  # outside the run: nothing to check
    with pytest.raises(UserError, match=rf"^{table}: changed since it was written \(SHA-256 differs\)"):
        run.read(layout()[2])


def test_a_stage_is_reused_from_another_folder_only_with_the_same_settings_and_intact_files(tmp_path):
    """`reuse` copies a stage another run finished with a config equal outside the ignored keys (a
    comparison's conditions share round 0), checked against that run's record; otherwise nothing."""
    donor = tmp_path / "donor"
    finished(donor)
    first = open_run(tmp_path / "a", config={**DEFAULTS, "filter": {**DEFAULTS["filter"], "q": 0.25}})
    first.begin()
    gen = first.layout[0]
    assert not first.reuse(gen, donor)  # 'filter' differs and is not ignored: made here instead
    assert first.reuse(gen, donor, ignore=("filter",))
    assert first.done(gen) and not first.reuse(gen, donor, ignore=("filter",))  # finished: kept as is
    rows = first.stage(gen, lambda: pytest.fail("a reused stage is not made again"))
    assert list(rows["x"]) == list(range(10))
    record = json.loads((tmp_path / "a" / "round_000" / "stages.json").read_text())
    assert record["stages"]["gen"]["reused_from"] == str(donor)
    assert record["config"]["filter"]["q"] == 0.25  # recorded with this run's own settings
    assert open_run(tmp_path / "a", config=first.config).done(gen)  # and resumes checked like any stage

    other = open_run(tmp_path / "b", config={**DEFAULTS, "seed": 1})
    assert not other.reuse(gen, donor, ignore=("filter",))  # a seed differs: other samples
    assert not other.reuse(other.layout[2], tmp_path / "nowhere")
    damaged = donor / "round_000" / "score.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    same = open_run(tmp_path / "c")
    assert not same.reuse(same.layout[1], donor)  # a donor file unlike its record is not copied
    assert not (tmp_path / "c" / "round_000" / "score.parquet").exists()
