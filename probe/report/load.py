"""Reading a fleet's results into DuckDB: one scan of every file, the small columns kept.

DuckDB reads JSON Lines directly (plain, `.gz` or `.zst`), in parallel, projecting only the fields
the report needs; the bulky observations are read once, and only a finding's evidence is kept. A
line that is not a record, or a file that cannot be read, is counted and named with its place;
records of a newer schema are refused with a clear message; nothing else is lost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from probe.results.files import ResultsPathError, open_text, results_files
from probe.vocabulary.errors import InputError

READABLE_VERSIONS = (1, 2)
MAX_PLACES = 20  # skipped lines named one by one; the rest are counted

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
    "analysis": "JSON",
    "observations": "JSON",
}
FINDINGS = ("dns", "tcp", "tls", "tls_mitm", "http")

# One row per measurement. The evidence columns are filled only where a finding needs them.
_SELECT = """
SELECT
    filename AS file,
    schema_version,
    measurement_id,
    run_id,
    coalesce(probe_id, 'run:' || run_id) AS probe_id,
    try_strptime(measurement_start_time, '%Y-%m-%dT%H:%M:%S.%fZ') AS time,
    target.host AS target,
    target.input AS target_input,
    target.category AS category,
    CASE WHEN regexp_matches(upper(coalesce(network.asn, '')), '^(AS)?[0-9]+$')
         THEN 'AS' || regexp_replace(upper(network.asn), '^AS', '') ELSE network.asn END AS network,
    network.as_name AS as_name,
    network.country AS country,
    network.region AS place,
    blocking,
    confidence,
    anomalies,
    interceptor.catalog AS interceptor_catalog,
    interceptor.catalog_id AS catalog_id,
    interceptor.name AS interceptor_name,
    interceptor.issuer AS issuer,
    interceptor.matched_by AS matched_by,
    blockpage.id AS blockpage_id,
    blockpage.name AS blockpage_name,
    blockpage.matched AS blockpage_matched,
    CASE WHEN blocking IN ('tls_mitm', 'local_interception')
         THEN json_extract(analysis, '$.tls.certificates[*].sha256_der')::VARCHAR END AS chain_sha256,
    CASE WHEN blocking IN ('tls_mitm', 'local_interception')
         THEN json_extract(analysis, '$.tls.certificates[*].sha256_spki')::VARCHAR END AS chain_spki,
    CASE WHEN blocking IN ('tls_mitm', 'local_interception')
         THEN interceptor.matched_certificate END AS matched_certificate,
    CASE WHEN blocking = 'dns' THEN json_extract(observations, '$.dns.system.addresses')::VARCHAR END AS answers,
    CASE WHEN blocking = 'dns' THEN json_extract(observations, '$.dns.control.addresses')::VARCHAR END
        AS control_answers,
    CASE WHEN blocking IN ('tls', 'tcp') THEN json_extract(observations, '$.tls_handshakes')::VARCHAR END
        AS handshakes,
    CASE WHEN blocking IN ('tcp') THEN json_extract(observations, '$.tcp_connect')::VARCHAR END AS connects,
    json_extract(analysis, '$.redirect_hop')::VARCHAR AS redirect_hop,
    CASE WHEN blocking IN ('tcp', 'tls', 'tls_mitm') THEN json_extract(analysis, '$.forensics')::VARCHAR END
        AS forensics
FROM read_json({files}, format = 'newline_delimited', columns = {columns}, ignore_errors = true,
               filename = true, maximum_object_size = 67108864)
