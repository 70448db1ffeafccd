"""Reading results files back, for `probe show` and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from probe.results.files import open_text


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read a results file; a line that is not a record names its place."""
    records = []
    with open_text(path) as handle:  # plain, .gz or .zst, as `--compress` writes them
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
