"""A bounded bulk download over TLS, recorded for throughput: how fast the bytes came, where a flow
stalled, and what the kernel saw of losses. A coroutine on the run's event loop; it judges nothing.

One flow is one fresh connection: TCP, a TLS handshake with the given SNI (or none; verification
off, as every handshake of the probe), one `GET` (HTTP/1.1, `Connection: close`), then the body read
until `size` bytes, the end of the response, a stall or the flow's bound:

- `samples`: `[t, bytes]` pairs, seconds since the request was sent and body bytes received by then,
  taken at exponentially spaced times (0.05 s, then each 1.5 times the last, as ndt7 spreads its
  measurements so that a long flow is not drowned in samples), and at the end; at most MAX_SAMPLES;
- `stalled_at`: the body bytes received when no byte came for `stall` seconds (a freeze), and
  `stalled_at_wire` the TCP payload bytes received on the connection by then (the TLS handshake
  included: what a censor's byte counter counts), from the kernel;
- `tcp_info`: Linux's TCP_INFO at the end: the smoothed RTT, our retransmissions, out-of-order
  segments received (the server's segments lost on the way), bytes and data segments received.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.connect import Stream, open_tcp, open_tls
from probe.netx.own_addresses import OwnAddresses
from probe.vocabulary.failures import Failure
from probe.vocabulary.throughput import FLOW_TARGET, BulkFlow, TcpInfo

MAX_HEADER_BYTES = 16 << 10
MAX_BULK_BYTES = 4 << 20  # no flow reads more, whatever it is asked
MAX_SAMPLES = 40
FIRST_SAMPLE = 0.05  # seconds
SAMPLE_GROWTH = 1.5
READ_SIZE = 65536


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """What Linux's TCP_INFO says of a connection (None elsewhere, or when the kernel says less)."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, option, 256)
    except OSError:
        return None
    if len(raw) < 144:  # bytes_received and segs_in came with Linux 4.1-4.2
        return None
    return TcpInfo(
        rtt_us=struct.unpack_from("I", raw, 68)[0],
        rttvar_us=struct.unpack_from("I", raw, 72)[0],
        total_retrans=struct.unpack_from("I", raw, 100)[0],
        bytes_received=struct.unpack_from("Q", raw, 128)[0],
        segs_in=struct.unpack_from("I", raw, 140)[0],
        min_rtt_us=struct.unpack_from("I", raw, 148)[0] if len(raw) >= 152 else None,
        rcv_ooopack=struct.unpack_from("I", raw, 224)[0] if len(raw) >= 228 else None,  # Linux 5.4
    )


class _Body:
    """What the request and its response came to, while the body is read (a flow's facts)."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.content_length: int | None = None
        self.failure: str | None = None
        self.stalled_at: int | None = None
        self.bytes = 0
        self.samples: tuple[tuple[float, int], ...] = ()
        self.t_request: float | None = None


class _Sampler:
    """Body bytes at exponentially spaced times since the request went out."""

    def __init__(self, started: float) -> None:
        self.started, self.next_at, self.samples = started, FIRST_SAMPLE, list[tuple[float, int]]()

    def see(self, received: int, now: float) -> None:
        elapsed = now - self.started
        while elapsed >= self.next_at and len(self.samples) < MAX_SAMPLES - 1:
            self.samples.append((round(elapsed, 4), received))
            while self.next_at <= elapsed:
                self.next_at *= SAMPLE_GROWTH

    def end(self, received: int, now: float) -> tuple[tuple[float, int], ...]:
        last = (round(now - self.started, 4), received)
        if not self.samples or self.samples[-1] != last:
            self.samples.append(last)
        return tuple(self.samples)


def _status_of(head: bytes) -> tuple[int | None, int | None]:
    """The status code and Content-Length of a response head (None where absent or malformed)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    return status, length


