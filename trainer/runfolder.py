"""A run's folder and the one way its stages run: each stage made once, recorded, and checked on resume.

    run = RunFolder.open(out, to_dict(cfg), MAY_CHANGE, to_dict(type(cfg)()), layout=[stage, ...])
    ...                                    # what the run needs before writing anything: model, prompts
    run.begin()                            # config.json + run.json (a study: study.json)
    rows = run.stage(stage, make)          # read when finished before, else made, written, recorded
    with run.making(stage): ...            # a stage that writes its own files (a checkpoint folder)

A `Stage` is named files (`outputs`) in a folder of the run (the run folder itself, `round_001`, ...).
When it finishes, the folder's `stages.json` records the size and SHA-256 of every file it wrote and
the config it was made with (atomically, on the main process), so the settings travel with the files.
`open` is a resume's gate, before any model is loaded:

- the config saved in the run (config.json / study.json) and the config every folder's stages were
  made with must equal the one given, key by key, outside the keys that may change: deleting one file
  does not let a run mix settings, and a refusal names the key;
- every recorded file must be there with its recorded size and SHA-256; files over `HASH_AT_OPEN`
  bytes (model weights) are checked by size on open and hashed before the run reads them
  (`check_use`), so a resume does not re-read every round's weights;
- a mismatch is one line naming the file and what to do: restore it, or `--redo FILE`, which deletes
  that stage and every stage made from it (later stages of its folder, the folders inside it, and for
  a chain of folders such as rounds, the folders after it) so that the run makes them again;
- a run made before stages were recorded (an earlier mindgap) resumes: the finished stages found in
  its folders are recorded as they are (their tables and JSON read back first), and the run says so.

Nothing else is recomputed over finished files, and nothing found damaged is kept. A stage another
run folder finished with the same settings may be taken from it (`reuse`: a comparison's conditions
share their starting model's held-out samples), checked against that folder's record and recorded
here with where it came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object

from core.config import REDO_ENV
from core.errors import UserError
from core.io import atomic_write, read_json, remove_interrupted_writes, write_json, write_parquet

RECORD = "stages.json"  # in every folder that holds stages
HASH_AT_OPEN = 64 << 20  # bytes: larger files are hashed when read (check_use), smaller ones on open
MARKER = "stage_records"  # in study.json / run.json: this run records its stages (not an older one)


@dataclass(frozen=True)
class Stage:
    """Named files of a folder of the run, made in one step; `folder` is relative to the run ("" for
    the run folder itself). An output may be a folder (a checkpoint): every file under it is recorded."""

    folder: str
    name: str
    outputs: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.name}" if self.folder else self.name


@dataclass
class RunFolder:
    """An opened run folder: which stages finished before, and the means to run or reuse the others."""

    out: Path  # as given (messages show it so)
    config: dict  # the run's config, as plain data
    layout: list[Stage]  # every stage the run may hold, in the order they are made
    chain: bool = False  # each folder of the layout is made from the one before (rounds)
    study: bool = False  # study.json (config + metadata) rather than config.json + run.json
    meta: dict = field(default_factory=dict)  # study.json's content (a study), else run.json's
    records: dict[str, dict] = field(default_factory=dict)  # folder -> its stages.json content
    unhashed: dict[str, list[str]] = field(default_factory=dict)  # stage key -> large files to hash
    notes: list[str] = field(default_factory=list)  # what a resume found worth saying
    finished: set[str] = field(default_factory=set)  # keys of finished stages
    may_change: tuple[str, ...] = ()  # config keys that may differ from the saved ones
    defaults: dict = field(default_factory=dict)  # the config class's defaults (keys added since)
    upgrade: Callable[[dict], dict] | None = None  # a saved config's keys renamed since, moved

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        out: str | os.PathLike,
        config: dict,
        may_change: tuple[str, ...],
        defaults: dict,
        *,
        layout: list[Stage] = (),
        chain: bool = False,
        study: bool = False,
        upgrade: Callable[[dict], dict] | None = None,
    ) -> RunFolder:
        """Check a new or resumed run folder (module docstring); raise the first problem as a UserError
        on every process. Creates the folder; otherwise writes nothing but what `--redo` deletes and
        the records of an older run's stages."""
        run = cls(
            Path(out),
            config,
            list(layout),
            chain,
            study,
            may_change=tuple(may_change),
            defaults=defaults,
            upgrade=upgrade,
        )
        run.meta, run.records, run.unhashed, run.notes = _agree(run._check)
        run.finished = {s.key for s in run.layout if s.name in run._stages(s.folder)}
        if _redo_target(run.out) is not None:
            os.environ.pop(REDO_ENV)  # done: a later run in this process (compare.py) must not redo it
        return run

    def begin(self) -> None:
        """Clear what a killed run left half-written, then write the run's config and metadata: on a
        new run once its inputs are known to be good, so a mistake leaves no run behind."""
        from trainer.study import study_metadata

        state = PartialState()
        meta = self.meta or study_metadata(self.config)
        meta[MARKER] = True
        if self.study:
            meta["config"] = self.config
        self.meta = meta
        if state.is_main_process:
            remove_interrupted_writes(self.out)  # a killed run's temp files, before anything writes
            if self.study:
                write_json(self.out / "study.json", meta)
            else:
                write_json(self.out / "config.json", self.config)
                write_json(self.out / "run.json", meta)
        state.wait_for_everyone()
        check_shared(self.out, self.out / ("study.json" if self.study else "config.json"), state)

    def write_meta(self) -> None:
        """Rewrite study.json / run.json with `meta` (e.g. a W&B run id learned after begin)."""
        if PartialState().is_main_process:
            write_json(self.out / ("study.json" if self.study else "run.json"), self.meta)

    @property
    def log_dir(self) -> Path:
        """Where the run's logs go (a vLLM server's, the console's)."""
        return self.out / "logs"

    # ------------------------------------------------------------------ stages (every process)

    def done(self, stage: Stage) -> bool:
        return stage.key in self.finished

    def path(self, stage: Stage, output: str | None = None) -> Path:
        return self.out / stage.folder / (output or stage.outputs[0])

    def stage(self, stage: Stage, make: Callable[[], Any], log=None) -> Any:
        """A stage of tables (.parquet: DataFrames) and JSON files, its outputs in order: read when
        the stage finished before, else `make()` (on every process) returns them (one object for a
        stage of one file, else a tuple), the main process writes them, and the stage is recorded."""
        if self.done(stage):
            if log is not None:
                log(f"reusing {self.path(stage)}")
            found = [self.read(stage, o) for o in stage.outputs]
            return found[0] if len(found) == 1 else tuple(found)
        with self.making(stage):
            made = make()
            if PartialState().is_main_process:
                for output, value in zip(stage.outputs, made if len(stage.outputs) > 1 else [made]):
                    path = self.path(stage, output)
                    if path.suffix == ".parquet":
                        write_parquet(path, value)
                    else:
                        write_json(path, value)
        return made

    def engine(self, engine, seed: int):
        """The run's one engine at a time (trainer.stages.OneEngine): a vLLM server it starts logs
        into the run's logs/."""
        from trainer.stages import OneEngine

        return OneEngine(engine, seed, log_dir=self.log_dir)

    def reuse(self, stage: Stage, donor: str | os.PathLike, ignore: tuple[str, ...] = ()) -> bool:
        """Take `stage` as finished from another run folder, `donor`, where that folder finished it with
        a config that differs from this run's only in `ignore` (keys the stage does not read) and the
        keys that may change: its files, checked against the donor's record, are copied here and
        recorded as this run's with where they came from. False, copying nothing, where the donor has
        no such stage or its files do not match its record. Every process calls it."""
        if self.done(stage):
            return False
        if not _agree(lambda: self._copy_from(stage, Path(donor), ignore)):
            return False
        self.finish(stage, reused_from=str(donor))
        return True

    @contextlib.contextmanager
    def making(self, stage: Stage) -> Iterator[None]:
        """Make `stage` in the block (which writes its outputs on the main process); when the block
        ends without an error, record it. Every process enters it."""
        start = time.perf_counter()
        yield
        self.finish(stage, seconds=time.perf_counter() - start)

    def finish(self, stage: Stage, seconds: float | None = None, reused_from: str | None = None) -> None:
        """Record `stage` as finished with its files as they are now (the main process writes the
        record); also to record it again after its file was rewritten. Every process calls it."""
        state = PartialState()
        if state.is_main_process:
            self._record(stage, seconds=seconds, reused_from=reused_from)
        self.finished.add(stage.key)
        self.unhashed.pop(stage.key, None)
        state.wait_for_everyone()

    def seconds(self, stage: Stage) -> float | None:
        """How long the stage took when it was made (None for one recorded from an older run)."""
        return self._stages(stage.folder).get(stage.name, {}).get("seconds")

    def read(self, stage: Stage, output: str | None = None) -> Any:
        """One output of a finished stage: a table as a DataFrame, a JSON file as its content."""
        path = self.path(stage, output)
        self.check_use(path)
        try:
            return pd.read_parquet(path) if path.suffix == ".parquet" else read_json(path)
        except Exception as e:  # a file an older run made, never recorded: checked only by reading it
            raise UserError(self._damaged(stage, path, f"cannot be read ({_why(e)})")) from None

    def check_use(self, path: str | os.PathLike) -> None:
        """Before the run reads `path` (a file or folder some stage wrote, e.g. the checkpoint an engine
        loads): hash its stage's large files that open only sized. A no-op for paths outside the run.
        Every process calls it."""
        stage = self._owner(Path(path))
        if stage is None or stage.key not in self.unhashed:
            return
        _agree(lambda: self._check_files(stage, self.unhashed[stage.key]))
        del self.unhashed[stage.key]

    # ------------------------------------------------------------------ the checks (main process)

    def _check(self) -> tuple[dict, dict, dict, list[str]]:
        out = self.out
        _check_output_dir(out)
        saved_path = out / ("study.json" if self.study else "config.json")
        saved = self._read_record_file(saved_path) if saved_path.exists() else None
        if saved is not None:
            before = saved.get("config", {}) if self.study else saved
            self._check_config(before, saved_path)
        meta = saved if self.study else {}
        if not self.study and (out / "run.json").exists():
            meta = self._read_record_file(out / "run.json")
        self._redo()
        for folder in dict.fromkeys(s.folder for s in self.layout):
            path = out / folder / RECORD
            if path.exists():
                self.records[folder] = self._read_record_file(path)
                self._check_config(self.records[folder].get("config", {}), path)
        for stage in self.layout:
            if stage.name in self._stages(stage.folder):
                files = self._stages(stage.folder)[stage.name]["files"]
                large = self._check_files(stage, files, sizes_only=HASH_AT_OPEN)
                if large:
                    self.unhashed[stage.key] = large
        if not self.records and not (meta or {}).get(MARKER):
            self._adopt(saved is not None)
        self._check_order()
        return meta, self.records, self.unhashed, self.notes

    def _saved(self, before: dict) -> dict:
        """A config saved by a run, as this run's keys read it: renamed keys moved, added keys filled."""
        return fill_missing(self.upgrade(before) if self.upgrade is not None else before, self.defaults)

    def _check_config(self, before: dict, where: Path) -> None:
        before = self._saved(before)
        key = changed_key(before, self.config, self.may_change)
        if key is None:
            return
        was, now = _lookup(before, key), _lookup(self.config, key)
        values = f" ({_show(was)} in {where}, now {_show(now)})" if _short(was) and _short(now) else ""
        raise UserError(
            f"output_dir: {self.out} holds an earlier run with a different '{key}'{values}; pass a new "
            "--output_dir to start another, or restore the old value to resume"
        )

    def _check_files(self, stage: Stage, files, sizes_only: int | None = None) -> list[str]:
        """Every file of `files` (a stage's recorded files, or names of them) as recorded: raise the
        first mismatch; return the names over `sizes_only` bytes, whose hashes were not checked."""
        recorded = self._stages(stage.folder)[stage.name]["files"]
        large = []
        for name in files:
            want, path = recorded[name], self.out / stage.folder / name
            problem = _differs(path, want, stage.key, hash_up_to=sizes_only)
            if problem:
                raise UserError(self._damaged(stage, path, problem))
            if sizes_only is not None and want["bytes"] > sizes_only:  # the size matched the record
                large.append(name)
        return large

    def _copy_from(self, stage: Stage, donor: Path, ignore: tuple[str, ...]) -> bool:
        """`reuse`'s work on the main process: whether `donor` finished `stage` with a matching config
        and files as recorded; if so, copy them here (each file atomically)."""
        try:
            record = read_json(donor / stage.folder / RECORD)
            entry = record["stages"][stage.name]
            files = entry["files"]
            before = record["config"]
        except Exception:  # no record, no such stage, or a record that does not read: make it here
            return False
        if entry.get("adopted"):
            return False  # recorded from an older run as found: its config was never checked
        if changed_key(self._saved(before), self.config, (*self.may_change, *ignore)):
            return False
        source = donor / stage.folder
        if any(_differs(source / name, want, stage.key) for name, want in files.items()):
            return False
        for name in files:
            atomic_write(self.out / stage.folder / name, lambda p, src=source / name: shutil.copyfile(src, p))
        return True

    def _damaged(self, stage: Stage, path: Path, what: str) -> str:
        return (
            f"{path}: {what}; restore it, or rerun with --redo {path} to make stage {stage.key} "
            "again and every stage made from it"
        )

    def _check_order(self) -> None:
        """A finished stage's inputs are finished too: the folder it lies in (for a folder inside
        another) and, in a chain, the folder before it (its last stage)."""
        folders = list(dict.fromkeys(s.folder for s in self.layout))
        for i, folder in enumerate(folders):
            if not self._stages(folder):
                continue
            needs = [s for s in self.layout if s.folder and folder.startswith(s.folder + "/")]
            if self.chain and i:
                needs.append([s for s in self.layout if s.folder == folders[i - 1]][-1])
            for parent in dict.fromkeys(s.folder for s in needs):
                missing = [s for s in needs if s.folder == parent and s.name not in self._stages(parent)]
                if missing:
                    raise UserError(
                        f"{self.out / folder}: made from {self.out / parent}, whose stage {missing[0].key} "
                        f"has not finished (its files or {RECORD} are missing); restore "
                        f"{self.out / parent}, or rerun with --redo {self.out / folder} to make "
                        f"{folder} again"
                    )

    def _adopt(self, checked: bool) -> None:
        """A run from before stage records: record every stage whose files are all there, as they are."""
        adopted = []
        for stage in self.layout:
            paths = [self.out / stage.folder / o for o in stage.outputs]
            if not all(p.exists() for p in paths):
                continue
            for p in paths:
                why = _unreadable(p)
                if why:
                    raise UserError(self._damaged(stage, p, f"cannot be read ({why})"))
            self._record(stage, adopted=True)
            adopted.append(stage.key)
        if adopted:
            self.notes.append(
                f"{self.out}: made before mindgap recorded its stages; recorded the {len(adopted)} finished "
                "stages found as they are"
                + ("" if checked else " (with no saved config to compare the settings with)")
            )

    def _redo(self) -> None:
        """Delete the stage `--redo` names and every stage made from it."""
        target = _redo_target(self.out)
        if target is None:
            return
        stage = self._owner(target, folders=True)
        if stage is None:
            raise UserError(
                f"--redo: {os.environ[REDO_ENV]} is not a file or folder of a stage of {self.out}; name "
                "the file an error pointed at"
            )
        for s in self._made_from(stage):
            for o in s.outputs:
                p = self.out / s.folder / o
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            record = self.out / s.folder / RECORD
            if record.exists():
                content = self._read_record_file(record)
                content.get("stages", {}).pop(s.name, None)
                if content.get("stages"):
                    write_json(record, content)
                else:
                    record.unlink()
            if s.folder and (self.out / s.folder).is_dir() and not any((self.out / s.folder).iterdir()):
                (self.out / s.folder).rmdir()
        self.notes.append(f"{self.out}: --redo: deleted stage {stage.key} and the stages made from it")

    def _made_from(self, stage: Stage) -> list[Stage]:
        """`stage` and every stage made from it: the later ones of its folder, those of the folders
        inside it, and in a chain those of the folders after it."""
        folders = list(dict.fromkeys(s.folder for s in self.layout))
        later = folders[folders.index(stage.folder) + 1 :] if self.chain else []
        inside = [f for f in folders if (f and not stage.folder) or f.startswith(stage.folder + "/")]
        own = [s for s in self.layout if s.folder == stage.folder]
        return (
            own[own.index(stage) :]
            + [s for s in self.layout if s.folder in inside]
            + [s for s in self.layout if s.folder in later and s.folder not in inside]
        )

    # ------------------------------------------------------------------ records

    def _stages(self, folder: str) -> dict:
        return self.records.get(folder, {}).get("stages", {})

    def _record(
        self,
        stage: Stage,
        seconds: float | None = None,
        adopted: bool = False,
        reused_from: str | None = None,
    ) -> None:
        files = {}
        for output in stage.outputs:
            path = self.out / stage.folder / output
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    rel = str(f.relative_to(self.out / stage.folder))
                    files[rel] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        record = self.records.setdefault(stage.folder, {"config": self.config, "stages": {}})
        record["config"] = self.config  # the keys that may change take their latest values
        record["stages"][stage.name] = {
            "files": files,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": None if seconds is None else round(seconds, 2),
            **({"adopted": True} if adopted else {}),
            **({"reused_from": reused_from} if reused_from else {}),
        }
        write_json(self.out / stage.folder / RECORD, record)

    def _read_record_file(self, path: Path) -> dict:
        try:
            content = read_json(path)
            if not isinstance(content, dict):
                raise ValueError(f"holds a {type(content).__name__}, not a mapping")
            return content
        except Exception as e:
            hint = (
                f"pass a new --output_dir, or delete {path} (the settings are also recorded in each "
                f"folder's {RECORD})"
                if path.name != RECORD
                else f"rerun with --redo {path.parent} to make that folder's stages again"
            )
            raise UserError(f"{path}: cannot be read ({_why(e)}); restore it, or {hint}") from None

    def _owner(self, path: Path, folders: bool = False) -> Stage | None:
        """The stage whose outputs hold `path` (with `folders`: also a stage's folder, or its key)."""
        target = Path(os.path.abspath(path))
        root = Path(os.path.abspath(self.out))
        for stage in self.layout:
            base = root / stage.folder
            if folders and (target == base / stage.name or (stage.folder and target == base)):
                return stage
            for o in stage.outputs:
                if target == base / o or (base / o) in target.parents:
                    return stage
        return None


