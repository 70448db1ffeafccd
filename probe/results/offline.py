"""A run that reached nothing: "no internet" decided from evidence, and its records marked offline.

Before measuring, the routing table says whether there is a network at all (`no_route`: nothing is
sent). But a default route with nothing behind it (a dead uplink, a modem without a line, a router
whose ISP is down) looks like a network: every connection times out, and each site judged alone
would read as "could not be judged", or even as blocked. So when a run ends, its records are read
back: when every control the probe asked (the control resolver, the control SNI handshakes, the
helpers) failed for every target, and nothing answered at all (no connection was made, no control
replied), the run had no internet (`no_internet`). Its records are then rewritten, atomically, as
offline: the observations are kept as the evidence, the verdicts claimed from them are withdrawn.

What does not count as an answer: the system's resolver (a home router answers from its cache
with its uplink down), and errors (a timeout, an unreachable network, a reset).

A captive portal (a hotel's or an airport's Wi-Fi before logging in) is named as such: most
measured targets point at one place that is not theirs (the system resolver's only answer, or the
login host their first response redirects to), and every control failed (a control resolver that
answers only the portal's address is the portal speaking). A resolver that answers an ordinary name
with other addresses is a blocklist, not a portal; the volunteer's own (scrubbed) address is never
counted or named.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from probe.analyze.common import Judgement
from probe.results.record import judgement_fields
from probe.results.writer import encode_record
from probe.vocabulary.anomalies import Anomaly, Blocking

NO_ROUTE = "no_route"  # the routing table had no route: nothing was sent
NO_INTERNET = "no_internet"  # every control failed for every target, and nothing answered
CAPTIVE_PORTAL = "captive_portal"  # most targets point at one place, and every control failed

_CONTROL_PURPOSES = ("control_sni", "redirect_control_sni")


def _replied(asked: dict[str, Any]) -> bool:
    """Whether a resolver replied to a lookup (its queries) or a query (an error reply counts)."""
    if "queries" in asked:
        return asked.get("failure") is None or any(_replied(query) for query in asked["queries"] or [])
    return asked.get("failure") is None or asked.get("rcode") is not None or bool(asked.get("replies"))


def evidence(observations: dict[str, Any]) -> tuple[int, bool]:
    """One record's controls: (how many failed, whether anything answered)."""
    failed = 0
    dns = observations.get("dns") or {}
    identity = dns.get("control_identity") or {}
    for asked in (dns.get("control"), dns.get("control_plain"), identity.get("plain"), identity.get("encrypted")):
        if asked is None:
            continue
        if _replied(asked):
            return failed, True
        failed += 1
    for step in [*(observations.get("tcp_connect") or []), *(observations.get("tls_handshakes") or [])]:
        if step.get("failure") is None:
            return failed, True  # a connection was made: something out there answered
        failed += step.get("purpose") in _CONTROL_PURPOSES
    for helper in observations.get("helpers") or []:
        if helper.get("failure") is None or helper.get("status") is not None:
            return failed, True
        failed += 1
    return failed, False


def no_internet(path: Path) -> bool:
    """Whether a finished run's records (a plain `.jsonl`) show no internet; stops at the first answer."""
    failed = measured = 0
    for record in _measured(path):  # a probe error, or a target left at the deadline: no evidence
        count, answered = evidence(record["observations"])
        if answered:
            return False
        failed, measured = failed + count, measured + 1
    return measured > 0 and failed > 0


def _encoded(record: dict[str, Any]) -> bytes:
    try:
        return encode_record(record)
    except TypeError:  # what orjson refuses (an integer past 64 bits), the standard library writes
        return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def mark_offline(path: Path, cause: str) -> Counter[str]:
    """Rewrite a finished run's records as offline for `cause`, atomically (the file is whole before
    and after); records left at the deadline or failed by a probe error stay as they are. Returns the
    verdicts of the records, as the summary counts them (those left at the deadline not included)."""
    offline = Judgement(blocking=Blocking.OFFLINE)
    offline.add(Anomaly.NETWORK_OFFLINE)
    fields = judgement_fields(offline)
    verdicts: Counter[str] = Counter()
    partial = path.with_name(path.name + ".partial")
    with path.open("rb") as source, partial.open("wb") as out:
        for line in source:
            try:
                record = json.loads(line)
            except ValueError:  # not a whole record: kept as it is
                out.write(line)
                continue
            if not record.get("not_measured"):
                if not (record.get("error") and record.get("observations") is None):
                    record.update(fields, offline=cause)
                verdicts[record.get("blocking")] += 1
            out.write(_encoded(record))
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    return verdicts


