"""Analysis: observations + catalogs -> anomalies, interceptor and verdict. Pure and repeatable.

The verdict is the earliest stage (dns, then tcp, then tls, then http) that failed in a way the
control did not. Where no control could speak for a stage, the verdict is `inconclusive`, never a
claim; with no network at all it is `offline`. docs/verdicts.md states the rules in prose.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from probe.analyze.common import (
    AnalysisContext,
    ChainAnalyzer,
    Finding,
    Judgement,
    Outcome,
    chain_analyzer,
    helper_view,
)
from probe.analyze.dns import judge_dns
from probe.analyze.forensics import judge_forensics
from probe.analyze.http import judge_http
from probe.analyze.redirects import judge_redirects
from probe.analyze.tcp import judge_tcp
from probe.analyze.tls import judge_tls, tls_valid_addresses
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.proofs import Proof

__all__ = ["AnalysisContext", "Judgement", "judge", "RULES_VERSION"]

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
    """The record's anomalies, verdict, confidence, interceptor and blockpage, from observations alone."""
    j = Judgement()
    if offline or observations is None:
        j.blocking = Blocking.OFFLINE
        j.add(Anomaly.NETWORK_OFFLINE)
        return j
    host = target["host"]
    analysis_of = chain_analyzer(host, at, ctx)
    helper = helper_view(observations)
    if any(asked.get("failure") for asked in observations.get("helpers") or []):
        j.add(Anomaly.HELPER_FAILED)
    valid = tls_valid_addresses(observations, analysis_of)
    dns = judge_dns(observations["dns"], valid, helper, ctx, j)
    confirmed = dns.confirmed  # whether a control confirmed the addresses the later stages used
    stages: list[Callable[[], Finding]] = [
        lambda: judge_tcp(observations, confirmed, j),
        lambda: judge_tls(observations, analysis_of, confirmed, host, j),
        lambda: judge_http(observations, confirmed, ctx, host, j),
        lambda: judge_redirects(observations, analysis_of, host, j),
    ]
    findings = [dns]
    for stage in stages:
        if findings[-1].outcome != Outcome.OK:
            break
        findings.append(stage())
    finding = findings[-1]
    if finding.outcome == Outcome.OK:
        _judge_clean(findings, j)
        return j
    j.blocking = finding.stage if finding.outcome == Outcome.BLOCKED else _NOT_BLOCKED[finding.outcome]
    if finding.confirmed and finding.outcome != Outcome.UNKNOWN:
        j.confidence, j.basis = Confidence.CONFIRMED, list(finding.basis)
    judge_forensics(observations, j, forged_leaves(observations, analysis_of), ctx)
    return j


# Seen in a record whose stages all passed, each is a reason not to call it confirmed clean: a hint
# of interference that proved nothing (docs/verdicts.md, "none").
SUSPICIOUS = frozenset({
    Anomaly.DNS_IP_TTL_DIFFERS, Anomaly.TCP_INJECTED_RST, Anomaly.TLS_INJECTED_RST, Anomaly.TLS_CERT_MISMATCH,
    Anomaly.TLS_CONTROL_SNI_CONTRAST, Anomaly.TLS_INTERCEPTION_CA_NAME, Anomaly.TLS_NATIONAL_CA_NAME,
    Anomaly.TLS_UNPARSEABLE_CERTIFICATE, Anomaly.HTTP_DIFF, Anomaly.HTTP_BLOCKPAGE_VAGUE,
    Anomaly.HTTP_BLOCKPAGE_TRAITS, Anomaly.HTTP_BLOCKPAGE_SUSPECTED,
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


def forged_leaves(observations: dict[str, Any], analysis_of: ChainAnalyzer) -> set[str]:
    """SHA-256 of the leaves the target's handshakes presented that do not validate."""
    leaves = set()
    for handshake in observations.get("tls_handshakes") or []:
        if handshake.get("purpose", "target") == "target" and handshake.get("peer_certificates"):
            analysis = analysis_of(handshake)
            if not analysis["valid"] and analysis.get("certificates"):
                leaves.add(analysis["certificates"][0]["sha256_der"])
    return leaves
