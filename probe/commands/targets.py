"""`probe targets`: which list `probe run` measures, and checking list files before a run.

`probe run` without `--targets` (and no `targets` in the configuration file) reads `./targets.txt`
when the current directory has one, and otherwise the project's list shipped inside the package
(`probe/data/targets.txt`), so that a volunteer who installed the probe anywhere can run it.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from probe.commands import EXIT_OK, EXIT_USAGE

LOCAL = Path("targets.txt")
MAX_ERRORS_SHOWN = 50


def packaged_targets() -> Path:
    """The project's own list, inside the installed package."""
    return Path(str(resources.files("probe") / "data" / "targets.txt"))


def default_targets() -> Path:
    """What `probe run` reads when no list is named: ./targets.txt if there is one, else the packaged list."""
    return LOCAL if LOCAL.exists() else packaged_targets()


def file_errors(path: Path) -> tuple[int, list[str]]:
    """The number of good targets in a list file, and every error as `file:line: ...`. A plain list
    is checked line by line, so that every bad line is named at once; a CSV stops at its first."""
    from probe.targets import TargetError, load_targets, parse_lines

    name = str(path)
    try:
        targets = load_targets(path)
    except TargetError as exc:
        first = str(exc)
    else:
        return len(targets), []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0, [first]  # load_targets has said why
    if path.suffix.lower() == ".csv" or (lines and lines[0].lower().startswith("url,")):
        return 0, [first]
    good, errors = 0, []
    for number, line in enumerate(lines, start=1):
        try:
            good += len(parse_lines([line], name))
        except TargetError as exc:
            errors.append(f"{name}:{number}:" + str(exc)[len(f"{name}:1:") :])
    return good, errors or [first]


def command_targets(args: argparse.Namespace) -> int:
    if not args.files:
        packaged = packaged_targets()
        count, errors = file_errors(packaged)
        for error in errors:  # a broken installation
            print(f"probe: {error}", file=sys.stderr)
        print(f"the list shipped with the probe: {packaged} ({count} targets)")
        if LOCAL.exists():
            print(f"probe run here reads ./{LOCAL} instead (--targets FILE names another list)")
        else:
            print(f"probe run here reads it (no ./{LOCAL}; --targets FILE names another list)")
        return EXIT_USAGE if errors else EXIT_OK
    code = EXIT_OK
    for path in args.files:
        count, errors = file_errors(path)
        for error in errors[:MAX_ERRORS_SHOWN]:
            print(f"probe: {error}", file=sys.stderr)
        if len(errors) > MAX_ERRORS_SHOWN:
            print(f"probe: {path}: {len(errors) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
        if errors:
            code = EXIT_USAGE
        else:
            print(f"{path}: {count} targets")
    return code
