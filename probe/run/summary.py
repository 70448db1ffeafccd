"""What a run did: counts, verdicts, findings, and why it ended (`RunSummary`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from probe.results.offline import CAPTIVE_PORTAL, NO_INTERNET, captive_portal, mark_offline, no_internet
from probe.vocabulary.anomalies import CENSORSHIP, Blocking, Confidence
from probe.vocabulary.netstate import RESTRICTED
from probe.vocabulary.targets import Target


@dataclass
class RunSummary:
    results_path: Path
    total: int
    run_id: str = ""
    started: datetime | None = None
    duration: float = 0.0
    measured: int = 0  # judged from what was observed
    not_measured: int = 0  # left when the run's deadline came, or offline (below)
    verdicts: Counter[str] = field(default_factory=Counter)
    confirmed: Counter[str] = field(default_factory=Counter)
    interceptions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    offline: str | None = None  # why nothing was measured: NO_ROUTE, NO_INTERNET, CAPTIVE_PORTAL (results.offline)
    portal: str | None = None  # with CAPTIVE_PORTAL: the portal's host (or address), never the volunteer's
    interrupted: bool = False
    deadline_reached: bool = False
    capture_stopped: str | None = None  # why the packet capture stopped mid-run, if it did
    # Each round of the reference endpoints: check, checked_at, state, basis, domestic and foreign counts.
    network_states: list[dict[str, Any]] = field(default_factory=list)
    during_restriction: Counter[str] = field(default_factory=Counter)  # verdicts measured cut off, allow-listed

    def count(
        self, target: Target, blocking: str, confidence: str, interceptor: dict[str, Any] | None,
        network_state: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        """A measured record is in the file: its verdict counted, a finding or an interception listed
        (one measured in a restricted state of the network set apart: never counted as site blocking)."""
        self.measured += 1
        self.verdicts[blocking] += 1
        if confidence == Confidence.CONFIRMED:
            self.confirmed[blocking] += 1
        restricted = (network_state or {}).get("state")
        if restricted in RESTRICTED:
            self.during_restriction[blocking] += 1
        if blocking in CENSORSHIP or blocking == Blocking.LOCAL_INTERCEPTION:
            finding = {"target": target.input, "blocking": blocking, "confidence": confidence}
            if restricted in RESTRICTED:
                finding["network_state"] = restricted
            self.findings.append(finding)
        if interceptor is not None:
            self.interceptions.append({"host": target.host, "blocking": blocking, **interceptor})

    @property
    def restricted_states(self) -> list[str]:
        """The restricted states the run saw (cut off from abroad, an allow-list, no internet), in order."""
        seen = [s["state"] for s in self.network_states if s["state"] in RESTRICTED]
        return list(dict.fromkeys(seen))

    @property
    def domestic_answered(self) -> bool:
        """A domestic service (not the system's resolver) answered in some round: the run had a network."""
        return any(s["domestic"]["answered"] for s in self.network_states)

    @property
    def blocking_found(self) -> bool:
        """Site blocking found: findings measured while the network was restricted are its state's, not a site's."""
        return any(self.verdicts[v] - self.during_restriction[v] > 0 for v in CENSORSHIP)

    @property
    def exit_reason(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.offline:
            return "offline"
        return "deadline" if self.deadline_reached else "completed"

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable summary (`--json`), for cron jobs and timers."""
        return {
            "run_id": self.run_id,
            "results_file": str(self.results_path),
            "started": self.started.isoformat() if self.started else None,
            "duration_s": round(self.duration, 3),
            "targets": self.total,
            "measured": self.measured,
            "not_measured": self.not_measured,
            "verdicts": dict(self.verdicts),
            "confirmed": dict(self.confirmed),
            "findings": self.findings,
            "exit_reason": self.exit_reason,
            "offline": self.offline,
            "portal": self.portal,
            "capture_stopped": self.capture_stopped,
            "network_states": self.network_states,
        }

    def conclude(self, cause: str | None) -> None:
        """A finished run: with no route, no internet or a captive portal (`probe.results.offline`), its
        records are marked offline, and nothing measured is claimed: every target counts as not measured."""
        # A domestic service answered (a cut-off from abroad, an allow-list): the run had a network, and
        # what it measured is kept, attributed to the network's state (docs/verdicts.md).
        if cause is None and self.measured and not self.domestic_answered and no_internet(self.results_path):
            cause = NO_INTERNET
        if cause is None and self.measured:
            self.portal = captive_portal(self.results_path)
            cause = CAPTIVE_PORTAL if self.portal else None
        if cause is None:
            return
        self.offline, self.verdicts = cause, mark_offline(self.results_path, cause)
        offline = self.verdicts[Blocking.OFFLINE]
        self.measured, self.not_measured = self.measured - offline, self.not_measured + offline
        self.confirmed, self.findings, self.interceptions = Counter(), [], []
