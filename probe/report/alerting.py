"""From records to alerts: each record's signal, a CUSUM per (network, kind, site), and the keys that
start together on one network and kind grouped into one episode, with one alert when it starts and
one when it ends (docs/alerts.md).

- A **signal**: a record whose verdict is `none` says the site was reachable (0 for every kind on
  that network and site); a *confirmed* censorship verdict (`dns`, `tcp`, `tls`, `tls_mitm`, `http`)
  says blocked (1 for its kind). Everything else (offline, inconclusive, down, a volunteer's own
  antivirus, an unconfirmed finding, a finding measured while the network was cut off from abroad,
  allow-listed or without internet: the network's state, issue 22) is no evidence and is not fed.
- A **kind** is the verdict and what names it: the interception CA's catalog entry (or the forged
  chain's issuer) for `tls_mitm`, the blockpage for `http`; so two interceptors on one network are
  two episodes.
- A **network** is the AS number; a record with no AS stands for its own installation,
  `unknown:<probe id>` (the whole id: the report's key, so that an alert and the page's episode
  name the same network). Its **time zone** (the text's times) is its country's, found as the
  report finds it (probe.report.localtime), or `--tz`'s; UTC when the country is not known.
- An **episode** is one (network, kind): it opens at the first key's onset and closes when every
  one of its sites has ended. Keys whose onset is detected within `group_window` of the episode's
  first one are named in its start alert; a site that joins later gets an `extended` alert. When
  every site has ended, one `end` alert names them all.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from probe.report.changepoint import BLOCKED, END, ONSET, Cusum, iso, parse_time, threshold
from probe.report.localtime import zone_for
from probe.vocabulary.anomalies import CENSORSHIP, Blocking, Confidence
from probe.vocabulary.netstate import RESTRICTED, NetworkState

START, EXTENDED, ENDED = "start", "extended", "end"
_AS = re.compile(r"^(AS)?([0-9]+)$", re.IGNORECASE)


class Signal(NamedTuple):
    time: datetime
    measurement_id: str
    network: str  # "AS9198"; "unknown:<probe id>" when the record names no AS (the report's network key)
    as_name: str | None
    site: str
    kind: str | None  # None: the site was reachable
    blocking: str | None
    by: str | None  # the interceptor's or the blockpage's name
    place: str | None
    probe: str
    country: str | None = None  # the network's, for its time zone


def network_of(record: dict[str, Any]) -> tuple[str, str | None]:
    network = record.get("network") or {}
    asn = str(network.get("asn") or "").strip()
    match = _AS.match(asn)
    if match:
        return f"AS{match[2]}", network.get("as_name")
    if asn:
        return asn, network.get("as_name")
    # No AS: never one network for every such record; each installation stands alone, keyed on its
    # whole id as the report keys it (`unknown:<probe id>`; ids are zero-padded, so no prefix will do).
    return f"unknown:{probe_of(record)}", None


def probe_of(record: dict[str, Any]) -> str:
    """The installation, as the report names it: its probe id, else its run's."""
    return str(record.get("probe_id") or "run:" + str(record.get("run_id") or ""))


def signal_of(record: dict[str, Any]) -> Signal | None:
    """What one record says, or None when it is no evidence either way."""
    verdict = record.get("blocking")
    try:
        time = parse_time(str(record.get("measurement_start_time")))
    except ValueError:
        return None
    site = str((record.get("target") or {}).get("host") or "")
    mid = str(record.get("measurement_id") or "")
    if not site or not mid:
        return None
    kind: str | None
    by: str | None = None
    if verdict == Blocking.NONE:
        kind = None
    elif (record.get("network_state") or {}).get("state") in RESTRICTED:
        return None  # issue 22: measured cut off or allow-listed: the network's state, never a site's block
    elif verdict in CENSORSHIP and record.get("confidence") == Confidence.CONFIRMED:
        kind, by = _kind(record, str(verdict))
    else:
        return None
    network, as_name = network_of(record)
    place = (record.get("network") or {}).get("region")
    country = str((record.get("network") or {}).get("country") or "").upper() or None
    blocking = None if kind is None else str(verdict)
    return Signal(time, mid, network, as_name, site, kind, blocking, by, place, probe_of(record), country)


