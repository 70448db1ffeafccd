"""Episodes: one network, one kind of blocking, one interceptor or blockpage, over a period.

A measurement's state is its finding (the verdict and what names it: the interception CA's catalog
entry or issuer, or the blockpage) or `reachable` (a confirmed `none`). Per network and state, the
network's local days are swept in order: a day with a finding opens or extends an episode; a day
with no finding but a site of the episode seen reachable on that network ends it (`ended`); a day
with no measurement of its sites (a gap in coverage) neither extends nor ends it. An episode names
its sites, places, probes, days and measurements; its evidence is its first measurement's.
Measurements that prove nothing (inconclusive, offline, down, and unconfirmed findings unless asked
for) are not states. A volunteer's own antivirus is never an episode: it is listed apart.

The network's own state is an episode of its own (issue 22): days its records were measured cut off
from abroad (`cut_off_abroad`) or on an allow-list (`allow_list`), ended by a day of full
connectivity. The findings measured meanwhile are the state's, never a site's episode.

A record with no AS gets a network of its own probe (`unknown:<probe_id>`), so that probes on
unrelated networks are never merged into one unknown network. `coverage` (per network and day:
measured, reachable, blocked, failed) is kept in DuckDB for the page's charts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import duckdb

import probe.report.queries as queries
from probe.report.certificates import described_chain
from probe.report.engines import Engine, engine_for

MAX_IDS = queries.MAX_IDS


@dataclass
class Episode:
    network_key: str  # "AS9198", or "unknown:<probe_id>" for records that name no AS
    network: str | None
    as_name: str | None
    country: str | None
    tz: str
    blocking: str
    key: str  # the interception CA (catalog id or issuer) or the blockpage; "" for other kinds
    first_seen: datetime  # UTC
    last_seen: datetime
    first_local: datetime
    last_local: datetime
    days: list[date] = field(default_factory=list)  # local days with a finding
    sites: set[str] = field(default_factory=set)
    places: set[str] = field(default_factory=set)
    probes: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    anomalies: set[str] = field(default_factory=set)
    measurements: int = 0
    confirmed_measurements: int = 0
    measurement_ids: list[str] = field(default_factory=list)
    first_measurement: str | None = None
    ended: datetime | None = None  # UTC: a site of the episode seen reachable again, nothing blocked that day
    ended_day: date | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.confirmed_measurements > 0

    @property
    def id(self) -> str:
        """Stable for the same network, kind, interceptor or blockpage and first local day: re-judging
        that adds or removes measurements, or a record arriving late, does not change it."""
        seed = f"{self.network_key}|{self.blocking}|{self.key}|{self.first_day.isoformat()}"
        return "e-" + hashlib.sha256(seed.encode()).hexdigest()[:12]

    @property
    def first_day(self) -> date:
        return self.first_local.date()

    @property
    def last_day(self) -> date:
        return self.last_local.date()

    def network_label(self) -> str:
        if self.network:
            return f"{self.network} ({self.as_name})" if self.as_name else self.network
        return f"unknown network (probe {self.network_key[-8:]})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "network": self.network,
            "network_key": self.network_key,
            "as_name": self.as_name,
            "country": self.country,
            "time_zone": self.tz,
            "finding": self.blocking,
            "key": self.key,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "days": [d.isoformat() for d in self.days],
            "first_seen": self.first_seen.isoformat() + "Z",
            "last_seen": self.last_seen.isoformat() + "Z",
            "ended": self.ended.isoformat() + "Z" if self.ended else None,
            "ended_day": self.ended_day.isoformat() if self.ended_day else None,
            "sites": sorted(self.sites),
            "places": sorted(self.places),
            "probes": len(self.probes),
            "probe_ids": sorted(self.probes),
            "categories": sorted(self.categories),
            "measurements": self.measurements,
            "confirmed_measurements": self.confirmed_measurements,
            "confirmed": self.confirmed,
            "measurement_ids": self.measurement_ids,
            "anomalies": sorted(self.anomalies),
            "evidence": self.evidence,
        }


_JSON_EVIDENCE = ("chain_sha256", "chain_spki", "chain", "answers", "control_answers", "handshakes", "connects",
                  "redirect_hop", "forensics")  # fmt: skip
_LISTS = ("chain_sha256", "chain_spki", "chain", "answers", "control_answers", "handshakes", "connects")


def _evidence(raw: dict[str, Any]) -> dict[str, Any]:
    """The evidence as the report shows it: JSON text columns parsed, lists kept lists (Spark gives a
    one-element `[*]` list as its element), empty ones dropped; the presented chain in words."""
    found: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _JSON_EVIDENCE:
            try:
                value = json.loads(value)
            except (TypeError, ValueError):
                continue
            if value in (None, [], {}):  # an engine's "nothing there" (SQL NULL, an empty JSON list)
                continue
            if key in _LISTS and not isinstance(value, list):
                value = [value]
        found[key] = value
    chain = described_chain(found.pop("chain", None))
    if chain:
        found["certificates"] = chain
    return found


def _open(row: tuple[Any, ...]) -> Episode:
    network_key, state = row[0], row[1]
    blocking, _, key = state.partition("|")
    return Episode(network_key, row[3], row[4], row[5], row[6], blocking, key, row[9], row[10], row[11], row[12])


def _extend(episode: Episode, row: tuple[Any, ...]) -> None:
    episode.days.append(row[2])
    episode.as_name = episode.as_name or row[4]
    episode.measurements += row[7]
    episode.confirmed_measurements += row[8]
    episode.first_seen, episode.last_seen = min(episode.first_seen, row[9]), max(episode.last_seen, row[10])
    episode.first_local, episode.last_local = min(episode.first_local, row[11]), max(episode.last_local, row[12])
    episode.sites.update(row[13])
    episode.probes.update(row[14])
    episode.places.update(row[15] or [])
    episode.categories.update(row[16] or [])
    episode.anomalies.update(a for a in row[17] or [] if a)
    ids = [i for i in row[18] or [] if i]
    if episode.first_measurement is None and ids:
        episode.first_measurement = ids[0]
    episode.measurement_ids += ids[: MAX_IDS - len(episode.measurement_ids)]


def _sweep(rows: list[tuple[Any, ...]], clear: dict[date, dict[str, datetime]], sites_only: bool) -> list[Episode]:
    """One network's days of one state, swept in order: a day in the state opens or extends an episode;
    a day out of it that clears it (a site of the episode seen reachable; for the network's own state,
    `sites_only` False, full connectivity seen) ends it; a day with neither is a gap in coverage."""
    by_day = {row[2]: row for row in rows}
    episodes: list[Episode] = []
    current: Episode | None = None
    for day in sorted(set(by_day) | set(clear)):
        if day in by_day:
            if current is None:
                current = _open(by_day[day])
                episodes.append(current)
            _extend(current, by_day[day])
        elif current is not None:
            seen = [when for site, when in clear[day].items() if not sites_only or site in current.sites]
            if seen:
                current.ended, current.ended_day, current = min(seen), day, None
    return episodes


def _network_episodes(engine: Engine, source: str) -> list[Episode]:
    """The network's own episodes (issue 22): cut off from abroad, or on an allow-list, from the
    `network_state` every record carries; ended by a day of full connectivity on that network."""
    clear: dict[str, dict[date, dict[str, datetime]]] = {}
    for network_key, day, seen in engine.rows(queries.network_clear(source)):
        clear.setdefault(network_key, {}).setdefault(day, {})[""] = seen
    streams: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in engine.rows(queries.network_days(engine.dialect, source)):
        streams.setdefault((row[0], row[1]), []).append(tuple(row))
    episodes: list[Episode] = []
    for (network_key, _state), rows in sorted(streams.items()):
        episodes += _sweep(rows, clear.get(network_key, {}), sites_only=False)
    return episodes


def build_episodes(con: duckdb.DuckDBPyConnection | Engine, all_confidence: bool, source: str = "m") -> list[Episode]:
    """The episodes of the measurements in `source` (a table or view shaped like `m`), on any engine:
    the engine aggregates per network, state and day; the sweep is this Python, the same for all."""
    engine = engine_for(con)
    clear: dict[str, dict[date, dict[str, datetime]]] = {}
    for network_key, day, target, seen in engine.rows(queries.clear(source, all_confidence)):
        clear.setdefault(network_key, {}).setdefault(day, {})[target] = seen
    streams: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in engine.rows(queries.days(engine.dialect, source, all_confidence)):
        streams.setdefault((row[0], row[1]), []).append(tuple(row))
    episodes: list[Episode] = []
    for (network_key, _state), rows in sorted(streams.items()):
        episodes += _sweep(rows, clear.get(network_key, {}), sites_only=True)
    episodes += _network_episodes(engine, source)
    firsts = sorted({e.first_measurement for e in episodes if e.first_measurement})
    evidence: dict[str, dict[str, Any]] = {}
    for start in range(0, len(firsts), 1000):
        for row in engine.rows(queries.evidence(source, firsts[start : start + 1000])):
            found = dict(zip(queries.EVIDENCE_COLUMNS, row, strict=True))
            evidence[found["measurement_id"]] = found
    for episode in episodes:
        episode.evidence = _evidence(evidence.get(episode.first_measurement or "") or {})
    return sorted(episodes, key=lambda e: (e.first_seen, e.network_key, e.blocking, e.key))


def build_coverage(con: duckdb.DuckDBPyConnection | Engine) -> None:
    """The table `coverage`: per network and local day, what was measured and what it showed."""
    engine_for(con).table("coverage", queries.coverage("m"))