def request_bytes(host: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Accept: */*", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def download(
    address: str,
    port: int,
    server_name: str | None,
    host: str,
    path: str,
    *,
    size: int,
    bound: float,
    stall: float,
    step_timeout: float,
    clock: Clock,
    headers: dict[str, str] | None = None,
    own: OwnAddresses | None = None,
    kind: str = FLOW_TARGET,
    round_number: int = 0,
) -> BulkFlow:
    """One flow: connect, handshake with `server_name`, GET `path` from `host`, read at most `size`
    body bytes. The whole flow ends within `bound` seconds (connect and handshake each within
    `step_timeout` too), a flow with no byte for `stall` seconds ends as stalled. Always a record,
    labelled with the caller's `kind` (which name it carries) and `round_number`."""
    t0 = clock.now()
    size = max(0, min(size, MAX_BULK_BYTES))
    ends = time.monotonic() + bound
    sock, connected = await open_tcp(address, port, min(step_timeout, bound), clock, own)
    if sock is None:
        return BulkFlow(kind, round_number, address, port, server_name, None, connected.failure, 0, None, (), None,
                        None, None, connected.t, None, None, t0, clock.now())  # fmt: skip
    handshake_bound = max(0.05, min(step_timeout, ends - time.monotonic()))
    stream, handshake = await open_tls(sock, address, port, server_name, handshake_bound, clock)
    if stream is None:
        return BulkFlow(kind, round_number, address, port, server_name, None, handshake.failure, 0, None, (), None,
                        None, None, connected.t, handshake.t, None, t0, clock.now())  # fmt: skip
    body = _Body()
    try:
        await _read_flow(stream, body, request_bytes(host, path, headers or {}), size, ends, stall, clock)
    finally:
        info = tcp_info(stream.sock)
        if body.failure is not None:
            _abort(stream.sock)  # the server stops sending at once, even where a censor drops what it sends
        stream.close()
    wire = info.bytes_received if body.stalled_at is not None and info is not None else None
    return BulkFlow(kind, round_number, address, port, server_name, body.status, body.failure, body.bytes,
                    body.content_length, body.samples, body.stalled_at, wire, info, connected.t, handshake.t,
                    body.t_request, t0, clock.now())  # fmt: skip


def _abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0) rather than a FIN: an unfinished download ends for the server too."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _read_flow(
    stream: Stream, found: _Body, request: bytes, size: int, ends: float, stall: float, clock: Clock
) -> None:
    """The request, the head, then the body until `size`, the response's end, a stall or `ends`."""
    head, body = b"", 0
    sampler: _Sampler | None = None
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, ends - time.monotonic())):
            await stream.send(request)
            found.t_request = clock.now()
            sampler = _Sampler(time.monotonic())
            while True:
                try:
                    async with asyncio.timeout(stall):
                        data = await stream.recv(READ_SIZE)
                except TimeoutError:
                    found.stalled_at, found.failure = body, Failure.GENERIC_TIMEOUT
                    break
                if not data:
                    if found.status is None or (found.content_length or 0) > body:
                        found.failure = Failure.EOF_ERROR
                    break
                if found.status is None:
                    head += data
                    if b"\r\n\r\n" not in head:
                        if len(head) > MAX_HEADER_BYTES:
                            found.failure = Failure.HTTP_INVALID_RESPONSE
                            break
                        continue
                    head, _, data = head.partition(b"\r\n\r\n")
                    found.status, found.content_length = _status_of(head)
                    if found.status is None:
                        found.failure = Failure.HTTP_INVALID_RESPONSE
                        break
                body += len(data)
                sampler.see(min(body, size), time.monotonic())
                if body >= size or (found.content_length is not None and body >= found.content_length):
                    break
    except TimeoutError:  # the flow's bound: what came is the measurement
        found.failure = found.failure or Failure.GENERIC_TIMEOUT
    except Exception as exc:  # noqa: BLE001 - a network step: classified, never raised
        found.failure = errors.classify(exc)
    found.bytes = min(body, size)
    if sampler is not None:
        found.samples = sampler.end(found.bytes, time.monotonic())
