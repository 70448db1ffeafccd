"""The configuration file: any `probe run` option, and the upload's, in TOML.

    # ~/.config/kz-probe/config.toml (or $XDG_CONFIG_HOME/kz-probe/config.toml, or --config FILE)
    targets = "/srv/probe/targets.txt"
    control_resolver = "https://1.1.1.1/dns-query"
    helper = ["https://helper.example.org/"]
    helper_token = "..."
    region = "Astana"
    deadline = "50m"
    [upload]
    to = "s3://monitoring/kz"
    endpoint = "https://s3.example.org"

Keys are the options' long names with `_` for `-` (`--dns-window` is `dns_window`). The command
line wins over the file, the file over the defaults. An unknown key, or a value of the wrong kind,
is an error that names the file, the line and the key. Which options exist, and what kind of value
each takes, is read from the command line's own parser, so the two can never disagree.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UPLOAD_KEYS = {"to": str, "endpoint": str, "region_name": str}


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, the line and the key."""


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kz-probe" / "config.toml"


@dataclass(frozen=True)
class Option:
    key: str
    kind: str  # "str", "path", "int", "float", "bool", "list", "paths", "choice"
    choices: tuple[str, ...] = ()
    convert: Any = None  # the command line's own conversion of a text value (a duration, say)


def options_of(parser: argparse.ArgumentParser) -> dict[str, Option]:
    """Every long option of a (sub)parser, with the kind of value it takes."""
    found = {}
    for action in parser._actions:  # argparse keeps no public list of them
        longs = [o for o in action.option_strings if o.startswith("--")]
        # The upload's place and endpoint live in the file's [upload] table, shared with `probe upload`.
        if not longs or action.dest in ("help", "config", "upload_to", "upload_endpoint"):
            continue
        key = longs[0][2:].replace("-", "_")
        if isinstance(action, argparse._StoreTrueAction):
            kind = "bool"
        elif isinstance(action, argparse._AppendAction):
            kind = "paths" if action.type is Path else "list"
        elif action.choices:
            kind = "choice"
        elif action.type is Path:
            kind = "path"
        else:
            kind = getattr(action.type, "kind", "str")
        convert = action.type if kind == "str" and callable(action.type) else None
        found[key] = Option(key, kind, tuple(action.choices or ()), convert)
    return found


@dataclass
class Settings:
    """Values from the file, with the line each was set on."""

    path: Path | None
    values: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)


def _line_of(text: str, key: str, table: str | None = None) -> int:
    """The line a key is set on (tomllib gives values, not places)."""
    in_table = table is None
    pattern = re.compile(rf'^\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*=')
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_table = table is not None and stripped.strip("[] ") == table
            continue
        if in_table and pattern.match(line):
            return number
    return 0


def _check(value: Any, option: Option, where: str) -> Any:
    kind = option.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if kind in ("int", "float"):
        wrong_kind = not isinstance(value, int | float) or (kind == "int" and not isinstance(value, int))
        if isinstance(value, bool) or wrong_kind:
            raise ConfigError(f"{where}: expected {'a whole number' if kind == 'int' else 'a number'}")
        if value <= 0:
            raise ConfigError(f"{where}: must be greater than 0")
        return value
    if kind in ("list", "paths"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return [Path(v).expanduser() for v in value] if kind == "paths" else value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    if kind == "choice" and value not in option.choices:
        raise ConfigError(f"{where}: expected one of {', '.join(option.choices)}")
    if option.convert is not None:
        try:
            return option.convert(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return Path(value).expanduser() if kind == "path" else value


def load_settings(path: Path | None, options: dict[str, Option], required: bool) -> Settings:
    """Read and check a configuration file; a missing default file is no configuration."""
    if path is None:
        path = default_path()
        required = False
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Settings(None)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"{path}:{found.group(1) if found else '?'}: not valid TOML: {exc}") from None
    settings = Settings(path)
    for key, value in document.items():
        if key == "upload" and isinstance(value, dict):
            for name, item in value.items():
                line = _line_of(text, name, "upload")
                if name not in UPLOAD_KEYS or not isinstance(item, str):
                    known = ", ".join(UPLOAD_KEYS)
                    raise ConfigError(f"{path}:{line}: upload.{name}: unknown key, or not a string (known: {known})")
                settings.upload[name] = item
            continue
        line = _line_of(text, key)
        where = f"{path}:{line}: {key}"
        if key not in options:
            raise ConfigError(f"{where}: unknown key (see `probe config show` for the keys)")
        settings.values[key] = _check(value, options[key], where)
        settings.lines[key] = line
    return settings


def merge(
    args: argparse.Namespace, explicit: set[str], settings: Settings, options: dict[str, Option]
) -> dict[str, str]:
    """Fill `args` from the file where the command line said nothing; return where each came from."""
    sources = {}
    for key in options:
        if key in explicit:
            sources[key] = "command line"
        elif key in settings.values:
            setattr(args, key, settings.values[key])
            sources[key] = f"{settings.path}:{settings.lines[key]}"
        else:
            sources[key] = "default"
    for name in ("to", "endpoint"):
        dest = f"upload_{name}" if hasattr(args, f"upload_{name}") else name
        if getattr(args, dest, None) is None and name in settings.upload:
            setattr(args, dest, settings.upload[name])
            sources[f"upload.{name}"] = f"{settings.path} [upload]"
    return sources


def explicit_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The options the command line gave: parsed again with every default suppressed."""
    actions = parser._actions
    saved = [action.default for action in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in zip(actions, saved, strict=True):
            action.default = default
    return set(vars(given))
