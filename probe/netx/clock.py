"""Measurement time: seconds since a measurement began, as OONI's `t0` and `t` fields."""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self._start, 6)
