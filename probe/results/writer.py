"""Writing results: one file per run, one whole line per record.

A line is written whole or not at all: an interrupted run keeps every finished record, and a full
disk (or a file size limit) never leaves half a line: the file is cut back to where the failed line
began, the error says so, and no line is written after it. One process writes a run's file at a
time (the recorder, or the run once the recorder is gone), so the size before a line is where it
begins. `encodable` and `unencodable_place` serve a record that JSON cannot carry (probe/recorder.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

_MEASUREMENT_ID = re.compile(rb'"measurement_id":"([0-9a-f]{32})"')
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson encodes
_DEPTH = 200  # orjson refuses deeper nesting (254)
_HELD = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGALRM") if hasattr(signal, name)}


class ResultsWriter:
    """Appends records to `DIR/YYYY/MM/DD/<UTC time>-<run id>.jsonl`, one whole line per `write`."""

    def __init__(self, directory: Path, run_id: str, started: datetime) -> None:
        moment = started.astimezone(UTC)
        directory = directory / moment.strftime("%Y") / moment.strftime("%m") / moment.strftime("%d")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{run_id[:8]}.jsonl"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.failure: OSError | None = None  # the write that failed: no line is written after it

    def fileno(self) -> int:
        return self._fd

    def write_line(self, line: bytes) -> None:
        """One encoded record (`encode_record`, ending in a newline), written whole and synced, or
        not at all (`write_lines`, a group of one)."""
        self.write_lines([line])

    def write_group(self, lines: Sequence[bytes]) -> int:
        """Records written with one sync (`write_lines`); if they do not all fit (a full disk), as
        many as fit, each alone, and `failure` says why the next did not: how many were written."""
        if self.failure is not None:
            return 0
        try:
            self.write_lines(lines)
            return len(lines)
        except OSError:
            self.failure = None  # the group is cut back: its lines once more, one by one
        for written, line in enumerate(lines):
            try:
                self.write_line(line)
            except OSError:
                return written
        return len(lines)

    def sync(self) -> None:
        """What was written so far on the disk (another process's lines: a recorder that died)."""
        os.fsync(self._fd)

    def write_lines(self, lines: Sequence[bytes]) -> None:
        """Encoded records, each whole, and one sync for them all (a group commit: a recorder that
        fell behind syncs once for what it caught up on, not once per record), or none of them: on
        an error (a full disk) the file is cut back to where the group began, and this and every
        later call raise the error, which names the file and says the run stopped."""
        if self.failure is not None:
            raise self.failure
        # A signal arriving mid-line is held until the lines are whole (SIGALRM: an orphaned recorder's end).
        mask = getattr(signal, "pthread_sigmask", None)  # not on Windows: there a line is written unmasked
        held = mask(signal.SIG_BLOCK, _HELD) if mask is not None else None
        try:
            start = os.fstat(self._fd).st_size
            try:
                for line in lines:
                    view = memoryview(line)
                    while view:  # one write, unless the disk filled up part way: then the error follows
                        written = os.write(self._fd, view)
                        if written == 0:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                        view = view[written:]
                os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, start)  # no half line, whatever follows
                self.failure = OSError(
                    exc.errno, f"{exc.strerror or exc}; the run stopped: every record before it is whole in {self.path}"
                )
                raise self.failure from exc
        finally:
            if mask is not None and held is not None:
                mask(signal.SIG_SETMASK, held)

    def cut_partial_line(self) -> None:
        """Cut the file back to its last whole line: a writer killed mid-line (the recorder
        process) may have left part of one, and the next line must not be appended to it."""
        size = end = os.fstat(self._fd).st_size
        while end > 0:
            chunk = os.pread(self._fd, min(end, 1 << 16), end - min(end, 1 << 16))
            if end == size and chunk.endswith(b"\n"):
                return
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                os.ftruncate(self._fd, end - len(chunk) + newline + 1)
                return
            end -= len(chunk)
        if size:
            os.ftruncate(self._fd, 0)

    def records_among(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        """The records already in the file whose `measurement_id` is one of `ids`, by id."""
        found: dict[str, dict[str, Any]] = {}
        if not ids:
            return found
        with self.path.open("rb") as lines:
            for line in lines:
                match = _MEASUREMENT_ID.search(line, 0, 256) or _MEASUREMENT_ID.search(line)
                if match is not None and match.group(1).decode() in ids:
                    with contextlib.suppress(orjson.JSONDecodeError):
                        found[match.group(1).decode()] = orjson.loads(line)
        return found

    def close(self) -> None:
        os.close(self._fd)


def encode_record(record: dict[str, Any]) -> bytes:
    """A record as one line of compact UTF-8 JSON with its newline (orjson: about ten times
    faster than the standard library, and the same JSON)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)


def unencodable_place(value: Any, place: str = "") -> str | None:
    """Where in `value` the first thing JSON cannot carry is, and what it is (an integer beyond 64
    bits, a lone surrogate, another type, nesting too deep), for the record's `error`; None if nothing."""
    if place.count(".") + place.count("[") > _DEPTH:
        return f"{place}: nested too deep"
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{place}.{key}" if place else str(key)
            found = unencodable_place(key, inner) if isinstance(key, str) else _unencodable_key(key, inner)
            found = found or unencodable_place(item, inner)
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        return next((f for n, item in enumerate(value) if (f := unencodable_place(item, f"{place}[{n}]"))), None)
    try:
        orjson.dumps(value)
    except TypeError:
        shown = repr(value)
        return f"{place}: {_what(value)} ({shown[:40]}{'...' if len(shown) > 40 else ''})"
    return None


def _unencodable_key(key: Any, place: str) -> str | None:
    try:
        orjson.dumps({key: None}, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return f"{place}: a key JSON cannot carry ({type(key).__name__})"
    return None


def _what(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return "an integer beyond 64 bits"
    if isinstance(value, str):
        return "text that is not UTF-8 (a lone surrogate)"
    return f"a value of type {type(value).__name__}"


def encodable(value: Any, depth: int = 0) -> Any:
    """A copy of `value` that JSON can carry: integers beyond 64 bits and anything else that is
    not JSON as text, lone surrogates escaped, nesting cut at a depth orjson accepts."""
    if depth > _DEPTH:
        return "[nested too deep]"
    if isinstance(value, dict):
        return {_key(key): encodable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(item, depth + 1) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    return encodable(repr(value), depth)


def _key(key: Any) -> str:
    return encodable(key) if isinstance(key, str) else str(key)


def compress(path: Path, method: str) -> Path:
    """Compress a finished results file (gzip or zstd), atomically: the plain file is removed only
    once the compressed one is whole on disk."""
    if method == "none":
        return path
    target = path.with_name(path.name + (".gz" if method == "gzip" else ".zst"))
    partial = target.with_name(target.name + ".partial")
    with path.open("rb") as source, partial.open("wb") as raw:
        if method == "gzip":
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
                shutil.copyfileobj(source, out)
        else:
            import zstandard

            with zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False) as out:
                shutil.copyfileobj(source, out)
        raw.flush()
        os.fsync(raw.fileno())
    partial.replace(target)
    path.unlink()
    return target
