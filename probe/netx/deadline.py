"""One target's time: each network step gets what is left of it, and no more than one step's timeout.

A value object, made once per target (`Deadline.start`), never copied or changed: every step asks it
how long it may take (`step`), whether the target's time is up (`expired`), and how long the whole
target may wait for its last replies (`bound`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

MIN_STEP = 0.05  # seconds: a step always gets a moment, even when the target's time is nearly up


@dataclass(frozen=True)
class Deadline:
    timeout: float  # seconds for one network step (`--timeout`)
    window: float = 1.0  # seconds to keep listening for more DNS replies after the first (`--dns-window`)
    ends: float | None = None  # the target's critical path ends here (time.monotonic()); None: no end

    @classmethod
    def start(cls, timeout: float, window: float, target_deadline: float | None) -> Deadline:
        """A target's deadline, its time running from now (`--target-deadline`, if set)."""
        ends = time.monotonic() + target_deadline if target_deadline is not None else None
        return cls(timeout, window, ends)

    def left(self) -> float | None:
        """Seconds left of the target's time; None when it has no end."""
        return None if self.ends is None else self.ends - time.monotonic()

    def step(self) -> float:
        """The bound of the next network step: the timeout, or what is left of the target's time."""
        left = self.left()
        return self.timeout if left is None else max(MIN_STEP, min(self.timeout, left))

    @property
    def expired(self) -> bool:
        """The target's time is up: less than a step's moment is left. A step's timer may fire a
        little before the deadline (an event loop reads its clock once an iteration: uvloop's, under
        load, tens of milliseconds stale); what remains then is no time for another step."""
        left = self.left()
        return left is not None and left < MIN_STEP

    @property
    def lookup_bound(self) -> float:
        """Seconds within which a DNS exchange of two steps (the control's lookup, then the injection
        probe: each a timeout and a listening window) is over, whatever its transport."""
        return 2 * self.timeout + 2 * self.window + 1

    def untimed(self) -> Deadline:
        """The same steps without the target's end: for what is off the critical path."""
        return Deadline(self.timeout, self.window)