def _measured(path: Path) -> Iterator[dict[str, Any]]:
    """The run's measured records, one at a time (a long run's file is large)."""
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("observations") and not record.get("not_measured"):
                yield record


def _addresses(asked: Any) -> set[str]:
    """The addresses a lookup (its `addresses`) or a query (its A/AAAA answers) gave."""
    if not isinstance(asked, dict):
        return set()
    if isinstance(asked.get("addresses"), list):
        return {str(a) for a in asked["addresses"]}
    return {str(a.get("data")) for a in asked.get("answers") or [] if a.get("type") in ("A", "AAAA")}


def _host_of(url: Any) -> str | None:
    try:
        return urlsplit(str(url)).hostname if url else None
    except ValueError:
        return None


def _own(host: str, target: str) -> bool:
    return host.removeprefix("www.") == target.lower().removeprefix("www.")


def _pointers(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """Where a target points that is not its own: the system resolver's only answer, and the host its
    first response redirects to (never the volunteer's own, scrubbed, address)."""
    observations, target = record["observations"], str((record.get("target") or {}).get("host") or "")
    system = ((observations.get("dns") or {}).get("system")) or {}
    answers = list(system.get("addresses") or [])
    address = answers[0] if len(answers) == 1 and answers[0] != "[scrubbed]" else None
    location = None
    for request in observations.get("http_requests") or []:
        if request.get("redirect_index") == 0:
            host = _host_of(request.get("location"))
            if host and "scrubbed" not in host and not _own(host, target):
                location = host
    return address, location


def _controls(observations: dict[str, Any], portal: frozenset[str]) -> tuple[int, bool]:
    """One record's controls: (how many were asked and failed, whether one really answered). A
    control resolver whose answers are all the portal's is the portal speaking, not an answer."""
    failed = 0
    dns = observations.get("dns") or {}
    identity = dns.get("control_identity") or {}
    for asked in (dns.get("control"), dns.get("control_plain"), identity.get("plain"), identity.get("encrypted")):
        if not isinstance(asked, dict):
            continue
        answered = _addresses(asked)
        if _replied(asked) and not (answered and answered <= portal):
            return failed, True
        failed += 1
    for step in observations.get("tls_handshakes") or []:
        if step.get("purpose") in _CONTROL_PURPOSES:
            if step.get("failure") is None:
                return failed, True
            failed += 1
    for helper in observations.get("helpers") or []:
        if helper.get("failure") is None or helper.get("status") is not None:
            return failed, True
        failed += 1
    return failed, False


def captive_portal(path: Path) -> str | None:
    """The portal's host (or address) when a finished run's records (a plain `.jsonl`) show a
    captive portal: most measured targets point at it, and every control asked failed."""
    by_address: Counter[str] = Counter()
    by_location: Counter[str] = Counter()
    serving: dict[str, set[str]] = {}  # a host: the addresses that answered as it, or redirected to it
    baseline: set[str] = set()
    measured = 0
    for record in _measured(path):
        if ((record.get("analysis") or {}).get("tls") or {}).get("valid"):
            # A site presented a chain valid for its name: this network reaches real sites (and an
            # ordinary run's file is not read to its end for nothing).
            return None
        measured += 1
        address, location = _pointers(record)
        by_address.update([address] if address else [])
        by_location.update([location] if location else [])
        observations = record["observations"]
        baseline |= _addresses((observations.get("dns") or {}).get("resolver_baseline"))
        for request in observations.get("http_requests") or []:
            names = {(request.get("request") or {}).get("host")}
            if request.get("redirect_index") == 0:
                names.add(_host_of(request.get("location")))
            for name in names - {None, ""}:
                serving.setdefault(str(name), set()).add(str(request.get("address")))
    # A portal answers many names alike: one target pointing somewhere shows nothing of the kind.
    host = by_location.most_common(1)[0][0] if by_location and by_location.most_common(1)[0][1] >= 2 else None
    address = None
    if by_address and by_address.most_common(1)[0][1] >= 2 and by_address.most_common(1)[0][1] * 2 > measured:
        address = by_address.most_common(1)[0][0]
        if baseline and address not in baseline:
            address = None  # the resolver answers an ordinary name with its own addresses: a blocklist
    if host and not (by_location[host] * 2 > measured or (address and address in serving.get(host, ()))):
        host = None  # a login host is named when most redirects go there, or the portal's address sent them
    if host is None and address is None:
        return None
    portal = frozenset((serving.get(host, set()) if host else set()) | ({address} if address else set()))
    asked = 0
    for record in _measured(path):
        count, answered = _controls(record["observations"], portal)
        if answered:
            return None
        asked += count
    return (host or address) if asked else None
