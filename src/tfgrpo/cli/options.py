"""CLI flags and config files from the config dataclasses: each `knob` field (see `tfgrpo.core.knobs`)
becomes one flag with the field's default, help and choices, so Python and the command line agree.

- `add_config_args(parser, cls)` adds the flags: `--field-name` (or the knob's `flag`; a one-letter
  field is `-k`), bools as `--flag/--no-flag`, `tuple[str, ...]` as a repeatable flag, Optional
  fields with a None default.
- `--config FILE` (YAML or TOML; keys are the command's option names, e.g. `batch_size`, `model`) is
  read by `apply_config_file` before the final parse: the file's values become the defaults, so flags
  given explicitly win. Unknown keys are an error naming them.
- `config_from_args(cls, args, file_values)` builds the dataclass: flags given, then the file, then
  `hints` (a task's max_tokens/stop) where neither set a field, then the class's own defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..core.knobs import knob_fields
from ..errors import ConfigError

GIVEN = "_given"
"""Namespace attribute: the dests of the config flags given on the command line."""
FILE_VALUES = "_file_values"
"""Namespace attribute: the values read from `--config FILE`."""
INTERNAL = frozenset({"func", "config", "print_config", "help", GIVEN, FILE_VALUES, "_config_parser"})
"""Namespace attributes that are no option a config file may set."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once, at the end of its help: as the help says it in words when it does
    ("(default: the task's)"), else its value; none for an unset option (None), an on/off switch that is
    off, or an empty list."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "(default" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(action, argparse._StoreTrueAction)
            or (isinstance(default, (tuple, list)) and not default)
        ):
            return text
        if isinstance(default, (tuple, list)):
            shown = " ".join(repr(v) if isinstance(v, str) else str(v) for v in default).replace("%", "%%")
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})"


class _KnobAction(argparse.Action):
    """Stores a config flag's value and records that it was given. `kind`: "store", "bool"
    (`--x/--no-x`) or "append" (repeatable; the first use replaces the default)."""

    def __init__(self, option_strings: Sequence[str], dest: str, kind: str = "store", **kwargs: Any) -> None:
        if kind == "bool":
            option_strings = [s for o in option_strings for s in (o, "--no-" + o[2:])]
            kwargs["nargs"] = 0
        if kind == "values":
            kwargs["nargs"] = "+"
        super().__init__(option_strings, dest, **kwargs)
        self.kind = kind

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = set(getattr(namespace, GIVEN, ()))
        if self.kind == "bool":
            value: Any = not (option_string or "").startswith("--no-")
        elif self.kind == "append":
            value = (*getattr(namespace, self.dest), values) if self.dest in given else (values,)
        elif self.kind == "values":
            value = tuple(values)
        else:
            value = values
        setattr(namespace, self.dest, value)
        setattr(namespace, GIVEN, given | {self.dest})

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _flag_kind(cls: type, name: str, annotation: Any) -> tuple[str, type | None]:
    """("store" | "bool" | "append" | "values", the argparse `type`) of a field's annotation ("values":
    one flag followed by one or more values, `--seeds 0 1 2`)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    base = args[0] if optional else annotation
    if base is bool:
        return "bool", None
    if base in (int, float, str):
        return "store", base
    if typing.get_origin(base) is tuple and typing.get_args(base) == (str, Ellipsis):
        return "append", str
    if typing.get_origin(base) is tuple and typing.get_args(base) == (int, Ellipsis):
        return "values", int
    raise TypeError(f"{cls.__name__}.{name}: no CLI flag for type {annotation!r}; declare it with cli=False")


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of a knob field."""
    return field.metadata.get("flag") or (
        f"-{field.name}" if len(field.name) == 1 else "--" + field.name.replace("_", "-")
    )


