"""The UDP batch and the run's DNS listener, in-process: resolvers are loopback sockets, no namespace.

Load never becomes a finding (issue 21, part 0): a reply that arrived in time and waited in a socket
buffer while the probe was busy is an answer, judged by when it arrived, never a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import dns.message
import dns.rrset
import pytest

from probe.netx import udpwire
from probe.netx.clock import Clock
from probe.netx.dns import UdpAsk, combine_lookup
from probe.netx.dnsloop import udp_batch as udp_batch_on_loop
from probe.netx.dnsloop import udp_batch_blocking as udp_batch
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import DnsQuery

ANSWER_V4, ANSWER_V6 = "192.0.2.7", "2001:db8::7"
Answer = Callable[[bytes, tuple[str, int], socket.socket], None]


def _reply(query: bytes) -> bytes:
    asked = dns.message.from_wire(query)
    response = dns.message.make_response(asked)
    question = asked.question[0]
    kind = "AAAA" if question.rdtype == 28 else "A"
    data = ANSWER_V6 if kind == "AAAA" else ANSWER_V4
    response.answer.append(dns.rrset.from_text(question.name, 60, "IN", kind, data))
    return response.to_wire()


def answer_at_once(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
    server.sendto(_reply(query), client)


@contextlib.contextmanager
def resolver(answer: Answer, queries: int = 2, go: threading.Event | None = None) -> Iterator[int]:
    """A loopback resolver that answers `queries` questions (once `go` is set, if given); its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            received = [server.recvfrom(4096) for _ in range(queries)]
            if go is not None:
                go.wait(10)
            for query, client in received:
                answer(query, client, server)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        thread.join(timeout=10)
        server.close()


def asked_while_busy(
    asks: list[UdpAsk], timeout: float, window: float, go: threading.Event, busy: float
) -> dict[str, list[DnsQuery]]:
    """The batch sent; then the event loop (the run's DNS listener) kept from its work for `busy`
    seconds, as a busy probe keeps it, while the resolver answers (`go`)."""

    async def scenario() -> dict[str, list[DnsQuery]]:
        asked = asyncio.ensure_future(udp_batch_on_loop(asks, timeout, window, Clock()))
        await asyncio.sleep(0)  # the questions are sent
        go.set()  # the resolver answers now, while nobody reads
        time.sleep(busy)  # the loop is blocked past the questions' deadline
        return await asked

    return asyncio.run(scenario())


def _ask(port: int, types: tuple[str, ...] = ("A", "AAAA"), expects_reply: bool = True) -> UdpAsk:
    return UdpAsk("lookup", f"udp://127.0.0.1:{port}", "127.0.0.1", port, "site.example", types, expects_reply)


@pytest.mark.timeout(20)
def test_a_reply_waiting_while_the_probe_was_busy_is_an_answer() -> None:
    """The resolver answers at once, but the listener is held for longer than the whole timeout:
    both replies waited in the socket's buffer, so both are answers, timed as they arrived."""
    timeout, window = 0.5, 0.2
    go = threading.Event()
    with resolver(answer_at_once, go=go) as port:
        queries = asked_while_busy([_ask(port)], timeout, window, go, timeout + 2 * window)["lookup"]
    assert [q.failure for q in queries] == [None, None], queries
    assert [a.data for q in queries for a in q.answers] == [ANSWER_V4, ANSWER_V6]
    for query in queries:  # the arrival, not the reading: within the timeout
        assert query.t < timeout, query
        assert [r.t for r in query.replies] == [query.t]
    lookup = combine_lookup("udp://127.0.0.1", "udp", "site.example", queries)
    assert lookup.failure is None and lookup.addresses == (ANSWER_V4, ANSWER_V6)


@pytest.mark.timeout(20)
def test_every_reply_waiting_in_a_buffer_is_read() -> None:
    """Sixteen questions from one socket, all answered while the listener was held: every one counts."""
    timeout, window = 0.5, 0.2
    go = threading.Event()
    with resolver(answer_at_once, queries=16, go=go) as port:
        asks = [
            UdpAsk(f"q{i}", f"udp://127.0.0.1:{port}", "127.0.0.1", port, f"n{i}.example", ("A",)) for i in range(16)
        ]
        answered = asked_while_busy(asks, timeout, window, go, timeout + window)
    assert sorted(answered) == sorted(a.label for a in asks)
    assert all(q.failure is None for (q,) in answered.values()), answered


