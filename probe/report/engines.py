"""The engines the report's queries (`queries.py`) run on: DuckDB, embedded, the default; Spark
(`spark.py`) for a fleet beyond one machine. An engine reads the results files into `raw`, keeps
tables and views, and returns rows; everything else is the same code.

DuckDB's memory is bounded: `memory_limit` (1 GB unless told), its tables in a database file in a
temporary folder and what does not fit spilled there (`temp_directory`); the folder is removed when
the engine is closed (or the process ends).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import duckdb

import probe.report.queries as queries
from probe.report.localtime import literal
from probe.results.files import open_text

DEFAULT_MEMORY_LIMIT = "1GB"
ENGINES = ("duckdb", "spark")

_COLUMNS = {
    "schema_version": "INTEGER",
    "measurement_id": "VARCHAR",
    "run_id": "VARCHAR",
    "probe_id": "VARCHAR",
    "measurement_start_time": "VARCHAR",
    "target": "STRUCT(input VARCHAR, host VARCHAR, url VARCHAR, category VARCHAR)",
    "network": "STRUCT(asn VARCHAR, as_name VARCHAR, country VARCHAR, region VARCHAR)",
    "anomalies": "VARCHAR[]",
    "blocking": "VARCHAR",
    "confidence": "VARCHAR",
    "interceptor": "STRUCT(catalog VARCHAR, catalog_id VARCHAR, name VARCHAR, country VARCHAR, issuer VARCHAR, "
    "matched_by VARCHAR, matched_certificate INTEGER)",
    "blockpage": "STRUCT(id VARCHAR, name VARCHAR, country VARCHAR, matched VARCHAR)",
    "rejudged": 'STRUCT("at" VARCHAR, rules_version VARCHAR)',
    "analysis": "JSON",
    "observations": "JSON",
    "network_state": "STRUCT(state VARCHAR)",  # issue 22: the network's state while measured
}


class Engine(Protocol):
    dialect: queries.Dialect

    def read(self, files: list[str]) -> list[tuple[str, str]]:
        """Create `raw` (queries.project over every line of every file); return the files that could
        not be read at all, with why."""
        ...

    def table(self, name: str, sql: str) -> None: ...

    def view(self, name: str, sql: str) -> None: ...

    def drop(self, name: str) -> None: ...

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...

    def hand_over(self, con: duckdb.DuckDBPyConnection) -> None:
        """Make `m` and `coverage` readable in `con`, for the summary and the outputs."""
        ...

    def close(self) -> None: ...


def _sql_list(files: list[str]) -> str:
    return "[" + ", ".join(literal(p) for p in files) + "]"


def _read_json(files: list[str]) -> str:
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _COLUMNS.items()) + "}"
    return (
        f"read_json({_sql_list(files)}, format = 'newline_delimited', columns = {columns}, ignore_errors = true, "
        "filename = true, maximum_object_size = 67108864)"
    )


def file_problem(path: Path, error: Exception) -> str:
    """What is wrong with a file an engine could not read, in words (a broken archive, say)."""
    try:
        with open_text(path) as handle:
            for _ in handle:
                pass
    except Exception as exc:  # noqa: BLE001 - any failure is the file's problem, said in words
        return f"{type(exc).__name__}: {exc}"
    return str(error).splitlines()[0].replace(str(path), path.name)[:200]


class DuckDBEngine:
    """The report's tables in DuckDB. With `memory_limit`, the tables live in a database file in a
    temporary folder (so that the buffer manager can evict them) and sorts and joins spill there."""

    dialect = queries.DUCKDB

    def __init__(self, con: duckdb.DuckDBPyConnection, memory_limit: str | None = DEFAULT_MEMORY_LIMIT) -> None:
        self.con = con
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        if memory_limit:
            self._folder = tempfile.TemporaryDirectory(prefix="probe-report-")
            try:
                con.execute(f"SET memory_limit = {literal(memory_limit)}")
            except duckdb.Error as exc:
                raise ValueError(f"--memory-limit {memory_limit!r}: {str(exc).splitlines()[0]}") from None
            con.execute(f"SET temp_directory = {literal(self._folder.name)}")
            con.execute("SET preserve_insertion_order = false")  # what keeps a large scan's memory flat
            self._before = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            self._alias = "report_" + Path(self._folder.name).name.replace("-", "_")
            con.execute(f"ATTACH {literal(str(Path(self._folder.name) / 'report.duckdb'))} AS {self._alias}")
            con.execute(f"USE {self._alias}")

    def read(self, files: list[str]) -> list[tuple[str, str]]:
        try:
            self.table("raw", queries.project(self.dialect, _read_json(files)))
            return []
        except duckdb.Error:
            pass
        readable, unreadable = [], []
        for path in files:  # a file DuckDB cannot read at all: find it, name it, keep the others
            try:
                self.con.execute(f"SELECT count(*) FROM ({queries.project(self.dialect, _read_json([path]))})")
            except duckdb.Error as exc:
                unreadable.append((path, file_problem(Path(path), exc)))
            else:
                readable.append(path)
        if readable:
            self.table("raw", queries.project(self.dialect, _read_json(readable)))
        return unreadable

    def table(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")

    def view(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    def hand_over(self, con: duckdb.DuckDBPyConnection) -> None:
        assert con is self.con

    def close(self) -> None:
        if self._folder is not None:
            try:
                self.con.execute(f"USE {self._before}")
                self.con.execute(f"DETACH {self._alias}")
            except duckdb.Error:
                pass
            self._folder.cleanup()
            self._folder = None


def engine_for(con: duckdb.DuckDBPyConnection | Engine) -> Engine:
    """An engine as given, or DuckDB's over a connection given (unbounded: the caller set it up)."""
    return DuckDBEngine(con, memory_limit=None) if isinstance(con, duckdb.DuckDBPyConnection) else con
