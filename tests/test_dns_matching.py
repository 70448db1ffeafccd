"""A DNS reply counts only for the question asked (issue 19: confirmed means proven).

A reply is a question's when it has its ID, the QR bit set, comes from the very address and port
the question went to, and carries the same question (name, type, class). Anything else arriving on
the probe's UDP socket is nobody's answer: counted (`unmatched_replies`), never an answer, never
injection evidence. Fake resolvers here are real sockets on loopback (127.0.0.x).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dns.message
import dns.rrset
import msgspec
import pytest

from probe.analyze.verdict import AnalysisContext, judge_observations
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx import dnsmatch, udpwire
from probe.netx.clock import Clock
from probe.netx.dns import UdpAsk, combine_lookup
from probe.netx.dnsloop import udp_batch_blocking as udp_batch
from probe.vocabulary.observations import DnsAnswer, DnsLookup, DnsObservations, DnsQuery, DnsReply, Observations
from tests.conftest import PkiFixture

AT = dt.datetime.now(dt.UTC)
TRUE_ANSWER = "198.51.100.7"

Script = Callable[[bytes, tuple[str, int], socket.socket], None]


@contextlib.contextmanager
def fake_resolver(script: Script, address: str = "127.0.0.1") -> Iterator[int]:
    """A UDP socket at `address` that hands the first query it receives to `script`; its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((address, 0))
    server.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            query, client = server.recvfrom(4096)
            script(query, client, server)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        thread.join(timeout=5)
        server.close()


def _reply(query: bytes, answer: str, name: str | None = None, qtype: str = "A") -> bytes:
    """A reply to `query` (its ID) answering `answer`; for another `name` or `qtype` if given."""
    asked = dns.message.from_wire(query)
    if name is not None or qtype != "A":
        other = dns.message.make_query(name or asked.question[0].name, qtype)
        other.id = asked.id
        asked = other
    response = dns.message.make_response(asked)
    question = asked.question[0]
    response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", answer))
    return response.to_wire()


def _without_qr(wire: bytes) -> bytes:
    return wire[:2] + bytes([wire[2] & 0x7F]) + wire[3:]  # QR is the top bit of the third byte


def _from_elsewhere(wire: bytes, client: tuple[str, int], address: str = "127.0.0.1", port: int = 0) -> None:
    """Sent from another socket: another port (and, if given, another address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind((address, port))
        other.sendto(wire, client)


def _ask(port: int, address: str = "127.0.0.1", label: str = "lookup", expects_reply: bool = True) -> DnsQuery:
    ask = UdpAsk(label, f"udp://{address}:{port}", address, port, "site.example", ("A",), expects_reply)
    (record,) = udp_batch([ask], 3, 0.4, Clock())[label]
    return record


def _addresses(reply: DnsReply | DnsQuery) -> list[str]:
    return [a.data for a in reply.answers]


def _resolvers_query() -> DnsQuery:
    """The system resolver's query record, answered truly (192.0.2.53 is a documentation address)."""
    answers = (DnsAnswer("site.example", "A", 60, TRUE_ANSWER),)
    reply = DnsReply("192.0.2.53", 64, 0.1, "", "NOERROR", answers, None)
    return DnsQuery("udp://192.0.2.53:53", "udp", "site.example", "A", answers, "NOERROR", None, None, 0.0, 0.1,
                    (reply,))  # fmt: skip


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


def _judged(ctx: AnalysisContext, system_query: DnsQuery, injection: DnsQuery | None = None) -> Any:
    system = combine_lookup(system_query.resolver, "udp", "site.example", [system_query])
    control = DnsLookup("https://198.51.100.53/dns-query", "https", "site.example", (TRUE_ANSWER,), None, ())
    dns = DnsObservations(system, control=control, injection=injection)
    observations = Observations(dns=dns, tcp_connect=(), tls_handshakes=(), http_requests=(), addresses_from="system")
    return judge_observations("site.example", observations, AT, False, ctx)


def _injection(record: DnsQuery, address: str, port: int) -> DnsQuery:
    """The injection probe's record as the measuring side makes it: naming where it went."""
    assert record.address is None and record.port is None  # asked as an ordinary question here
    return msgspec.structs.replace(record, address=address, port=port)


