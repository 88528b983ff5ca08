"""Atomic writes: a file either holds its complete content or does not exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and move the result to `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: df.to_parquet(p, index=False))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Rewrite `path` with `record` appended (atomic, so a crash never leaves half a line)."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    write_text(path, old + json.dumps(record, default=_json_default) + "\n")


def atomic_dir(path: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a directory in a temp sibling, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# What atomic_write and atomic_dir leave behind when the process dies before the rename:
# `.<name>.<8 random chars>.tmp` files and `.<name>.<8 random chars>` directories (tempfile's names).
_INTERRUPTED = re.compile(r"^\..+\.[a-z0-9_]{8}(\.tmp)?$")


def remove_interrupted_writes(root: str | os.PathLike) -> list[Path]:
    """Delete the temp files and dirs of writes that a killed run left under `root`; return them.

    Call it when a run resumes, before anything writes: nothing else names files this way, and a
    write in flight would be lost.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.rglob(".*")
        if _INTERRUPTED.match(p.name) and "wandb" not in p.relative_to(root).parts  # W&B's own files
    ]
    removed = []
    for p in sorted(found, key=lambda p: len(p.parts)):
        if not p.exists():  # inside a temp dir removed just before
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
