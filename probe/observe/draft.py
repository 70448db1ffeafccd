"""One target's observations while it is measured: typed, filled in step by step, frozen at the end.

Each step appends what it observed (a `TcpConnect`, a `TlsHandshake`, an `HttpExchange`, the DNS
lookups...) to the target's `Draft`; `build` makes the frozen `Observations` that analysis judges and
`results` writes. One thing cannot be frozen while the target is measured: what the packet capture
sees arriving for a connection (`wire`) keeps coming until the target is complete, so the draft
keeps each connection's live packet list beside its record and reads it only in `build`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from probe.netx.wire import Packets
from probe.vocabulary.observations import (
    DnsLookup,
    DnsObservations,
    Forensics,
    HelperAnswer,
    HttpExchange,
    Observations,
    RedirectError,
    RedirectRefused,
    TcpConnect,
    TlsHandshake,
    WirePacket,
)
from probe.vocabulary.observations_quic import QuicObservations
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.throughput import Throughput


@dataclass
class Draft:
    dns: DnsObservations | None = None
    tcp_connect: list[TcpConnect] = field(default_factory=list)
    tls_handshakes: list[TlsHandshake] = field(default_factory=list)
    http_requests: list[HttpExchange] = field(default_factory=list)
    addresses_from: str | None = None  # literal, system, control; None when no address was had
    helpers: list[HelperAnswer] = field(default_factory=list)
    redirect_lookups: list[DnsLookup] = field(default_factory=list)
    redirect_refused: RedirectRefused | None = None
    redirect_error: RedirectError | None = None
    deadline_reached: str | None = None  # the step at which the target's own deadline ended it
    stage_error: str | None = None  # a probe bug in one stage: what the earlier stages saw is kept
    quic: QuicObservations | None = None
    throughput: Throughput | None = None
    forensics: Forensics | None = None
    _wires: dict[int, Packets] = field(default_factory=dict)  # a connection's index -> its live packets

    def add_tcp(self, connect: TcpConnect, wire: Packets | None) -> None:
        """A connection, and (with a capture) the list the capture fills with what arrives for it."""
        if wire is not None:
            self._wires[len(self.tcp_connect)] = wire
        self.tcp_connect.append(connect)

    def update_handshake(self, handshake: TlsHandshake, **changes: object) -> TlsHandshake:
        """A handshake recorded already, with more facts (AIA fetches, the OS store's opinion)."""
        changed = msgspec.structs.replace(handshake, **changes)
        for index in range(len(self.tls_handshakes) - 1, -1, -1):
            if self.tls_handshakes[index] is handshake:
                self.tls_handshakes[index] = changed
                break
        return changed

    def reached_address(self) -> str | None:
        """The address where the target's own TLS handshake completed (what QUIC and the throughput
        flows go to), if any."""
        for handshake in self.tls_handshakes:
            if handshake.purpose == Purpose.TARGET and handshake.failure is None:
                return handshake.address
        return None

    def build(self) -> Observations:
        """The frozen observations: the capture's packets as they are now (the target is complete)."""
        connects = tuple(
            msgspec.structs.replace(tcp, wire=tuple(_packet(p) for p in list(self._wires[index])))
            if index in self._wires
            else tcp
            for index, tcp in enumerate(self.tcp_connect)
        )
        return Observations(
            dns=self.dns,
            tcp_connect=connects,
            tls_handshakes=tuple(self.tls_handshakes),
            http_requests=tuple(self.http_requests),
            addresses_from=self.addresses_from,
            helpers=tuple(self.helpers),
            redirect_lookups=tuple(self.redirect_lookups) if self.redirect_lookups else None,
            redirect_refused=self.redirect_refused,
            redirect_error=self.redirect_error,
            forensics=self.forensics,
            deadline_reached=self.deadline_reached,
            stage_error=self.stage_error,
            quic=self.quic,
            throughput=self.throughput,
        )


def _packet(found: dict[str, object]) -> WirePacket:
    return msgspec.convert(found, WirePacket)
