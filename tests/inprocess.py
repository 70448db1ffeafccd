"""In-process network scenarios on loopback, without root (OONI's netemx is the model).

A `peer` is a real server socket on 127.0.0.1 (an ephemeral port) that does one thing to the first
connection it accepts: reset it, close it after the ClientHello, say nothing, answer with an HTTP
response, or run a TLS handshake that ends in an alert. Clients reach it twice: with blocking
sockets and `ssl.SSLSocket` (as the probe's primitives did), and with asyncio (as they will), so
that a test can hold both to the same failure string.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

Behaviour = Callable[[socket.socket, threading.Event], None]
SERVER_NAME = "site.example"
HOLD = 5.0  # a silent peer holds a connection at most this long (the test ends it sooner)


@dataclass(frozen=True)
class Peer:
    port: int
    handled: threading.Event  # set once the behaviour has run on the first connection


@contextlib.contextmanager
def peer(behaviour: Behaviour) -> Iterator[Peer]:
    """A server on 127.0.0.1 that runs `behaviour` on the first connection it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop, handled = threading.Event(), threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError), conn:  # ssl.SSLError is an OSError
                conn.settimeout(HOLD)
                behaviour(conn, stop)
            handled.set()
            return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield Peer(listener.getsockname()[1], handled)
    finally:
        stop.set()
        thread.join(timeout=HOLD)
        listener.close()


def read_client_hello(conn: socket.socket) -> bytes:
    """The whole first TLS record (the ClientHello): a close with unread data would be a reset."""
    head = _read_exactly(conn, 5)
    return head + _read_exactly(conn, struct.unpack("!H", head[3:5])[0])


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client went away")
        data += chunk
    return data


