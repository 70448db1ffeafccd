"""The probe's own addresses, learned while measuring, so that results can scrub them.

The probe never asks anyone for its public address and never records a local one; but it learns
the source address of each connection it makes, and the address a helper saw it come from.
`probe.results.privacy` removes every one of them from a record before it is written.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from typing import Any


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

    def scrub_bytes(self, data: bytes) -> bytes:
        """`data` with every written form of the probe's addresses replaced (before it is hashed)."""
        addresses = self.snapshot()
        if not addresses or not data:
            return data
        return address_pattern(addresses, binary=True).sub(SCRUBBED.encode(), data)


SCRUBBED = "[scrubbed]"


def _forms(address: str) -> tuple[list[str], list[str]]:
    """(IPv4-like forms, IPv6 forms) in which a page or a header may write an address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        v6 = [ip.compressed, ip.exploded]
        if mapped is not None:
            return _forms(str(mapped))[0], v6
        return [], v6
    text = str(ip)
    return [re.escape(text), re.escape(text.replace(".", "-"))], [f"::ffff:{text}", f"0:0:0:0:0:ffff:{text}"]


@functools.lru_cache(maxsize=64)
def address_literals(addresses: frozenset[str]) -> tuple[bytes, ...]:
    """Text that every written form of the addresses contains, in lower case: a line that holds
    none of it (the common case) needs no pattern run over it."""
    literals: set[bytes] = set()
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address):
            literals |= {ip.compressed.encode(), ip.exploded.encode()}
            ip = ip.ipv4_mapped or ip
        if isinstance(ip, ipaddress.IPv4Address):
            literals |= {str(ip).encode(), str(ip).replace(".", "-").encode()}
    return tuple(sorted(literals))


@functools.lru_cache(maxsize=64)
def address_pattern(addresses: frozenset[str], binary: bool = False) -> re.Pattern[Any]:
    """One normaliser for every common textual form of the given addresses: IPv4 (also with a port,
    mapped into IPv6, or dashed as in `ip-203-0-113-5`), IPv6 in any case and either compression.
    Whole addresses only: 192.0.2.1 must not eat the start of 192.0.2.10."""
    v4: list[str] = []
    v6: list[str] = []
    for address in sorted(addresses):
        four, six = _forms(address)
        v4 += four
        v6 += [re.escape(form) for form in six]
    parts = []
    if v6:
        parts.append(rf"(?<![0-9A-Fa-f:])(?:{'|'.join(sorted(set(v6), key=len, reverse=True))})(?![0-9A-Fa-f:])")
    if v4:
        v4_forms = "|".join(sorted(set(v4), key=len, reverse=True))
        parts.append(rf"(?<![0-9A-Fa-f.:])(?<![0-9]-)(?:{v4_forms})(?![0-9]|[.-][0-9])")
    text = "|".join(parts)
    return re.compile(text.encode() if binary else text, re.IGNORECASE)
