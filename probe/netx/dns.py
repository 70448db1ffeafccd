"""DNS observations: the system resolver, a given resolver, and the control resolver.

Each lookup is recorded in full (resolver, transport, question, answers with TTLs, rcode,
failure, timing and the raw wire reply) so that analysts can audit it; nothing here judges.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import os
import re
import secrets
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import dns.exception
import dns.rcode
import dns.rdataclass
import dns.rdatatype
from msgspec import Struct

from probe.netx import classify as errors
from probe.netx import udpwire
from probe.netx.clock import Clock
from probe.netx.dnsmatch import plain_reply
from probe.vocabulary.errors import InputError
from probe.vocabulary.failures import Failure, unknown
from probe.vocabulary.observations import DnsAnswer, DnsLookup, DnsQuery, DnsReply

if TYPE_CHECKING:  # dns.message and dns.name are imported where a reply or a name needs them (25 ms
    import dns.message  # of a run's start): the plain replies and names of a healthy run never do


QUERY_TYPES = ("A", "AAAA")
_RCODE_FAILURES: dict[int, Failure] = {
    dns.rcode.NXDOMAIN: Failure.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: Failure.DNS_SERVFAIL,
    dns.rcode.REFUSED: Failure.DNS_REFUSED,
}
_DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


class ResolverSpecError(InputError):
    """A resolver address or URL that cannot be used."""


@dataclass(frozen=True)
class ResolverSpec:
    """Where to send DNS queries: `udp://IP[:port]`, `tcp://`, `tls://IP[:port][#name]`, or a DoH URL."""

    transport: str  # "udp", "tcp", "tls" or "https"
    address: str  # IP address, or the DoH URL for "https"
    port: int
    tls_name: str | None = None

    @property
    def url(self) -> str:
        if self.transport == "https":
            return self.address
        host = f"[{self.address}]" if ":" in self.address else self.address
        suffix = f"#{self.tls_name}" if self.tls_name else ""
        return f"{self.transport}://{host}:{self.port}{suffix}"

    @property
    def route_address(self) -> str | None:
        """An IP address that shows whether the resolver is routable at all, when one is known."""
        if self.transport != "https":
            return self.address
        host = urlsplit(self.address).hostname or ""
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return None


def parse_resolver(text: str, default_transport: str = "udp") -> ResolverSpec:
    """Parse a resolver given on the command line: a URL, or a bare `IP[:port]`."""
    if "://" not in text:
        text = f"{default_transport}://{text}"
    if text.lower().startswith("https://"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ResolverSpecError(f"no host in DoH URL {text!r}")
        return ResolverSpec("https", text, parts.port or 443)
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in ("udp", "tcp", "tls"):
        raise ResolverSpecError(f"unknown resolver transport {scheme!r} in {text!r} (udp, tcp, tls, https)")
    rest, _, tls_name = rest.partition("#")
    parts = urlsplit(f"//{rest}")
    try:
        address = str(ipaddress.ip_address(parts.hostname or ""))
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ResolverSpecError(f"resolver {text!r}: expected an IP address and optional port") from None
    if tls_name and scheme != "tls":
        raise ResolverSpecError(f"resolver {text!r}: '#name' only applies to tls://")
    return ResolverSpec(scheme, address, port, tls_name or None)


def _answers(message: dns.message.Message) -> tuple[DnsAnswer, ...]:
    rows = []
    for rrset in message.answer:
        name, kind, ttl = rrset.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl
        for rdata in rrset:
            rows.append(DnsAnswer(name, kind, ttl, rdata.to_text()))
    return tuple(rows)


@functools.lru_cache(maxsize=8)
def _verifying_context(roots: str) -> ssl.SSLContext:
    """The DoT context, made once a run per roots file: loading a CA bundle costs ~13 ms of CPU."""
    return ssl.create_default_context(cafile=roots)


def _classify_dns_exception(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return Failure.GENERIC_TIMEOUT
    if isinstance(exc, dns.exception.FormError):  # ShortHeader, TrailingJunk and the like among them
        return Failure.DNS_BOGUS_REPLY
    name = type(exc).__name__
    if type(exc).__module__.startswith(("httpx", "httpcore")):  # dnspython's DoH transport
        underneath = errors.socket_error_under(exc)  # the socket or TLS error underneath says what happened
        if underneath is not None:
            return errors.classify(underneath)
        if "Timeout" in name:
            return Failure.GENERIC_TIMEOUT
        if "SSL" in str(exc) or "certificate" in str(exc).lower():
            return Failure.SSL_FAILED_HANDSHAKE
        return unknown(f"{name}: {exc}")
    return errors.classify(exc)


class ReplyFields(Struct, frozen=True):
    """What one reply says, as its query record keeps it: rcode, answers, failure, the bytes."""

    raw_reply: str | None
    rcode: str | None
    answers: tuple[DnsAnswer, ...]
    failure: str | None

    @property
    def first_v4(self) -> str | None:
        """The first IPv4 address a NOERROR reply's answers name (where the injection probe goes)."""
        if self.failure is None:
            for answer in self.answers:
                if answer.type == "A":
                    return answer.data
        return None


