"""DNS over UDP, keeping every reply: the injected one and the real one, each with its IP TTL.

`dns.query.udp` returns only the first reply. A device on the path that injects answers races
the real resolver, so the probe sends its questions from one unconnected socket and keeps
listening for a window after each first reply, recording every reply's source and IP TTL
(`IP_RECVTTL`, no root needed). An unconnected socket also ignores ICMP errors, so a question
sent to an address that runs no resolver simply gets no answer, unless something on the path
answers for it. The listening is the run's event loop's (`listen`): a reader per socket, one timer.
Each datagram is judged by when it arrived (the kernel's receive timestamp), and every socket's
buffer is read before a question is declared timed out: a reply that waited while the probe was
busy is an answer, never a timeout (load never becomes a finding).

A datagram is a question's reply only with its ID, QR set, its opcode, from the address and port
it went to, and its question (name, case-insensitively unless randomised by 0x20; type; class).
Anything else (a late reply for another name on a reused port, a query echoed back, a datagram
from elsewhere) is nobody's answer: counted (`Question.unmatched`), never kept. An injector's
forgery copies the question and spoofs the queried address: it still counts, as it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from probe.netx import classify as errors
from probe.netx.dnsmatch import Asked, same_host
from probe.netx.wire import Packets, TargetWatch
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import WireReply

MAX_REPLIES = 16  # kept per question: an injector flooding replies cannot grow a record without bound
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_TTL = getattr(socket, "IP_TTL", 2)
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
# Linux's kernel receive timestamps (socket(7)): each datagram says when it arrived, so that a reply
# read late (a busy probe) is judged by its arrival, never called a timeout. Python 3.11 names neither.
SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
DRAIN_LIMIT = 256  # datagrams read from one socket at a time: a flood cannot hold the listener


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
    captured: list[WireReply] | None = None  # the replies as the packet capture saw them, if it ran
    # Told the first reply's bytes as soon as it is read (the listening goes on): a caller that needs
    # only the first answer (where the injection probe goes) need not wait for the window to close.
    on_first_reply: Callable[[bytes], None] | None = None


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
    if SO_TIMESTAMPNS is not None:
        with contextlib.suppress(OSError):  # without them, arrival is when the probe read the datagram
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock


def reply_ttl_available() -> bool:
    """Whether this platform tells a reply's IP TTL (`recvmsg` with ancillary data; not on Windows)."""
    return hasattr(socket.socket, "recvmsg") and hasattr(socket, "CMSG_SPACE")


def _receive(sock: socket.socket) -> tuple[bytes, list[tuple[int, int, bytes]], tuple[str, int]]:
    if reply_ttl_available():
        data, ancillary, _, source = sock.recvmsg(65535, socket.CMSG_SPACE(4) + socket.CMSG_SPACE(16))
        return data, ancillary, source
    data, source = sock.recvfrom(65535)  # the reply without its IP TTL: recorded as unknown (null)
    return data, [], source


def arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """When the datagram arrived, on `time.monotonic()`'s scale: the kernel's receive timestamp when
    it gave one (SO_TIMESTAMPNS), else now (when the probe read it)."""
    now = time.monotonic()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = struct.unpack("@qq", data[:16])
            ago = time.time() - (seconds + nanoseconds / 1e9)  # the timestamp is wall-clock time
            return now - min(max(ago, 0.0), 3600.0)
    return now


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
        """Read every datagram waiting on `sock`; whether one was a question's first reply (the end
        may have moved). Each is judged by when it arrived, not by when it was read."""
        moved = False
        for _ in range(DRAIN_LIMIT):
            try:
                data, ancillary, source = _receive(sock)
            except (BlockingIOError, InterruptedError):
                break  # nothing more waiting
            except OSError:  # an error report: keep listening
                continue
            moved = self._take(data, arrival(ancillary), _ttl(ancillary), source) or moved
        return moved

    def _take(self, data: bytes, at: float, ttl: int | None, source: tuple[str, int]) -> bool:
        expected = self.by_id.get(int.from_bytes(data[:2], "big")) if len(data) >= 2 else None
        if expected is None:  # no question's ID: counted against a question that went where it came from
            sent_there = next((a for a in self.by_id.values() if a.came_from(source)), None)
            if sent_there is not None and at <= self.end():
                sent_there.question.unmatched += 1
            return False
        asked = expected.question
        if at > self._listen_until(asked):
            return False  # it arrived after this question's listening was over: as if never read
        verdict = expected.judge(data, source)
        if verdict is False:
            asked.unmatched += 1
            return False
        if len(asked.replies) >= MAX_REPLIES:
            asked.dropped += 1
            return False
        t = round(self.now() - (time.monotonic() - at), 6)  # the measurement time it arrived at
        asked.replies.append(Reply(str(source[0]), ttl, data, t, unreadable=verdict is None))
        if asked.first_reply_at is None:
            asked.first_reply_at = at
            if asked.on_first_reply is not None and verdict is True:
                asked.on_first_reply(data)
            return True
        return False

    def drain(self) -> None:
        """Read what waits in every socket's buffer: a reply there is an answer, not a timeout."""
        for sock in self.sockets.values():
            self.receive(sock)

    def close(self) -> None:
        """Listening is over: failures for the unanswered, the capture's view, sockets closed."""
        try:
            for question in self.questions:
                if question.failure is None and not question.replies and question.expects_reply:
                    question.failure = Failure.GENERIC_TIMEOUT
                if self.wires:  # the capture tells no port or question: its ID and source at least
                    host = same_host(question.address)
                    question.captured = [
                        WireReply(p["source"], p["ip_ttl"], p["ip_id"], p["dns_id"], p["t"])
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


async def listen(
    questions: list[Question],
    timeout: float,
    window: float,
    now: Callable[[], float],
    watch: TargetWatch | None = None,
) -> None:
    """Send every question; fill in each one's replies (or failure). Bounded by `timeout` overall.

    A question that expects a reply is listened to until `window` seconds after its first reply;
    one that does not (the injection probe) for `window` seconds after it was sent. With a `watch`,
    the packet capture's view of the replies (IP TTL and IP ID) is kept beside the socket's. The
    listening is the running event loop's: a reader per socket and one timer, no thread.
    """
    loop = asyncio.get_running_loop()
    job = _Exchange(questions, timeout, window, now, watch)
    listening = _Listening(job, loop)
    sockets: list[socket.socket] = []
    try:
        sockets = job.send()
        for sock in sockets:
            loop.add_reader(sock.fileno(), listening.readable, sock)
        listening.schedule()
        await listening.over
    finally:
        listening.stop()
        for sock in sockets:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(sock.fileno())
        job.close()


class _Listening:
    """An exchange's listening on the loop: a reader per socket and one timer. Its timer refers back
    to it until `stop`, and no longer: the exchange (its sockets and replies) is then freed as soon
    as its caller lets go, not when the collector next runs (three sockets a target, hundreds of
    targets a second)."""

    def __init__(self, job: _Exchange, loop: asyncio.AbstractEventLoop) -> None:
        self.job, self.loop = job, loop
        self.over: asyncio.Future[None] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None

    def schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(self.loop.time() + max(0.0, self.job.end() - time.monotonic()), self.due)

    def readable(self, sock: socket.socket) -> None:
        try:
            moved = self.job.receive(sock)
        except Exception:  # noqa: BLE001 - one odd datagram must not stop the exchange's listening
            return
        if moved:
            self.schedule()

    def due(self) -> None:
        with contextlib.suppress(Exception):  # one odd datagram must not leave the exchange unended
            self.job.drain()  # read late (a busy probe) is not lost: what arrived in time counts
        if self.job.end() > time.monotonic():
            self.schedule()
        elif not self.over.done():
            self.over.set_result(None)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def exchange(
    questions: list[Question],
    timeout: float,
    window: float,
    now: Callable[[], float],
    watch: TargetWatch | None = None,
) -> Future[None]:
    """`listen`, for a caller outside any event loop: done when the listening is over."""
    done: Future[None] = Future()
    try:
        asyncio.run(listen(questions, timeout, window, now, watch))
    except Exception as exc:  # noqa: BLE001 - handed to whoever waits
        done.set_exception(exc)
    else:
        done.set_result(None)
    return done
