"""Reading a fleet's results into an engine (DuckDB or Spark): one scan of every file, small columns kept.

The engine reads JSON Lines directly (plain, `.gz`; `.zst` with DuckDB), in parallel, projecting only the fields
the report needs (`queries.project`); the bulky observations are read once, and only a finding's evidence is kept. Every
measurement is one row, however many files hold it (the newest re-judged copy wins). Days are the
network's local days (`localtime`). A line that is not a record, or a file that cannot be read, is
counted and named with its place (relative to the folder given: no local path leaves the machine);
filters that match nothing are errors that say what there is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

import probe.report.queries as queries
from probe.report.engines import Engine, engine_for
from probe.report.localtime import literal, local_time_sql, zone_exists, zone_for
from probe.results.files import SUFFIXES, ResultsPathError, open_text, results_files
from probe.vocabulary.errors import InputError

READABLE_VERSIONS = (1, 2)
MAX_PLACES = 20  # skipped lines named one by one; the rest are counted
MAX_NAMED = 30  # networks or targets named in an error
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
FINDINGS = queries.FINDINGS
_READABLE = queries.READABLE


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
    set_aside: int = 0  # files not read: a re-judged copy of them (x.analyzed-<time>.jsonl) is read instead
    rejudged: int = 0  # measurements whose kept judgement is `probe analyze`'s
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
        if self.set_aside:
            found.append(
                f"{self.set_aside} {'file was' if self.set_aside == 1 else 'files were'} set aside: "
                "a re-judged copy of each (NAME.analyzed-<time>.jsonl, by `probe analyze`) was read in its place"
            )
        if self.rejudged:
            found.append(
                f"{self.rejudged} {'measurement was' if self.rejudged == 1 else 'measurements were'} re-judged by "
                "`probe analyze`: the newest judgement is the one counted"
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


def set_aside(paths: list[Path], chosen: list[Path]) -> int:
    """How many results files in the folders given are not read (a re-judged copy is, in their place)."""
    every = {
        p for given in paths if given.is_dir() for p in given.rglob("*") if p.is_file() and p.name.endswith(SUFFIXES)
    }
    return len(every - set(chosen))


def input_files(paths: list[Path], problems: Problems | None = None) -> dict[str, str]:
    """Every results file to read, with the name it is given in the report: relative to the folder
    named on the command line (a file named directly: its own name), never a local path. The files
    set aside for their re-judged copies are counted in `problems`."""
    try:
        files = results_files(paths, rejudged="prefer")
    except ResultsPathError as exc:
        raise ReportInputError(str(exc)) from None
    if problems is not None:
        problems.set_aside = set_aside(paths, files)
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


def _read(engine: Engine, names: dict[str, str], problems: Problems) -> None:
    """Create `raw`: every line of every readable file; unreadable files are named with their problem."""
    unreadable = engine.read(list(names))
    for path, problem in unreadable:
        problems.unreadable_files.append(f"{names[path]}: the file could not be read and was skipped ({problem})")
    if len(unreadable) == len(names):
        raise ReportInputError("no results file could be read: " + "; ".join(problems.unreadable_files))


def load(con: duckdb.DuckDBPyConnection | Engine, paths: list[Path], filters: Filters) -> Problems:
    """Create `allm` (every readable measurement, once, with its local day) and the view `m` (those
    that pass the filters), on DuckDB (a connection given) or another engine. Filters that match
    nothing raise, naming what there is."""
    if filters.since and filters.until and filters.since > filters.until:
        raise ReportInputError(f"--since {filters.since} is after --until {filters.until}: no day is in between")
    if filters.tz and not zone_exists(filters.tz):
        raise ReportInputError(f"--tz {filters.tz!r}: not a time zone (e.g. Asia/Almaty, Europe/Moscow, UTC)")
    engine = engine_for(con)
    problems = Problems()
    names = input_files(paths, problems)
    _read(engine, names, problems)
    for path, _count in engine.rows(
        f"SELECT file, count(*) FROM raw WHERE schema_version IS NULL OR "
        f"(schema_version IN {READABLE_VERSIONS} AND (time IS NULL OR target IS NULL)) GROUP BY file ORDER BY file"
    ):
        _bad_lines(Path(path), names.get(path, Path(path).name), problems)
    countries: set[str | None] = set()
    first = last = None
    for version, country, count, earliest, latest in engine.rows(
        f"SELECT schema_version, country, count(*), min(time), max(time) FROM raw WHERE schema_version IS NOT NULL "
        f"AND (schema_version NOT IN {READABLE_VERSIONS} OR ({_READABLE})) GROUP BY schema_version, country"
    ):
        if version not in READABLE_VERSIONS:
            problems.refused[int(version)] = problems.refused.get(int(version), 0) + count
            continue
        problems.older += count if version == 1 else 0
        countries.add(country)
        first = earliest if first is None else min(first, earliest)
        last = latest if last is None else max(last, latest)
    problems.duplicates = _one(
        engine,
        f"SELECT count(measurement_id) - count(DISTINCT measurement_id) FROM raw WHERE {_READABLE}",
    )
    problems.rejudged = _one(
        engine, f"SELECT count(DISTINCT measurement_id) FROM raw WHERE {_READABLE} AND rejudged_at IS NOT NULL"
    )
    zones = {country: zone_for(country, filters.tz) for country in countries}
    zone_sql, offset_sql = local_time_sql(zones, first, last)
    # One row per measurement, however many files hold it: the newest judgement wins.
    engine.table("allm", queries.deduplicated(engine.dialect, "raw", zone_sql, offset_sql))
    engine.drop("raw")
    if not _one(engine, "SELECT count(*) FROM allm"):
        raise ReportInputError(
            "no records could be read: " + " | ".join(problems.messages() or ["the files are empty"])
        )
    engine.view("m", f"SELECT * FROM allm WHERE {where(filters)}")
    _check_matches(engine, filters)
    problems.offline = _one(engine, "SELECT count(*) FROM m WHERE blocking = 'offline'")
    return problems


def _one(engine: Engine, sql: str) -> int:
    rows = engine.rows(sql)
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


_UNKNOWN = re.compile(r"^unknown(?: network)?[\s:]*\(?(?:probe\s+)?([0-9a-f]{4,32})\)?$", re.IGNORECASE)
UNKNOWN_LABEL = (
    "CASE WHEN network IS NULL THEN 'unknown network (probe ' || right(network_key, 8) || ')' ELSE network_key END"
)


def network_clause(network: str) -> str:
    """A network by AS number (`AS9198`, `9198`), by its AS name as records give it, or a probe with no
    AS recorded as the report names it (`unknown:0000000b`, `unknown 0000000b`: its id's first or
    last digits)."""
    unknown = _UNKNOWN.match(network.strip())
    if unknown:
        digits = unknown.group(1).lower()
        first, last = literal(f"unknown:{digits}%"), literal(f"unknown:%{digits}")
        return f"(network_key LIKE {first} OR network_key LIKE {last})"
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


def _check_matches(con: Engine, filters: Filters) -> None:
    """Filters that match nothing are an error that names what the records hold."""
    if filters.network is not None and not _one(
        con, f"SELECT count(*) FROM allm WHERE {network_clause(filters.network)}"
    ):
        networks = con.rows(
            f"SELECT max({UNKNOWN_LABEL}), '(' || max(as_name) || ')' FROM allm GROUP BY network_key "
            "ORDER BY count(*) DESC, network_key"
        )
        unknown = (
            " (a probe with no network: --network unknown:<its 8 digits>)"
            if any(str(row[0]).startswith("unknown network") for row in networks)
            else ""
        )
        raise ReportInputError(
            f"--network {filters.network}: no records of that network; there are: {_named(networks)}{unknown}"
        )
    if filters.target is not None and not _one(
        con, f"SELECT count(*) FROM allm WHERE {where(Filters(target=filters.target))}"
    ):
        targets = con.rows("SELECT DISTINCT target FROM allm ORDER BY target")
        raise ReportInputError(f"--target {filters.target}: no records of that target; there are: {_named(targets)}")
    if not _one(con, "SELECT count(*) FROM m"):
        first, last = (con.rows(f"SELECT min(day), max(day) FROM allm WHERE {where(filters, period=False)}") or
                       [(None, None)])[0]  # fmt: skip
        if first is None:  # the network and the target each have records, never together
            targets = con.rows(
                f"SELECT DISTINCT target FROM allm WHERE {network_clause(str(filters.network))} ORDER BY target"
            )
            raise ReportInputError(
                f"--network {filters.network} --target {filters.target}: no records of that target on that "
                f"network; its targets are: {_named(targets)}"
            )
        asked = f"from {filters.since or 'the start'} to {filters.until or 'the end'}"
        chosen = " for the network and target asked" if filters.network or filters.target else ""
        raise ReportInputError(f"no records {asked} (local days){chosen}; the records{chosen} cover {first} to {last}")
