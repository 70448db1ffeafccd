"""Writing results: one file per run, one whole line per record.

Lines are written whole with a single `write` on an append-only descriptor, so that an
interrupted run keeps every finished record and never leaves half a line.
"""

from __future__ import annotations

import os
import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


class ResultsWriter:
    """Appends records to `DIR/YYYY/MM/DD/<UTC time>-<run id>.jsonl`, one whole line per `write`."""

    def __init__(self, directory: Path, run_id: str, started: datetime) -> None:
        moment = started.astimezone(UTC)
        directory = directory / moment.strftime("%Y") / moment.strftime("%m") / moment.strftime("%d")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{run_id[:8]}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write_line(self, line: bytes) -> None:
        """One encoded record (`encode_record`, ending in a newline), written whole and synced."""
        # A signal arriving mid-line is held until the line is whole.
        mask = getattr(signal, "pthread_sigmask", None)  # not on Windows: there a line is written unmasked
        held = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask is not None else None
        try:
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        finally:
            if mask is not None and held is not None:
                mask(signal.SIG_SETMASK, held)

    def close(self) -> None:
        os.close(self._fd)


def encode_record(record: dict[str, Any]) -> bytes:
    """A record as one line of compact UTF-8 JSON with its newline (orjson: about ten times
    faster than the standard library, and the same JSON)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)


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
