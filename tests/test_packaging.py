"""A built wheel carries every file the code reads, and works installed from that wheel alone."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

# The verifiers' prompt templates: what `pip install .` must install for any verifier to run.
READ_BACK = """
from trainer.verifiers import VERIFIERS
from trainer.verifiers.base import TEMPLATES
import trainer
assert not trainer.__file__.startswith({root!r}), trainer.__file__
names = sorted(p.name for p in TEMPLATES.iterdir())
for name in names:
    (TEMPLATES / name).read_text()
print(",".join(names))
"""


@pytest.mark.slow
def test_wheel_carries_every_file_the_code_reads(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mindgap-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "trainer", "eval"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data_files = [f for f in tracked if not f.endswith(".py")]
    assert data_files, "the packages read no data files? then this test checks nothing"
    assert [f for f in tracked if f not in packed] == []

    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", READ_BACK.format(root=str(ROOT))],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().split(",") == sorted(f.rsplit("/", 1)[-1] for f in data_files)
