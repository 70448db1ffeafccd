"""Is there a network at all? Asked once before a run, without sending a packet."""

from __future__ import annotations

import socket


def _routes_in(path: str, device_column: int, skip_header: bool) -> bool:
    try:
        with open(path, encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return True  # cannot tell: assume a network and let each measurement speak
    if skip_header:
        lines = lines[1:]
    for line in lines:
        fields = line.split()
        if len(fields) > device_column and fields[device_column] != "lo":
            return True
    return False


def source_address(address: str) -> str | None:
    """The local address the kernel would send from to reach `address` (nothing is sent)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((address, 53))
        except OSError:
            return None
        return sock.getsockname()[0]


def has_route() -> bool:
    """True when some route leaves this machine (read from /proc: nothing is sent)."""
    return _routes_in("/proc/net/route", 0, True) or _routes_in("/proc/net/ipv6_route", 9, False)
