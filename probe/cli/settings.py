"""The configuration file: any `probe run` option, and the upload's, in TOML.

    # ~/.config/kz-probe/config.toml (or $XDG_CONFIG_HOME/kz-probe/config.toml, or --config FILE)
    targets = "/srv/probe/targets.txt"
    control_resolver = "https://1.1.1.1/dns-query"
    helper = ["https://helper.example.org/"]
    helper_token = "..."
    region = "Astana"
    deadline = "50m"
    consent = true
    [upload]
    to = "s3://monitoring/kz"
    endpoint = "https://s3.example.org"

Keys are the options' long names with `_` for `-` (`--dns-window` is `dns_window`), except that
`--yes` is `consent = true` (consent to the text `probe run` shows, probe.cli.consent). The command
line wins over the file, the file over the defaults. An unknown key, or a value of the wrong kind,
is an error that names the file, the line and the key: a switch is a TOML boolean (`forensics =
false`, never the string "false"), a number is a TOML number that the option's own check accepts
(finite, above 0, within its bound), and a text value passes the option's own check too (a
resolver URL, a duration with its unit, an AS number, a country code). Which options exist, and
what kind of value each takes and how it is checked, is read from the command line's own parser,
so the two can never disagree.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.vocabulary.errors import ConfigError

UPLOAD_KEYS = {"to": str, "endpoint": str, "region_name": str}
RENAMED = {"yes": "consent"}  # options whose key in the file is not their long name


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
        key = action.dest  # the long name with `_` for `-`, but for `--yes`: `consent = true`
        if isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction):
            kind = "bool"
        elif isinstance(action, argparse._AppendAction):
            kind = "paths" if action.type is Path else "list"
        elif action.choices:
            kind = "choice"
        elif action.type is Path:
            kind = "path"
        else:
            kind = getattr(action.type, "kind", "str")
        convert = action.type if kind in ("str", "int", "float") and callable(action.type) else None
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


def _converted(value: Any, option: Option, where: str) -> Any:
    """The command line's own check and conversion of a value (bounds, a resolver URL, a duration)."""
    try:
        return option.convert(str(value))
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check(value: Any, option: Option, where: str) -> Any:
    kind = option.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false (a TOML boolean, without quotes), got {value!r}")
        return value
    if kind in ("int", "float"):
        wrong_kind = not isinstance(value, int | float) or (kind == "int" and not isinstance(value, int))
        if isinstance(value, bool) or wrong_kind:
            raise ConfigError(f"{where}: expected {'a whole number' if kind == 'int' else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        if value <= 0:
            raise ConfigError(f"{where}: must be greater than 0")
        return _converted(value, option, where) if option.convert is not None else value
    if kind in ("list", "paths"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return [Path(v).expanduser() for v in value] if kind == "paths" else value
    numbers_too = getattr(option.convert, "numbers_too", False)  # `asn = 9198` as well as "AS9198"
    if not isinstance(value, str) and not (numbers_too and isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {getattr(option.convert, 'expects', 'a string')}, got {value!r}")
    if kind == "choice" and value not in option.choices:
        raise ConfigError(f"{where}: expected one of {', '.join(option.choices)}")
    if option.convert is not None:
        return _converted(value, option, where)
    return Path(str(value)).expanduser() if kind == "path" else value


def read_settings(path: Path | None, options: dict[str, Option], required: bool) -> tuple[Settings, list[str]]:
    """Read and check a configuration file: the good values, and every problem (`file:line: key: ...`).
    A missing default file is no configuration."""
    if path is None:
        path = default_path()
        required = False
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings(None), [f"{path}: no such file"] if required else []
    except (OSError, UnicodeDecodeError) as exc:
        return Settings(None), [f"{path}: cannot read: {exc}"]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        return Settings(None), [f"{path}:{found.group(1) if found else '?'}: not valid TOML: {exc}"]
    settings, problems = Settings(path), []
    for key, value in document.items():
        if key == "upload" and isinstance(value, dict):
            for name, item in value.items():
                line = _line_of(text, name, "upload")
                if name not in UPLOAD_KEYS or not isinstance(item, str):
                    known = ", ".join(UPLOAD_KEYS)
                    problems.append(f"{path}:{line}: upload.{name}: unknown key, or not a string (known: {known})")
                else:
                    settings.upload[name] = item
            continue
        line = _line_of(text, key)
        where = f"{path}:{line}: {key}"
        if key not in options:
            near = [RENAMED[key]] if key in RENAMED else difflib.get_close_matches(key, list(options), n=1, cutoff=0.75)
            hint = f"did you mean {near[0]!r}? " if near else ""
            problems.append(f"{where}: unknown key ({hint}`probe config show` lists every key)")
            continue
        try:
            settings.values[key] = _check(value, options[key], where)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        settings.lines[key] = line
    return settings, problems


def load_settings(path: Path | None, options: dict[str, Option], required: bool) -> Settings:
    """Read and check a configuration file; ConfigError names every problem in it."""
    settings, problems = read_settings(path, options, required)
    if problems:
        raise ConfigError(*problems)
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


# --- option values: each check serves the command line (argparse's `type`) and the file alike -------

DAY = 86400.0
# ISO 3166-1 alpha-2: every officially assigned code (as tzdata's iso3166.tab lists them).
_COUNTRY_TEXT = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW "
    "BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI "
    "FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN "
    "IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME "
    "MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF "
    "PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE "
    "YT ZA ZM ZW"
)
_COUNTRIES = frozenset(_COUNTRY_TEXT.split())


def positive(kind: type, most: float | None = None) -> Any:
    """A number above 0 (and at most `most`): `--timeout 10`, `concurrency = 8`; never nan or inf."""
    name = "a whole number" if kind is int else "a number"

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {name}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}: {text!r}")
        return value

    convert.kind = kind.__name__  # type: ignore[attr-defined]  # what a file's value must be
    return convert


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(text: str) -> float:
    """A duration with its unit: `90s`, `50m`, `2h` (a bare number is refused: seconds or minutes?)."""
    text = text.strip()
    unit = text[-1:].lower()
    if unit not in DURATION_UNITS:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (a number and its unit: 90s, 50m or 2h)")
    try:
        seconds = float(text[:-1]) * DURATION_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (a number and its unit: 90s, 50m or 2h)") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite duration greater than 0: {text!r}")
    if seconds > 7 * DAY:
        raise argparse.ArgumentTypeError(f"must be at most a week (168h): {text!r}")
    return seconds


duration.expects = 'a duration in quotes, with its unit ("90s", "50m", "2h")'  # type: ignore[attr-defined]


def as_number(text: str) -> str:
    """An autonomous system's number, `AS9198` or `9198` (1 to 4294967294): written `AS9198`."""
    digits = text.strip().upper().removeprefix("AS")
    if not (digits.isascii() and digits.isdigit()) or not 0 < int(digits) < 2**32 - 1:
        raise argparse.ArgumentTypeError(f"not an AS number: {text!r} (AS9198 or 9198, from 1 to 4294967294)")
    return f"AS{int(digits)}"


as_number.expects = 'an AS number ("AS9198" or 9198)'  # type: ignore[attr-defined]
as_number.numbers_too = True  # type: ignore[attr-defined]


def country_code(text: str) -> str:
    """An ISO 3166-1 alpha-2 country code (`KZ`; `kz` is read as `KZ`)."""
    code = text.strip().upper()
    if code not in _COUNTRIES:
        raise argparse.ArgumentTypeError(f"not an ISO 3166 two-letter country code: {text!r} (Kazakhstan is KZ)")
    return code


country_code.expects = 'a two-letter country code in quotes ("KZ")'  # type: ignore[attr-defined]
