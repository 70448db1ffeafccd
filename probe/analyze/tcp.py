"""TCP rules: every connect to the target failed."""

from __future__ import annotations

from probe.analyze.common import Finding, Judgement, Outcome, RuleContext, by_purpose, helper_contrast
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import Observations
from probe.vocabulary.purposes import Purpose

CONNECT_CODES: dict[str, Anomaly] = {
    Failure.GENERIC_TIMEOUT: Anomaly.TCP_TIMEOUT,
    Failure.CONNECTION_REFUSED: Anomaly.TCP_REFUSED,
    Failure.CONNECTION_RESET: Anomaly.TCP_RESET,
    Failure.HOST_UNREACHABLE: Anomaly.TCP_UNREACHABLE,
    Failure.NETWORK_UNREACHABLE: Anomaly.TCP_NETWORK_UNREACHABLE,
}


def judge_tcp(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    """Every connect to the target failed: blocked when a control confirmed the address (proven
    only when the helper connected from outside); down when the helper failed too; offline with
    no route at all."""
    confirmed = rules.confirmed
    attempts = by_purpose(obs.tcp_connect, Purpose.TARGET)
    if not attempts or any(a.failure is None for a in attempts):
        return Finding(Outcome.OK, confirmed, Blocking.TCP)
    # Offline is decided from the routing table before the run, never from one connect's error: a
    # censor can answer with "network unreachable" too, and that is a finding like any other.
    j.add(CONNECT_CODES.get(attempts[0].failure or "", Anomaly.TCP_FAILURE))
    said = helper_contrast(rules.helper, "tcp", Blocking.TCP, j)
    if said is not None:
        return said
    return Finding(Outcome.BLOCKED if confirmed else Outcome.UNKNOWN, False, Blocking.TCP)
