"""One target's observations, typed: what `record.schema.json` describes under `observations`.

Raw facts, never judgements: DNS lookups with their queries and every reply, TCP connects, TLS
handshakes, HTTP exchanges (a redirect chain is one exchange per hop), the helpers' answers and
the packet forensics' steps. `observations_codec` turns a record's JSON object into these and back;
the rules in `probe/analyze/` read them by attribute.

The types are frozen `msgspec.Struct`s: a frozen dataclass costs 1.7 us to make with 16 fields, a
frozen Struct 0.13 us, and a record holds about forty of them (mostly DNS queries and replies).

Conventions: a field the record may leave out (`hop`, `wire`, `aia_fetches`...) is None when it
is absent, and an empty tuple when it is there but empty; `extra` keeps keys this module does not
know (a newer probe's), so that nothing read is lost when written again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import Struct, field

from probe.vocabulary.observations_quic import QuicObservations  # issue 22: QUIC
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.throughput import Throughput  # issue 22: throughput flows

NO_EXTRA: Mapping[str, Any] = {}  # shared, never written to (Mapping: read-only); a plain dict pickles


class DnsAnswer(Struct, frozen=True):
    name: str
    type: str
    ttl: int | None
    data: str


class DnsReply(Struct, frozen=True):
    """One datagram that answered a UDP question (a second one is an injector's, or a duplicate)."""

    source: str
    ip_ttl: int | None
    t: float
    raw_reply: str | None
    rcode: str | None
    answers: tuple[DnsAnswer, ...]
    failure: str | None


class WireReply(Struct, frozen=True):
    """A reply as the packet capture saw it (forensics)."""

    source: str
    ip_ttl: int
    ip_id: int
    dns_id: int | None
    t: float


class DnsQuery(Struct, frozen=True):
    """One question (one type) to one resolver, and what came back. The injection probe's also
    names where it went (`address`, `port`)."""

    resolver: str
    transport: str
    hostname: str
    query_type: str
    answers: tuple[DnsAnswer, ...]
    rcode: str | None
    failure: str | None
    raw_reply: str | None
    t0: float
    t: float
    replies: tuple[DnsReply, ...]
    replies_dropped: int | None = None
    unmatched_replies: int | None = None
    wire_replies: tuple[WireReply, ...] | None = None
    address: str | None = None
    port: int | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


class DnsLookup(Struct, frozen=True):
    """One resolver's lookup of one name: its queries combined into addresses or a failure."""

    resolver: str
    transport: str
    hostname: str
    addresses: tuple[str, ...]
    failure: str | None
    queries: tuple[DnsQuery, ...]
    hop: int | None = None  # a redirect hop's lookup
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


class ControlIdentity(Struct, frozen=True):
    """Who answers the control's address over plain UDP, and over its encrypted channel."""

    plain: DnsQuery | None
    encrypted: DnsQuery | None


class DnsObservations(Struct, frozen=True):
    system: DnsLookup
    system_udp: DnsLookup | None = None
    control: DnsLookup | None = None
    control_plain: DnsLookup | None = None
    injection: DnsQuery | None = None
    control_identity: ControlIdentity | None = None
    resolver_baseline: DnsQuery | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)

    def lookups(self, *names: str) -> list[DnsLookup]:
        """The lookups named (`system`, `system_udp`, `control`, `control_plain`) that were made."""
        found = [getattr(self, name) for name in names]
        return [lookup for lookup in found if lookup is not None]


class WirePacket(Struct, frozen=True):
    """A packet that arrived for a connection, as the packet capture saw it."""

    flags: str
    ip_ttl: int
    ip_id: int
    payload: int
    t: float | None = None  # absent from the TTL sweep's summaries of older records


class TcpConnect(Struct, frozen=True):
    address: str
    port: int
    failure: str | None
    t0: float
    t: float | None
    purpose: Purpose
    hop: int | None = None
    wire: tuple[WirePacket, ...] | None = None


class AiaFetch(Struct, frozen=True):
    """A CA Issuers URL fetched to complete a chain."""

    url: str
    address: str | None
    status: int | None
    failure: str | None
    certificates: tuple[str, ...]
    cached: bool
    t0: float
    t: float | None


class TlsHandshake(Struct, frozen=True):
    address: str
    port: int
    server_name: str | None
    tls_version: str | None
    cipher_suite: str | None
    negotiated_protocol: str | None
    peer_certificates: tuple[str, ...]  # base64 DER, leaf first, as presented
    failure: str | None
    alert: str | None
    t0: float
    t: float | None
    purpose: Purpose
    os_store_valid: bool | None
    hop: int | None = None
    aia_fetches: tuple[AiaFetch, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)

    @property
    def reached_server(self) -> bool:
        """A ServerHello, or an alert the server sent: the connection reached a TLS server."""
        return self.failure is None or bool(self.alert)

    @property
    def completed(self) -> bool:
        return self.failure is None and bool(self.peer_certificates)


class HttpRequestLine(Struct, frozen=True):
    method: str
    host: str
    path: str