@pytest.mark.timeout(15)
def test_only_the_reply_to_the_question_asked_is_its_answer(ctx: AnalysisContext) -> None:
    """Another name's reply with the right ID, a reply with QR unset, another type's, and one from
    another port all come first: none of them is the answer, nor evidence of injection."""

    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        server.sendto(_reply(query, "203.0.113.66", name="other.example"), client)  # a late reply on a reused port
        server.sendto(_without_qr(_reply(query, "203.0.113.67")), client)  # a query, not a reply
        server.sendto(_reply(query, "203.0.113.68", qtype="AAAA"), client)  # another type's question
        _from_elsewhere(_reply(query, "203.0.113.69"), client)  # the right question, from another port
        server.sendto(_reply(query, TRUE_ANSWER), client)

    with fake_resolver(script) as port:
        record = _ask(port)
    assert [_addresses(r) for r in record.replies] == [[TRUE_ANSWER]]
    assert [a.data for a in record.answers] == [TRUE_ANSWER] and record.failure is None
    assert record.unmatched_replies == 4
    judged = _judged(ctx, record)
    assert "dns.injected" not in judged.anomalies
    assert (judged.blocking, judged.anomalies) == ("none", [])


@pytest.mark.timeout(15)
def test_replies_that_are_not_the_questions_are_no_answer_at_all() -> None:
    """Only unmatched datagrams: the question is unanswered (a timeout), and they are counted."""

    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        server.sendto(_reply(query, "203.0.113.66", name="other.example"), client)
        server.sendto(_without_qr(_reply(query, "203.0.113.67")), client)
        _from_elsewhere(_reply(query, "203.0.113.69"), client)

    with fake_resolver(script) as port:
        record = _ask(port)
    assert record.replies == () and record.answers == ()
    assert record.failure == "generic_timeout_error" and record.unmatched_replies == 3


@pytest.mark.timeout(15)
def test_the_injection_probe_counts_only_replies_from_the_address_it_asked(ctx: AnalysisContext) -> None:
    """The injection probe asks an address that runs no resolver: a forgery spoofed from that very
    address (the question copied, as the lab's injector does) counts; one from a neighbouring
    address or port, however well made, does not."""

    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        port = server.getsockname()[1]
        _from_elsewhere(_reply(query, "203.0.113.70"), client, "127.0.0.2", port)  # another address, same port
        _from_elsewhere(_reply(query, "203.0.113.71"), client, "127.0.0.3")  # the address, another port
        server.sendto(_reply(query, "203.0.113.66"), client)  # the forgery, from the asked address and port

    with fake_resolver(script, "127.0.0.3") as port:
        record = _ask(port, "127.0.0.3", "injection", expects_reply=False)
    assert [(r.source, _addresses(r)) for r in record.replies] == [("127.0.0.3", ["203.0.113.66"])]
    assert record.unmatched_replies == 2
    injection = _injection(record, "127.0.0.3", port)
    assert "dns.injected" in _judged(ctx, _resolvers_query(), injection).anomalies


@pytest.mark.timeout(15)
def test_a_forgery_from_another_address_is_no_injection(ctx: AnalysisContext) -> None:
    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        _from_elsewhere(_reply(query, "203.0.113.70"), client, "127.0.0.2", server.getsockname()[1])

    with fake_resolver(script, "127.0.0.3") as port:
        record = _ask(port, "127.0.0.3", "injection", expects_reply=False)
    assert record.replies == () and record.failure is None and record.unmatched_replies == 1
    injection = _injection(record, "127.0.0.3", port)
    judged = _judged(ctx, _resolvers_query(), injection)
    assert "dns.injected" not in judged.anomalies and judged.blocking == "none"