NETWORK_SITE = "*"  # the network's own state (issue 22): one key per network and state, not a site
NETWORK_KINDS = (NetworkState.CUT_OFF_ABROAD, NetworkState.ALLOW_LIST)


def network_signal_of(record: dict[str, Any]) -> Signal | None:
    """What a record says of its network's own state (issue 22): cut off from abroad or allow-listed
    (blocked, for that state), full connectivity (reachable: it ends them), or nothing (no state, no
    internet: a volunteer's dead uplink looks the same, unknown). Its id is the record's, marked, so
    that the site's signal of the same record is not taken for a duplicate."""
    state = (record.get("network_state") or {}).get("state")
    if state not in (*NETWORK_KINDS, NetworkState.FULL):
        return None
    try:
        time = parse_time(str(record.get("measurement_start_time")))
    except ValueError:
        return None
    mid = str(record.get("measurement_id") or "")
    if not mid:
        return None
    network, as_name = network_of(record)
    kind = None if state == NetworkState.FULL else str(state)
    place = (record.get("network") or {}).get("region")
    country = str((record.get("network") or {}).get("country") or "").upper() or None
    return Signal(time, f"{mid}/network_state", network, as_name, NETWORK_SITE, kind, kind, None, place,
                  probe_of(record), country)  # fmt: skip


def _kind(record: dict[str, Any], verdict: str) -> tuple[str, str | None]:
    interceptor = record.get("interceptor") or {}
    blockpage = record.get("blockpage") or {}
    if verdict == Blocking.TLS_MITM:
        named = interceptor.get("catalog_id") or interceptor.get("issuer") or ""
        return f"{verdict}:{named}", interceptor.get("name") or interceptor.get("issuer")
    if verdict == Blocking.HTTP and blockpage:
        return f"{verdict}:{blockpage.get('id') or ''}", blockpage.get("name")
    return verdict, None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]


