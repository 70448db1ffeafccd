"""Finding and opening results files: plain, gzip or zstd JSON Lines, and their re-judged copies.

`probe analyze` writes `NAME.analyzed-<UTC time>.jsonl` beside `NAME.jsonl`; a folder can then hold
both. Readers that want the history as judged now (the report) take the newest re-judged copy in
place of its original, so that no measurement is counted twice; the others (re-judging, upload)
take the originals only.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import TextIO

from probe.vocabulary.errors import InputError

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
REJUDGED = ".analyzed-"
_REJUDGED_NAME = re.compile(r"^(?P<stem>.+)\.analyzed-\d{8}T\d{6}Z\.jsonl$")


class ResultsPathError(InputError):
    """A path with no results files; the message names it."""


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in SUFFIXES[::-1]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def results_files(paths: list[Path], rejudged: str = "prefer") -> list[Path]:
    """Every results file under the given files and folders, in a stable order.

    `rejudged`: "prefer" takes, in a folder, the newest re-judged copy in place of its original;
    "skip" takes the originals only. A file named on the command line is always taken."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += _choose(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)), rejudged)
        elif path.is_file():
            found.append(path)
        else:
            raise ResultsPathError(f"{path}: no such file or folder")
    if not found:
        raise ResultsPathError(f"no results files ({', '.join(SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def _choose(files: list[Path], rejudged: str) -> list[Path]:
    originals = [p for p in files if REJUDGED not in p.name]
    if rejudged == "skip":
        return originals
    newest: dict[tuple[Path, str], Path] = {}
    for path in files:
        match = _REJUDGED_NAME.match(path.name)
        if match is not None:
            newest[(path.parent, match["stem"])] = path  # sorted: the last is the newest
    chosen = [newest.get((p.parent, stem_of(p)), p) for p in originals]
    orphans = set(newest.values()) - set(chosen)  # re-judged copies whose original is gone
    return sorted({*chosen, *orphans})


def open_text(path: Path, errors: str = "strict") -> TextIO:
    """A results file as text, decompressed as its name says."""
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8", errors=errors)
    if path.name.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.open(path, "rb"), encoding="utf-8", errors=errors)
    return open(path, encoding="utf-8", errors=errors)  # noqa: SIM115 - closed by the caller
