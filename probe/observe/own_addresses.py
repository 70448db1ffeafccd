"""The probe's own addresses, learned while measuring, so that results can scrub them.

The probe never asks anyone for its public address and never records a local one; but it learns
the source address of each connection it makes, and the address a helper saw it come from.
`probe.results.privacy` removes every one of them from a record before it is written.
"""

from __future__ import annotations

import ipaddress
import threading


class OwnAddresses:
    """The probe's own addresses, gathered while measuring; shared by every measuring thread."""

    def __init__(self) -> None:
        self._addresses: set[str] = set()
        self._lock = threading.Lock()

    def add(self, address: str | None) -> None:
        if not address:
            return
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return
        if ip.is_loopback or ip.is_unspecified:
            return
        with self._lock:
            self._addresses.add(str(ip))

    def snapshot(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._addresses)
