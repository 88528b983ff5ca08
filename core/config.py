"""Configuration machinery: dataclasses loaded from YAML, overridable from the command line, validated
on load, with every mistake reported at once.

    cfg = load_config(IterateConfig, argv, default_config="recipes/configs/quickstart.yaml")

A config file may start from another: `base: FILE` (a path relative to the file) names the file whose
keys it starts from, its own keys merged over them (mappings key by key, anything else replaced), and
that file may name a base of its own (`read_config`).

An override is `--key value` or `--key=value` with a dotted key (`--sampling.n 8`,
`--verifiers.0.name oracle`); values are parsed as YAML scalars (`--verifiers [mc,oracle]` works too).
`--help` prints every key with its type, default and help; `--verbose` shows every library's own
output on the terminal (otherwise it goes to the study's log file). Unknown keys, values of the wrong type and
values a section's `validate(key)` rejects are UserErrors that name the key; all of a config's
mistakes are collected and raised together, one per line.

A config field documents itself: `knob(default, "help")` (TRL's `metadata={"help": ...}` convention),
which is what `--help` prints; `knob(..., group="...")` starts a group of a section's keys, which
`--help` shows under that heading (the keys stay flat: `--engine.server_url`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from core.errors import UserError

C = TypeVar("C")
_NO_DEFAULT = dataclasses.MISSING
REDO_ENV = "MINDGAP_REDO"  # `--redo FILE`: the run folder makes that file's stage again


def knob(
    default: Any = _NO_DEFAULT, help: str = "", *, factory: Any = _NO_DEFAULT, group: str | None = None
) -> Any:
    """A config field with its one line of help (a mutable default is given as `factory`); `group`
    names the group of keys this one starts, a heading in `--help`."""
    metadata = {"help": help, **({"group": group} if group else {})}
    if factory is not _NO_DEFAULT:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


class Problems:
    """Config mistakes found while checking, reported together."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Record the UserError a block raises, and go on."""
        try:
            yield
        except UserError as e:
            self.messages.extend(line for line in str(e).splitlines() if line)

    def add(self, message: str) -> None:
        self.messages.append(message)

    def raise_any(self) -> None:
        if self.messages:
            unique = list(dict.fromkeys(self.messages))
            raise UserError("\n".join(unique))


# ---------------------------------------------------------------- loading


def load_config(cls: type[C], argv: list[str] | None = None, default_config: str | None = None) -> C:
    """Build `cls` from `--config FILE` (or `default_config`) and `--key value` overrides in `argv`.

    `--help` (or `-h`) prints every key of `cls` and exits.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:  # every library's own output on the terminal (trainer/console.py)
        argv.remove("--verbose")
        os.environ["MINDGAP_VERBOSE"] = "1"
    if "--help" in argv or "-h" in argv:
        given = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
        print(help_text(cls, given or default_config))
        sys.exit(0)
    config_path, overrides = _split_argv(argv)
    # --redo FILE: an action on this run, not a setting; the run folder reads it (trainer/runfolder.py)
    os.environ.pop(REDO_ENV, None)
    for value in [v for k, v in overrides if k == "redo"]:
        os.environ[REDO_ENV] = str(value)
    overrides = [(k, v) for k, v in overrides if k != "redo"]
    config_path = config_path or default_config
    data: dict = to_dict(cls())  # defaults first, so list entries can be overridden by index
    source = config_path
    if config_path:
        files: list[Path] = []
        merge(data, read_config(config_path, inherit=_inherits(cls), files=files, cls=cls))
        if len(files) > 1:
            source = f"{config_path} or its base {', '.join(map(str, files[1:]))}"
    problems = Problems()
    for key, value in overrides:
        with problems.check():
            key = _new_key(cls, key)
            _check_override(cls, key)
            _set_dotted(data, key, value)
    try:
        cfg = from_dict(cls, data, source=source)
    except UserError as e:
        problems.messages.extend(str(e).splitlines())
    problems.raise_any()
    return cfg


def read_config(
    path: str | Path, inherit: bool = True, files: list[Path] | None = None, cls: type | None = None
) -> dict:
    """The mapping a config file gives: its keys merged over those of the file its `base:` names (a
    path relative to the file; one from the working directory is taken where only that exists), which
    may name a base of its own; a cycle of bases is an error. `files` collects the files read, the
    named one first. With `cls`, each file's keys that `cls` has renamed move to their new place
    before it is merged over its base. With `inherit=False` (a config whose own key is `base`, as recipes/compare.py's
    study config), `base` stays a key, its path resolved in the same way."""
    files = [] if files is None else files
    key = "base" if files else "--config"
    path = Path(path)
    named = f" (the base of {files[-1]})" if files else ""
    if path.is_dir():
        raise UserError(f"{key}: {path}{named} is a folder; name a YAML config file in it")
    if not path.is_file():
        raise UserError(f"{key}: file {path}{named} does not exist")
    if path.resolve() in [f.resolve() for f in files]:
        cycle = " -> ".join(map(str, [*files, path]))
        raise UserError(
            f"base: the config files start from each other in a cycle ({cycle}); remove a `base:`"
        )
    files.append(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{key}: {path} is not UTF-8 text (byte offset {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{key}: {path} is not valid YAML{where}: {what}") from None
    if loaded is None:
        raise UserError(
            f"{key}: {path}{named} is empty; put the keys to set in it (`--help` lists them)"
            + ("" if files[1:] else ", or leave --config out to run the recipe's default config")
        )
    if not isinstance(loaded, dict):
        raise UserError(f"{key}: {path} must hold a mapping of keys, not {type(loaded).__name__}")
    if cls is not None:
        loaded = rename_old_keys(cls, loaded)
    base = loaded.pop("base", None) if inherit else loaded.get("base")
    if base is None:
        return loaded
    if not isinstance(base, str) or not base:
        raise UserError(f"base: expected the path of a config file (in {path}), got {base!r}")
    base_path = _beside(path, base)
    if not inherit:
        loaded["base"] = str(base_path)
        return loaded
    data = read_config(base_path, inherit, files, cls)
    merge(data, loaded)
    return data


def _beside(config: Path, name: str) -> Path:
    """The file `name` names from inside `config`: relative to `config`'s folder, or to the working
    directory where only that holds it (comparison configs written before bases were relative)."""
    given = Path(name).expanduser()
    if given.is_absolute():
        return given
    beside = Path(os.path.normpath(config.parent / given))
    return given if given.is_file() and not beside.is_file() else beside


def _inherits(cls: type) -> bool:
    """Whether `base:` in a file of `cls` names a file to start from (not a key of `cls` itself)."""
    return "base" not in {f.name for f in dataclasses.fields(cls)}


def _check_override(cls: type, key: str) -> None:
    """A command-line key names a field: a typo is reported as given there, not as the config file's."""
    node, parts, i = cls, key.split("."), 0
    while i < len(parts) and node is not None:  # None: inside a free mapping (task.options, ...)
        names = [f.name for f in dataclasses.fields(node)]
        if parts[i] not in names:
            where = ".".join(parts[:i])
            raise UserError(
                f"unknown config key '{'.'.join(parts[: i + 1])}' (given as --{key}); valid keys"
                f"{' under ' + where if where else ''}: {', '.join(sorted(names))}"
            )
        tp = typing.get_type_hints(node)[parts[i]]
        node = _dataclass_of(tp)
        if node is not None and typing.get_origin(tp) is list:  # --verifiers.0.name: skip the index
            if i + 1 >= len(parts) or not parts[i + 1].isdigit():
                return  # the whole list, or a bad index: _set_dotted and _build name it
            i += 1
        i += 1