def _rcode_words(rcode: int) -> tuple[str, str | None]:
    """An rcode's name, and the failure it is (None for NOERROR)."""
    text = dns.rcode.to_text(dns.rcode.Rcode.make(rcode))
    if rcode in _RCODE_FAILURES:
        return text, _RCODE_FAILURES[rcode]
    return text, (unknown(f"rcode {text}") if rcode != dns.rcode.NOERROR else None)


def _message_fields(reply: dns.message.Message, raw: str) -> ReplyFields:
    text, failure = _rcode_words(reply.rcode())
    return ReplyFields(raw, text, _answers(reply), failure)


def _reply_fields(wire: bytes) -> ReplyFields:
    """What one reply says: rcode, answers and failure; a reply that does not parse says so."""
    raw = base64.b64encode(wire).decode("ascii")
    plain = plain_reply(wire)
    if plain is not None:  # the common reply: read as dnspython reads it, without its cost (the hot path)
        text, failure = _rcode_words(plain[0])
        return ReplyFields(raw, text, tuple(DnsAnswer(*row) for row in plain[1]), failure)
    import dns.message

    try:
        reply = dns.message.from_wire(wire)
    except Exception as exc:
        return ReplyFields(raw, None, (), _classify_dns_exception(exc))
    return _message_fields(reply, raw)


def _unreadable_fields(wire: bytes) -> ReplyFields:
    """A reply whose question cannot be read: bogus, whatever else a parser might make of it."""
    return ReplyFields(base64.b64encode(wire).decode("ascii"), None, (), Failure.DNS_BOGUS_REPLY)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


@functools.lru_cache(maxsize=1024)
def _name_wire(hostname: str) -> bytes:
    """A name in wire form (uncompressed, as the only name of a question), as dnspython writes it:
    a plain ASCII name (letters, digits, `-`, `_`) written here, anything else by dnspython."""
    if len(hostname) <= 254 and _PLAIN_NAME.fullmatch(hostname) and len(hostname.rstrip(".")) <= 253:
        labels = hostname.rstrip(".").encode("ascii").split(b".")
        return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    import dns.name

    wire: bytes | None = dns.name.from_text(hostname).to_wire()
    assert wire is not None  # no file given: the bytes
    return wire


@functools.lru_cache(maxsize=1024)  # a name is asked by several resolvers and the injection probe: written once
def _question_section(hostname: str, qtype: str, rdclass: str) -> bytes:
    """A query's question section as dnspython writes it: the name, its type and class."""
    kind, klass = dns.rdatatype.from_text(qtype), dns.rdataclass.from_text(rdclass)
    return _name_wire(hostname) + struct.pack("!HH", kind, klass)


def query_wire(hostname: str, qtype: str, rdclass: str, query_id: int) -> bytes:
    """A query (recursion desired, no EDNS), byte for byte what `dns.message.make_query` gives."""
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + _question_section(hostname, qtype, rdclass)


def query_ids(count: int) -> list[int]:
    """`count` distinct unpredictable query IDs, from one read of the OS's random bytes."""
    found: list[int] = []
    while len(found) < count:
        pool = os.urandom(2 * (count + 2))
        for index in range(0, len(pool), 2):
            candidate = int.from_bytes(pool[index : index + 2], "big")
            if candidate not in found and len(found) < count:
                found.append(candidate)
    return found


def _make_query(hostname: str, qtype: str, rdclass: str = "IN") -> dns.message.Message:
    import dns.message

    query = dns.message.make_query(hostname, qtype, rdclass=rdclass, want_dnssec=False)
    query.id = secrets.randbelow(65536)
    return query