def add_config_args(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    exclude: Iterable[str] = (),
    *,
    only: Iterable[str] | None = None,
    aliases: dict[str, Sequence[str]] | None = None,
    defaults: dict[str, str] | None = None,
) -> list[str]:
    """Add a flag for every CLI knob of `cls` (or those in `only`) but those in `exclude`; `aliases`
    adds other flags for a field (e.g. {"group_size": ["-G"]}); `defaults` says in words the default
    of a field whose value the command sets, not the class (a task's hint). Returns the field names added."""
    hints = typing.get_type_hints(cls)
    skip = set(exclude)
    keep = set(only) if only is not None else None
    added = []
    for field in knob_fields(cls):
        meta = field.metadata
        if not meta.get("cli", True) or field.name in skip or (keep is not None and field.name not in keep):
            continue
        kind, type_ = _flag_kind(cls, field.name, hints[field.name])
        factory = field.default_factory
        default = factory() if callable(factory) else field.default
        help_text = (meta.get("help") or "").replace("%", "%%")
        bounds = [f">= {meta['minimum']}" if meta.get("minimum") is not None else "",
                  f"<= {meta['maximum']}" if meta.get("maximum") is not None else ""]  # fmt: skip
        if any(bounds):
            help_text += f" [{', '.join(b for b in bounds if b)}]"
        if kind == "append":
            help_text += " (repeatable)"
        if defaults and field.name in defaults:
            help_text += f" (default: {defaults[field.name]})"
        extra: dict[str, Any] = {}
        if type_ is not None:
            extra["type"] = type_
        if meta.get("choices") is not None:
            extra["choices"] = meta["choices"]
        if meta.get("choices") is None:
            extra["metavar"] = {int: "N", float: "X", str: "TEXT"}.get(type_) if type_ else None
        parser.add_argument(
            flag_of(field),
            *(aliases or {}).get(field.name, ()),
            dest=field.name,
            action=_KnobAction,
            kind=kind,
            default=default,
            help=help_text,
            **extra,
        )
        added.append(field.name)
    return added


