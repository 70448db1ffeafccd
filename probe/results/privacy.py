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

from probe.observe.own_addresses import SCRUBBED, address_pattern


def scrub(value: Any, addresses: frozenset[str]) -> Any:
    """A copy of `value` with every occurrence of `addresses` in its strings replaced."""
    if not addresses:
        return value
    return _scrub(value, address_pattern(addresses))


def _scrub(value: Any, pattern: re.Pattern[Any]) -> Any:
    if isinstance(value, str):
        return pattern.sub(SCRUBBED, value)
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    return value
