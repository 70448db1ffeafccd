"""The helper's rate limit: a token bucket per client address, in memory only."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    """A token bucket per client address: `rate` requests a minute, bursts of `burst`."""

    rate_per_minute: float
    burst: int
    max_clients: int = 100_000  # bounded memory: the least recently seen client is forgotten first
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_minute / 60.0)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)  # now the most recent
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return allowed
