"""TCP rules: every connect to the target failed."""

from __future__ import annotations

from typing import Any

from probe.analyze.common import Judgement, Outcome, by_purpose, helper_failed_at, helper_view
from probe.vocabulary.anomalies import Anomaly
from probe.vocabulary.failures import LOCAL_NETWORK_FAILURES, Failure

_CONNECT_CODES: dict[str, Anomaly] = {
    Failure.GENERIC_TIMEOUT: Anomaly.TCP_TIMEOUT,
    Failure.CONNECTION_REFUSED: Anomaly.TCP_REFUSED,
    Failure.CONNECTION_RESET: Anomaly.TCP_RESET,
    Failure.HOST_UNREACHABLE: Anomaly.TCP_UNREACHABLE,
}


def judge_tcp(obs: dict[str, Any], confirmed: bool, j: Judgement) -> Outcome:
    """Every connect to the target failed: blocked when a control confirmed the address and the
    helper (if any) connected; down when the helper failed too; offline with no route at all."""
    attempts = by_purpose(obs["tcp_connect"], "target")
    if not attempts or any(a["failure"] is None for a in attempts):
        return Outcome.OK
    seen = [a["failure"] for a in attempts]
    if all(f in LOCAL_NETWORK_FAILURES for f in seen):
        return Outcome.OFFLINE
    first = next(f for f in seen if f not in LOCAL_NETWORK_FAILURES)
    j.add(_CONNECT_CODES.get(first, Anomaly.TCP_FAILURE))
    helper_failed = helper_failed_at(helper_view(obs), "tcp")
    if helper_failed:
        j.add(Anomaly.HELPER_SAME_FAILURE)
        return Outcome.DOWN
    return Outcome.BLOCKED if confirmed or helper_failed is False else Outcome.UNKNOWN
