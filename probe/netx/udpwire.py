"""DNS over UDP, keeping every reply: the injected one and the real one, each with its IP TTL.

`dns.query.udp` returns only the first reply. A device on the path that injects answers races
the real resolver, so the probe sends its questions from one unconnected socket and keeps
listening for a window after each first reply, recording every reply's source and IP TTL
(`IP_RECVTTL`, no root needed). An unconnected socket also ignores ICMP errors, so a question
sent to an address that runs no resolver simply gets no answer, unless something on the path
answers for it. The listening is one thread's for the whole run (`UdpListener`): an exchange is
sent by its caller and handed over; its future is done when its windows are over.

A datagram is a question's reply only with its ID, QR set, its opcode, from the address and port
it went to, and its question (name, case-insensitively unless randomised by 0x20; type; class).
Anything else (a late reply for another name on a reused port, a query echoed back, a datagram
from elsewhere) is nobody's answer: counted (`Question.unmatched`), never kept. An injector's
forgery copies the question and spoofs the queried address: it still counts, as it must.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from probe.netx import classify as errors
from probe.netx.dnsmatch import Asked, same_host
from probe.netx.wire import Packets, TargetWatch
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
    # From where the question went, with its ID and QR set, but a question section that cannot be
    # read (a truncated header, a compression loop): kept as the bogus reply it is, never an answer.
    unreadable: bool = False


@dataclass
class Question:
    wire: bytes
    query_id: int  # unique within one exchange
    address: str
    port: int
    expects_reply: bool = True  # False for the injection probe: nobody should answer
    exact_case: bool = False  # the name's case was randomised (0x20): a reply must echo it exactly
    replies: list[Reply] = field(default_factory=list)
    dropped: int = 0  # replies beyond MAX_REPLIES, counted, not kept
    unmatched: int = 0  # datagrams with its ID, or from where it went, that are not its reply: counted only
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


class _Exchange:
    """One exchange's sockets, questions and listening windows (see `exchange`)."""

    def __init__(
        self, questions: list[Question], timeout: float, window: float, now: Callable[[], float],
        watch: TargetWatch | None,
    ) -> None:  # fmt: skip
        self.questions, self.window, self.now, self.watch = questions, window, now, watch
        self.sockets: dict[socket.AddressFamily, socket.socket] = {}
        self.wires: list[Packets] = []
        self.start = time.monotonic()
        self.hard_deadline = self.start + timeout
        self.by_id: dict[int, Asked[Question]] = {}
        self.done: Future[None] = Future()
        self.over = False  # taken off the listener (set under its lock)

    def send(self) -> list[socket.socket]:
        """Open the sockets and send every question; the sockets to listen on."""
        for question in self.questions:
            family = socket.AF_INET6 if ":" in question.address else socket.AF_INET
            if family not in self.sockets:
                self.sockets[family] = _socket(family)
                wire = self.watch.udp(self.sockets[family]) if self.watch is not None else None
                if wire is not None:
                    self.wires.append(wire)
            try:
                self.sockets[family].sendto(question.wire, (question.address, question.port))
            except OSError as exc:
                question.failure = errors.classify(exc)
                continue
            question.sent_at = time.monotonic()
            self.by_id[question.query_id] = Asked.of(question)
        return list(self.sockets.values())

    def _listen_until(self, question: Question) -> float:
        if question.failure is not None:
            return self.start
        if not question.expects_reply:
            return min(self.hard_deadline, (question.sent_at or self.start) + self.window)
        if question.first_reply_at is not None:
            return min(self.hard_deadline, question.first_reply_at + self.window)
        return self.hard_deadline

    def end(self) -> float:
        """When listening is over: it only ever moves earlier (a first reply starts its window)."""
        return max((self._listen_until(q) for q in self.questions), default=self.start)

    def receive(self, sock: socket.socket) -> bool:
        """Read one datagram; whether it was a question's first reply (the end may have moved)."""
        try:
            data, ancillary, source = _receive(sock)
        except OSError:  # nothing after all, or an error report: keep listening
            return False
        expected = self.by_id.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
        if expected is None:  # no question's ID: counted against a question that went where it came from
            sent_there = next((a for a in self.by_id.values() if a.came_from(source)), None)
            if sent_there is not None:
                sent_there.question.unmatched += 1
            return False
        verdict = expected.judge(data, source)
        asked = expected.question
        if verdict is False:
            asked.unmatched += 1
            return False
        if len(asked.replies) >= MAX_REPLIES:
            asked.dropped += 1
            return False
        asked.replies.append(Reply(str(source[0]), _ttl(ancillary), data, self.now(), unreadable=verdict is None))
        if asked.first_reply_at is None:
            asked.first_reply_at = time.monotonic()
            return True
        return False

    def close(self) -> None:
        """Listening is over: failures for the unanswered, the capture's view, sockets closed."""
        try:
            for question in self.questions:
                if question.failure is None and not question.replies and question.expects_reply:
                    question.failure = Failure.GENERIC_TIMEOUT
                if self.wires:  # the capture tells no port or question: its ID and source at least
                    host = same_host(question.address)
                    question.captured = [
                        dict(p)
                        for w in self.wires
                        for p in list(w)
                        if p.get("dns_id") == question.query_id and same_host(str(p.get("source"))) == host
                    ]
        finally:
            if self.watch is not None:
                for wire in self.wires:
                    self.watch.done(wire)
            for sock in self.sockets.values():
                sock.close()