class Detector:
    """The keys' detectors and the open episodes; `feed` signals in time order, then `finish`."""

    def __init__(self, saved: dict[str, Any], evidence: int, group_window: timedelta, tz: str | None = None) -> None:
        self.h = threshold(evidence)
        self.window = group_window
        self.tz = tz  # every network's times in this zone, instead of its country's (as the report's --tz)
        self.zones: dict[str | None, str] = {}
        self.keys = {key: Cusum.from_dict(value) for key, value in saved.get("keys", {}).items()}
        self.episodes: dict[str, dict[str, Any]] = saved.get("episodes", {})
        self.kinds_of: dict[tuple[str, str], set[str]] = {}
        for key in self.keys:
            network, kind, site = key.split("\t")
            self.kinds_of.setdefault((network, site), set()).add(kind)
        self.alerts: list[dict[str, Any]] = []

    def feed(self, signal: Signal) -> None:
        if signal.kind is None:
            for kind in sorted(self.kinds_of.get((signal.network, signal.site), ())):
                self._step(signal, kind, blocked=False)
        else:
            self.kinds_of.setdefault((signal.network, signal.site), set()).add(signal.kind)
            self._step(signal, signal.kind, blocked=True)

    def _step(self, signal: Signal, kind: str, blocked: bool) -> None:
        key = f"{signal.network}\t{kind}\t{signal.site}"
        cusum = self.keys.setdefault(key, Cusum())
        episode = self.episodes.get(f"{signal.network}\t{kind}")
        if blocked and cusum.state == BLOCKED and episode is not None:
            _note(episode, signal)
        change = cusum.step(blocked, signal.time, self.h, signal.place, signal.probe)
        if change == ONSET:
            self._onset(signal, kind, cusum)
        elif change == END:
            self._end(signal, kind, cusum)
        if cusum.at_rest:
            del self.keys[key]
            self.kinds_of[(signal.network, signal.site)].discard(kind)

    def _onset(self, signal: Signal, kind: str, cusum: Cusum) -> None:
        group = f"{signal.network}\t{kind}"
        since = cusum.run_start or iso(signal.time)
        episode = self.episodes.get(group)
        if episode is None:
            episode = self.episodes[group] = {
                "id": _digest(group, since, signal.site), "network": signal.network, "as_name": signal.as_name,
                "kind": kind, "blocking": signal.blocking, "by": signal.by, "opened": since, "sites": {},
                "places": [], "probes": [], "measurements": 0, "pending": None, "time_zone": self._zone(signal),
            }  # fmt: skip
        episode["as_name"] = episode["as_name"] or signal.as_name
        episode["sites"][signal.site] = {"since": since, "ended": None}
        for place in cusum.places:
            _add(episode["places"], place)
        for probe in cusum.probes:
            _add(episode["probes"], probe)
        episode["measurements"] += cusum.measurements
        pending = episode["pending"]
        if pending is not None and iso(signal.time) <= pending["deadline"]:
            _add(pending["sites"], signal.site)
        else:
            if pending is not None:
                self._seal(episode)
            kind_of_alert = EXTENDED if episode.get("announced") else START
            deadline, detected = iso(signal.time + self.window), iso(signal.time)
            pending = {"type": kind_of_alert, "sites": [signal.site], "since": since, "deadline": deadline,
                       "detected": detected}  # fmt: skip
            episode["pending"] = pending
        # What the alert says was seen: as of its sites' onsets, not of the end of the round.
        pending["seen"] = [sorted(episode["places"]), len(episode["probes"]), episode["measurements"]]

    def _zone(self, signal: Signal) -> str:
        """The network's zone, from its country as the report finds it; UTC when it is not known."""
        if signal.country not in self.zones:
            self.zones[signal.country] = zone_for(signal.country, self.tz)
        return self.zones[signal.country]

    def _end(self, signal: Signal, kind: str, cusum: Cusum) -> None:
        group = f"{signal.network}\t{kind}"
        episode = self.episodes.get(group)
        if episode is None or signal.site not in episode["sites"]:
            return
        episode["sites"][signal.site]["ended"] = cusum.run_start or iso(signal.time)
        if any(site["ended"] is None for site in episode["sites"].values()):
            return
        self._seal(episode)
        until = max(site["ended"] for site in episode["sites"].values())
        self.alerts.append(self._alert(episode, ENDED, sorted(episode["sites"]), episode["opened"], until,
                                       iso(signal.time)))  # fmt: skip
        del self.episodes[group]

    def _seal(self, episode: dict[str, Any]) -> None:
        pending = episode["pending"]
        if pending is None:
            return
        episode["pending"] = None
        if pending["type"] == START:
            episode["announced"] = True
        alert = self._alert(
            episode, pending["type"], sorted(pending["sites"]), pending["since"], None, pending["detected"]
        )
        if "seen" in pending:
            alert["places"], alert["probes"], alert["measurements"] = pending["seen"]
        self.alerts.append(alert)

    def _alert(self, episode: dict[str, Any], kind: str, sites: list[str], since: str, until: str | None,
               detected: str) -> dict[str, Any]:  # fmt: skip
        return {
            "id": _digest(episode["id"], kind, ",".join(sites)), "type": kind, "episode": episode["id"],
            "network": episode["network"], "as_name": episode["as_name"], "kind": episode["kind"],
            "blocking": episode["blocking"], "by": episode["by"], "sites": sites,
            "all_sites": sorted(episode["sites"]), "opened": episode["opened"], "since": since, "until": until,
            "detected": detected,
            "places": sorted(episode["places"]), "probes": len(episode["probes"]),
            "measurements": episode["measurements"], "time_zone": episode.get("time_zone", "UTC"),
        }  # fmt: skip

    def finish(self) -> list[dict[str, Any]]:
        """Seal the alerts still gathering sites; the round's alerts, in the order they happened."""
        for episode in self.episodes.values():
            self._seal(episode)
        return sorted(self.alerts, key=lambda a: (a["detected"], a["type"] != START))

    def dump(self) -> dict[str, Any]:
        return {"keys": {k: c.as_dict() for k, c in sorted(self.keys.items())}, "episodes": self.episodes}


def _note(episode: dict[str, Any], signal: Signal) -> None:
    episode["measurements"] += 1
    if signal.place:
        _add(episode["places"], signal.place)
    _add(episode["probes"], signal.probe)


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
