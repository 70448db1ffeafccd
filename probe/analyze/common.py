"""What every stage's rules share: the judgement being built, the context, the helper's view.

Pure: the same observations and catalogs give the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from probe.analyze.asn import AsNumbers
from probe.analyze.catalog import Catalogs
from probe.analyze.certs import ReferenceRoots
from probe.analyze.chain import analyze_chain
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.observations import HelperResponse, Observations, TcpConnect, TlsHandshake
from probe.vocabulary.proofs import Proof
from probe.vocabulary.purposes import Purpose


class Outcome(StrEnum):
    """A stage's outcome; `judge` maps the first one that is not OK to the verdict."""

    OK = "ok"
    BLOCKED = "blocked"
    DOWN = "down"
    UNKNOWN = "inconclusive"
    LOCAL = "local"


class Finding(NamedTuple):
    """What one stage found: its outcome, whether a control proved it, and the verdict it names
    when the outcome is BLOCKED (`tls_mitm` for a substituted chain, say). A confirmed finding
    names what proved it (`basis`); `proven` builds one."""

    outcome: Outcome
    confirmed: bool
    stage: Blocking
    basis: tuple[Proof, ...] = ()


def proven(outcome: Outcome, stage: Blocking, *basis: Proof) -> Finding:
    """A finding confirmed by the evidence named (at least one)."""
    if not basis:
        raise ValueError("a confirmed finding names what proved it")
    return Finding(outcome, True, stage, tuple(dict.fromkeys(basis)))


@dataclass
class Judgement:
    blocking: Blocking = Blocking.NONE
    confidence: Confidence = Confidence.UNCONFIRMED
    anomalies: list[Anomaly] = field(default_factory=list)
    interceptor: dict[str, Any] | None = None
    blockpage: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None  # the certificate analysis of the target's handshake
    redirect_hop: dict[str, Any] | None = None  # the hop a finding is on, when not the first response
    forensics: dict[str, Any] | None = None  # injected resets and the censor's hop, from packet forensics
    basis: list[Proof] = field(default_factory=list)  # what proved a confirmed verdict (empty otherwise)
    national_ca: dict[str, Any] | None = None  # the national CA the site's chain verifies to, if any
    throttle: dict[str, Any] | None = None  # issue 22: a slowed or frozen name (analyze/throttle.py)

    def add(self, *codes: Anomaly) -> None:
        for code in codes:
            if not isinstance(code, Anomaly):  # mypy catches it in the code; this catches it in data
                raise TypeError(f"{code!r} is not an anomaly code of the vocabulary")
            if code not in self.anomalies:
                self.anomalies.append(code)


@dataclass(frozen=True)
class AnalysisContext:
    roots: ReferenceRoots
    catalogs: Catalogs
    documentation_is_public: bool = False
    asn: AsNumbers | None = None  # with one, answers in the control's AS count as consistent
    nat64_prefixes: tuple[str, ...] = ("64:ff9b::/96",)  # addresses judged by the IPv4 address they embed


ChainAnalyzer = Callable[[TlsHandshake], dict[str, Any]]


@dataclass(frozen=True)
class RuleContext:
    """What every stage's rules read beside the observations: the target's name, the catalogs and
    roots, each presented chain's analysis, the helper's view, and whether a control confirmed the
    addresses the later stages used (the DNS stage's finding; False while DNS is judged)."""

    host: str
    analysis: AnalysisContext
    analysis_of: ChainAnalyzer
    helper: HelperResponse | None
    confirmed: bool = False


# One signature for every stage's rules: the target's observations, the context, the judgement built.
Rule = Callable[[Observations, RuleContext, Judgement], Finding]


def helper_failed_at(view: HelperResponse | None, stage: str) -> bool | None:
    """Whether the helper failed at `stage` too: True, False, or None when it cannot say."""
    if view is None:
        return None
    if stage == "tcp":
        return all(a.failure for a in view.tcp) if view.tcp else None
    if stage == "tls":
        return None if view.tls is None else view.tls.failure is not None
    if view.http is None:
        return None
    return view.http.failure is not None or view.http.status is None


def helper_contrast(view: HelperResponse | None, stage: str, verdict: Blocking, j: Judgement) -> Finding | None:
    """What the helper says of a stage that failed here: failed too (down for everyone), worked from
    outside (this path breaks it: blocked, confirmed), or nothing (None: the caller's rules decide)."""
    failed = helper_failed_at(view, stage)
    if failed:
        j.add(Anomaly.HELPER_SAME_FAILURE)
        return proven(Outcome.DOWN, verdict, Proof.HELPER_SAME_FAILURE)
    if failed is False:
        return proven(Outcome.BLOCKED, verdict, Proof.HELPER_REACHED)
    return None


Connection = TypeVar("Connection", TcpConnect, TlsHandshake)


def by_purpose(items: tuple[Connection, ...], purpose: Purpose) -> list[Connection]:
    return [item for item in items if item.purpose == purpose]


def chain_analyzer(host: str, at: datetime, ctx: AnalysisContext) -> ChainAnalyzer:
    """Analyze each distinct presented chain once per record, for the name it was asked for."""
    cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}

    def analysis(handshake: TlsHandshake) -> dict[str, Any]:
        name = handshake.server_name or handshake.address or host
        fetched = tuple(der for fetch in handshake.aia_fetches or () for der in fetch.certificates)
        key = (name, handshake.peer_certificates, fetched)
        if key not in cache:
            cache[key] = analyze_chain(list(key[1]), name, at, ctx.roots, ctx.catalogs, list(fetched))
        return cache[key]

    return analysis


def hop_items(items: tuple[Connection, ...], purposes: tuple[Purpose, ...], hop: int | None) -> list[Connection]:
    """The records of one hop with the given purposes (hop None: the target's own connections)."""
    return [item for item in items if item.purpose in purposes and item.hop == hop]