class HttpExchange(Struct, frozen=True):
    """One GET and its response; a redirect chain is one exchange per hop (`redirect_index`)."""

    request: HttpRequestLine
    status: int | None
    headers: tuple[tuple[str, str], ...]
    location: str | None
    title: str | None
    body_length: int | None
    body_sha256: str | None
    body_prefix: str | None
    body_truncated: bool
    failure: str | None
    t0: float
    t: float | None
    address: str | None
    url: str | None
    redirect_index: int | None
    status_line: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


# --- the helper's answer: another machine's JSON, read through typed views -----------------------


class HelperDns(Struct, frozen=True):
    addresses: tuple[str, ...]
    failure: Any


class HelperTcp(Struct, frozen=True):
    failure: Any


class HelperTls(Struct, frozen=True):
    failure: Any
    leaf_spki_sha256: Any
    valid: Any


class HelperHttp(Struct, frozen=True):
    status: Any
    failure: Any
    title: str | None  # None unless a string
    body_length: int | None  # None unless an integer
    body_length_normalized: int | None  # None unless an integer (older helpers send none)
    body_sha256: Any
    header_names: tuple[str, ...] | None  # None unless a list (older helpers send none)


class HelperResponse(Struct, frozen=True):
    """What a helper answered, kept as it came (`raw`), with the views the rules read: a part the
    helper did not send as an object is None, as the rules always read it."""

    raw: Mapping[str, Any]
    dns: HelperDns | None
    tcp: tuple[HelperTcp, ...]
    tls: HelperTls | None
    http: HelperHttp | None


class HelperAnswer(Struct, frozen=True):
    helper: str
    status: int | None
    failure: str | None
    response: HelperResponse | None
    t0: float | None
    t: float | None


# --- packet forensics ------------------------------------------------------------------------------


class SweepTry(Struct, frozen=True):
    """One exchange at one TTL: a ClientHello or a SYN that could go no further than the TTL."""

    outcome: str | None  # handshake, connected, answered, reset, failed, timeout, expired, connect_failed
    routers: tuple[str, ...]  # routers that said "time exceeded"
    failure: str | None = None
    leaf_sha256: str | None = None
    unreachable_from: tuple[str, ...] = ()
    packets: tuple[WirePacket, ...] | None = None
    t0: float | None = None  # when the try began and ended (absent from records before issue 21)
    t: float | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


class SweepRetry(Struct, frozen=True):
    target: SweepTry | None = None
    control: SweepTry | None = None


class SweepStep(Struct, frozen=True):
    """One TTL: the target's exchange and the control's, and a second try where one met silence."""

    ttl: int
    target: SweepTry | None = None
    control: SweepTry | None = None
    retry: SweepRetry | None = None

    def tries(self, side: str) -> list[SweepTry]:
        """Every try of one side (`target`, `control`) at this TTL: the first, and the retry if made."""
        again = getattr(self.retry, side) if self.retry is not None else None
        return [found for found in (getattr(self, side), again) if found is not None]


class ForensicState(Struct, frozen=True):
    """The capture's state, or the TTL sweep's when it was not run: done, skipped or stopped (why)."""

    status: str
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


class TtlSweep(Struct, frozen=True):
    """The TTL sweep (`locate`), run: every TTL's exchanges until the path's answer was clear."""

    status: str
    address: str | None
    port: int | None
    mode: str | None  # client_hello or syn
    server_name: str | None
    control_sni: str | None
    steps: tuple[SweepStep, ...]
    stopped: str | None = None
    t: float | None = None
    finding: str | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)


class Forensics(Struct, frozen=True):
    capture: ForensicState
    locate: ForensicState | TtlSweep | None


# --- one target --------------------------------------------------------------------------------------


class RedirectRefused(Struct, frozen=True):
    url: str
    address: str


class RedirectError(Struct, frozen=True):
    location: str
    reason: str


class Observations(Struct, frozen=True):
    """Everything observed of one target. `dns` is None for an IP literal."""

    dns: DnsObservations | None
    tcp_connect: tuple[TcpConnect, ...]
    tls_handshakes: tuple[TlsHandshake, ...]
    http_requests: tuple[HttpExchange, ...]
    addresses_from: str | None = None  # literal, system, control; None when no address was had
    helpers: tuple[HelperAnswer, ...] = ()
    redirect_lookups: tuple[DnsLookup, ...] | None = None
    redirect_refused: RedirectRefused | None = None
    redirect_error: RedirectError | None = None
    forensics: Forensics | None = None
    deadline_reached: str | None = None  # the step at which the target's own deadline ended it
    stage_error: str | None = None  # a probe bug in one stage: what the earlier stages saw is kept
    extra: Mapping[str, Any] = field(default_factory=lambda: NO_EXTRA)
    quic: QuicObservations | None = None  # issue 22: QUIC handshakes, when h3 was advertised or asked for
    throughput: Throughput | None = None  # issue 22: throughput flows (probe/vocabulary/throughput.py)

    def helper_view(self) -> HelperResponse | None:
        """The first helper that answered: how the target looks from outside the network."""
        for asked in self.helpers:
            if asked.response is not None:
                return asked.response
        return None
