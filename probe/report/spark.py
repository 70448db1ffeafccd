"""The report's aggregation on Apache Spark: `probe report --engine spark --spark-master URL`.

The same queries as DuckDB's (`queries.py`, in Spark's dialect) over Spark's JSON reader; the
episode sweep is the same Python (`events.py`), fed by Spark's rows. The measurements (`m`) and
the coverage are then written as Parquet for DuckDB to make the page's tables from.

`local[*]` runs Spark in this process's JVM; a cluster's master URL (`spark://host:7077`) runs it
there. On a cluster, the results and `--spark-exchange` (where the measurements are handed over)
must be on storage that the driver and every executor see at the same path (a shared mount).
PySpark is an optional extra (`pip install 'kz-probe[spark]'`) and needs a Java runtime (17 or later).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import duckdb

import probe.report.queries as queries
from probe.report.engines import file_problem
from probe.report.localtime import literal
from probe.vocabulary.errors import InputError

_SCHEMA = (
    "schema_version INT, measurement_id STRING, run_id STRING, probe_id STRING, measurement_start_time STRING, "
    "target STRUCT<input: STRING, host: STRING, url: STRING, category: STRING>, "
    "network STRUCT<asn: STRING, as_name: STRING, country: STRING, region: STRING>, "
    "network_state STRUCT<state: STRING>, "  # issue 22
    "anomalies ARRAY<STRING>, blocking STRING, confidence STRING, "
    "interceptor STRUCT<catalog: STRING, catalog_id: STRING, name: STRING, country: STRING, issuer: STRING, "
    "matched_by: STRING, matched_certificate: INT>, "
    "blockpage STRUCT<id: STRING, name: STRING, country: STRING, matched: STRING>, "
    "rejudged STRUCT<at: STRING, rules_version: STRING>, analysis STRING, observations STRING"
)


class SparkUnavailable(InputError):
    """PySpark or Java is missing: said in words, with the install command."""


class SparkEngine:
    dialect = queries.SPARK

    def __init__(self, master: str = "local[*]", exchange: Path | None = None, partitions: int = 4) -> None:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise SparkUnavailable(
                "--engine spark needs PySpark: pip install 'kz-probe[spark]' (and a Java runtime, 17 or later)"
            ) from None
        self._owned = SparkSession.getActiveSession() is None  # a session the caller made is left running
        try:
            self.spark = (
                SparkSession.builder.master(master)
                .appName("probe-report")
                .config("spark.ui.enabled", "false")
                .config("spark.ui.showConsoleProgress", "false")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.timestampType", "TIMESTAMP_NTZ")  # UTC instants, as DuckDB's TIMESTAMP
                .config("spark.sql.shuffle.partitions", str(partitions))
                .getOrCreate()
            )
        except Exception as exc:  # noqa: BLE001 - no Java, a master that does not answer: said in words
            raise SparkUnavailable(f"--engine spark: Spark did not start ({str(exc).splitlines()[0][:300]})") from None
        self.spark.sparkContext.setLogLevel("ERROR")
        self._folder = None if exchange else tempfile.TemporaryDirectory(prefix="probe-report-spark-")
        self.exchange = exchange or Path(self._folder.name)  # type: ignore[union-attr]
        self._cached: dict[str, Any] = {}

    def _records(self, files: list[str]) -> Any:
        from pyspark.sql.functions import expr

        frame = self.spark.read.schema(_SCHEMA).option("mode", "PERMISSIVE").json(files)
        return frame.withColumn("filename", expr("url_decode(regexp_replace(input_file_name(), '^file:(//)?', ''))"))

    def read(self, files: list[str]) -> list[tuple[str, str]]:
        try:
            self._records(files).createOrReplaceTempView("records")
            self.table("raw", queries.project(self.dialect, "records"))
            return []
        except Exception:  # noqa: BLE001, S110 - a file Spark cannot read: found one by one below
            pass
        readable, unreadable = [], []
        for path in files:
            try:
                self._records([path]).count()
            except Exception as exc:  # noqa: BLE001 - the file's problem, said in words
                unreadable.append((path, file_problem(Path(path), exc)))
            else:
                readable.append(path)
        if readable:
            self._records(readable).createOrReplaceTempView("records")
            self.table("raw", queries.project(self.dialect, "records"))
        return unreadable

    def table(self, name: str, sql: str) -> None:
        from pyspark import StorageLevel

        frame = self.spark.sql(sql).persist(StorageLevel.MEMORY_AND_DISK)
        frame.count()  # computed now, once: what it was made from can go
        self.drop(name)
        frame.createOrReplaceTempView(name)
        self._cached[name] = frame

    def view(self, name: str, sql: str) -> None:
        self.spark.sql(sql).createOrReplaceTempView(name)

    def drop(self, name: str) -> None:
        frame = self._cached.pop(name, None)
        if frame is not None:
            frame.unpersist()
        self.spark.catalog.dropTempView(name)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.spark.sql(sql).collect()]

    def hand_over(self, con: duckdb.DuckDBPyConnection) -> None:
        measurements, coverage = self.exchange / "m", self.exchange / "coverage"
        self.spark.sql("SELECT * FROM m").drop("file").write.mode("overwrite").parquet(str(measurements))
        self.spark.table("coverage").coalesce(1).write.mode("overwrite").parquet(str(coverage))
        con.execute(
            f"CREATE OR REPLACE VIEW m AS SELECT * FROM read_parquet({literal(str(measurements / '*.parquet'))})"
        )
        con.execute(
            f"CREATE OR REPLACE TABLE coverage AS SELECT {', '.join(queries.COVERAGE_COLUMNS)} FROM "
            f"read_parquet({literal(str(coverage / '*.parquet'))}) ORDER BY network_key, day"
        )

    def close(self) -> None:
        for name in list(self._cached):
            self.drop(name)
        if self._owned:
            self.spark.stop()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
