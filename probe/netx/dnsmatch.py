"""Which datagram is a question's reply: its ID, QR set, its opcode, from the address and port the
query went to, and its question (name, case-insensitively unless randomised by 0x20; type; class).

Read with struct-free byte slicing, before any parser: a reply that is not the question's is
nobody's answer (`udpwire` counts it), and one whose question cannot be read is kept as bogus.

The common reply (NOERROR, A and AAAA records only) is read here too, `plain_answers`, exactly as
dnspython reads and prints it (a property test holds the two against each other), at a tenth of its
cost: anything less plain is declined and left to dnspython.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


class Sent(Protocol):
    """A question as it was sent (udpwire's `Question`)."""

    @property
    def wire(self) -> bytes: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def exact_case(self) -> bool: ...


Q = TypeVar("Q", bound=Sent)

QR, OPCODE = 0x80, 0x78  # in the header's third byte: a response, and the opcode's bits


def _name(message: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """The name's labels at `offset`, and where it ends; ValueError or IndexError if unreadable.
    Compression pointers only go backwards, each before the last (dnspython's rule: no loop)."""
    labels: list[bytes] = []
    after, earliest, size = 0, offset, 0
    while (length := message[offset]) != 0:
        if length >= 0xC0:
            after, target = after or offset + 2, ((length & 0x3F) << 8) | message[offset + 1]
            if target >= earliest:
                raise ValueError("a compression pointer that does not point backwards")
            earliest = offset = target
            continue
        label, size = message[offset + 1 : offset + 1 + length], size + length + 1
        if length >= 0x40 or len(label) != length or size > 255:
            raise ValueError("an unknown label type, a truncated label or a name too long")
        labels.append(label)
        offset += 1 + length
    return tuple(labels), after or offset + 1


def question_of(message: bytes) -> tuple[tuple[bytes, ...], bytes] | None:
    """A DNS message's one question (its name's labels; its type and class as sent), or None when
    it has not exactly one; ValueError or IndexError when it cannot be read."""
    if len(message) < 12:
        raise ValueError("a truncated header")
    if int.from_bytes(message[4:6], "big") != 1:
        return None
    labels, end = _name(message, 12)
    if len(kind := message[end : end + 4]) != 4:
        raise ValueError("a truncated question")
    return labels, kind


RCODE = 0x0F


def _question_count(message: bytes) -> int:
    return int.from_bytes(message[4:6], "big")


def _answer_counts(message: bytes) -> int:
    """Records in the answer, authority and additional sections, as the header counts them."""
    return sum(int.from_bytes(message[i : i + 2], "big") for i in (6, 8, 10))


@functools.lru_cache(maxsize=1024)  # every reply's source: a run's few resolvers and sites, parsed once each
def same_host(address: str) -> str:
    """One spelling per address: `::ffff:192.0.2.1` is 192.0.2.1, `2001:DB8::1` 2001:db8::1, no zone."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address.lower()
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


@dataclass(frozen=True)
class Asked(Generic[Q]):
    """What a reply must show to be a question's: where it went, its opcode, its question."""

    question: Q
    host: str
    opcode: int
    asked: tuple[tuple[bytes, ...], bytes] | None  # None: our own question is unreadable: nothing matches

    @staticmethod
    def of(question: Q) -> Asked[Q]:
        try:
            asked = question_of(question.wire)
        except (ValueError, IndexError):
            asked = None
        opcode = question.wire[2] & OPCODE if len(question.wire) > 2 else 0
        return Asked(question, same_host(question.address), opcode, asked)

    def came_from(self, source: tuple[Any, ...]) -> bool:
        return source[1] == self.question.port and same_host(str(source[0])) == self.host

    def judge(self, data: bytes, source: tuple[Any, ...]) -> bool | None:
        """True: the question's reply; None: from where it went, with its ID and QR, but with a
        question that cannot be read (a bogus reply); False: not its reply."""
        if len(data) < 3 or not data[2] & QR or data[2] & OPCODE != self.opcode or not self.came_from(source):
            return False
        try:
            found = question_of(data)
        except (ValueError, IndexError):
            return None
        if found is None and _question_count(data) == 0 and data[3] & RCODE and _answer_counts(data) == 0:
            # An error (REFUSED, SERVFAIL, FORMERR, NOTIMP) without the question, as some servers
            # send it, from where the query went: the question's answer, and it carries no address.
            return True
        if found is None or self.asked is None or found[1] != self.asked[1] or len(found[0]) != len(self.asked[0]):
            return False
        if self.question.exact_case:
            return found[0] == self.asked[0]
        return all(a.lower() == b.lower() for a, b in zip(found[0], self.asked[0], strict=True))  # ASCII only


# --- the common reply, read without dnspython ----------------------------------------------------

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # printed as is
A, AAAA, IN = 1, 28, 1


def _plain_name(message: bytes, offset: int) -> tuple[str, int] | None:
    """A name's text and where it ends, when dnspython reads it alike and prints it without escapes
    (letters, digits, `-`, `_`): its labels, then at most one compression pointer, backwards, to a
    name without one that ends before the pointer's part begins. None for anything else."""
    labels: list[bytes] = []
    start, end, limit = offset, 0, len(message)
    while (length := message[offset]) != 0:
        if length >= 0xC0:
            target = ((length & 0x3F) << 8) | message[offset + 1]
            if end or target >= start:
                return None
            end, limit, start = offset + 2, start, target
            offset = target
            continue
        label = message[offset + 1 : offset + 1 + length]
        if length >= 0x40 or len(label) != length or not _PLAIN.issuperset(label):
            return None
        labels.append(label)
        offset += 1 + length
    if offset + 1 > limit or not labels or sum(len(label) + 1 for label in labels) + 1 > 255:
        return None
    return b".".join(labels).decode("ascii"), end or offset + 1


def plain_answers(message: bytes) -> list[tuple[str, str, int, str]] | None:
    """A plain NOERROR reply's answers (`plain_reply`'s); None for any other reply."""
    found = plain_reply(message)
    return found[1] if found is not None and found[0] == 0 else None


def plain_reply(message: bytes) -> tuple[int, list[tuple[str, str, int, str]]] | None:
    """A plain reply's rcode and answers (name, type, TTL, data), exactly as dnspython reads and
    prints them; None unless the reply is one: QR set, opcode QUERY, one question, nothing but A and
    AAAA records of class IN in the answer section, no other section (so no EDNS: the rcode is the
    header's), nothing after. Records of one name and type are one set as dnspython makes it: in
    order of first sight, duplicates once, the least TTL (above 2^31-1 read as 0). A refusal or a
    name error with no record is one too (a resolver's usual AAAA answer)."""
    if len(message) < 12 or message[2] & 0xF8 != 0x80:
        return None
    if message[4:6] != b"\x00\x01" or message[8:12] != b"\x00\x00\x00\x00":
        return None
    try:
        question = _plain_name(message, 12)
        if question is None or len(message) < question[1] + 4:
            return None
        offset = question[1] + 4
        sets: dict[tuple[str, int], tuple[str, list[bytes], list[int]]] = {}
        for _ in range(int.from_bytes(message[6:8], "big")):
            found = _plain_name(message, offset)
            if found is None or len(message) < found[1] + 10:
                return None
            name, offset = found
            kind, klass, ttl, size = (int.from_bytes(message[offset + i : offset + j], "big")
                                      for i, j in ((0, 2), (2, 4), (4, 8), (8, 10)))  # fmt: skip
            data = message[offset + 10 : offset + 10 + size]
            if klass != IN or (kind, size) not in ((A, 4), (AAAA, 16)) or len(data) != size:
                return None
            if kind == AAAA and not any(data[:10]):
                return None  # an embedded IPv4 address: dnspython's own spelling
            offset += 10 + size
            rows = sets.setdefault((name.lower(), kind), (name, [], []))
            rows[2].append(0 if ttl > 0x7FFFFFFF else ttl)
            if data not in rows[1]:
                rows[1].append(data)
    except IndexError:
        return None
    if offset != len(message):
        return None
    return message[3] & 0x0F, [(name, "A" if kind == A else "AAAA", min(ttls), _address(data))
                               for (_, kind), (name, datas, ttls) in sets.items() for data in datas]  # fmt: skip


def _address(data: bytes) -> str:
    return str(ipaddress.ip_address(data))
