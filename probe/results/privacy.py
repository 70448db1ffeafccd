"""Keeping the volunteer's own address, and where the probe lives on disk, out of every record.

The probe never asks anyone for its public address and never records a local one. But a page can
echo it (blockpages often print "your IP is ..."), and on a VPS the local address is the public
one. So the probe collects the addresses it learns it has (the source address of each connection
it makes, and the address a helper saw it come from), and replaces every occurrence of them in a
record's text with `[scrubbed]` before the record is written, as OONI does with the probe's IP.
Loopback and unspecified addresses identify nobody and are left alone.

Behind a home router (NAT) without a helper the probe never learns its public address, so the
text a server wrote (`page_text`: titles, the body's prefix, header values, redirect URLs) is
scrubbed of every public address that is not the measurement's own evidence: an address in any
other field of the record (DNS answers, the addresses connected to, the resolvers', the helpers',
the target's) is kept, and so are the blockpage servers' addresses of the shipped catalogs and
every address that is not public (bogons and private addresses used as block answers, the
documentation ranges of the lab). docs/volunteers.md and docs/results.md say what is kept, and why.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import re2

from probe.netx.classify import short_traceback
from probe.netx.own_addresses import SCRUBBED, address_literals, address_pattern
from probe.results.writer import encode_record

# JSON escapes after which an address's first character would be read differently in the encoded
# line than in the string it encodes (`\f`, `\b` and `\u00XX` end in a hex digit or a digit).
# Every other escape ends in a character that is no part of an address, as does the character it
# stands for, so that scrubbing the line finds exactly what scrubbing each string would.
_AMBIGUOUS_ESCAPE = re.compile(rb"\\[bfu]")

# Where a record holds text a server wrote ("*": each item of a list; a header is [name, value]).
PAGE_TEXT: frozenset[tuple[str, ...]] = frozenset({
    *(("observations", "http_requests", "*", key) for key in ("title", "body_prefix", "location", "url")),
    ("observations", "http_requests", "*", "request", "path"),
    ("observations", "http_requests", "*", "headers", "*", "*"),
    ("observations", "helpers", "*", "response", "http", "title"),
    ("observations", "helpers", "*", "response", "http", "location"),
    ("observations", "redirect_error", "location"),
    ("observations", "redirect_refused", "url"),
    ("observations", "quic", "alt_svc"),  # issue 22: the Alt-Svc header's value, kept with the QUIC handshakes
    ("analysis", "redirect_hop", "url"),
    ("blockpage", "matched"),
})  # fmt: skip
# Catalogs whose addresses are kept in page text (blockpage servers named by their address).
CATALOG_FILES = ("blockpages.json", "ooni/fingerprints_http.csv", "ooni/fingerprints_dns.csv")
_ON_THE_WAY = frozenset(path[:end] for path in PAGE_TEXT for end in range(len(path) + 1))  # and the text itself

_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# What may be a public address; `ipaddress` decides. IPv6 in the global unicast range (2000::/3: a
# first group of four hex digits from 2000 to 3fff), dotted IPv4 (alone, or ending an IPv6 form such
# as `::ffff:95.56.1.2`), and dashed IPv4 (`ip-95-56-1-2.example`), each a whole number run.
_CANDIDATE = re.compile(
    r"(?<!\w)[23][0-9A-Fa-f]{3}(?::[0-9A-Fa-f]{0,4}){1,7}(?:(?:\.\d{1,3}){3})?(?![\w:])"
    rf"|(?<![\w.]){_V4}(?![0-9]|\.[0-9])"
    r"|(?<![0-9])(?<![0-9]-)\d{1,3}(?:-\d{1,3}){3}(?![0-9]|-[0-9])"
)
# The same, roughly, in linear time (RE2): most pages hold none of it, and then need nothing more.
_MAYBE = re2.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d|\d-\d{1,3}-\d{1,3}-\d|(?i:[23][0-9a-f]{3}:[0-9a-f]{0,4}:)")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def error_text(exc: BaseException) -> str:
    """A probe bug as a record keeps it: module-relative frames and the message, no local path."""
    return short_traceback(exc)


def scrub(value: Any, addresses: frozenset[str]) -> Any:
    """A copy of `value` with every occurrence of `addresses` in its strings replaced."""
    if not addresses:
        return value
    return _scrub(value, address_pattern(addresses))


def scrubbed_line(record: dict[str, Any], addresses: frozenset[str]) -> bytes:
    """The record encoded as its results line, with every occurrence of `addresses` replaced, and
    its page text scrubbed of the public addresses that are not its evidence (`scrub_page_text`).

    One pass of the pattern over the encoded line instead of a walk over every string of the
    record (the walk cost more than judging the record); where the line holds an escape that could
    hide an address's edge, the strings are scrubbed one by one as before."""
    record = scrub_page_text(record)
    line = encode_record(record)
    if not addresses:
        return line
    lowered = line.lower()
    if not any(literal in lowered for literal in address_literals(addresses)):
        return line
    if _AMBIGUOUS_ESCAPE.search(line):
        return encode_record(_scrub(record, address_pattern(addresses)))
    return address_pattern(addresses, binary=True).sub(SCRUBBED.encode(), line)