@pytest.mark.timeout(20)
def test_a_reply_that_arrives_after_the_deadline_is_a_timeout() -> None:
    """Lateness is the network's when the reply arrives late: the resolver waits past the timeout."""
    timeout = 0.3

    def late(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        time.sleep(timeout + 0.3)
        server.sendto(_reply(query), client)

    with resolver(late, queries=1) as port:
        (query,) = udp_batch([_ask(port, ("A",))], timeout, 0.1, Clock())["lookup"]
    assert query.failure == Failure.GENERIC_TIMEOUT and query.replies == ()


@pytest.mark.timeout(20)
def test_a_second_reply_within_the_window_is_kept_and_one_after_it_is_not() -> None:
    """Every reply within the window after the first is kept (an injector races the resolver);
    what arrives after the window is over is not the question's."""
    window = 0.4

    def twice_then_late(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        server.sendto(_reply(query), client)
        server.sendto(_reply(query), client)
        time.sleep(window + 0.4)
        server.sendto(_reply(query), client)

    with resolver(twice_then_late, queries=1) as port:
        (query,) = udp_batch([_ask(port, ("A",))], 3, window, Clock())["lookup"]
    assert query.failure is None and len(query.replies) == 2


@pytest.mark.timeout(20)
def test_the_injection_probe_expects_no_reply_and_records_one_that_comes() -> None:
    """A question to a silent address is no failure when nothing answers; a reply is kept."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        (query,) = udp_batch([_ask(port, ("A",), expects_reply=False)], 2, 0.2, Clock())["lookup"]
        assert query.failure is None and query.replies == ()
    finally:
        silent.close()
    with resolver(answer_at_once, queries=1) as port:
        (query,) = udp_batch([_ask(port, ("A",), expects_reply=False)], 2, 0.2, Clock())["lookup"]
    assert query.failure is None and [a.data for a in query.answers] == [ANSWER_V4]


def test_arrival_uses_the_kernel_timestamp_when_there_is_one() -> None:
    """A timestamp from the kernel says when a datagram arrived; without one, arrival is now."""
    import struct

    before = time.monotonic()
    assert udpwire.arrival([]) >= before
    if udpwire.SCM_TIMESTAMPNS is None:
        pytest.skip("no kernel receive timestamps on this platform")
    two_seconds_ago = time.time() - 2.0
    stamp = struct.pack("@qq", int(two_seconds_ago), int((two_seconds_ago % 1) * 1e9))
    arrived = udpwire.arrival([(socket.SOL_SOCKET, udpwire.SCM_TIMESTAMPNS, stamp)])
    assert 1.5 < time.monotonic() - arrived < 2.5


@pytest.mark.timeout(20)
def test_a_buffer_the_listener_cannot_read_does_not_leave_the_exchange_unended(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last look at the buffers (at the deadline) fails: the exchange still ends, its question
    timed out, rather than waiting for ever on a timer that raised."""

    def unreadable(self: udpwire._Exchange) -> None:
        raise ValueError("a datagram the listener cannot read")

    monkeypatch.setattr(udpwire._Exchange, "drain", unreadable)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        ask = _ask(silent.getsockname()[1], ("A",))

        async def bounded() -> dict:
            return await asyncio.wait_for(udp_batch_on_loop([ask], 0.3, 0.1, Clock()), 5)

        (query,) = asyncio.run(bounded())["lookup"]
    assert query.failure == Failure.GENERIC_TIMEOUT


@pytest.mark.timeout(20)
def test_an_exchange_is_freed_when_it_ends_not_by_the_collector() -> None:
    """A batch's sockets, questions and replies are freed as soon as its records are made: no
    reference cycle keeps them (the listening's timer and callbacks, a question's first-reply
    callback) until the collector runs, three sockets a target at hundreds of targets a second."""
    import gc

    told: list[str] = []

    async def scenario() -> dict[str, list[DnsQuery]]:
        return await udp_batch_on_loop(
            [_ask(port)], 1.0, 0.1, Clock(), on_first_reply=lambda qtype, _: told.append(qtype)
        )

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        with resolver(answer_at_once) as port:
            queries = asyncio.run(scenario())["lookup"]
        gc.collect()
        left = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("probe.")]
        sockets = [o for o in gc.garbage if isinstance(o, socket.socket)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [q.failure for q in queries] == [None, None] and sorted(told) == ["A", "AAAA"]
    assert left == [] and sockets == []
