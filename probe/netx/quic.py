"""A QUIC handshake (HTTP/3's transport, UDP) to one address with one server name, recorded.

aioquic's connection state machine (`QuicConnection`) driven by a datagram protocol of our own on the
run's event loop: no thread, no blocking call, the loop's timers for retransmissions, and the socket
closed on every way out (a timeout, an error, a cancel). The UDP socket is connected, so that an ICMP
port unreachable comes back as a refusal instead of a silence. Verification is off, as for TLS over
TCP: the chain the network presents is kept whole (base64 DER) and judged later, on the record.

What a record tells apart: silence (a timeout with no datagram back), a refusal (ICMP), a handshake
the peer closed (a TLS alert in a CRYPTO_ERROR close, or another QUIC error), and a completed one
(QUIC version, ALPN, the chain). Optionally one HTTP/3 GET of a path, and its status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
from typing import Any

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import AlertDescription
from cryptography.hazmat.primitives.serialization import Encoding

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.http import USER_AGENT
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations_quic import QuicHandshake
from probe.vocabulary.purposes import Purpose

CRYPTO_ERROR = 0x100  # RFC 9001 4.8: CRYPTO_ERROR + the TLS alert's number
IDLE_TIMEOUT = 60.0  # aioquic's own idle timer: far beyond any step, so the step's bound always ends first
# aioquic logs a peer's close as a warning: a record keeps it, the volunteer's terminal does not.
logging.getLogger("quic").addHandler(logging.NullHandler())


class QuicFailure(ConnectionError):
    """The peer (or aioquic) closed the connection before the step was over."""

    def __init__(self, error_code: int, reason: str) -> None:
        super().__init__(f"QUIC connection closed: error 0x{error_code:x} {reason}".strip())
        self.error_code = error_code


def _alert_name(error_code: int) -> str | None:
    """The TLS alert a CRYPTO_ERROR close carries (`handshake_failure`), as TLS records name it."""
    if not CRYPTO_ERROR <= error_code <= CRYPTO_ERROR + 0xFF:
        return None
    try:
        return AlertDescription(error_code - CRYPTO_ERROR).name
    except ValueError:
        return f"alert_{error_code - CRYPTO_ERROR}"


class _Driver(asyncio.DatagramProtocol):
    """Feeds datagrams and timers to one QuicConnection and sends what it has to send."""

    def __init__(self, quic: QuicConnection, clock: Clock) -> None:
        self.quic, self.clock = quic, clock
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Future[str | None] = loop.create_future()  # the ALPN, or an exception
        self.response: asyncio.Future[int | None] = loop.create_future()  # the HTTP/3 status
        self.h3: H3Connection | None = None
        self.received = 0
        self.first_reply: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if self.first_reply is None:
            self.first_reply = self.clock.now()
        self.quic.receive_datagram(data, addr, now=self.loop.time())
        closing = getattr(self.quic, "_close_event", None)  # the peer's close, before aioquic's draining ends
        if isinstance(closing, events.ConnectionTerminated):
            self._fail(QuicFailure(closing.error_code, closing.reason_phrase))
        self._process()

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for the connected socket (port unreachable: ECONNREFUSED)."""
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionAbortedError("the socket was closed"))
        self._stop_timer()

    def _fail(self, exc: BaseException) -> None:
        for future in (self.handshake, self.response):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: never "exception was never retrieved"

    def _on_timer(self) -> None:
        self.timer = None
        self.quic.handle_timer(now=self.loop.time())
        self._process()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _process(self) -> None:
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, events.HandshakeCompleted) and not self.handshake.done():
                self.handshake.set_result(event.alpn_protocol)
            elif isinstance(event, events.ConnectionTerminated):
                self._fail(QuicFailure(event.error_code, event.reason_phrase))
            if self.h3 is not None:
                self._answer(event)
            event = self.quic.next_event()
        self.transmit()

    def _answer(self, event: events.QuicEvent) -> None:
        """The GET's status, once its headers are in (a server breaking HTTP/3 fails the GET alone)."""
        assert self.h3 is not None
        try:
            answers = self.h3.handle_event(event)
        except Exception as exc:  # aioquic's H3 errors for what a hostile server sends
            if not self.response.done():
                self.response.set_exception(exc)
                self.response.exception()
            return
        for answer in answers:
            if isinstance(answer, HeadersReceived) and not self.response.done():
                status = dict(answer.headers).get(b":status", b"")
                self.response.set_result(int(status) if status.isdigit() else None)

    def transmit(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for data, _ in self.quic.datagrams_to_send(now=self.loop.time()):
            self.transport.sendto(data)  # the socket is connected to the one address
        self._stop_timer()
        at = self.quic.get_timer()
        if at is not None:
            self.timer = self.loop.call_at(at, self._on_timer)

    def close(self) -> None:
        """Say goodbye once (CONNECTION_CLOSE), without waiting for it, and close the socket."""
        self._stop_timer()
        if self.transport is None:
            return
        with contextlib.suppress(Exception):
            self.quic.close(reason_phrase="done")
            for data, _ in self.quic.datagrams_to_send(now=self.loop.time()):
                self.transport.sendto(data)
        self.transport.abort()


def _configuration(server_name: str | None) -> QuicConfiguration:
    configuration = QuicConfiguration(is_client=True, alpn_protocols=list(H3_ALPN), idle_timeout=IDLE_TIMEOUT)
    configuration.verify_mode = ssl.CERT_NONE
    configuration.server_name = server_name
    return configuration


def _presented_chain(quic: QuicConnection) -> list[str]:
    """Every certificate the server sent, leaf first, base64 DER (whatever happened afterwards)."""
    tls = getattr(quic, "tls", None)
    leaf = getattr(tls, "_peer_certificate", None)
    if leaf is None:
        return []
    rest = getattr(tls, "_peer_certificate_chain", None) or []
    return [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii") for cert in [leaf, *rest]]


def _version(quic: QuicConnection) -> str | None:
    version = getattr(quic, "_version", None)
    return f"0x{version:08x}" if isinstance(version, int) else None


async def quic_handshake(
    address: str,
    port: int,
    server_name: str | None,
    timeout: float,
    clock: Clock,
    get_path: str | None = None,
    purpose: Purpose = Purpose.TARGET,
) -> QuicHandshake:
    """A QUIC handshake offering HTTP/3 within `timeout`, then (with `get_path`, once it completed)
    one HTTP/3 GET of the path within another `timeout`. Never raises for the network's doing."""
    t0, t = clock.now(), None
    alpn: str | None = None
    failure: str | None = None
    alert: str | None = None
    error_code: int | None = None
    http: tuple[int | None, str | None] = (None, None)  # the GET's status, or its failure
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    loop = asyncio.get_running_loop()
    quic = QuicConnection(configuration=_configuration(server_name))
    driver = _Driver(quic, clock)
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: driver, remote_addr=(address, port), family=family)
        # The peer as the socket names it (IPv6: four fields), as datagrams will arrive from it.
        quic.connect(transport.get_extra_info("peername"), now=loop.time())
        driver.transmit()
        async with asyncio.timeout(timeout):
            alpn = await asyncio.shield(driver.handshake)
        t = clock.now()
        if get_path is not None:
            http = await _get(driver, server_name or address, get_path, timeout)
    except Exception as exc:  # classified as every network step is (anything unforeseen: unknown_failure)
        if t is None:
            t = clock.now()
            failure, alert, error_code = _classify(exc)
    finally:
        driver.close()
    version = _version(quic) if driver.received else None
    return QuicHandshake(address, port, server_name, purpose, version, alpn, tuple(_presented_chain(quic)), failure,
                         alert, error_code, driver.received, t0, driver.first_reply, t, *http)  # fmt: skip


async def _get(driver: _Driver, authority: str, path: str, timeout: float) -> tuple[int | None, str | None]:
    """One GET over HTTP/3; its status, or its failure (the handshake's result stands either way)."""
    try:
        driver.h3 = H3Connection(driver.quic)
        stream = driver.quic.get_next_available_stream_id()
        headers = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", authority.encode("ascii", "replace")),
                   (b":path", path.encode("utf-8")), (b"user-agent", USER_AGENT.encode("ascii"))]  # fmt: skip
        driver.h3.send_headers(stream, headers, end_stream=True)
        driver.transmit()
        async with asyncio.timeout(timeout):
            return await asyncio.shield(driver.response), None
    except Exception as exc:
        return None, _classify(exc)[0]


def _classify(exc: BaseException) -> tuple[str, str | None, int | None]:
    """The failure string, the TLS alert (if the close carried one), and the QUIC error code."""
    if isinstance(exc, QuicFailure):
        alert = _alert_name(exc.error_code)
        failure = Failure.SSL_FAILED_HANDSHAKE if alert else Failure.QUIC_CLOSED
        return str(failure), alert, exc.error_code
    return str(errors.classify(exc)), None, None
