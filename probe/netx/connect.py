"""TCP connects and TLS handshakes, recorded as observations.

The handshake runs with verification off, so that the whole chain the network presents is
captured even when it is forged; judging the chain is `certs`' job, later, on the record.

Two forms of each: coroutines on the run's event loop (`open_tcp`, `open_tls`: TLS over memory BIOs,
so that no thread waits on a socket and the loop's timers bound each step), which return the typed
observations (`TcpConnect`, `TlsHandshake`), and blocking functions (`tcp_connect`, `tls_handshake`)
for the helper's threads, which return the same facts as the JSON of the helper's answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.own_addresses import OwnAddresses
from probe.netx.watchdog import WATCHDOG
from probe.netx.wire import Packets, TargetWatch
from probe.vocabulary.observations import TcpConnect, TlsHandshake
from probe.vocabulary.purposes import Purpose

ALPN_OFFER = ["http/1.1"]  # the probe speaks HTTP/1.1 over the same connection


def _tcp_record(address: str, port: int, clock: Clock) -> dict[str, Any]:
    return {"address": address, "port": port, "failure": None, "t0": clock.now(), "t": None}


async def open_tcp(
    address: str,
    port: int,
    timeout: float,
    clock: Clock,
    own: OwnAddresses | None = None,
    watch: TargetWatch | None = None,
    *,
    purpose: Purpose = Purpose.TARGET,
    hop: int | None = None,
    on_wire: Callable[[Packets], None] | None = None,
) -> tuple[socket.socket | None, TcpConnect]:
    """`tcp_connect` on the event loop: the socket (non-blocking) and what was observed. With a
    `watch`, the list the capture fills with what arrives for the connection goes to `on_wire`."""
    t0 = clock.now()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if watch is not None:
            wire = watch.tcp(sock, address, port)
            if wire is not None and on_wire is not None:
                on_wire(wire)
        async with asyncio.timeout(timeout):
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException as exc:
        sock.close()  # cancelled too: no socket is left to the garbage collector
        if not isinstance(exc, Exception):
            raise
        return None, TcpConnect(address, port, errors.classify(exc), t0, clock.now(), purpose, hop)
    connected = TcpConnect(address, port, None, t0, clock.now(), purpose, hop)
    if own is not None:
        own.add(sock.getsockname()[0])
    return sock, connected


class Stream:
    """A connected socket on the event loop, with TLS over it (memory BIOs) after a handshake."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject | None = None) -> None:
        self.sock, self.tls = sock, tls
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()

    def wrap(self, context: ssl.SSLContext, server_name: str | None) -> ssl.SSLObject:
        self.tls = context.wrap_bio(self._in, self._out, server_hostname=server_name)
        return self.tls

    async def _flush(self) -> None:
        pending = self._out.read()
        if pending:
            await asyncio.get_running_loop().sock_sendall(self.sock, pending)

    async def _fill(self) -> None:
        await self._flush()
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()  # the peer closed: TLS says whether that was in order

    async def handshake(self) -> None:
        assert self.tls is not None
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._fill()
        await self._flush()  # the client's last flight

    async def send(self, data: bytes) -> None:
        if self.tls is None:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
            return
        self.tls.write(data)
        await self._flush()

    async def recv(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the end (a TLS peer that closes without close_notify too, as an
        SSL socket reads it)."""
        if self.tls is None:
            return await asyncio.get_running_loop().sock_recv(self.sock, size)
        while True:
            try:
                return self.tls.read(size)
            except ssl.SSLWantReadError:
                await self._fill()
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return b""

    def close(self) -> None:
        close_quietly(self.sock)


async def open_tls(
    sock: socket.socket,
    address: str,
    port: int,
    server_name: str | None,
    timeout: float,
    clock: Clock,
    alpn: list[str] | None = None,
    *,
    purpose: Purpose = Purpose.TARGET,
    hop: int | None = None,
) -> tuple[Stream | None, TlsHandshake]:
    """`tls_handshake` on the event loop, the whole handshake within `timeout` (a peer dripping a
    byte a second is cut at the deadline)."""
    t0 = clock.now()
    context = _client_context(tuple(ALPN_OFFER if alpn is None else alpn))
    stream = Stream(sock)
    try:
        tls = stream.wrap(context, server_name)
        async with asyncio.timeout(timeout):
            await stream.handshake()
    except BaseException as exc:
        stream.close()  # cancelled too: no socket is left to the garbage collector
        if not isinstance(exc, Exception):
            raise
        failed = TlsHandshake(address, port, server_name, None, None, None, (), errors.classify(exc),
                              errors.alert_description(exc), t0, clock.now(), purpose, None, hop)  # fmt: skip
        return None, failed
    cipher = tls.cipher()
    chain = tuple(base64.b64encode(der).decode("ascii") for der in presented_chain(tls))
    suite, protocol = cipher[0] if cipher else None, tls.selected_alpn_protocol()
    handshake = TlsHandshake(address, port, server_name, tls.version(), suite, protocol, chain, None, None, t0,
                             clock.now(), purpose, None, hop)  # fmt: skip
    return stream, handshake


def tcp_connect(
    address: str,
    port: int,
    timeout: float,
    clock: Clock,
    own: OwnAddresses | None = None,
    watch: TargetWatch | None = None,
) -> tuple[socket.socket | None, dict[str, Any]]:
    """Connect to one address. The record never holds the probe's own address; `own` learns it,
    so that it can be scrubbed from anything a server echoes back. With a `watch`, what arrives
    for the connection on the wire is recorded too (`wire`: IP TTL, IP ID, TCP flags)."""
    record = _tcp_record(address, port, clock)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if watch is not None:
            wire = watch.tcp(sock, address, port)
            if wire is not None:
                record["wire"] = wire
        sock.connect((address, port))
    except Exception as exc:
        sock.close()
        record["failure"] = errors.classify(exc)
        record["t"] = clock.now()
        return None, record
    record["t"] = clock.now()
    if own is not None:
        own.add(sock.getsockname()[0])
    return sock, record


@functools.lru_cache(maxsize=8)
def _client_context(alpn: tuple[str, ...]) -> ssl.SSLContext:
    """One context per ALPN offer, made once a run: building one costs more than a handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def presented_chain(tls: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """Every certificate the server sent, DER, leaf first."""
    getter = getattr(tls, "get_unverified_chain", None)  # public from Python 3.13
    if getter is not None:
        chain = getter() or []
        return [bytes(cert) for cert in chain]
    sslobj = getattr(tls, "_sslobj", None)
    chain = sslobj.get_unverified_chain() if sslobj is not None else None
    if chain:
        import _ssl

        return [cert.public_bytes(_ssl.ENCODING_DER) for cert in chain]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def tls_handshake(
    sock: socket.socket,
    address: str,
    port: int,
    server_name: str | None,
    timeout: float,
    clock: Clock,
    alpn: list[str] | None = None,
) -> tuple[ssl.SSLSocket | None, dict[str, Any]]:
    """Handshake on a connected socket; record chain, version, cipher, ALPN, or the failure."""
    record = _tls_record(address, port, server_name, clock)
    context = _client_context(tuple(ALPN_OFFER if alpn is None else alpn))
    sock.settimeout(timeout)
    tls: ssl.SSLSocket | None = None
    # The socket's timeout bounds each read; a peer dripping a byte a second would keep a handshake
    # going for ever. A watchdog cuts the connection when the whole handshake's time is up.
    live: list[socket.socket] = [sock]  # wrap_socket moves the descriptor: cut whichever holds it
    fired = threading.Event()

    def time_up() -> None:
        fired.set()
        _cut(live[-1])

    token = WATCHDOG.arm(timeout, time_up)
    try:
        tls = context.wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
        live.append(tls)
        tls.do_handshake()
    except Exception as exc:
        if fired.is_set() and not isinstance(exc, TimeoutError):
            exc = TimeoutError("the handshake's time is up")  # cut by the watchdog: a timeout
        record["failure"] = errors.classify(exc)
        record["alert"] = errors.alert_description(exc)
        record["t"] = clock.now()
        close_quietly(tls)  # wrap_socket took the descriptor: closing `sock` alone would leak it
        close_quietly(sock)
        return None, record
    finally:
        WATCHDOG.disarm(token)
    _handshake_facts(record, tls, clock)
    return tls, record


def _tls_record(address: str, port: int, server_name: str | None, clock: Clock) -> dict[str, Any]:
    return {
        "address": address,
        "port": port,
        "server_name": server_name,
        "tls_version": None,
        "cipher_suite": None,
        "negotiated_protocol": None,
        "peer_certificates": [],
        "failure": None,
        "alert": None,
        "os_store_valid": None,  # filled by the measurement when the chain does not validate
        "t0": clock.now(),
        "t": None,
    }


def _handshake_facts(record: dict[str, Any], tls: ssl.SSLSocket | ssl.SSLObject, clock: Clock) -> None:
    record["t"] = clock.now()
    record["tls_version"] = tls.version()
    cipher = tls.cipher()
    record["cipher_suite"] = cipher[0] if cipher else None
    record["negotiated_protocol"] = tls.selected_alpn_protocol()
    record["peer_certificates"] = [base64.b64encode(der).decode("ascii") for der in presented_chain(tls)]


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def close_quietly(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()
