"""Keeping the volunteer's own address out of every record.

The probe never asks anyone for its public address and never records a local one. But a page can
echo it (blockpages often print "your IP is ..."), and on a VPS the local address is the public
one. So the probe collects the addresses it learns it has (the source address of each connection
it makes, and the address a helper saw it come from), and replaces every occurrence of them in a
record's text with `[scrubbed]` before the record is written, as OONI does with the probe's IP.
Loopback and unspecified addresses identify nobody and are left alone.
"""

from __future__ import annotations

import re
from typing import Any

SCRUBBED = "[scrubbed]"


def _pattern(addresses: frozenset[str]) -> re.Pattern[str]:
    """Whole addresses only: 192.0.2.1 must not eat the start of 192.0.2.10."""
    alternatives = "|".join(re.escape(a) for a in sorted(addresses, key=len, reverse=True))
    return re.compile(rf"(?<![0-9A-Fa-f.:])(?:{alternatives})(?![0-9A-Fa-f:]|\.[0-9])")


def scrub(value: Any, addresses: frozenset[str]) -> Any:
    """A copy of `value` with every occurrence of `addresses` in its strings replaced."""
    if not addresses:
        return value
    return _scrub(value, _pattern(addresses))


def _scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(SCRUBBED, value)
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    return value
