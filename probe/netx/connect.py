"""TCP connects and TLS handshakes, recorded as observations.

The handshake runs with verification off, so that the whole chain the network presents is
captured even when it is forged; judging the chain is `certs`' job, later, on the record.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import socket
import ssl
import threading
from typing import Any

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.own_addresses import OwnAddresses
from probe.netx.watchdog import WATCHDOG
from probe.netx.wire import TargetWatch

ALPN_OFFER = ["http/1.1"]  # the probe speaks HTTP/1.1 over the same connection


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
    record: dict[str, Any] = {"address": address, "port": port, "failure": None, "t0": clock.now(), "t": None}
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


def presented_chain(tls: ssl.SSLSocket) -> list[bytes]:
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
    record: dict[str, Any] = {
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
    record["t"] = clock.now()
    record["tls_version"] = tls.version()
    cipher = tls.cipher()
    record["cipher_suite"] = cipher[0] if cipher else None
    record["negotiated_protocol"] = tls.selected_alpn_protocol()
    record["peer_certificates"] = [base64.b64encode(der).decode("ascii") for der in presented_chain(tls)]
    return tls, record


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def close_quietly(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.close()
