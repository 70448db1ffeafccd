"""Reading a fleet's results into DuckDB: one scan of every file, the small columns kept.

DuckDB reads JSON Lines directly (plain, `.gz` or `.zst`), in parallel, projecting only the fields
the report needs; the bulky observations are read once, and only a finding's evidence is kept. Every
measurement is one row, however many files hold it (the newest re-judged copy wins). Days are the
network's local days (`localtime`). A line that is not a record, or a file that cannot be read, is
counted and named with its place (relative to the folder given: no local path leaves the machine);
filters that match nothing are errors that say what there is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from probe.report.localtime import literal, local_time_sql, zone_exists, zone_for
from probe.results.files import ResultsPathError, open_text, results_files
from probe.vocabulary.errors import InputError

READABLE_VERSIONS = (1, 2)
MAX_PLACES = 20  # skipped lines named one by one; the rest are counted
MAX_NAMED = 30  # networks or targets named in an error

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
}
FINDINGS = ("dns", "tcp", "tls", "tls_mitm", "http")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

# One row per line read. The evidence columns are filled only where a finding needs them.
_SELECT = """
SELECT
    filename AS file,
    schema_version,
    measurement_id,
    run_id,
    coalesce(probe_id, 'run:' || run_id) AS probe_id,
    try_strptime(measurement_start_time, '%Y-%m-%dT%H:%M:%S.%fZ') AS time,
    rejudged.at AS rejudged_at,
    target.host AS target,
    target.input AS target_input,
    target.category AS category,
    CASE WHEN regexp_matches(upper(coalesce(network.asn, '')), '^(AS)?[0-9]+$')
         THEN 'AS' || regexp_replace(upper(network.asn), '^AS', '') ELSE network.asn END AS network,
    network.as_name AS as_name,
    upper(network.country) AS country,
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
_READABLE = f"schema_version IN {READABLE_VERSIONS} AND time IS NOT NULL AND target IS NOT NULL"


class ReportInputError(InputError):
    """No readable input, or filters that match nothing: the message says what there is."""


@dataclass(frozen=True)
class Filters:
    since: date | None = None
    until: date | None = None  # inclusive
    network: str | None = None  # "AS9198", "9198" or the AS name ("Kazakhtelecom")
    target: str | None = None
    all_confidence: bool = False
    tz: str | None = None  # every network's days in this zone, instead of its country's
    month: str | None = None  # YYYY-MM: the monthly entry, with counts since the start of the year

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
            more = "" if self.skipped_lines <= MAX_PLACES else f"; and {self.skipped_lines - MAX_PLACES} more"
            found.append(f"{self.skipped_lines} lines are not records and were skipped: {shown}{more}")
        found += self.unreadable_files
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
                f"{self.duplicates} copies of records read more than once (the same measurement_id in several "
                "files: a log beside its compressed copy, or a re-judged copy beside another) were counted once; "
                "the newest judgement wins"
            )
        if self.older:
            found.append(
                f"{self.older} records of schema_version 1 carry no confidence and count as unconfirmed; "
                "`probe analyze` re-judges them"
            )
        return found


def input_files(paths: list[Path]) -> dict[str, str]:
    """Every results file to read, with the name it is given in the report: relative to the folder
    named on the command line (a file named directly: its own name), never a local path."""
    try:
        files = results_files(paths, rejudged="prefer")
    except ResultsPathError as exc:
        raise ReportInputError(str(exc)) from None
    names: dict[str, str] = {}
    for path in files:
        shown = path.name
        for given in paths:
            if given.is_dir() and path.is_relative_to(given):
                shown = path.relative_to(given).as_posix()
                break
        names[str(path)] = shown
    return names