def from_dict(cls: type[C], data: dict, key: str = "", source: str | None = None) -> C:
    """Build dataclass `cls` from a nested dict, checking keys and types, then validate every section;
    every mistake found is raised at once (one per line of the UserError)."""
    problems = Problems()
    obj = _build(cls, data, key, source, problems)
    if not problems.messages:  # a section built from a wrong value would report noise
        _validate_tree(obj, key, problems)
    problems.raise_any()
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (for study.json and W&B)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def rename_old_keys(cls: type, data: Any) -> Any:
    """`data`, one layer of a `cls` config (a file's mapping, a comparison's overrides), with the
    top-level keys `cls` has renamed moved to their new place: `cls.renamed` maps an old key to its
    new dotted one (`{"sft": "update.sft"}`), so configs written before the rename keep working.
    Rename each layer before merging it, so that later layers still override earlier ones."""
    renamed = getattr(cls, "renamed", {})
    if not isinstance(data, dict) or not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        value, node, parts = data.pop(old), data, new.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = {"name": child} if isinstance(child, str) else child  # `update: sft` shorthand
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        if parts[-1] in node:
            raise UserError(f"{old}: the old name of {new}; set one of them, not both")
        node[parts[-1]] = value
    return data


def _new_key(cls: type, key: str) -> str:
    """A dotted override key with a renamed top-level key replaced (`sft.epochs` -> `update.sft.epochs`)."""
    for old, new in getattr(cls, "renamed", {}).items():
        if key == old or key.startswith(old + "."):
            return new + key[len(old) :]
    return key