def abort(conn: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends a RST, not a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def reset_at_accept(conn: socket.socket, stop: threading.Event) -> None:
    abort(conn)


def reset_after_hello(conn: socket.socket, stop: threading.Event) -> None:
    read_client_hello(conn)
    abort(conn)


def close_after_hello(conn: socket.socket, stop: threading.Event) -> None:
    read_client_hello(conn)
    conn.shutdown(socket.SHUT_WR)  # a clean FIN, everything read: no reset


def silent_after_hello(conn: socket.socket, stop: threading.Event) -> None:
    read_client_hello(conn)
    stop.wait(HOLD)


def http_after_hello(conn: socket.socket, stop: threading.Event) -> None:
    read_client_hello(conn)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    conn.shutdown(socket.SHUT_WR)


def tls_server(context: ssl.SSLContext) -> Behaviour:
    """A TLS server with `context`: whatever alert it sends is its context's doing."""

    def behaviour(conn: socket.socket, stop: threading.Event) -> None:
        with context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
            tls.do_handshake()  # inside `with`: a failed handshake still closes the socket
            tls.recv(1)

    return behaviour


def server_context(
    cert: str, key: str, minimum: ssl.TLSVersion | None = None, alert: int | None = None
) -> ssl.SSLContext:
    """A server context; `alert`: the alert it answers every ClientHello with (from the SNI callback)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if minimum is not None:
        context.minimum_version = minimum
    if alert is not None:
        context.sni_callback = lambda sock, name, ctx: alert
    return context


def client_context(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context as the probe's: no verification (the chain is judged later), TLS 1.2 or later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if maximum is not None:
        context.maximum_version = maximum
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass(frozen=True)
class Attempt:
    """What a client does: connect to the peer, wait for `ready` if given (the server has acted),
    then handshake; everything within `timeout` per step."""

    port: int
    context: ssl.SSLContext
    timeout: float
    ready: threading.Event | None = None


Client = Callable[[Attempt], BaseException | None]


def blocking_handshake(attempt: Attempt) -> BaseException | None:
    """`socket.create_connection`, then `SSLSocket.do_handshake`: the exception raised, if any."""
    try:
        sock = socket.create_connection(("127.0.0.1", attempt.port), timeout=attempt.timeout)
    except OSError as exc:
        return exc
    with sock:
        if attempt.ready is not None:
            attempt.ready.wait(HOLD)
        try:
            tls = attempt.context.wrap_socket(sock, server_hostname=SERVER_NAME, do_handshake_on_connect=False)
        except OSError as exc:
            _collect_half_made_socket(exc)
            return exc
        with tls:
            try:
                tls.do_handshake()
            except OSError as exc:
                return exc
    return None


def _collect_half_made_socket(exc: BaseException) -> None:
    """`wrap_socket` on a connection already reset raises from inside SSLSocket's constructor,
    after the descriptor moved into the SSLSocket it never returns (CPython 3.11): collected here
    (its traceback's frames hold it), its ResourceWarning is the interpreter's, not the test's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        cause: BaseException | None = exc
        while cause is not None:
            cause.__traceback__ = None
            cause = cause.__context__
        gc.collect()


def asyncio_open_connection(attempt: Attempt) -> BaseException | None:
    """`asyncio.open_connection(ssl=...)` in one step, bounded by `asyncio.wait_for`."""

    async def attempt_it() -> None:
        opened = asyncio.open_connection("127.0.0.1", attempt.port, ssl=attempt.context, server_hostname=SERVER_NAME)
        _, writer = await asyncio.wait_for(opened, attempt.timeout)
        await _close(writer)

    return _raised(attempt_it())


def asyncio_start_tls(attempt: Attempt) -> BaseException | None:
    """`asyncio.open_connection`, then `StreamWriter.start_tls`, each step within `asyncio.timeout`."""

    async def attempt_it() -> None:
        async with asyncio.timeout(attempt.timeout):
            _, writer = await asyncio.open_connection("127.0.0.1", attempt.port)
        try:
            if attempt.ready is not None:
                await asyncio.to_thread(attempt.ready.wait, HOLD)
            async with asyncio.timeout(attempt.timeout):
                await writer.start_tls(attempt.context, server_hostname=SERVER_NAME)
        except BaseException:
            writer.close()  # start_tls gave the transport to its TLS protocol: wait_closed would never end
            raise
        await _close(writer)

    return _raised(attempt_it())


def asyncio_handshake_timeout(attempt: Attempt) -> BaseException | None:
    """`asyncio.open_connection(ssl=..., ssl_handshake_timeout=...)`: asyncio's own handshake bound."""

    async def attempt_it() -> None:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", attempt.port, ssl=attempt.context, server_hostname=SERVER_NAME,
            ssl_handshake_timeout=attempt.timeout,
        )  # fmt: skip
        await _close(writer)

    return _raised(attempt_it())


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _raised(work: Awaitable[None]) -> BaseException | None:
    async def run() -> BaseException | None:
        try:
            await work
        except Exception as exc:  # what the client saw is the test's subject
            return exc
        return None

    return asyncio.run(run())


def blocking_connect(sock: socket.socket, address: tuple[str, int], timeout: float) -> BaseException | None:
    """`socket.connect` on `sock` (closed after): the exception raised, if any."""
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            return exc
    return None


def asyncio_connect(sock: socket.socket, address: tuple[str, int], timeout: float) -> BaseException | None:
    """`loop.sock_connect` on `sock` (closed after), bounded by `asyncio.wait_for`."""

    async def attempt_it() -> None:
        with sock:
            sock.setblocking(False)
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), timeout)

    return _raised(attempt_it())


@contextlib.contextmanager
def full_listener() -> Iterator[int]:
    """A listener whose accept queue is full: Linux drops further SYNs (tcp_abort_on_overflow 0),
    so a connect to its port times out without a packet leaving loopback."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued: list[socket.socket] = []
    try:
        for _ in range(8):  # backlog 0 queues one connection; a few more in case the kernel rounds up
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.settimeout(0.2)
            queued.append(client)
            try:
                client.connect(address)
            except TimeoutError:
                break
        else:
            raise RuntimeError("the accept queue never filled")
        yield address[1]
    finally:
        for client in queued:
            client.close()
        listener.close()
