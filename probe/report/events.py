"""Events: consecutive measurements of one target on one network with the same finding.

Per target and network, in time order, each measurement has a state: its finding (the verdict and
what names it: the interceptor's catalog entry or issuer, the blockpage, the first anomaly), or
`reachable` for a measurement that saw the target work. A run of the same finding is one event; it
ends when a later measurement on that network sees the target reachable. Measurements that prove
nothing (inconclusive, offline, down, and unconfirmed findings unless asked for) neither extend nor
end an event. A volunteer's own antivirus is never an event: it is listed apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from probe.report.load import FINDINGS

_FINDING_KEY = """
    blocking || '|' || coalesce(
        CASE WHEN blocking = 'tls_mitm' THEN coalesce(catalog_id, issuer) END,
        blockpage_id,
        anomalies[1],
        '')
"""

_EVENTS = f"""
CREATE OR REPLACE TABLE events AS
WITH states AS (
    SELECT *,
        CASE WHEN blocking = 'none' THEN 'reachable' ELSE {_FINDING_KEY} END AS state
    FROM m
    WHERE blocking = 'none' OR (blocking IN {FINDINGS} AND (confirmed OR $all_confidence))
), runs AS (
    SELECT *,
        sum(CASE WHEN state IS DISTINCT FROM previous THEN 1 ELSE 0 END)
            OVER (PARTITION BY target, network ORDER BY time, measurement_id ROWS UNBOUNDED PRECEDING) AS run
    FROM (SELECT *, lag(state) OVER (PARTITION BY target, network ORDER BY time, measurement_id) AS previous
          FROM states)
), grouped AS (
    SELECT target, network, run, state,
        any_value(as_name) AS as_name,
        min(time) AS first_seen,
        max(time) AS last_seen,
        count(*) AS measurements,
        count(*) FILTER (WHERE confirmed) AS confirmed_measurements,
        list(DISTINCT probe_id) AS probes,
        list(DISTINCT place) FILTER (WHERE place IS NOT NULL) AS places,
        mode(place) AS place,
        arg_min(blocking, time) AS blocking,
        arg_min(struct_pack(catalog_id, interceptor_name, issuer, matched_by, chain_sha256, chain_spki,
                            matched_certificate, blockpage_id, blockpage_name, blockpage_matched, answers,
                            control_answers, handshakes, connects, redirect_hop, forensics, anomalies,
                            measurement_id, file), time) AS evidence
    FROM runs
    GROUP BY target, network, run, state
)
SELECT g.*,
    lead(first_seen) OVER (PARTITION BY target, network ORDER BY run) AS next_seen,
    lead(state) OVER (PARTITION BY target, network ORDER BY run) AS next_state
FROM grouped g
"""


@dataclass
class Event:
    target: str
    network: str | None
    as_name: str | None
    blocking: str
    first_seen: datetime
    last_seen: datetime
    measurements: int
    confirmed_measurements: int
    probes: list[str]
    places: list[str]
    place: str | None
    ended: datetime | None  # when a measurement on the network saw the target reachable again
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.confirmed_measurements > 0

    @property
    def key(self) -> str:
        """What names the finding: the interception CA, the blockpage, or the kind of failure."""
        e = self.evidence
        if self.blocking == "tls_mitm":
            return str(e.get("catalog_id") or e.get("issuer") or "")
        return str(e.get("blockpage_id") or (e.get("anomalies") or [""])[0])

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "network": self.network,
            "as_name": self.as_name,
            "finding": self.blocking,
            "key": self.key,
            "first_seen": self.first_seen.isoformat() + "Z",
            "last_seen": self.last_seen.isoformat() + "Z",
            "ended": self.ended.isoformat() + "Z" if self.ended else None,
            "measurements": self.measurements,
            "confirmed": self.confirmed,
            "probes": len(self.probes),
            "places": self.places,
            "evidence": self.evidence,
        }


def _evidence(raw: dict[str, Any]) -> dict[str, Any]:
    """The evidence as the report shows it: JSON text columns parsed, empty ones dropped."""
    found: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in ("chain_sha256", "chain_spki", "answers", "control_answers", "handshakes", "connects",
                   "redirect_hop", "forensics"):  # fmt: skip
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                continue
            if value is None:
                continue
        found[key] = value
    return found


def build_events(con: duckdb.DuckDBPyConnection, all_confidence: bool) -> list[Event]:
    con.execute(_EVENTS, {"all_confidence": all_confidence})
    rows = con.execute(
        "SELECT target, network, as_name, blocking, first_seen, last_seen, measurements, confirmed_measurements, "
        "probes, places, place, CASE WHEN next_state = 'reachable' THEN next_seen END, evidence "
        "FROM events WHERE state <> 'reachable' ORDER BY first_seen, target, network"
    ).fetchall()
    return [
        Event(
            target=row[0],
            network=row[1],
            as_name=row[2],
            blocking=row[3],
            first_seen=row[4],
            last_seen=row[5],
            measurements=row[6],
            confirmed_measurements=row[7],
            probes=list(row[8]),
            places=sorted(p for p in row[9] or [] if p),
            place=row[10],
            ended=row[11],
            evidence=_evidence(row[12]),
        )
        for row in rows
    ]
