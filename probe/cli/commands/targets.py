"""`probe targets`: which list `probe run` measures, checking list files before a run, and building
a list from the ones monitoring groups publish (`--from FILE... --out FILE`: Citizen Lab test-list
CSVs, OONI Run v2 link descriptors, plain lists; merged by normalised URL, the first category wins).

`probe run` without `--targets` (and no `targets` in the configuration file) reads `./targets.txt`
when the current directory has one, and otherwise the project's list shipped inside the package
(`probe/data/targets.txt`), so that a volunteer who installed the probe anywhere can run it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from probe.cli.commands import EXIT_OK, EXIT_USAGE, fail

if TYPE_CHECKING:  # probe.vocabulary.targets (and idna) are imported when a list is read, not when `probe` starts
    from probe.vocabulary.targets import Target

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
    from probe.loaders.targets import load_targets
    from probe.vocabulary.targets import TargetError, parse_lines

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
    if args.sources or args.out is not None or args.skip_bad:
        return command_update(args)
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


# `probe targets --from FILE... --out FILE`: a list built from the lists monitoring groups publish.

CITIZEN_LAB_HEADER = ("url", "category_code", "category_description", "date_added", "source", "notes")
OONI_TEST = "web_connectivity"  # the OONI Run v2 nettest whose `inputs` are URLs


@dataclass
class Entry:
    target: Target
    extra: tuple[str, ...] = ("", "", "", "")  # category_description, date_added, source, notes


@dataclass
class Source:
    name: str
    kind: str  # "Citizen Lab CSV", "OONI Run v2", "plain list"
    entries: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _kind(path: Path, text: str) -> str:
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return "OONI Run v2"
    first = text.split("\n", 1)[0].strip().lower()
    return "Citizen Lab CSV" if path.suffix.lower() == ".csv" or first.startswith("url,") else "plain list"


def _category(code: str) -> str | None:
    from probe.vocabulary.targets import CATEGORY_CODES

    upper = code.strip().upper()
    if upper and upper not in CATEGORY_CODES:
        raise ValueError(f"unknown Citizen Lab category code {code!r}")
    return upper or None


def _read_csv(source: Source, lines: list[str]) -> None:
    """Every row of a Citizen Lab test list, each bad one named by its line."""
    from probe.vocabulary.targets import parse_target

    reader = csv.reader(lines)
    try:
        for row in reader:
            number = reader.line_num
            if not "".join(row).strip() or (number == 1 and row[0].strip().lower() == "url"):
                continue
            try:
                url = row[0].strip()
                if "://" not in url:
                    raise ValueError(f"expected a URL in the first column, got {url!r}")
                category = _category(row[1]) if len(row) > 1 else None
                extra = tuple((row[2:6] + [""] * 4)[:4])
                source.entries.append(Entry(parse_target(url, category, number), extra))
            except ValueError as exc:
                source.errors.append(f"{source.name}:{number}: {exc}")
    except csv.Error as exc:
        source.errors.append(f"{source.name}:{reader.line_num}: not CSV ({exc})")


def _read_plain(source: Source, lines: list[str]) -> None:
    from probe.vocabulary.targets import TargetError, parse_lines

    for number, line in enumerate(lines, start=1):
        try:
            source.entries.extend(Entry(replace(t, source_line=number)) for t in parse_lines([line], source.name))
        except TargetError as exc:
            source.errors.append(f"{source.name}:{number}:" + str(exc)[len(f"{source.name}:1:") :])


def _ooni_inputs(source: Source, descriptor: object) -> None:
    """The `web_connectivity` inputs of an OONI Run v2 link descriptor (ooni/spec bk-005), with the
    category codes of `inputs_extra`; other nettests measure no URLs and are passed over."""
    from probe.vocabulary.targets import parse_target

    prefix = ""
    if isinstance(descriptor, dict) and "nettests" not in descriptor and isinstance(descriptor.get("descriptor"), dict):
        descriptor, prefix = descriptor["descriptor"], "descriptor."  # as the OONI API's older answers wrap it
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("nettests"), list):
        source.errors.append(f"{source.name}: {prefix}nettests: expected an OONI Run v2 descriptor's list of nettests")
        return
    for n, nettest in enumerate(descriptor["nettests"]):
        where = f"{source.name}: {prefix}nettests[{n}]"
        if not isinstance(nettest, dict) or not isinstance(nettest.get("test_name"), str):
            source.errors.append(f"{where}.test_name: expected a nettest with a test_name")
            continue
        if nettest["test_name"] != OONI_TEST:
            continue
        inputs, extras = nettest.get("inputs") or [], nettest.get("inputs_extra") or []
        if not isinstance(inputs, list) or not isinstance(extras, list):
            source.errors.append(f"{where}.inputs: expected lists of inputs and inputs_extra")
            continue
        for i, url in enumerate(inputs):
            try:
                if not isinstance(url, str) or "://" not in url:
                    raise ValueError(f"expected a URL, got {url!r}")
                extra = extras[i] if i < len(extras) else {}
                code = extra.get("category_code") if isinstance(extra, dict) else None
                if code is not None and not isinstance(code, str):
                    raise ValueError(f"inputs_extra[{i}].category_code: expected a string, got {code!r}")
                source.entries.append(Entry(parse_target(url.strip(), _category(code or ""), i + 1)))
            except ValueError as exc:
                source.errors.append(f"{where}.inputs[{i}]: {exc}")


def read_source(path: Path) -> Source:
    """One downloaded list, every entry parsed and every bad one named (`FILE:LINE: ...`, or
    `FILE: key path: ...` in a JSON descriptor)."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return Source(name, _kind(path, ""), errors=[f"{name}: no such file"])
    except UnicodeDecodeError as exc:
        return Source(name, _kind(path, ""), errors=[f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"])
    except OSError as exc:
        return Source(name, _kind(path, ""), errors=[f"{name}: cannot read: {exc.strerror}"])
    source = Source(name, _kind(path, text))
    if source.kind == "OONI Run v2":
        try:
            descriptor = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            line = exc.lineno if isinstance(exc, json.JSONDecodeError) else 1
            source.errors.append(f"{name}:{line}: not JSON ({exc})")
        else:
            _ooni_inputs(source, descriptor)
    elif source.kind == "Citizen Lab CSV":
        _read_csv(source, text.splitlines())
    else:
        _read_plain(source, text.splitlines())
    if not source.entries and not source.errors:
        where = f"nettests: no {OONI_TEST} inputs" if source.kind == "OONI Run v2" else "no targets in the file"
        source.errors.append(f"{name}: {where}")
    return source


def merge(sources: list[Source]) -> tuple[list[Entry], int]:
    """Every entry once, by its normalised URL, in the order read; the first category wins."""
    seen: dict[str, Entry] = {}
    for source in sources:
        for entry in source.entries:
            seen.setdefault(entry.target.url, entry)
    return list(seen.values()), sum(len(s.entries) for s in sources) - len(seen)


def render(entries: list[Entry], as_csv: bool) -> str:
    """A Citizen Lab-style CSV, or the plain format (`URL [CATEGORY]`): both read by `probe run`."""
    out = io.StringIO()
    if as_csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CITIZEN_LAB_HEADER)
        writer.writerows((e.target.url, e.target.category or "", *e.extra) for e in entries)
    else:
        out.write(f"# {len(entries)} targets, written by `probe targets --from`\n")
        out.writelines(f"{e.target.url} {e.target.category or ''}".rstrip() + "\n" for e in entries)
    return out.getvalue()


def write_atomically(path: Path, text: str) -> None:
    """The whole list or none of it: a run never reads a half-written file."""
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def command_update(args: argparse.Namespace) -> int:
    if args.files or args.out is None or not args.sources:
        return fail("--from FILE... needs --out FILE, and no list files to check besides")
    sources = [read_source(path) for path in args.sources]
    errors = [error for source in sources for error in source.errors]
    for error in errors[:MAX_ERRORS_SHOWN]:
        print(f"probe: {error}", file=sys.stderr)
    if len(errors) > MAX_ERRORS_SHOWN:
        print(f"probe: {len(errors) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
    for source in sources:
        print(f"{source.name}: {len(source.entries)} targets ({source.kind})")
    entries, duplicates = merge(sources)
    if errors and not args.skip_bad:
        print(f"bad entries: {len(errors)}; {args.out} not written (fix them, or --skip-bad to leave them out)")
        return EXIT_USAGE
    if not entries:
        return fail(f"no targets to write: {args.out} not written")
    try:
        write_atomically(args.out, render(entries, args.out.suffix.lower() == ".csv"))
    except OSError as exc:
        return fail(f"{args.out}: cannot write: {exc.strerror}")
    left_out = f", bad entries left out: {len(errors)}" if errors else ""
    print(f"{args.out}: {len(entries)} targets written; {duplicates} duplicates dropped{left_out}")
    return EXIT_OK