# ---------------------------------------------------------------- config comparison


def changed_key(before: Any, now: Any, may_change: tuple[str, ...], key: str = "") -> str | None:
    """The first dotted key whose value differs between two configs (plain data), leaving out the
    keys in `may_change` (top-level names, or dotted ones such as `engine.server_url`) and top-level
    keys the config no longer has; None if none."""
    if key in may_change or before == now:
        return None
    if isinstance(before, dict) and isinstance(now, dict):
        gone = [k for k in before if k not in now] if key else []  # a removed setting cannot differ
        for k in list(now) + gone:
            sub = changed_key(before.get(k), now.get(k), may_change, f"{key}.{k}" if key else str(k))
            if sub is not None:
                return sub
        return None
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        for i, (b, n) in enumerate(zip(before, now)):
            sub = changed_key(b, n, may_change, f"{key}.{i}")
            if sub is not None:
                return sub
        return None
    return key or "config"


def fill_missing(saved: Any, defaults: Any) -> Any:
    """`saved` with every key of `defaults` it lacks added, at any depth (list items of mappings are
    filled from the defaults' first item): a run made before a key existed resumes while the key
    keeps its default."""
    if isinstance(saved, dict) and isinstance(defaults, dict):
        return {
            **{k: v for k, v in defaults.items() if k not in saved},
            **{k: fill_missing(v, defaults[k]) if k in defaults else v for k, v in saved.items()},
        }
    if isinstance(saved, list) and isinstance(defaults, list) and defaults and isinstance(defaults[0], dict):
        return [fill_missing(item, defaults[0]) if isinstance(item, dict) else item for item in saved]
    return saved


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _short(value: Any) -> bool:
    return not isinstance(value, (dict, list)) and len(repr(value)) <= 60


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


