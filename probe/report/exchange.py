"""The exchange format: Parquet partitioned by local day and network (Hive layout), as DuckDB,
Spark and ClickHouse read it.

    OUT/measurements/day=2020-12-06/network_key=AS9198/part-0.parquet
    OUT/events/day=2020-12-06/network_key=AS9198/part-0.parquet   (an episode, under its first day)

`network_key` is the network's key, as everywhere in the report: the AS (`AS9198`), or
`unknown:<probe_id>` for records that name none (`network` is then empty). No column holds a
local path (a measurement's file is not exported). docs/report.md shows how each engine reads it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import duckdb

from probe.report.localtime import literal
from probe.report.queries import KEPT
from probe.report.summary import Report

_OPTIONS = "FORMAT PARQUET, PARTITION_BY (day, network_key), FILENAME_PATTERN 'part-{i}', OVERWRITE_OR_IGNORE"
MEASUREMENT_COLUMNS = [c for c in KEPT if c != "file"] + ["confirmed", "network_key", "tz", "local_time", "day"]


def to_parquet(con: duckdb.DuckDBPyConnection, report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT {', '.join(MEASUREMENT_COLUMNS)} FROM m) TO {literal(str(out / 'measurements'))} ({_OPTIONS})"
    )
    rows = [
        {
            **{k: v for k, v in episode.as_dict().items() if k != "evidence"},
            "evidence": json.dumps(episode.evidence, ensure_ascii=False, default=str),
            "day": episode.first_day.isoformat(),
        }
        for episode in report.episodes
    ]
    if not rows:
        return
    with tempfile.TemporaryDirectory(prefix="probe-events-") as folder:
        events = Path(folder) / "events.json"
        events.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        con.execute(
            f"COPY (SELECT * REPLACE (CAST(day AS DATE) AS day) FROM read_json({literal(str(events))}, "
            f"format = 'array')) TO {literal(str(out / 'events'))} ({_OPTIONS})"
        )