"""


class ReportInputError(InputError):
    """No readable input: the message names the path."""


@dataclass(frozen=True)
class Filters:
    since: date | None = None
    until: date | None = None  # inclusive
    network: str | None = None  # "AS9198" or "9198"
    target: str | None = None
    all_confidence: bool = False

    @staticmethod
    def for_month(month: str) -> tuple[date, date]:
        """`YYYY-MM` as its first and last day."""
        try:
            first = datetime.strptime(month + "-01", "%Y-%m-%d").date()
        except ValueError:
            raise ValueError(f"--month {month!r}: expected YYYY-MM") from None
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        return first, following - timedelta(days=1)


@dataclass
class Problems:
    """What could not be read, with places: the report says how many and where."""

    skipped_lines: int = 0
    places: list[str] = field(default_factory=list)
    unreadable_files: list[str] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # schema_version -> records refused
    older: int = 0  # schema version 1: no `confidence` yet
    duplicates: int = 0  # the same measurement_id read more than once (x.jsonl beside x.jsonl.gz)
    offline: int = 0  # measurements made with no network, no internet or behind a captive portal

    def messages(self) -> list[str]:
        found = []
        if self.skipped_lines:
            shown = "; ".join(self.places[:MAX_PLACES])
            more = "" if len(self.places) <= MAX_PLACES else f"; and {len(self.places) - MAX_PLACES} more"
            found.append(f"{self.skipped_lines} lines are not records and were skipped: {shown}{more}")
        for path in self.unreadable_files:
            found.append(f"{path}: the file could not be read and was skipped")
        for version, count in sorted(self.refused.items()):
            found.append(
                f"{count} records of schema_version {version} were refused: this probe reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade it to read them)"
            )
        if self.offline:
            found.append(
                f"{self.offline} measurements were made offline (no network, no internet, or behind a captive "
                "portal): they say nothing about any site, and count as neither blocked nor reachable"
            )
        if self.duplicates:
            found.append(
                f"{self.duplicates} records appeared more than once (the same measurement_id, in several "
                "files: a log beside its compressed copy, say) and were counted once"
            )
        if self.older:
            found.append(
                f"{self.older} records of schema_version 1 carry no confidence and count as unconfirmed; "
                "`probe analyze` re-judges them"
            )
        return found


def input_files(paths: list[Path]) -> list[Path]:
    """Every results file to read: in a folder, a re-judged copy stands for its original."""
    try:
        return results_files(paths, rejudged="prefer")
    except ResultsPathError as exc:
        raise ReportInputError(str(exc)) from None


def _bad_lines(path: Path, limit: int) -> list[str]:
    """The places of lines that are not records (only read for a file DuckDB found some in)."""
    places = []
    with open_text(path, errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                places.append(f"{path}:{number}: not JSON ({exc.msg})")
            else:
                if not isinstance(record, dict) or "schema_version" not in record:
                    places.append(f"{path}:{number}: not a probe record")
            if len(places) >= limit:
                break
    return places


def _sql_list(files: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in files) + "]"


def _columns() -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in _COLUMNS.items()) + "}"


def load(con: duckdb.DuckDBPyConnection, paths: list[Path], filters: Filters) -> Problems:
    """Create the table `m`: one row per readable measurement that passes the filters."""
    files = input_files(paths)
    problems = Problems()
    readable = list(files)
    try:
        con.execute(f"CREATE OR REPLACE TABLE raw AS {_SELECT.format(files=_sql_list(files), columns=_columns())}")
    except duckdb.Error:
        # A file DuckDB cannot read at all (a broken archive): find it, skip it, keep the others.
        readable = []
        for path in files:
            try:
                con.execute(f"SELECT count(*) FROM ({_SELECT.format(files=_sql_list([path]), columns=_columns())})")
            except duckdb.Error:
                problems.unreadable_files.append(str(path))
            else:
                readable.append(path)
        if not readable:
            raise ReportInputError("no results file could be read") from None
        con.execute(f"CREATE OR REPLACE TABLE raw AS {_SELECT.format(files=_sql_list(readable), columns=_columns())}")
    bad = con.execute(
        "SELECT file, count(*) FROM raw WHERE schema_version IS NULL OR time IS NULL OR target IS NULL "
        "GROUP BY file ORDER BY file"
    ).fetchall()
    for path, count in bad:
        problems.skipped_lines += count
        if len(problems.places) < MAX_PLACES:
            problems.places += _bad_lines(Path(path), MAX_PLACES - len(problems.places))
    for version, count in con.execute(
        f"SELECT schema_version, count(*) FROM raw WHERE schema_version NOT IN {READABLE_VERSIONS} "
        "GROUP BY schema_version"
    ).fetchall():
        problems.refused[int(version)] = count
    problems.older = con.execute("SELECT count(*) FROM raw WHERE schema_version = 1").fetchone()[0]  # type: ignore[index]
    where, parameters = _where(filters)
    readable_rows = f"schema_version IN {READABLE_VERSIONS} AND time IS NOT NULL AND target IS NOT NULL"
    problems.duplicates = con.execute(
        "SELECT count(*) - count(DISTINCT measurement_id) FROM raw "
        f"WHERE {readable_rows} AND measurement_id IS NOT NULL"
    ).fetchone()[0]  # type: ignore[index]
    con.execute(
        "CREATE OR REPLACE TABLE m AS SELECT * EXCLUDE (schema_version), "
        "coalesce(confidence, 'unconfirmed') = 'confirmed' AS confirmed, CAST(time AS DATE) AS day FROM raw "
        f"WHERE {readable_rows} {where} "
        # One row per measurement, however many files hold it.
        "QUALIFY measurement_id IS NULL OR row_number() OVER (PARTITION BY measurement_id ORDER BY file) = 1",
        parameters,
    )
    con.execute("DROP TABLE raw")
    problems.offline = con.execute("SELECT count(*) FROM m WHERE blocking = 'offline'").fetchone()[0]  # type: ignore[index]
    return problems


def _where(filters: Filters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    parameters: list[Any] = []
    if filters.since is not None:
        clauses.append("AND time >= ?")
        parameters.append(datetime.combine(filters.since, datetime.min.time()))
    if filters.until is not None:
        clauses.append("AND time < ?")
        parameters.append(datetime.combine(filters.until + timedelta(days=1), datetime.min.time()))
    if filters.network is not None:
        clauses.append("AND network = ?")
        parameters.append("AS" + filters.network.upper().removeprefix("AS"))
    if filters.target is not None:
        clauses.append("AND target = ?")
        parameters.append(filters.target.lower().rstrip("."))
    return " ".join(clauses), parameters