def scrub_page_text(record: dict[str, Any]) -> dict[str, Any]:
    """The record with every public address in its page text replaced by `[scrubbed]`, unless the
    record holds it as evidence elsewhere; the record itself when there is none (the common case).

    A page whose prefix lost an address also loses the hash of its body, which would let anyone
    with the page's template find the address: `body_sha256` is then the hash of the scrubbed
    body when the prefix holds all of it, else null."""
    page_text: list[str] = []
    _collect(record, (), page_text, page=True)
    if _MAYBE.search("\n".join(page_text)) is None:  # one search of all of it: the common case ends here
        return record
    found = {ip for text in page_text for ip in _addresses(text) if _is_public(ip)}
    if not found:
        return record
    elsewhere: list[str] = []
    _collect(record, (), elsewhere, page=False)
    evidence = {ip for text in elsewhere for ip in _addresses(text)} | _catalogued()
    if found <= evidence:
        return record
    scrubbed: dict[str, Any] = _rebuild(record, (), frozenset(evidence))
    return scrubbed


@functools.cache
def _catalogued() -> frozenset[Address]:
    """The blockpage servers' addresses in the shipped catalogs (OONI's fingerprints): constants
    that a re-judged record matches its pages against, and nobody's home."""
    data = resources.files("probe") / "data"
    texts = [(data / name).read_text(encoding="utf-8") for name in CATALOG_FILES]
    return frozenset(ip for text in texts for ip in _addresses(text) if _is_public(ip))


def _collect(value: Any, path: tuple[str, ...], into: list[str], page: bool) -> None:
    """Each string of the page text (`page`) into `into`, or each string anywhere else."""
    if isinstance(value, str):
        if (path in PAGE_TEXT) == page:
            into.append(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            inner = (*path, key)
            if not page or inner in _ON_THE_WAY:
                _collect(item, inner, into, page)
    elif isinstance(value, list):
        inner = (*path, "*")
        if not page or inner in _ON_THE_WAY:
            for item in value:
                _collect(item, inner, into, page)


def _parse(text: str) -> Address | None:
    """The address a candidate is (an IPv4-mapped IPv6 address as its IPv4 address), or None."""
    try:
        ip = ipaddress.ip_address(text.replace("-", ".") if "-" in text else text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_public(ip: Address) -> bool:
    """Global unicast: for IPv6 only the range addresses are handed out from (2000::/3)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip not in _GLOBAL_UNICAST:
        return False
    return ip.is_global and not ip.is_multicast


_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _addresses(text: str) -> Iterator[Address]:
    if _MAYBE.search(text) is None:
        return
    for match in _CANDIDATE.finditer(text):
        ip = _parse(match.group())
        if ip is not None:
            yield ip


def _replace(text: str, evidence: frozenset[Address]) -> str:
    def one(match: re.Match[str]) -> str:
        ip = _parse(match.group())
        return SCRUBBED if ip is not None and _is_public(ip) and ip not in evidence else match.group()

    return _CANDIDATE.sub(one, text) if _MAYBE.search(text) is not None else text


def _rebuild(value: Any, path: tuple[str, ...], evidence: frozenset[Address]) -> Any:
    """A copy of the containers on the way to page text, with the page text scrubbed; the rest shared."""
    if isinstance(value, str):
        return _replace(value, evidence) if path in PAGE_TEXT else value
    if isinstance(value, dict):
        rebuilt = {}
        for key, item in value.items():
            inner = (*path, str(key))
            rebuilt[key] = _rebuild(item, inner, evidence) if inner in _ON_THE_WAY else item
        if path == ("observations", "http_requests", "*"):
            _rehash(value, rebuilt)
        return rebuilt
    if isinstance(value, list):
        inner = (*path, "*")
        return [_rebuild(item, inner, evidence) for item in value]
    return value


def _rehash(page: dict[str, Any], scrubbed: dict[str, Any]) -> None:
    """The body's hash and length after its prefix lost an address (see `scrub_page_text`)."""
    before, after = page.get("body_prefix"), scrubbed.get("body_prefix")
    if not isinstance(before, str) or not isinstance(after, str) or before == after:
        return
    whole = page.get("body_length") == len(before.encode()) and "\ufffd" not in before
    body = after.encode()
    scrubbed["body_sha256"] = hashlib.sha256(body).hexdigest() if whole else None
    if whole:
        scrubbed["body_length"] = len(body)


def _scrub(value: Any, pattern: re.Pattern[Any]) -> Any:
    if isinstance(value, str):
        return pattern.sub(SCRUBBED, value)
    if isinstance(value, dict):
        return {key: _scrub(item, pattern) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    return value
