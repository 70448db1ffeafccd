"""A changepoint rule that does not flap: a two-sided, state-aware CUSUM per (network, kind, site).

The design is OONI's event detector (ooni/data, `oonipipeline/analysis/detector.py`, after Basseville
and Nikiforov, *Detection of Abrupt Changes*, 1993, 2.2.5), applied to single measurements:

- the signal `y` is 1 for a measurement that *confirmed* the finding and 0 for one that saw the site
  reachable (`blocking: none`); anything else (offline, inconclusive, down, unconfirmed, another kind
  of finding) is no evidence either way and is not fed;
- a fixed reference mean for each state: `MU_OK` = 0 (reachable) and `MU_BLOCKED` = 1 (a confirmed
  finding proves itself: no honest network produces it), so `V` = 1 and the drift is `V / 2`;
- in the `ok` state only the upper sum runs, `s = max(0, s + y - MU_OK - V/2)`: +1/2 for a blocked
  measurement, -1/2 for a reachable one; in the `blocked` state only the lower one,
  `s = max(0, s - (y - MU_BLOCKED) - V/2)`: +1/2 for a reachable measurement, -1/2 for a blocked one;
- a change when `s > h`, `h = (evidence - 1) * V / 2`: since the sum last rested at zero, the
  measurements for the change outnumber those against it by `evidence` (3 by default). Then the
  state flips and the sum restarts at zero;
- silence decays the sum (OONI's gap decay): after more than `GAP_HOURS` without a measurement, it
  is multiplied by `0.5 ** (gap / HALFLIFE_HOURS)`, so that a half-built case from days ago does not
  fire on one new measurement. Silence never changes the state: no measurement is not a measurement
  that saw the site reachable.

A key starts in `ok` (a site is presumed reachable until proven otherwise). The onset is dated to the
first measurement of the run that built the sum (`run_start`), not to the one that crossed `h`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

MU_OK = 0.0
MU_BLOCKED = 1.0
V = MU_BLOCKED - MU_OK
DEFAULT_EVIDENCE = 3
GAP_HOURS = 24.0
HALFLIFE_HOURS = 48.0
OK, BLOCKED = "ok", "blocked"
ONSET, END = "onset", "end"


def threshold(evidence: int = DEFAULT_EVIDENCE) -> float:
    """`h` for a net excess of `evidence` measurements (at least 1)."""
    return (max(1, evidence) - 1) * V / 2.0


def parse_time(text: str) -> datetime:
    """A record's `measurement_start_time` (UTC, `...Z`) as a naive UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Cusum:
    """One key's detector; kept in the watch's state file between rounds (`as_dict`, `from_dict`)."""

    state: str = OK
    s: float = 0.0  # the sum that runs in this state (upper in ok, lower in blocked)
    run_start: str | None = None  # the first measurement of the run that built `s`
    last: str | None = None  # the latest measurement fed
    places: list[str] = field(default_factory=list)  # where the run's blocked measurements were made
    probes: list[str] = field(default_factory=list)
    measurements: int = 0  # blocked measurements in the run (ok) or in the episode (blocked)

    def step(self, blocked: bool, when: datetime, h: float, place: str | None = None, probe: str = "") -> str | None:
        """Feed one measurement; ONSET or END when the state flips, else None."""
        self._decay(when)
        if self.state == OK:
            change = self.s + (1.0 if blocked else 0.0) - MU_OK - V / 2.0
        else:
            change = self.s - ((1.0 if blocked else 0.0) - MU_BLOCKED) - V / 2.0
        if self.s <= 0.0 and change > 0.0:
            self.run_start = iso(when)
            if self.state == OK:
                self.places, self.probes, self.measurements = [], [], 0
        self.s = max(0.0, change)
        if self.s <= 0.0:
            self.run_start = None
        if blocked:
            self._saw(place, probe)
        if self.s <= h:
            return None
        self.state = BLOCKED if self.state == OK else OK
        self.s = 0.0
        return ONSET if self.state == BLOCKED else END

    def _saw(self, place: str | None, probe: str) -> None:
        self.measurements += 1
        if place and place not in self.places:
            self.places.append(place)
        if probe and probe not in self.probes:
            self.probes.append(probe)

    def _decay(self, when: datetime) -> None:
        if self.last is not None:
            gap = (when - parse_time(self.last)).total_seconds() / 3600.0
            if gap > GAP_HOURS:
                self.s *= 0.5 ** (gap / HALFLIFE_HOURS)
                if self.s < 1e-9:
                    self.s, self.run_start = 0.0, None
        if self.last is None or iso(when) > self.last:
            self.last = iso(when)

    @property
    def at_rest(self) -> bool:
        """Nothing to keep: reachable, with no case building."""
        return self.state == OK and self.s <= 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cusum:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
