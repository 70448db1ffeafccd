"""Analysis: observations + catalogs -> anomalies, interceptor and verdict. Pure and repeatable.

The verdict is the earliest stage (dns, then tcp, tls, http, the redirect hops, quic and throttling:
`STAGES`) that failed in a way the control did not. Where no control could speak for a stage, the
verdict is `inconclusive`, never a claim; with no network at all it is `offline`. docs/verdicts.md
states the rules in prose.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from probe.analyze.common import (
    AnalysisContext,
    Finding,
    Judgement,
    Outcome,
    Rule,
    RuleContext,
    chain_analyzer,
)
from probe.analyze.dns import judge_dns
from probe.analyze.forensics import judge_forensics
from probe.analyze.http import judge_http
from probe.analyze.quic import judge_quic  # issue 22: QUIC
from probe.analyze.redirects import judge_redirects
from probe.analyze.tcp import judge_tcp
from probe.analyze.throttle import judge_throttle  # issue 22: throttling
from probe.analyze.tls import judge_tls
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.observations import Observations
from probe.vocabulary.observations_codec import decode
from probe.vocabulary.proofs import Proof

__all__ = ["AnalysisContext", "Judgement", "judge", "judge_observations", "RULES_VERSION"]

# Raised when a rule changes what it concludes; recorded with every verdict (and by `probe analyze`).
RULES_VERSION = "2026-12-03"

# A stage that did not find blocking ends the judging with what it did find.
_NOT_BLOCKED = {
    Outcome.DOWN: Blocking.DOWN,
    Outcome.UNKNOWN: Blocking.INCONCLUSIVE,
    Outcome.LOCAL: Blocking.LOCAL_INTERCEPTION,
}


def judge(
    target: dict[str, Any], observations: dict[str, Any] | None, at: datetime, offline: bool, ctx: AnalysisContext
) -> Judgement:
    """The record's anomalies, verdict, confidence, interceptor and blockpage, from observations alone.

    `observations` is the record's JSON object (a run's and `probe analyze`'s): decoded once here
    (ObservationsError, an InputError, when it is not what the probe writes)."""
    if offline or observations is None:
        return judge_observations(target["host"], None, at, offline, ctx)
    return judge_observations(target["host"], decode(observations), at, offline, ctx)


def judge_observations(
    host: str, observations: Observations | None, at: datetime, offline: bool, ctx: AnalysisContext
) -> Judgement:
    """`judge`, for observations already typed."""
    j = Judgement()
    if offline or observations is None:
        j.blocking = Blocking.OFFLINE
        j.add(Anomaly.NETWORK_OFFLINE)
        return j
    rules = RuleContext(host, ctx, chain_analyzer(host, at, ctx), observations.helper_view())
    if any(asked.failure for asked in observations.helpers):
        j.add(Anomaly.HELPER_FAILED)
    dns = judge_dns(observations, rules, j)
    rules = replace(rules, confirmed=dns.confirmed)  # whether a control confirmed the addresses used
    findings = [dns]
    for stage in STAGES:
        if findings[-1].outcome != Outcome.OK:
            break
        findings.append(stage(observations, rules, j))
    finding = findings[-1]
    if finding.outcome == Outcome.OK:
        _judge_clean(findings, j)
        return j
    j.blocking = finding.stage if finding.outcome == Outcome.BLOCKED else _NOT_BLOCKED[finding.outcome]
    if finding.confirmed and finding.outcome != Outcome.UNKNOWN:
        j.confidence, j.basis = Confidence.CONFIRMED, list(finding.basis)
    judge_forensics(observations, rules, j)
    return j


# The stages after DNS, in order; each shares the rule signature (observations, context, judgement).
# QUIC after the redirect hops (issue 22): judged only when the site works over TCP, TLS and HTTP.
# Throttling after it (issue 22): a slowed name only where nothing stronger was found.
STAGES: tuple[Rule, ...] = (judge_tcp, judge_tls, judge_http, judge_redirects, judge_quic, judge_throttle)


# Seen in a record whose stages all passed, each is a reason not to call it confirmed clean: a hint
# of interference that proved nothing (docs/verdicts.md, "none").
SUSPICIOUS = frozenset({
    Anomaly.DNS_IP_TTL_DIFFERS, Anomaly.TCP_INJECTED_RST, Anomaly.TLS_INJECTED_RST, Anomaly.TLS_CERT_MISMATCH,
    Anomaly.TLS_CONTROL_SNI_CONTRAST, Anomaly.TLS_INTERCEPTION_CA_NAME, Anomaly.TLS_NATIONAL_CA_NAME,
    Anomaly.TLS_UNPARSEABLE_CERTIFICATE, Anomaly.HTTP_DIFF, Anomaly.HTTP_BLOCKPAGE_VAGUE,
    Anomaly.HTTP_BLOCKPAGE_TRAITS, Anomaly.HTTP_BLOCKPAGE_SUSPECTED,
    Anomaly.QUIC_TIMEOUT, Anomaly.QUIC_REFUSED, Anomaly.QUIC_FAILURE,  # issue 22: QUIC, recorded but not judged
    Anomaly.THROUGHPUT_UNSTABLE,  # issue 22: the name slow every time, the link too variable to say
})  # fmt: skip


def _judge_clean(findings: list[Finding], j: Judgement) -> None:
    """`none` is confirmed only when a control confirmed the addresses, nothing suspicious was
    seen, and a chain under a national CA (which a state could use to intercept) was seen from
    outside as well."""
    dns, later = findings[0], findings[1:]
    basis = [*dns.basis, *(proof for f in later for proof in f.basis)]
    if j.tls is not None and j.tls.get("valid"):
        basis.append(Proof.VALID_CHAIN)
    national_unproven = Anomaly.TLS_NATIONAL_CA in j.anomalies and Proof.HELPER_SAME_CHAIN not in basis
    if dns.confirmed and basis and not (SUSPICIOUS & set(j.anomalies)) and not national_unproven:
        j.confidence, j.basis = Confidence.CONFIRMED, list(dict.fromkeys(basis))
    else:
        j.confidence = Confidence.UNCONFIRMED