# ---------------------------------------------------------------- helpers


def _agree(check: Callable[[], Any]) -> Any:
    """Run `check` on the main process; every process returns its result or raises its UserError."""
    state = PartialState()
    box: list = [None, None]
    if state.is_main_process:
        try:
            box[0] = check()
        except UserError as e:
            box[1] = str(e)
    if state.num_processes > 1:
        broadcast_object_list(box)
    if box[1] is not None:
        raise UserError(box[1])
    return box[0]


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(
            f"output_dir: {out} is a file, not a folder; pass the path of a folder (created if missing)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"output_dir: cannot create {out} ({e.strerror or _why(e)}"
            + (f": {e.filename}" if e.filename and str(e.filename) != str(out) else "")
            + "); pass a folder that can be created"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"output_dir: {out} is not writable; pass a folder you can write to")


def check_shared(out: Path, written: Path, state: PartialState) -> None:
    """Every rank sees the file rank 0 just wrote: a run across nodes needs output_dir on storage
    they all share, since every rank's engine loads the checkpoints rank 0 writes there."""
    import platform

    blind = gather_object([] if written.exists() else [f"rank {state.process_index} on {platform.node()}"])
    if blind:
        raise UserError(
            f"output_dir: {', '.join(blind)} cannot see {written}, which rank 0 wrote; put output_dir "
            f"({out}) on storage every node shares (and MINDGAP_CACHE, where models are converted)"
        )


def _redo_target(out: Path) -> Path | None:
    """The path `--redo` named, when it lies inside the run folder `out`."""
    value = os.environ.get(REDO_ENV, "").strip()
    if not value:
        return None
    target, root = Path(os.path.abspath(value)), Path(os.path.abspath(out))
    return target if target == root or root in target.parents else None


def _unreadable(path: Path) -> str | None:
    """Why a table or JSON file an older run wrote does not read back (its footer, its syntax), or
    why a folder it wrote is no checkpoint."""
    if path.is_dir():
        return None if (path / "config.json").is_file() else "a checkpoint folder without config.json"
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.read_metadata(path)
        elif path.suffix == ".json":
            read_json(path)
    except Exception as e:
        return _why(e)
    return None


def _differs(path: Path, want: dict, writer: str, hash_up_to: int | None = None) -> str | None:
    """How the file at `path` differs from its record `want` (bytes, sha256) made by stage `writer`,
    or None; the SHA-256 is compared for files of at most `hash_up_to` bytes (None: every file)."""
    if not path.is_file():
        return f"is missing (written by stage {writer})"
    size = path.stat().st_size
    if size != want["bytes"]:
        return f"holds {size} bytes where {want['bytes']} were written"
    if (hash_up_to is None or size <= hash_up_to) and _sha256(path) != want["sha256"]:
        return "changed since it was written (SHA-256 differs)"
    return None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _why(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
