"""Redirect hops: a hop the network breaks is a finding of the target, with the hop named.

A site that answers with a redirect to a blocked host is blocked as its visitors meet it. Each hop
was observed with the target's own contrasts (control SNI, retry, AIA completion); a hop's TCP,
TLS or HTTP failure, or a substituted chain, ends the judging with the hop in `redirect_hop`.
Without a control for the hop's answer, its TCP and HTTP failures stay unconfirmed.
"""

from __future__ import annotations

from probe.analyze.common import ChainAnalyzer, Finding, Judgement, Outcome, RuleContext, hop_items
from probe.analyze.http import EXCHANGE_CODES
from probe.analyze.tcp import CONNECT_CODES
from probe.analyze.tls import hop_of, judge_hop
from probe.vocabulary.anomalies import Anomaly, Blocking
from probe.vocabulary.observations import Observations
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.targets import resolve_url

OK = Finding(Outcome.OK, False, Blocking.HTTP)


def _hop_url(obs: Observations, index: int) -> str | None:
    for request in obs.http_requests:
        if request.redirect_index == index:
            return str(request.url)
    for request in obs.http_requests:  # the hop never answered: where the one before pointed
        if request.redirect_index == index - 1 and request.location:
            followed = resolve_url(str(request.url), str(request.location))  # as a browser reads it
            return followed.url if followed is not None else None
    return None


def judge_redirects(obs: Observations, rules: RuleContext, j: Judgement) -> Finding:
    hops = sorted({item.hop for item in obs.tcp_connect if isinstance(item.hop, int)})
    for index in hops:
        finding = _judge_one(obs, index, rules.analysis_of, rules.host, j)
        if finding.outcome in (Outcome.BLOCKED, Outcome.LOCAL):
            j.add(Anomaly.HTTP_REDIRECT_HOP)
            j.redirect_hop = {"index": index, "url": _hop_url(obs, index), "stage": str(finding.stage)}
            return finding
    return OK


def _judge_one(obs: Observations, index: int, analysis_of: ChainAnalyzer, host: str, j: Judgement) -> Finding:
    attempts = hop_items(obs.tcp_connect, (Purpose.REDIRECT,), index)
    if attempts and all(a.failure for a in attempts):
        j.add(CONNECT_CODES.get(attempts[-1].failure or "", Anomaly.TCP_FAILURE))
        return Finding(Outcome.BLOCKED, False, Blocking.TCP)
    tls = judge_hop(hop_of(obs, host, index), analysis_of, False, None, j)
    if tls.outcome != Outcome.OK:
        return tls
    for request in obs.http_requests:
        if request.redirect_index == index and request.status is None:
            j.add(EXCHANGE_CODES.get(request.failure or "", Anomaly.HTTP_FAILURE))
            return Finding(Outcome.BLOCKED, False, Blocking.HTTP)
    return OK