def merge(base: dict, update: dict) -> None:
    """Merge `update` into `base`: mappings recursively, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


# ---------------------------------------------------------------- checks sections call in validate()


def one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{key}: unknown value '{value}'; choose one of {', '.join(allowed)}")


def positive(key: str, value: float) -> None:
    if value <= 0:
        raise UserError(f"{key}: must be > 0, got {value}")


def at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise UserError(f"{key}: must be >= {low}, got {value}")


# ---------------------------------------------------------------- --help


def help_text(cls: type, default_config: str | None = None) -> str:
    """Every key of `cls` (dotted), its type, default and help, and the value the config file gives it
    where that differs; what `--help` prints."""
    lines = [f"{cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}", ""]
    lines.append("usage: [--config FILE] [--KEY VALUE ...]   (dotted keys; values are YAML)")
    lines.append("  --verbose    every library's own output on the terminal (else in the run's logs/)")
    lines.append("  --redo FILE  make the stage that wrote FILE again, and every stage made from it")
    if _inherits(cls):
        lines.append("a config file may start from another: `base: FILE` (relative to the file)")
    in_file: Any = {}
    if default_config:
        lines.append(f"--config: {default_config} (its values, with its bases': 'config file:' below)")
        with contextlib.suppress(UserError):
            in_file = read_config(default_config, inherit=_inherits(cls))
    lines.append("")
    rows = list(_help_rows(cls, ""))
    width = min(34, max(len(row[0]) for row in rows) + 2)
    for key, tp, default, text, group in rows:
        if group:
            lines.append(f"  [{group}]")
        value = _lookup(in_file, key)
        shown = (
            ""
            if value is _NO_DEFAULT or _yaml_text(value) == default
            else f"; config file: {_yaml_text(value)}"
        )
        lines.append(f"  --{key:<{width}} {tp} = {default}{shown}")
        if text:
            lines.append(f"      {text}")
    return "\n".join(lines)


def _lookup(data: Any, key: str) -> Any:
    """The value at dotted `key` of a loaded YAML mapping, or _NO_DEFAULT."""
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return _NO_DEFAULT
        data = data[part]
    return data


def _yaml_text(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _help_rows(cls: type, prefix: str) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, type, default, help, the heading of the group it starts or "") for every key of `cls`."""
    hints = typing.get_type_hints(cls)
    own = cls.__dict__.get("__annotations__", {})  # a recipe's own keys before those all recipes share
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        inner = _dataclass_of(tp)
        group = f"{prefix.rstrip('.')}: {f.metadata['group']}" if f.metadata.get("group") else ""
        if inner is not None and typing.get_origin(tp) is list:
            yield key, f"list of {inner.__name__}", "see below", f.metadata.get("help", ""), group
            yield from _help_rows(inner, f"{key}.<i>.")
        elif inner is not None:
            yield from _help_rows(inner, f"{key}.")
        else:
            yield key, _type_name(tp), _default_text(f), f.metadata.get("help", ""), group


def _dataclass_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return item if dataclasses.is_dataclass(item) else None
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} | null"
    if origin is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if tp is dict or origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not _NO_DEFAULT:
        value = f.default
    elif f.default_factory is not _NO_DEFAULT:
        value = f.default_factory()
    else:
        return "(required)"
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


# ---------------------------------------------------------------- parsing


def _split_argv(argv: list[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    config_path, overrides, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}; overrides look like --key value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise UserError(f"--{name}: missing value")
            value = argv[i + 1]
            i += 1
        i += 1
        if name == "config":
            config_path = value
        else:
            try:
                parsed = yaml.safe_load(value) if value != "" else ""
            except yaml.YAMLError:
                parsed = value
            overrides.append((name.replace("-", "_"), parsed))
    return config_path, overrides


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str):  # `task: countdown` then `--task.train_size 8`
            child = {"name": child}
        elif isinstance(child, list) and parts[i + 1].isdigit():  # --verifiers.0.name
            idx = int(parts[i + 1])
            if idx >= len(child):
                raise UserError(f"--{key}: index {idx} is past the {len(child)} entries of {part}")
            item = child[idx]
            child[idx] = item = {"name": item} if isinstance(item, str) else item
            if len(parts) == i + 3:
                item[parts[-1]] = value
                return
            raise UserError(f"--{key}: nesting this deep inside a list is not supported")
        elif not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def _build(cls: type[C], data: Any, key: str, source: str | None, problems: Problems) -> C:
    where = f" (in {source})" if source else ""
    if isinstance(data, str) and "name" in {f.name for f in dataclasses.fields(cls)}:
        data = {"name": data}  # shorthand: `task: countdown`, `verifiers: [mc, oracle]`
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(f"{key or 'config'}: expected a mapping{where}, got {data!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    renamed = getattr(cls, "renamed", {})
    for name in sorted(set(data) - set(fields)):
        full = f"{key}.{name}" if key else name
        if name in renamed:
            problems.add(f"{full}: renamed to {renamed[name]}{where}; move it there")
            continue
        problems.add(
            f"unknown config key '{full}'{where}; valid keys{' under ' + key if key else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            continue
        sub = f"{key}.{name}" if key else name
        with problems.check():
            kwargs[name] = _coerce(hints[name], value, sub, source, problems)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, source: str | None, problems: Problems) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key, source, problems)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source, problems)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(item_tp, v, f"{key}.{i}", source, problems) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise UserError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):  # YAML 1.1 reads 5e-5 as text
            return float(value)
        raise UserError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{key}: expected a string, got {value!r}")
    return value


def _validate_tree(obj: Any, key: str, problems: Problems) -> None:
    """Every section's validate(key), innermost first; each section's mistakes are collected."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            sub = f"{key}.{f.name}" if key else f.name
            _validate_tree(getattr(obj, f.name), sub, problems)
        if hasattr(obj, "validate"):
            with problems.check():
                obj.validate(key)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _validate_tree(v, f"{key}.{i}", problems)
