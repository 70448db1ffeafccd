"""The results format: one JSON object per target, one line each, in one file per run.

Lines are written whole with a single `write` on an append-only descriptor, so that an
interrupted run keeps every finished record and never leaves half a line. docs/results.md and
probe/data/record.schema.json describe the format.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.targets import Target
from probe.verdict import Judgement

SCHEMA_VERSION = 1


def utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def target_fields(target: Target) -> dict[str, Any]:
    return {
        "input": target.input,
        "host": target.host,
        "port": target.port,
        "scheme": target.scheme,
        "url": target.url,
        "category": target.category,
        "line": target.source_line,
    }


@dataclass(frozen=True)
class RunContext:
    """What every record of one run shares."""

    run_id: str
    network: dict[str, Any]
    reference: dict[str, Any]


def build_record(
    run: RunContext,
    target: Target,
    started: datetime,
    observations: dict[str, Any] | None,
    judgement: Judgement,
    error: str | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "measurement_id": uuid.uuid4().hex,
        "run_id": run.run_id,
        "measurement_start_time": utc_timestamp(started),
        "software": {"name": SOFTWARE_NAME, "version": __version__},
        "target": target_fields(target),
        "network": run.network,
        "reference": run.reference,
        "observations": observations,
        "analysis": {"tls": judgement.tls},
        "anomalies": judgement.anomalies,
        "blocking": judgement.blocking,
        "interceptor": judgement.interceptor,
        "blockpage": judgement.blockpage,
    }
    if error is not None:
        record["error"] = error
    return record


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


def load_schema() -> dict[str, Any]:
    return json.loads((resources.files("probe") / "data" / "record.schema.json").read_text(encoding="utf-8"))


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read a results file; a line that is not a record names its place."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON record ({exc.msg})") from None
            if not isinstance(record, dict) or "schema_version" not in record:
                raise ValueError(f"{path}:{number}: not a probe record")
            records.append(record)
    return records