@dataclass(frozen=True)
class UdpAsk:
    """One resolver (or a silent address) to ask over UDP, within a shared batch."""

    label: str
    resolver: str  # as recorded: a udp:// URL
    address: str
    port: int
    hostname: str
    query_types: tuple[str, ...] = QUERY_TYPES
    expects_reply: bool = True
    rdclass: str = "IN"
    names_where: bool = False  # the record names where the question went (`address`, `port`): the injection probe


@dataclass
class Asking:
    """One question of a batch while it is out: what it asks, since when, and its first reply's reading."""

    ask: UdpAsk
    query_type: str
    t0: float
    question: udpwire.Question
    first: tuple[bytes, ReplyFields] | None = None  # read as soon as it came (`on_first_reply`): not read twice


def _reply_of(reply: udpwire.Reply, first: tuple[bytes, ReplyFields] | None) -> DnsReply:
    if first is not None and first[0] is reply.wire:
        fields = first[1]
    else:
        fields = _reply_fields(reply.wire) if not reply.unreadable else _unreadable_fields(reply.wire)
    return DnsReply(reply.source, reply.ip_ttl, reply.t, fields.raw_reply, fields.rcode, fields.answers, fields.failure)


def batch_records(asks: list[UdpAsk], pending: list[Asking], clock: Clock) -> dict[str, list[DnsQuery]]:
    """Each label's query records, once the batch's listening is over: every reply kept, the first
    one's reading the query's; a question without a reply has its failure (none for the injection probe)."""
    results: dict[str, list[DnsQuery]] = {ask.label: [] for ask in asks}
    for asking in pending:
        ask, question = asking.ask, asking.question
        replies = tuple(_reply_of(reply, asking.first) for reply in question.replies)
        if replies:
            head = replies[0]
            rcode, answers, raw, failure, t = head.rcode, head.answers, head.raw_reply, head.failure, head.t
        else:
            rcode, answers, raw, failure, t = None, (), None, question.failure, clock.now()
        results[ask.label].append(DnsQuery(
            ask.resolver, "udp", ask.hostname, asking.query_type, answers, rcode, failure, raw, asking.t0, t, replies,
            replies_dropped=question.dropped or None,  # a flood: counted, not kept
            unmatched_replies=question.unmatched or None,  # not for this question: nobody's answer
            wire_replies=None if question.captured is None else tuple(question.captured),
            address=ask.address if ask.names_where else None, port=ask.port if ask.names_where else None,
        ))  # fmt: skip
    return results


def udp_ask_for(spec: ResolverSpec, label: str, hostname: str) -> UdpAsk:
    return UdpAsk(label, spec.url, spec.address, spec.port, hostname)


def combine_lookup(resolver: str, transport: str, hostname: str, queries: Sequence[DnsQuery]) -> DnsLookup:
    """A lookup from its queries: the A and AAAA answers (in order, once each), and a failure only
    when there is no address (NXDOMAIN before any other; else the first; else `dns_no_answer`)."""
    addresses: list[str] = []
    for query in queries:
        for answer in query.answers:
            if answer.type in QUERY_TYPES and answer.data not in addresses:
                addresses.append(answer.data)
    failure: str | None = None
    if not addresses:
        found = [q.failure for q in queries if q.failure]
        if Failure.DNS_NXDOMAIN in found:
            failure = Failure.DNS_NXDOMAIN
        elif found:
            failure = found[0]
        else:
            failure = Failure.DNS_NO_ANSWER
    return DnsLookup(resolver, transport, hostname, tuple(addresses), failure, tuple(queries))


def system_lookup(hostname: str, t0: float, infos: list[Any] | None, failure: str | None, clock: Clock) -> DnsLookup:
    """getaddrinfo's answer (`infos`) or its failure, as a lookup of one query of type ANY."""
    answers = tuple(
        DnsAnswer(hostname, "AAAA" if family == socket.AF_INET6 else "A", None, sockaddr[0])
        for family, _, _, _, sockaddr in infos or ()
    )
    query = DnsQuery("system", "system", hostname, "ANY", answers, None, failure, None, t0, clock.now(), ())
    return combine_lookup("system", "system", hostname, (query,))


def lookup_system(hostname: str, port: int, clock: Clock) -> DnsLookup:
    """Resolve with getaddrinfo, as every program on the volunteer's machine would."""
    t0 = clock.now()
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except Exception as exc:
        return system_lookup(hostname, t0, None, errors.classify(exc), clock)
    return system_lookup(hostname, t0, infos, None, clock)


def system_resolver_addresses(path: str = "/etc/resolv.conf") -> list[str]:
    """The nameservers the system resolver asks (a home router or the ISP; never the probe's own IP)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found
