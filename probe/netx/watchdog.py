"""One thread that cuts connections whose time is up: cheaper than a timer thread per handshake.

A socket's timeout bounds each read, not a whole exchange; a peer dripping a byte a second keeps a
TLS handshake going for ever. Each handshake registers its deadline here; the watchdog calls the
given function (which shuts the socket down) when the deadline passes, unless cancelled first.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._pending: set[int] = set()
        self._cancelled: set[int] = set()
        self._condition = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, action: Callable[[], None]) -> int:
        """Call `action` in `seconds` unless `disarm` comes first; returns the token for it."""
        with self._condition:
            token = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, action))
            self._pending.add(token)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            self._condition.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._condition:
            if token in self._pending:  # a deadline that already fired needs no cancelling
                self._cancelled.add(token)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._heap:
                    self._condition.wait()
                when, token, action = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._condition.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._pending.discard(token)
                if token in self._cancelled:
                    self._cancelled.discard(token)
                    continue
            action()


WATCHDOG = Watchdog()
