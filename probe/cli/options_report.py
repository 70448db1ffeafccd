"""`probe report`'s engine options (kept apart from probe.cli.main, which is near its size cap)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_engine_options(report: argparse.ArgumentParser) -> None:
    engine = report.add_argument_group("engine", "where the aggregation runs (docs/report.md, Beyond one machine)")
    engine.add_argument("--engine", choices=("duckdb", "spark"), default="duckdb",
                        help="DuckDB, embedded (default), or Apache Spark (pip install 'kz-probe[spark]')")  # fmt: skip
    engine.add_argument("--memory-limit", default="1GB", metavar="SIZE",
                        help="DuckDB's memory limit (e.g. 1GB, 500MB); what does not fit spills to a temporary "
                        "folder, removed at the end (default 1GB)")  # fmt: skip
    engine.add_argument("--spark-master", default="local[*]", metavar="URL",
                        help="Spark's master: local[*] (this machine) or a cluster (spark://host:7077)")  # fmt: skip
    engine.add_argument("--spark-exchange", type=Path, metavar="DIR",
                        help="where Spark hands the measurements over as Parquet (default a temporary folder; on a "
                        "cluster, a folder every node sees at the same path)")  # fmt: skip