@pytest.mark.timeout(15)
def test_an_ipv4_mapped_address_is_the_same_address() -> None:
    """Asked as `::ffff:127.0.0.1` (an IPv6 socket), the reply from 127.0.0.1 is the question's;
    one from another port is not."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 sockets here")

    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        _from_elsewhere(_reply(query, "203.0.113.69"), client)
        server.sendto(_reply(query, TRUE_ANSWER), client)

    with fake_resolver(script) as port:
        record = _ask(port, "::ffff:127.0.0.1")
    if record.failure is not None and not record.replies and record.unmatched_replies is None:
        pytest.skip(f"IPv4-mapped addresses unusable here: {record.failure}")
    assert [(r.source, _addresses(r)) for r in record.replies] == [("::ffff:127.0.0.1", [TRUE_ANSWER])]
    assert record.unmatched_replies == 1


@pytest.mark.timeout(15)
def test_names_match_without_case_unless_the_case_was_randomised() -> None:
    """DNS names compare case-insensitively; a question sent with 0x20 case randomisation wants its
    own case back, exactly (a forger guessing blind does not know it)."""
    query = dns.message.make_query("SiTe.ExAmPlE", "A")
    query.id = 0x2020

    def script(wire: bytes, client: tuple[str, int], server: socket.socket) -> None:
        lowered = dns.message.make_query("site.example", "A")
        lowered.id = 0x2020
        server.sendto(_reply(lowered.to_wire(), "203.0.113.66"), client)
        server.sendto(_reply(wire, TRUE_ANSWER), client)

    for exact_case, kept in ((True, 1), (False, 2)):
        with fake_resolver(script) as port:
            question = udpwire.Question(query.to_wire(), query.id, "127.0.0.1", port, exact_case=exact_case)
            udpwire.exchange([question], 3, 0.4, Clock().now).result()
        assert len(question.replies) == kept, exact_case
        assert question.unmatched == 2 - kept
        assert dns.message.from_wire(question.replies[-1].wire).answer[0][0].to_text() == TRUE_ANSWER


@pytest.mark.timeout(15)
def test_a_reply_whose_question_cannot_be_read_is_bogus_and_an_echoed_query_nothing() -> None:
    """From where the question went, with its ID and QR: a question section that cannot be read (a
    compression loop) is kept as the bogus reply it is, with no answers; the query echoed back (QR
    unset) is no reply at all."""

    def script(query: bytes, client: tuple[str, int], server: socket.socket) -> None:
        server.sendto(query, client)  # echoed
        loop = query[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
        loop += b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 66])
        server.sendto(loop, client)

    with fake_resolver(script) as port:
        record = _ask(port)
    (reply,) = record.replies
    assert (reply.failure, reply.answers, reply.rcode) == ("dns_bogus_reply", (), None)
    assert record.failure == "dns_bogus_reply" and record.unmatched_replies == 1


def test_question_sections_are_read_as_dnspython_reads_them() -> None:
    """The matcher's reader: one question, compression only backwards, a loop or a truncation unreadable."""
    query = dns.message.make_query("site.example", "AAAA").to_wire()
    assert dnsmatch.question_of(query) == ((b"site", b"example"), b"\x00\x1c\x00\x01")
    header = query[:12]
    loop, extended = header + b"\xc0\x0c\x00\x01\x00\x01", header + b"\x41\x00\x00\x01\x00\x01"
    for unreadable in (query[:11], query[:-2], loop, extended):
        with pytest.raises((ValueError, IndexError)):
            dnsmatch.question_of(unreadable)
        with pytest.raises(Exception):  # noqa: B017 - dnspython refuses them too
            dns.message.from_wire(unreadable)
    empty = query[:4] + b"\x00\x00" + query[6:12]
    assert dnsmatch.question_of(empty) is None


def test_an_error_reply_without_its_question_is_still_the_answer() -> None:
    """Some servers send REFUSED or SERVFAIL with no question section: from where the query went,
    with its ID and no record at all, it is the answer (it can name no address)."""
    from probe.netx.dnsmatch import Asked
    from probe.netx.udpwire import Question

    query = bytearray(12)
    query[0:2] = (0x1234).to_bytes(2, "big")
    query[4:6] = (1).to_bytes(2, "big")
    query += b"\x04site\x07example\x00\x00\x01\x00\x01"
    asked = Asked.of(Question(bytes(query), 0x1234, "198.51.100.53", 53))
    refused = bytearray(12)
    refused[0:2] = (0x1234).to_bytes(2, "big")
    refused[2], refused[3] = 0x81, 0x85  # QR, RD; RA, REFUSED
    assert asked.judge(bytes(refused), ("198.51.100.53", 53)) is True
    assert asked.judge(bytes(refused), ("198.51.100.54", 53)) is False  # from elsewhere: not its reply
    refused[7] = 1  # ... but claiming an answer record without the question: not its reply
    assert asked.judge(bytes(refused), ("198.51.100.53", 53)) is False
