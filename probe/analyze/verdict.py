"""Analysis: observations + catalogs -> anomalies, interceptor and verdict. Pure and repeatable.

The verdict is the earliest stage (dns, then tcp, then tls, then http) that failed in a way the
control did not. Where no control could speak for a stage, the verdict is `inconclusive`, never a
claim; with no network at all it is `offline`. docs/verdicts.md states the rules in prose.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from probe.analyze.common import AnalysisContext, Judgement, Outcome, chain_analyzer, helper_view
from probe.analyze.dns import judge_dns
from probe.analyze.http import judge_http
from probe.analyze.tcp import judge_tcp
from probe.analyze.tls import judge_tls, tls_valid_addresses
from probe.vocabulary.anomalies import Anomaly, Blocking

__all__ = ["AnalysisContext", "Judgement", "judge"]

# A stage that did not find blocking ends the judging with what it did find.
_NOT_BLOCKED = {
    Outcome.DOWN: Blocking.DOWN,
    Outcome.UNKNOWN: Blocking.INCONCLUSIVE,
    Outcome.OFFLINE: Blocking.OFFLINE,
    Outcome.LOCAL: Blocking.LOCAL_INTERCEPTION,
}


def judge(
    target: dict[str, Any], observations: dict[str, Any] | None, at: datetime, offline: bool, ctx: AnalysisContext
) -> Judgement:
    """The record's anomalies, verdict, interceptor and blockpage, from observations alone."""
    j = Judgement()
    if offline or observations is None:
        j.blocking = Blocking.OFFLINE
        j.add(Anomaly.NETWORK_OFFLINE)
        return j
    analysis_of = chain_analyzer(target["host"], at, ctx)
    helper = helper_view(observations)
    if any(asked.get("failure") for asked in observations.get("helpers") or []):
        j.add(Anomaly.HELPER_FAILED)
    valid = tls_valid_addresses(observations, analysis_of)
    dns_outcome, confirmed = judge_dns(observations["dns"], valid, helper, ctx, j)
    stages: list[tuple[Blocking, Outcome]] = [(Blocking.DNS, dns_outcome)]
    stages.append((Blocking.TCP, judge_tcp(observations, confirmed, j)))
    tls_outcome = judge_tls(observations, analysis_of, confirmed, j)
    stages.append((Blocking.TLS_MITM if j.interceptor else Blocking.TLS, tls_outcome))
    stages.append((Blocking.HTTP, judge_http(observations, confirmed, ctx, j)))

    for stage, outcome in stages:
        if outcome == Outcome.OK:
            continue
        j.blocking = stage if outcome == Outcome.BLOCKED else _NOT_BLOCKED[outcome]
        if outcome == Outcome.OFFLINE:
            j.add(Anomaly.NETWORK_OFFLINE)
        break
    return j