class UdpListener:
    """One thread listening for every exchange's replies (one selector, one queue of deadlines),
    instead of a thread for each: a run has a thousand exchanges listening at once."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._deadlines: list[tuple[float, int, _Exchange]] = []
        self._ids = itertools.count()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    def exchange(
        self, questions: list[Question], timeout: float, window: float, now: Callable[[], float],
        watch: TargetWatch | None = None,
    ) -> Future[None]:  # fmt: skip
        """Send now; the future is done when the exchange's listening is over."""
        job = _Exchange(questions, timeout, window, now, watch)
        try:
            sockets = job.send()
        except BaseException:
            job.close()
            raise
        with self._lock:
            for sock in sockets:
                self._selector.register(sock, selectors.EVENT_READ, job)
            heapq.heappush(self._deadlines, (job.end(), next(self._ids), job))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dns-listener", daemon=True)
                self._thread.start()
        with contextlib.suppress(OSError):  # full: the listener is awake anyway
            self._wake_write.send(b"\0")
        return job.done

    def _run(self) -> None:
        while True:
            try:
                self._once()
            except Exception:  # noqa: BLE001 - every exchange of the run waits on this thread: it never dies
                time.sleep(0.01)

    def _once(self) -> None:
        with self._lock:
            wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else 1.0
        for key, _ in self._selector.select(max(0.0, wait)):
            job = key.data
            if job is None:
                with contextlib.suppress(OSError):
                    self._wake_read.recv(4096)
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if job.over:
                continue
            try:
                moved = job.receive(sock)
            except Exception:  # noqa: BLE001 - one odd datagram must not stop every exchange's listening
                continue
            if moved:
                with self._lock:
                    heapq.heappush(self._deadlines, (job.end(), next(self._ids), job))
        self._finish_due()

    def _finish_due(self) -> None:
        now = time.monotonic()
        due = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, job = heapq.heappop(self._deadlines)
                if job.over or job.end() > now:
                    continue  # finished already (an exchange can have several entries), or not yet due
                job.over = True
                for sock in job.sockets.values():
                    with contextlib.suppress(KeyError, ValueError):
                        self._selector.unregister(sock)
                due.append(job)
        for job in due:
            try:
                job.close()
            except Exception as exc:  # noqa: BLE001 - told to the one waiting, the listener goes on
                job.done.set_exception(exc)
            else:
                job.done.set_result(None)


_LISTENER: UdpListener | None = None
_LISTENER_LOCK = threading.Lock()


def _listener() -> UdpListener:
    """Made on first use (after a run's recorder is forked; never for `probe --help`)."""
    global _LISTENER
    with _LISTENER_LOCK:
        if _LISTENER is None:
            _LISTENER = UdpListener()
        return _LISTENER


def exchange(
    questions: list[Question],
    timeout: float,
    window: float,
    now: Callable[[], float],
    watch: TargetWatch | None = None,
) -> Future[None]:
    """Send every question; fill in each one's replies (or failure). Bounded by `timeout` overall.

    A question that expects a reply is listened to until `window` seconds after its first reply;
    one that does not (the injection probe) for `window` seconds after it was sent. With a `watch`,
    the packet capture's view of the replies (IP TTL and IP ID) is kept beside the socket's. The
    listening is the run's one listener thread's; the future is done when it is over.
    """
    return _listener().exchange(questions, timeout, window, now, watch)
