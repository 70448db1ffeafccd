"""What every stage's rules share: the judgement being built, the context, the helper's view.

Pure: the same observations and catalogs give the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from probe.analyze.asn import AsnTable
from probe.analyze.catalog import Catalogs
from probe.analyze.certs import ReferenceRoots, analyze_chain
from probe.vocabulary.anomalies import Anomaly, Blocking


class Outcome(StrEnum):
    """A stage's outcome; `judge` maps the first one that is not OK to the verdict."""

    OK = "ok"
    BLOCKED = "blocked"
    DOWN = "down"
    UNKNOWN = "inconclusive"
    OFFLINE = "offline"
    LOCAL = "local"


@dataclass
class Judgement:
    blocking: Blocking = Blocking.NONE
    anomalies: list[Anomaly] = field(default_factory=list)
    interceptor: dict[str, Any] | None = None
    blockpage: dict[str, Any] | None = None
    tls: dict[str, Any] | None = None  # the certificate analysis of the target's handshake

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
    asn: AsnTable | None = None  # with one, answers in the control's AS count as consistent


def helper_view(obs: dict[str, Any]) -> dict[str, Any] | None:
    """The first helper that answered: how the target looks from outside the network."""
    for asked in obs.get("helpers") or []:
        if isinstance(asked.get("response"), dict):
            return asked["response"]
    return None


def helper_failed_at(view: dict[str, Any] | None, stage: str) -> bool | None:
    """Whether the helper failed at `stage` too: True, False, or None when it cannot say."""
    if view is None:
        return None
    if stage == "tcp":
        attempts = view.get("tcp") or []
        return all(a.get("failure") for a in attempts) if attempts else None
    part = view.get(stage)
    if not isinstance(part, dict):
        return None
    return part.get("failure") is not None or (stage == "http" and part.get("status") is None)


def by_purpose(items: list[dict[str, Any]], purpose: str) -> list[dict[str, Any]]:
    return [item for item in items if item.get("purpose", "target") == purpose]


ChainAnalyzer = Callable[[dict[str, Any]], dict[str, Any]]


def chain_analyzer(host: str, at: datetime, ctx: AnalysisContext) -> ChainAnalyzer:
    """Analyze each distinct presented chain once per record."""
    cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def analysis(handshake: dict[str, Any]) -> dict[str, Any]:
        key = tuple(handshake["peer_certificates"])
        if key not in cache:
            cache[key] = analyze_chain(list(key), host, at, ctx.roots, ctx.catalogs)
        return cache[key]

    return analysis
