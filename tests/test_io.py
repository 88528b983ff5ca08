"""Atomic writes, the clean-up of writes a killed run left half-done (core.io), and the check that
refuses to resume a run under a changed config (trainer.runfolder.RunFolder.open)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from core.errors import UserError
from core.io import atomic_write, remove_interrupted_writes, write_json
from trainer.runfolder import RunFolder


def check_resume(out, now: dict, may_change: tuple[str, ...], defaults: dict | None = None) -> RunFolder:
    """A study's run folder opened as a resume would, then begun (the clean-up, study.json written)."""
    run = RunFolder.open(out, now, may_change, defaults or {}, study=True)
    run.begin()
    return run


def test_killed_write_leaves_only_a_temp_file_which_resume_removes(tmp_path):
    # A process killed with SIGKILL inside an atomic write: the target never appears, a temp file does.
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from core.io import atomic_write
        def write(p):
            p.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(tmp_path / "round_001" / "metrics.json")!r}, write)
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    assert not (tmp_path / "round_001" / "metrics.json").exists()
    left = list((tmp_path / "round_001").iterdir())
    assert len(left) == 1 and left[0].name.startswith(".metrics.json.") and left[0].name.endswith(".tmp")

    half_dir = tempfile.mkdtemp(prefix=".checkpoint.", dir=tmp_path / "round_001")  # atomic_dir's temp
    (tmp_path / "round_001" / "checkpoint_note.txt").write_text("a user's file")
    (tmp_path / ".env").write_text("not ours")
    write_json(tmp_path / "round_001" / "sft.json", {"done": True})
    wandb = tmp_path / "wandb" / "run-1"
    wandb.mkdir(parents=True)
    (wandb / ".history.abcdefgh.tmp").write_text("W&B's")

    removed = remove_interrupted_writes(tmp_path)
    assert sorted(p.name for p in removed) == sorted([left[0].name, os.path.basename(half_dir)])
    assert sorted(p.name for p in (tmp_path / "round_001").iterdir()) == ["checkpoint_note.txt", "sft.json"]
    assert (tmp_path / ".env").exists() and (wandb / ".history.abcdefgh.tmp").exists()
    assert remove_interrupted_writes(tmp_path) == []


def test_atomic_write_failure_leaves_nothing(tmp_path):
    def fail(p):
        p.write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_a_changed_config_and_touches_nothing(tmp_path):
    saved = tmp_path / "study.json"
    assert check_resume(tmp_path, {"seed": 1, "rounds": 2}, ("rounds",)).meta["config"]["seed"] == 1
    write_json(saved, {"config": {"seed": 1, "rounds": 2}, "started": "earlier"})
    leftover = tmp_path / "round_001" / ".metrics.json.abcd_123.tmp"
    leftover.parent.mkdir()
    leftover.write_text("half")

    with pytest.raises(
        UserError,
        match=r"^output_dir: .* with a different 'seed' \(1 in .*study.json, now 2\); pass a new --output_dir",
    ):
        check_resume(tmp_path, {"seed": 2, "rounds": 2}, ("rounds",))
    assert leftover.exists()  # a refused resume leaves the old run as it was

    # A key that may change (more rounds) resumes: the saved content comes back, the leftover goes.
    meta = check_resume(tmp_path, {"seed": 1, "rounds": 5}, ("rounds",)).meta
    assert meta["started"] == "earlier" and not leftover.exists()


def test_a_run_saved_before_a_key_existed_resumes_while_the_key_keeps_its_default(tmp_path):
    """Configs gain keys between versions: a saved run without one resumes if the key is at its default."""
    from core.config import to_dict
    from trainer.config import IterateConfig

    defaults = to_dict(IterateConfig())
    old = to_dict(IterateConfig())
    del old["engine"]["max_model_len"]  # a key this (pretend) older version did not have
    del old["verifiers"][0]["template"]  # also inside a list of sections
    write_json(tmp_path / "study.json", {"config": old})
    now = to_dict(IterateConfig())
    assert RunFolder.open(tmp_path, now, (), defaults, study=True)
    now["engine"]["max_model_len"] = 2048  # set away from its default: the old run did not use it
    with pytest.raises(UserError, match="different 'engine.max_model_len'"):
        RunFolder.open(tmp_path, now, (), defaults, study=True)
    with pytest.raises(
        UserError, match="different 'engine.max_model_len'"
    ):  # no defaults: any new key differs
        RunFolder.open(tmp_path, to_dict(IterateConfig()), (), {}, study=True)
