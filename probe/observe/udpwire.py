"""DNS over UDP, keeping every reply: the injected one and the real one, each with its IP TTL.

`dns.query.udp` returns only the first reply. A device on the path that injects answers races
the real resolver, so the probe sends its questions from one unconnected socket and keeps
listening for a window after each first reply, recording every reply's source and IP TTL
(`IP_RECVTTL`, no root needed). An unconnected socket also ignores ICMP errors, so a question
sent to an address that runs no resolver simply gets no answer, unless something on the path
answers for it.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from probe.observe import errors
from probe.observe.wire import Packets, TargetWatch
from probe.vocabulary.failures import Failure

MAX_REPLIES = 16  # kept per question: an injector flooding replies cannot grow a record without bound
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = getattr(socket, "IP_TTL", 2)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)


@dataclass(frozen=True)
class Reply:
    source: str
    ip_ttl: int | None
    wire: bytes
    t: float  # measurement time


@dataclass
class Question:
    wire: bytes
    query_id: int  # unique within one exchange
    address: str
    port: int
    expects_reply: bool = True  # False for the injection probe: nobody should answer
    replies: list[Reply] = field(default_factory=list)
    dropped: int = 0  # replies beyond MAX_REPLIES, counted, not kept
    failure: str | None = None
    sent_at: float | None = None
    first_reply_at: float | None = None
    captured: list[dict[str, Any]] | None = None  # the replies as the packet capture saw them, if it ran


def _socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    except OSError:
        pass  # no TTLs, but still the replies
    return sock


def reply_ttl_available() -> bool:
    """Whether this platform tells a reply's IP TTL (`recvmsg` with ancillary data; not on Windows)."""
    return hasattr(socket.socket, "recvmsg") and hasattr(socket, "CMSG_SPACE")


def _receive(sock: socket.socket) -> tuple[bytes, list[tuple[int, int, bytes]], tuple[str, int]]:
    if reply_ttl_available():
        data, ancillary, _, source = sock.recvmsg(65535, socket.CMSG_SPACE(4))
        return data, ancillary, source
    data, source = sock.recvfrom(65535)  # the reply without its IP TTL: recorded as unknown (null)
    return data, [], source


def _ttl(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_TTL), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)) and data:
            return int.from_bytes(data[:4], sys.byteorder) if len(data) >= 4 else data[0]
    return None


def exchange(
    questions: list[Question],
    timeout: float,
    window: float,
    now: Callable[[], float],
    watch: TargetWatch | None = None,
) -> None:
    """Send every question; fill in each one's replies (or failure). Bounded by `timeout` overall.

    A question that expects a reply is listened to until `window` seconds after its first reply;
    one that does not (the injection probe) for `window` seconds after it was sent. With a `watch`,
    the packet capture's view of the replies (IP TTL and IP ID) is kept beside the socket's.
    """
    sockets: dict[socket.AddressFamily, socket.socket] = {}
    wires: list[Packets] = []
    start = time.monotonic()
    hard_deadline = start + timeout
    by_id: dict[int, Question] = {}
    selector = selectors.DefaultSelector()
    try:
        for question in questions:
            family = socket.AF_INET6 if ":" in question.address else socket.AF_INET
            if family not in sockets:
                sockets[family] = _socket(family)
                selector.register(sockets[family], selectors.EVENT_READ)
                wire = watch.udp(sockets[family]) if watch is not None else None
                if wire is not None:
                    wires.append(wire)
            try:
                sockets[family].sendto(question.wire, (question.address, question.port))
            except OSError as exc:
                question.failure = errors.classify(exc)
                continue
            question.sent_at = time.monotonic()
            by_id[question.query_id] = question

        def listen_until(question: Question) -> float:
            if question.failure is not None:
                return start
            if not question.expects_reply:
                return min(hard_deadline, (question.sent_at or start) + window)
            if question.first_reply_at is not None:
                return min(hard_deadline, question.first_reply_at + window)
            return hard_deadline

        while True:
            end = max((listen_until(q) for q in questions), default=start)
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            # selectors (epoll/poll), not select(): descriptor numbers past 1024 are fine at any concurrency.
            for key, _ in selector.select(remaining):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, ancillary, source = _receive(sock)
                except OSError:  # nothing after all, or an error report: keep listening
                    continue
                asked = by_id.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
                if asked is None:
                    continue
                if len(asked.replies) >= MAX_REPLIES:
                    asked.dropped += 1
                    continue
                asked.replies.append(Reply(source[0], _ttl(ancillary), data, now()))
                if asked.first_reply_at is None:
                    asked.first_reply_at = time.monotonic()
        for question in questions:
            if question.failure is None and not question.replies and question.expects_reply:
                question.failure = Failure.GENERIC_TIMEOUT
            if wires:
                question.captured = [dict(p) for w in wires for p in list(w) if p.get("dns_id") == question.query_id]
    finally:
        if watch is not None:
            for wire in wires:
                watch.done(wire)
        selector.close()
        for sock in sockets.values():
            sock.close()
