"""Writing results: one file per run, one whole line per record.

Lines are written whole with a single `write` on an append-only descriptor, so that an
interrupted run keeps every finished record and never leaves half a line.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class ResultsWriter:
    """Appends records to `DIR/<time>-<run id>.jsonl`, one whole line per `write`."""

    def __init__(self, directory: Path, run_id: str, started: datetime) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.path = directory / f"{stamp}-{run_id[:8]}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        # A signal arriving mid-line is held until the line is whole.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            view = memoryview(line)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def close(self) -> None:
        os.close(self._fd)
