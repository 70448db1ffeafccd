"""The helper's limits per client, in memory only: a token bucket for the rate, and counts of what a
client holds at once (connections, measuring slots).

A client is its address, an IPv6 client its /64: a host is given a whole /64 and picks addresses in
it at will (privacy addresses rotate by themselves), so a limit per IPv6 address would be no limit.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


def client_key(address: str) -> str:
    """What a limit counts as one client: an IPv4 address as it is (an IPv4-mapped IPv6 address as
    its IPv4 address), an IPv6 address as its /64 (its scope, if any, dropped)."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an address (a Unix socket's path, say): itself
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(parsed) >> 64 << 64)}/64"
    return str(parsed)


@dataclass
class RateLimiter:
    """A token bucket per client (`client_key`): `rate` requests a minute, bursts of `burst`."""

    rate_per_minute: float
    burst: int
    max_clients: int = 100_000  # bounded memory: the least recently seen client is forgotten first
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, address: str) -> bool:
        client = client_key(address)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_minute / 60.0)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)  # now the most recent
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return allowed


@dataclass
class PerClient:
    """At most `cap` of something (connections, measuring slots) held by one client (`client_key`)
    at once. Never waits: `take` says at once whether the client may have one more. Only clients
    that hold something are remembered, so the table is bounded by what is held."""

    cap: int
    _held: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, address: str) -> Callable[[], None] | None:
        """One more for this client, or None past its cap. The returned function gives it back
        (once, however often it is called)."""
        client = client_key(address)
        with self._lock:
            held = self._held.get(client, 0)
            if held >= self.cap:
                return None
            self._held[client] = held + 1
        given_back = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                left = self._held[client] - 1
                if left:
                    self._held[client] = left
                else:
                    del self._held[client]

        return give_back

    def held(self, address: str) -> int:
        with self._lock:
            return self._held.get(client_key(address), 0)


class Lease:
    """One client's measuring slot, held until the measurement and every hold taken on it (a lookup
    still running in its worker after the measurement went on without it) have ended."""

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self._holds = 1  # the measurement's own
        self._lock = threading.Lock()

    def hold(self) -> Callable[[], None]:
        """One more hold on the slot; the returned function lets go of it (once)."""
        with self._lock:
            self._holds += 1
        let_go = threading.Event()

        def release() -> None:
            with self._lock:
                if let_go.is_set():
                    return
                let_go.set()
            self._drop()

        return release

    def release(self) -> None:
        """The measurement's own hold (call once)."""
        self._drop()

    def _drop(self) -> None:
        with self._lock:
            self._holds -= 1
            last = self._holds == 0
        if last:
            self._give_back()
