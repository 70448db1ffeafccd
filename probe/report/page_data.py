"""What the page draws beyond the summary's tables, each one query over `m`: the timeline per
network (day by site, never merged across networks), the site-by-network matrix, and the
measurements the page cites (each with its stable anchor and its episode)."""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from probe.report.events import Episode
from probe.report.queries import FINDINGS, UNRESTRICTED

MAX_TIMELINE_TARGETS = 40  # per network: the sites with the most findings
MAX_MATRIX_TARGETS = 60  # sites with a finding first, then the most measured
MAX_CITED = 1000  # measurements listed with an anchor; the rest are counted


def timelines(con: duckdb.DuckDBPyConnection, shown: str) -> list[dict[str, Any]]:
    """Per network: its days, its sites with a finding and each (day, site)'s finding (the one seen
    most that day, `none` when only reachable)."""
    found: dict[str, dict[str, Any]] = {}
    for network_key, network, as_name, target in con.execute(
        f"SELECT network_key, any_value(network), any_value(as_name), target FROM m WHERE {shown} "
        "GROUP BY network_key, target "
        "QUALIFY row_number() OVER (PARTITION BY network_key ORDER BY count(*) DESC, target) <= ? "
        "ORDER BY network_key, count(*) DESC, target",
        [MAX_TIMELINE_TARGETS],
    ).fetchall():
        entry = found.setdefault(
            network_key, {"network_key": network_key, "network": network, "as_name": as_name, "targets": []}
        )
        entry["targets"].append(target)
    order = dict(con.execute("SELECT network_key, count(*) FROM m GROUP BY network_key").fetchall())
    for entry in found.values():
        days: list[date] = [
            row[0]
            for row in con.execute(
                "SELECT DISTINCT day FROM m WHERE network_key = ? ORDER BY day", [entry["network_key"]]
            ).fetchall()
        ]
        entry["days"] = [d.isoformat() for d in days]
        entry["cells"] = {
            (day.isoformat(), target): finding
            for day, target, finding in con.execute(
                f"SELECT day, target, coalesce(mode(blocking) FILTER (WHERE {shown}), 'none') FROM m "
                "WHERE network_key = ? AND target IN (SELECT unnest(?)) "
                "AND blocking NOT IN ('offline', 'inconclusive', 'down') GROUP BY ALL",
                [entry["network_key"], entry["targets"]],
            ).fetchall()
        }
    return sorted(found.values(), key=lambda t: (-order.get(t["network_key"], 0), t["network_key"]))


def _outcome(shown: str) -> str:
    """A measurement's outcome in the matrix: a shown finding, `none`, or what else it was."""
    return (
        f"CASE WHEN {shown} THEN blocking WHEN blocking = 'none' THEN 'none' "
        f"WHEN blocking IN {FINDINGS} AND {UNRESTRICTED} THEN 'blocked_unconfirmed' "  # cut off: 'failed'
        "WHEN blocking IN ('offline', 'local_interception') THEN blocking ELSE 'failed' END"
    )


def matrix(con: duckdb.DuckDBPyConnection, shown: str) -> dict[str, Any]:
    """Site by network over the period: the finding seen most (shown findings), else `none` when
    seen reachable, else the outcome seen most (`blocked_unconfirmed` when unconfirmed findings are
    not shown, `local_interception`, `failed`, `offline`); with the count of that outcome and the
    measurements. Sites with a finding come first."""
    networks = [
        {"network_key": r[0], "network": r[1], "as_name": r[2]}
        for r in con.execute(
            "SELECT network_key, any_value(network), any_value(as_name) FROM m GROUP BY network_key "
            "ORDER BY count(*) DESC, network_key"
        ).fetchall()
    ]
    ranked = con.execute(
        f"SELECT target, count(*) FILTER (WHERE {shown}) AS f FROM m GROUP BY target ORDER BY f DESC, count(*) DESC, "
        "target"
    ).fetchall()
    targets = [t for t, _ in ranked[:MAX_MATRIX_TARGETS]]
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for target, network_key, finding, total, findings, reachable, other, outcomes in con.execute(
        f"SELECT target, network_key, mode(blocking) FILTER (WHERE {shown}), count(*), "
        f"count(*) FILTER (WHERE {shown}), count(*) FILTER (WHERE blocking = 'none'), mode(outcome), "
        f"histogram(outcome) FROM (SELECT *, {_outcome(shown)} AS outcome FROM m) "
        "WHERE target IN (SELECT unnest(?)) GROUP BY ALL",
        [targets],
    ).fetchall():
        state = finding or ("none" if reachable else other)
        cells[(target, network_key)] = {"finding": state, "measurements": total, "findings": findings,
                                        "reachable": reachable, "count": dict(outcomes).get(state, 0)}  # fmt: skip
    hidden = sum(1 for _, f in ranked[MAX_MATRIX_TARGETS:] if not f)
    return {"networks": networks, "targets": targets, "cells": cells, "hidden": len(ranked) - len(targets),
            "hidden_without_finding": hidden}  # fmt: skip


def cited(con: duckdb.DuckDBPyConnection, shown: str, episodes: list[Episode]) -> tuple[list[dict[str, Any]], int]:
    """The measurements with a shown finding, each named with its episode: what the page anchors
    (`#m-<measurement_id>`), at most MAX_CITED, and how many more there are."""
    streams: dict[tuple[str, str, str], list[Episode]] = {}
    for episode in episodes:
        streams.setdefault((episode.network_key, episode.blocking, episode.key), []).append(episode)
    condition = f"{shown} AND measurement_id IS NOT NULL"
    total = con.execute(f"SELECT count(*) FROM m WHERE {condition}").fetchone()
    rows = con.execute(
        "SELECT measurement_id, local_time, day, network_key, target, blocking, confirmed, probe_id, place, "
        "coalesce(CASE WHEN blocking = 'tls_mitm' THEN coalesce(catalog_id, issuer) END, blockpage_id, '') FROM m "
        f"WHERE {condition} ORDER BY time, measurement_id LIMIT ?",
        [MAX_CITED],
    ).fetchall()
    found = []
    for measurement_id, local_time, day, network_key, target, blocking, confirmed, probe, place, key in rows:
        # the episode whose days hold this one (an episode's state: its network, kind and key)
        candidates = streams.get((network_key, blocking, key or ""), [])
        episode_id = next((c.id for c in candidates if day in c.days), None)
        found.append({"measurement_id": measurement_id, "local_time": local_time, "network_key": network_key,
                      "target": target, "finding": blocking, "confirmed": confirmed, "probe": probe, "place": place,
                      "episode": episode_id})  # fmt: skip
    return found, max(0, (total[0] if total else 0) - len(found))
