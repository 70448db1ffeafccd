"""How far behind the probe is, and how many targets it takes in because of it.

Load must never become a finding (issue 21): a probe too busy to read its sockets on time would
record its own slowness as the network's. A timer on the run's event loop that asks to fire every `PERIOD`
seconds and notes how late it fired measures that lag; a run that falls behind takes fewer targets in at once (the
intake shrinks, then grows again when the lag is gone) instead of timing out those it has; and
each record says how far behind the probe was while measuring it (`probe_lag`), so that an analyst
can discount records made under load.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time

PERIOD = 0.1  # seconds between the timer's wake-ups
KEEP = 6000  # samples kept (at least): ten minutes, longer than any target is measured
# A loop with a hundred targets in flight runs its ready callbacks in rounds of a tenth of a second or
# two: that is throughput, not harm. Harm starts where the lag eats into a step's own timeout (seconds).
LAG_HIGH = 1.0  # seconds behind: take fewer targets in
LAG_LOW = 0.3  # seconds behind at most: take more in again
SHRINK = 0.7  # the intake's factor when behind (at most once per SHRINK_EVERY)
SHRINK_EVERY = 1.0  # seconds: a cut takes effect as the targets in flight finish
GROW = 4  # the intake starts at a quarter of the ceiling, and grows by a quarter a period while the probe keeps up


class LagMonitor:
    """The lag samples (when, seconds late) and the intake they set, between `floor` and `ceiling`."""

    def __init__(self, ceiling: int, floor: int | None = None) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(self.ceiling, floor if floor is not None else self.ceiling // 10))
        # A slow start: a hundred targets' first questions at once overflow a home router's (or a
        # local resolver's) socket buffer, and getaddrinfo waits five seconds to ask again. It is
        # clocked by the resolver's answers (`answered`), as TCP's is by acknowledgements, and by
        # the timer: a quick resolver lets the whole intake in within its first round trips.
        self.burst = max(self.floor, self.ceiling // GROW)  # targets' first questions out at once, at most
        self._allowed = float(self.burst)
        self._when: list[float] = []
        self._lag: list[float] = []
        self._lock = threading.Lock()  # the recorder's thread reads `lag_between` too
        self._last_cut = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer on the run's loop: how late it fires is how far behind the loop is."""
        self._tick(loop, time.monotonic())

    def _tick(self, loop: asyncio.AbstractEventLoop, asked: float) -> None:
        now = time.monotonic()
        if self._timer is not None:
            self.note(now, max(0.0, now - asked - PERIOD))
        self._timer = loop.call_later(PERIOD, self._tick, loop, now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def note(self, when: float, lag: float) -> None:
        """One sample: the intake shrinks when the probe is behind, and grows back when it is not."""
        with self._lock:
            self._when.append(when)
            self._lag.append(lag)
            if len(self._when) > 2 * KEEP:
                del self._when[:KEEP], self._lag[:KEEP]
            if lag > LAG_HIGH and when - self._last_cut >= SHRINK_EVERY:
                self._allowed = max(float(self.floor), self._allowed * SHRINK)
                self._last_cut = when
            elif lag < LAG_LOW:
                self._allowed = min(float(self.ceiling), self._allowed + max(1.0, self.ceiling / GROW))

    def answered(self) -> None:
        """A target's system answer is in: the resolver kept up, one more target may come in (the
        intake doubles each round trip of the resolver), unless the probe is behind."""
        with self._lock:
            if not self._lag or self._lag[-1] < LAG_LOW:
                self._allowed = min(float(self.ceiling), self._allowed + 1.0)

    @property
    def allowed(self) -> int:
        """How many targets may be measured at once now."""
        with self._lock:
            return int(self._allowed)

    def lag_between(self, start: float, end: float) -> float:
        """The most the probe was behind from `start` to `end` (time.monotonic()), in seconds."""
        with self._lock:
            first = bisect.bisect_left(self._when, start)
            last = bisect.bisect_right(self._when, end + PERIOD)  # the sample that ends the interval counts
            return round(max(self._lag[first:last], default=0.0), 3)
