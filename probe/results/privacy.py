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

from probe.observe.own_addresses import SCRUBBED, address_literals, address_pattern
from probe.results.writer import encode_record

# JSON escapes after which an address's first character would be read differently in the encoded
# line than in the string it encodes (`\f`, `\b` and `\u00XX` end in a hex digit or a digit).
# Every other escape ends in a character that is no part of an address, as does the character it
# stands for, so that scrubbing the line finds exactly what scrubbing each string would.
_AMBIGUOUS_ESCAPE = re.compile(rb"\\[bfu]")


def scrub(value: Any, addresses: frozenset[str]) -> Any:
    """A copy of `value` with every occurrence of `addresses` in its strings replaced."""
    if not addresses:
        return value
    return _scrub(value, address_pattern(addresses))


def scrubbed_line(record: dict[str, Any], addresses: frozenset[str]) -> bytes:
    """The record encoded as its results line, with every occurrence of `addresses` replaced.

    One pass of the pattern over the encoded line instead of a walk over every string of the
    record (the walk cost more than judging the record); where the line holds an escape that could
    hide an address's edge, the strings are scrubbed one by one as before."""
    line = encode_record(record)
    if not addresses:
        return line
    lowered = line.lower()
    if not any(literal in lowered for literal in address_literals(addresses)):
        return line
    if _AMBIGUOUS_ESCAPE.search(line):
        return encode_record(_scrub(record, address_pattern(addresses)))
    return address_pattern(addresses, binary=True).sub(SCRUBBED.encode(), line)


def _scrub(value: Any, pattern: re.Pattern[Any]) -> Any:
    if isinstance(value, str):
        return pattern.sub(SCRUBBED, value)
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    return value