def config_from_args(
    cls: Any,
    args: argparse.Namespace,
    file_values: dict[str, Any] | None = None,
    *,
    hints: dict[str, Any] | None = None,
    preset: str | None = None,
    **fixed: Any,
) -> Any:
    """An instance of `cls` from the parsed flags: a field given as a flag or in the file takes that
    value, else its `hints` value, else the class's (or the `preset`'s) default. `fixed` sets fields
    with no flag (e.g. `template`). Only fields of `cls` are read from `args`."""
    file_values = file_values if file_values is not None else getattr(args, FILE_VALUES, {})
    explicit = set(getattr(args, GIVEN, ())) | set(file_values)
    values: dict[str, Any] = {}
    for field in knob_fields(cls):
        if field.name in fixed or not field.metadata.get("cli", True) or not hasattr(args, field.name):
            continue
        if field.name in explicit:
            value = getattr(args, field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
        elif hints and field.name in hints:
            values[field.name] = hints[field.name]
    values.update(fixed)
    config = cls.preset(preset, **values) if preset else cls(**values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in set(getattr(args, GIVEN, ())) & set(fields):  # a flag given alone (a file may hold them all)
        needed = fields[name].metadata.get("needs")
        if needed and getattr(config, needed) == fields[needed].default:
            raise ConfigError(
                f"{flag_of(fields[name])} works with {flag_of(fields[needed])}: give that too, or leave it out"
            )
    return config


def explicit(args: argparse.Namespace) -> set[str]:
    """The option names set by a flag given or by the config file."""
    return set(getattr(args, GIVEN, ())) | set(getattr(args, FILE_VALUES, {}))


# ---- config files


def add_config_file_args(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and `--print-config [FORMAT]` for a command (see `tfgrpo.cli.main`)."""
    parser.set_defaults(_config_parser=parser)
    g = parser.add_argument_group("config file")
    g.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML (.yaml, .yml) or TOML (.toml) file of option names and values, e.g. `batch_size: 8`; "
        "flags given explicitly override it",
    )
    g.add_argument(
        "--print-config",
        nargs="?",
        const="toml",
        default=None,
        choices=["toml", "yaml", "json"],
        help="print the resolved options (in a form --config reads back) and exit without running",
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The top-level table of a YAML or TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; a config file is YAML or TOML") from None
    if suffix == ".toml":
        try:
            tomllib: Any = importlib.import_module("tomllib")
        except ImportError:  # Python 3.10
            try:
                tomllib = importlib.import_module("tomli")
            except ImportError:
                raise ConfigError("reading TOML on Python 3.10 needs tomli: pip install tomli") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("reading YAML needs PyYAML: pip install pyyaml (or use a .toml file)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        data = {} if data is None else data
    else:
        raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table of option names and values, got {type(data).__name__}")
    return data


def config_key(action: argparse.Action) -> str:
    """An option's name in a config file: its (first) long flag without the dashes, '_' for '-'
    (`--max-ops-per-query` is `max_ops_per_query`); an option with no long flag goes by its dest."""
    long = next((o for o in action.option_strings if o.startswith("--")), None)
    return long[2:].replace("-", "_") if long else action.dest


def _file_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.dest not in INTERNAL and a.dest != argparse.SUPPRESS]


def apply_config_file(parser: argparse.ArgumentParser, path: str | Path) -> dict[str, Any]:
    """Make a config file's values the defaults of `parser` (a command's parser), after checking that
    each key is one of its options and each value has the option's type. Returns the values by dest.
    A key is the option's `config_key`; the Python field name of a knob whose flag differs from it
    (`max_operations_per_query`) is read too, as `--print-config` wrote it before."""
    data = read_config_file(path)
    options = _file_options(parser)
    actions = {config_key(a): a for a in options}
    for action in options:
        actions.setdefault(action.dest, action)
    names = {key: key.replace("-", "_") if isinstance(key, str) else key for key in data}
    unknown = sorted(str(key) for key, name in names.items() if name not in actions)
    if unknown:
        example = ", ".join(sorted(config_key(a) for a in options)[:5])
        raise ConfigError(
            f"{path}: unknown option {', '.join(unknown)}; the keys are the option names of "
            f"`{parser.prog}` (flags without the dashes, '_' for '-'), e.g. {example}"
        )
    values: dict[str, Any] = {}
    for key, name in names.items():
        action = actions[name]
        if action.dest in values:
            raise ConfigError(f"{path}: {config_key(action)} is given twice (as {key} too); keep one")
        values[action.dest] = _coerce(path, config_key(action), data[key], action)
    parser.set_defaults(**values)
    return values


def _coerce(path: str | Path, name: str, value: Any, action: argparse.Action) -> Any:
    """A file value checked against its option: repeatable options take a list, typed ones their type."""
    repeatable = isinstance(action, argparse._AppendAction) or getattr(action, "kind", None) == "append"
    flag = action.option_strings[0] if action.option_strings else name
    if repeatable:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{path}: {name} ({flag}) takes text or a list of text, got {value!r}")
        return tuple(items) if getattr(action, "kind", None) == "append" else list(items)
    if value is None:  # an option that may be unset; the others have a value without which they cannot run
        if action.default is None:
            return None
        raise ConfigError(f"{path}: {name} ({flag}) takes a value (default {action.default!r}); leave it out for that")
    if action.nargs == "+":  # values: a list, or one value alone (as `--seeds 3` is one)
        items = value if isinstance(value, list) else [value]
        if not items:
            raise ConfigError(f"{path}: {name} ({flag}) takes one value or more, got none")
        return tuple(_coerce_one(path, name, item, action, flag) for item in items)
    if action.nargs == 0 or getattr(action, "kind", None) == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {name} ({flag}) takes true or false, got {value!r}")
        return value
    return _coerce_one(path, name, value, action, flag)


def _coerce_one(path: str | Path, name: str, value: Any, action: argparse.Action, flag: str) -> Any:
    kind = action.type or str
    if kind not in (int, float, str):  # a number in a range (`common.positive_int`, `seed_value`, `share`, ...)
        takes = getattr(kind, "takes", int)  # what the type reads: a whole number unless it says float
        if isinstance(value, bool) or not isinstance(value, (int, float) if takes is float else int):
            raise ConfigError(f"{path}: {name} ({flag}) takes {_TYPE_WORDS[takes]}, got {value!r}")
        try:
            return kind(str(value))  # type: ignore[operator]  # argparse types its `type` loosely
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{path}: {name} ({flag}) takes {exc}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind in (int, float, str) and (isinstance(value, bool) or not isinstance(value, kind)):
        raise ConfigError(f"{path}: {name} ({flag}) takes {_TYPE_WORDS[kind]}, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{path}: {name} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text"}


def resolved_options(args: argparse.Namespace, *configs: Any) -> dict[str, Any]:
    """Every option of the command as it will run, by `config_key`, in a form `--config` reads back:
    the plain options from `args`, each knob field from the built `configs` (so hints filled in show),
    and the instruction from a config's template."""
    options = [a for a in _file_options(args._config_parser) if hasattr(args, a.dest)]
    values = {a.dest: getattr(args, a.dest) for a in options}
    for config in configs:
        for field in knob_fields(type(config)):
            if field.name in values:
                values[field.name] = getattr(config, field.name)
        if "instruction" in values and hasattr(config, "template"):
            values["instruction"] = config.template.instruction
    return {config_key(a): values[a.dest] for a in options}


def print_config(values: dict[str, Any], fmt: str = "toml") -> str:
    """`values` as a config file `--config` reads back (None values, which TOML cannot hold, are
    written as comments and left to their defaults)."""
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    if fmt == "json":
        return json.dumps(plain, indent=2, ensure_ascii=False)
    if fmt == "yaml":
        try:
            import yaml
        except ImportError:
            raise ConfigError("printing YAML needs PyYAML: pip install pyyaml (or --print-config toml)") from None
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).rstrip("\n")
    lines = []
    for key, value in plain.items():
        lines.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{value!r} cannot be written to a config file")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"{value!r} ({type(value).__name__}) cannot be written to a config file")