def _line_problem(line: str) -> str | None:
    """Why a line is not a readable record, by the same tests the query applies; None if it is one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(record, dict) or not isinstance(record.get("schema_version"), int):
        return "not a probe record"
    if record["schema_version"] not in READABLE_VERSIONS:
        return None  # counted apart, as refused
    try:
        datetime.strptime(str(record.get("measurement_start_time")), TIME_FORMAT)
    except ValueError:
        return "no readable measurement_start_time"
    target = record.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("host"), str):
        return "no target host"
    return None


def _bad_lines(path: Path, shown: str, problems: Problems) -> None:
    """Count and name the lines that are not records (only for a file the query found some in)."""
    with open_text(path, errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            problem = _line_problem(line)
            if problem is not None:
                problems.skipped_lines += 1
                if len(problems.places) < MAX_PLACES:
                    problems.places.append(f"{shown}:{number}: {problem}")


def _file_problem(path: Path, error: duckdb.Error) -> str:
    """What is wrong with a file DuckDB could not read, in words (a broken archive, say)."""
    try:
        with open_text(path) as handle:
            for _ in handle:
                pass
    except Exception as exc:  # noqa: BLE001 - any failure is the file's problem, said in words
        return f"{type(exc).__name__}: {exc}"
    return str(error).splitlines()[0].replace(str(path), path.name)[:200]


def _sql_list(files: list[str]) -> str:
    return "[" + ", ".join(literal(p) for p in files) + "]"


def _columns() -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in _COLUMNS.items()) + "}"


def _read(con: duckdb.DuckDBPyConnection, names: dict[str, str], problems: Problems) -> None:
    """Create `raw`: every line of every readable file; unreadable files are named with their problem."""
    files = list(names)
    try:
        con.execute(f"CREATE OR REPLACE TABLE raw AS {_SELECT.format(files=_sql_list(files), columns=_columns())}")
        return
    except duckdb.Error:
        pass
    readable = []
    for path in files:  # a file DuckDB cannot read at all: find it, name it, keep the others
        try:
            con.execute(f"SELECT count(*) FROM ({_SELECT.format(files=_sql_list([path]), columns=_columns())})")
        except duckdb.Error as exc:
            problems.unreadable_files.append(
                f"{names[path]}: the file could not be read and was skipped ({_file_problem(Path(path), exc)})"
            )
        else:
            readable.append(path)
    if not readable:
        raise ReportInputError("no results file could be read: " + "; ".join(problems.unreadable_files))
    con.execute(f"CREATE OR REPLACE TABLE raw AS {_SELECT.format(files=_sql_list(readable), columns=_columns())}")


def load(con: duckdb.DuckDBPyConnection, paths: list[Path], filters: Filters) -> Problems:
    """Create `allm` (every readable measurement, once, with its local day) and the view `m` (those
    that pass the filters). Filters that match nothing raise, naming what there is."""
    if filters.since and filters.until and filters.since > filters.until:
        raise ReportInputError(f"--since {filters.since} is after --until {filters.until}: no day is in between")
    if filters.tz and not zone_exists(filters.tz):
        raise ReportInputError(f"--tz {filters.tz!r}: not a time zone (e.g. Asia/Almaty, Europe/Moscow, UTC)")
    names = input_files(paths)
    problems = Problems()
    _read(con, names, problems)
    for path, _count in con.execute(
        f"SELECT file, count(*) FROM raw WHERE schema_version IS NULL OR "
        f"(schema_version IN {READABLE_VERSIONS} AND (time IS NULL OR target IS NULL)) GROUP BY file ORDER BY file"
    ).fetchall():
        _bad_lines(Path(path), names.get(path, Path(path).name), problems)
    for version, count in con.execute(
        f"SELECT schema_version, count(*) FROM raw WHERE schema_version NOT IN {READABLE_VERSIONS} "
        "GROUP BY schema_version"
    ).fetchall():
        problems.refused[int(version)] = count
    problems.older = _one(con, "SELECT count(*) FROM raw WHERE schema_version = 1")
    problems.duplicates = _one(
        con, f"SELECT count(*) - count(DISTINCT measurement_id) FROM raw WHERE {_READABLE} AND measurement_id NOT NULL"
    )
    countries = [r[0] for r in con.execute(f"SELECT DISTINCT country FROM raw WHERE {_READABLE}").fetchall()]
    zones = {country: zone_for(country, filters.tz) for country in countries}
    span = con.execute(f"SELECT min(time), max(time) FROM raw WHERE {_READABLE}").fetchone()
    zone_sql, offset_sql = local_time_sql(zones, span[0] if span else None, span[1] if span else None)
    con.execute(
        "CREATE OR REPLACE TABLE allm AS SELECT *, CAST(local_time AS DATE) AS day FROM ("
        f"SELECT * EXCLUDE (schema_version, rejudged_at), {offset_sql} AS local_time FROM ("
        "SELECT *, coalesce(confidence, 'unconfirmed') = 'confirmed' AS confirmed, "
        f"coalesce(network, 'unknown:' || probe_id) AS network_key, {zone_sql} AS tz FROM raw WHERE {_READABLE} "
        # One row per measurement, however many files hold it: the newest judgement wins.
        "QUALIFY measurement_id IS NULL OR row_number() OVER (PARTITION BY measurement_id "
        "ORDER BY rejudged_at DESC NULLS LAST, file) = 1))"
    )
    con.execute("DROP TABLE raw")
    if not _one(con, "SELECT count(*) FROM allm"):
        raise ReportInputError(
            "no records could be read: " + " | ".join(problems.messages() or ["the files are empty"])
        )
    con.execute(f"CREATE OR REPLACE VIEW m AS SELECT * FROM allm WHERE {where(filters)}")
    _check_matches(con, filters)
    problems.offline = _one(con, "SELECT count(*) FROM m WHERE blocking = 'offline'")
    return problems


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def network_clause(network: str) -> str:
    """A network by AS number (`AS9198`, `9198`) or by its AS name, as records give it."""
    asn = "AS" + network.upper().removeprefix("AS") if network.upper().removeprefix("AS").isdigit() else network
    return f"(network_key = {literal(asn)} OR lower(as_name) = lower({literal(network)}))"


def where(filters: Filters, period: bool = True) -> str:
    """The filters as SQL over `allm` (days are local days); without `period`, network and target only."""
    since, until = (filters.since, filters.until) if period else (None, None)
    clauses = ["TRUE"]
    if since is not None:
        clauses.append(f"day >= DATE '{since.isoformat()}'")
    if until is not None:
        clauses.append(f"day <= DATE '{until.isoformat()}'")
    if filters.network is not None:
        clauses.append(network_clause(filters.network))
    if filters.target is not None:
        clauses.append(f"target = {literal(filters.target.lower().rstrip('.'))}")
    return " AND ".join(clauses)


def _named(rows: list[tuple[Any, ...]]) -> str:
    shown = [" ".join(str(v) for v in row if v) for row in rows[:MAX_NAMED]]
    return ", ".join(shown) + (f" and {len(rows) - MAX_NAMED} more" if len(rows) > MAX_NAMED else "")


def _check_matches(con: duckdb.DuckDBPyConnection, filters: Filters) -> None:
    """Filters that match nothing are an error that names what the records hold."""
    if filters.network is not None and not _one(
        con, f"SELECT count(*) FROM allm WHERE {network_clause(filters.network)}"
    ):
        networks = con.execute(
            "SELECT network_key, '(' || any_value(as_name) || ')' FROM allm GROUP BY 1 ORDER BY count(*) DESC"
        ).fetchall()
        raise ReportInputError(
            f"--network {filters.network}: no records of that network; there are: {_named(networks)}"
        )
    if filters.target is not None and not _one(
        con, f"SELECT count(*) FROM allm WHERE {where(Filters(target=filters.target))}"
    ):
        targets = con.execute("SELECT DISTINCT target FROM allm ORDER BY 1").fetchall()
        raise ReportInputError(f"--target {filters.target}: no records of that target; there are: {_named(targets)}")
    if not _one(con, "SELECT count(*) FROM m"):
        first, last = con.execute(
            f"SELECT min(day), max(day) FROM allm WHERE {where(filters, period=False)}"
        ).fetchone() or (None, None)
        asked = f"from {filters.since or 'the start'} to {filters.until or 'the end'}"
        chosen = " for the network and target asked" if filters.network or filters.target else ""
        raise ReportInputError(f"no records {asked} (local days){chosen}; the records{chosen} cover {first} to {last}")
