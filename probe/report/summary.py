"""The report's numbers: the summary, findings by kind (episodes and sites, not only measurements),
tables by target, network and place, the day-by-target timeline (local days), coverage per network
and day, and a volunteer's own interception listed apart. Each is one query over `m`; what only the
page draws is in `page_data`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import duckdb

from probe.report.events import Episode
from probe.report.load import FINDINGS, Problems
from probe.report.page_data import cited, matrix, timelines
from probe.report.queries import UNRESTRICTED


@dataclass
class Report:
    generated: datetime
    period: tuple[datetime | None, datetime | None]  # UTC instants
    days: tuple[date | None, date | None]  # the first and last local day
    zones: dict[str, list[str]]  # time zone -> the networks whose days are counted in it
    measurements: int
    probes: int
    places: list[str]
    networks: list[dict[str, Any]]  # network, as_name, measurements
    targets: int
    findings: dict[str, dict[str, int]]  # blocking -> episodes, sites, networks, confirmed, unconfirmed
    verdicts: dict[str, int]
    episodes: list[Episode]
    by_target: list[dict[str, Any]]
    by_network: list[dict[str, Any]]
    by_place: list[dict[str, Any]]
    timeline: dict[str, Any]  # days, targets, cells {(day, target): finding}
    local_interception: list[dict[str, Any]]
    problems: Problems
    all_confidence: bool
    filters: dict[str, Any] = field(default_factory=dict)
    sentences: dict[str, list[str]] = field(default_factory=dict)  # language -> sentences
    month: dict[str, list[str]] = field(default_factory=dict)  # language -> the monthly entry's paragraphs
    coverage: list[dict[str, Any]] = field(default_factory=list)  # per network and local day
    timelines: list[dict[str, Any]] = field(default_factory=list)  # per network: days, targets, cells
    matrix: dict[str, Any] = field(default_factory=dict)  # targets, networks, cells {(target, network_key): ...}
    cited: list[dict[str, Any]] = field(default_factory=list)  # measurements the page anchors
    cited_more: int = 0  # measurements with a finding not listed


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params) if params is not None else con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def summarise(
    con: duckdb.DuckDBPyConnection,
    episodes: list[Episode],
    problems: Problems,
    all_confidence: bool,
    filters: dict[str, Any],
) -> Report:
    totals = con.execute(
        "SELECT count(*), count(DISTINCT probe_id), count(DISTINCT target), min(time), max(time), min(day), max(day) "
        "FROM m"
    ).fetchone()
    assert totals is not None
    findings: dict[str, dict[str, int]] = {}
    for blocking, confirmed, count in con.execute(
        f"SELECT blocking, confirmed, count(*) FROM m WHERE blocking IN {FINDINGS} AND {UNRESTRICTED} "
        "GROUP BY ALL ORDER BY ALL"  # issue 22: a finding measured cut off is the network's state
    ).fetchall():
        findings.setdefault(blocking, {"episodes": 0, "sites": 0, "networks": 0, "confirmed": 0, "unconfirmed": 0})[
            "confirmed" if confirmed else "unconfirmed"
        ] = count
    for blocking in findings:
        shown_episodes = [e for e in episodes if e.blocking == blocking]
        findings[blocking].update(
            episodes=len(shown_episodes),
            sites=len({s for e in shown_episodes for s in e.sites}),
            networks=len({e.network_key for e in shown_episodes}),
        )
    zones: dict[str, list[str]] = {}
    for zone, networks in con.execute(
        "SELECT tz, list(DISTINCT network_key ORDER BY network_key) FROM m GROUP BY tz"
    ).fetchall():
        zones[zone] = sorted({n if not n.startswith("unknown:") else "unknown" for n in networks})
    verdicts = dict(con.execute("SELECT blocking, count(*) FROM m GROUP BY ALL ORDER BY 2 DESC").fetchall())
    shown = f"blocking IN {FINDINGS} AND {UNRESTRICTED}" + ("" if all_confidence else " AND confirmed")
    per = (
        f"count(*) AS measurements, count(*) FILTER (WHERE {shown}) AS findings, "
        "count(DISTINCT target) FILTER (WHERE " + shown + ") AS sites_blocked, "
        "count(DISTINCT network_key) FILTER (WHERE " + shown + ") AS networks_blocked, "
        "count(DISTINCT probe_id) AS probes"
    )
    listed, more = cited(con, shown, episodes)
    return Report(
        generated=datetime.now().astimezone(),
        period=(totals[3], totals[4]),
        days=(totals[5], totals[6]),
        zones=zones,
        measurements=totals[0],
        probes=totals[1],
        places=[
            r[0] for r in con.execute("SELECT DISTINCT place FROM m WHERE place IS NOT NULL ORDER BY 1").fetchall()
        ],
        networks=_rows(
            con,
            "SELECT network_key AS network, any_value(as_name) AS as_name, count(*) AS measurements FROM m "
            "GROUP BY network_key ORDER BY measurements DESC, network_key",
        ),
        targets=totals[2],
        findings=findings,
        verdicts=verdicts,
        episodes=episodes,
        by_target=_rows(con, f"SELECT target, {per} FROM m GROUP BY target ORDER BY findings DESC, target"),
        by_network=_rows(
            con,
            "SELECT CASE WHEN any_value(network) IS NULL THEN 'unknown network (probe ' || right(network_key, 8) "
            "|| ')' ELSE network_key END AS network, network_key, any_value(as_name) AS as_name, "
            "any_value(tz) AS time_zone, "
            f"{per} "
            "FROM m GROUP BY network_key ORDER BY findings DESC, network",
        ),
        by_place=_rows(
            con, f"SELECT coalesce(place, 'not given') AS place, {per} FROM m GROUP BY ALL ORDER BY findings DESC"
        ),
        timeline=_timeline(con, shown),
        local_interception=_rows(
            con,
            "SELECT coalesce(interceptor_name, issuer) AS interceptor, count(*) AS measurements, "
            "count(DISTINCT probe_id) AS probes, count(DISTINCT target) AS targets FROM m "
            "WHERE blocking = 'local_interception' GROUP BY ALL ORDER BY measurements DESC",
        ),
        problems=problems,
        all_confidence=all_confidence,
        filters=filters,
        coverage=_rows(con, "SELECT * FROM coverage"),
        timelines=timelines(con, shown),
        matrix=matrix(con, shown),
        cited=listed,
        cited_more=more,
    )


MAX_TIMELINE_TARGETS = 40


def _timeline(con: duckdb.DuckDBPyConnection, shown: str) -> dict[str, Any]:
    """Day by target: the finding seen most that day (or `none` when only reachable), for the
    targets with the most findings."""
    targets = [
        r[0]
        for r in con.execute(
            f"SELECT target FROM m WHERE {shown} GROUP BY target ORDER BY count(*) DESC, target LIMIT ?",
            [MAX_TIMELINE_TARGETS],
        ).fetchall()
    ]
    if not targets:
        return {"days": [], "targets": [], "cells": {}, "per_day": []}
    cells: dict[tuple[str, str], str] = {}
    for day, target, finding in con.execute(
        f"SELECT day, target, coalesce(mode(blocking) FILTER (WHERE {shown}), 'none') FROM m "
        "WHERE target IN (SELECT unnest(?)) AND blocking NOT IN ('offline', 'inconclusive') GROUP BY ALL",
        [targets],
    ).fetchall():
        cells[(day.isoformat(), target)] = finding
    per_day = con.execute(
        f"SELECT day, count(*) FILTER (WHERE {shown}), count(*) FROM m GROUP BY day ORDER BY day"
    ).fetchall()
    days: list[date] = [row[0] for row in per_day]
    return {
        "days": [d.isoformat() for d in days],
        "targets": targets,
        "cells": cells,
        "per_day": [{"day": d.isoformat(), "findings": f, "measurements": n} for d, f, n in per_day],
    }
