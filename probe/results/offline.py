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
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from probe.analyze.common import Judgement
from probe.results.record import judgement_fields
from probe.results.writer import encode_record
from probe.vocabulary.anomalies import Anomaly, Blocking

NO_ROUTE = "no_route"  # the routing table had no route: nothing was sent
NO_INTERNET = "no_internet"  # every control failed for every target, and nothing answered

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
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("observations") is None or record.get("not_measured"):
                continue  # a probe error, or left at the deadline: no evidence either way
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
