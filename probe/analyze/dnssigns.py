"""Signs that something on the path answers DNS: injection, a transparent proxy, IP-TTL hints.

Told apart with care, because the real web has transparent proxies that are no censors: a network
that rewrites every UDP query to port 53 to its own resolver answers the injection probe (a query
to an address that runs no resolver) with the resolver's own answer. That is a proxy, recorded as
such; an injector answers with something else, or twice.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from probe.vocabulary.failures import DENIALS
from probe.vocabulary.observations import DnsLookup, DnsObservations, DnsQuery, DnsReply


def embedded_ipv4(address: str, nat64_prefixes: tuple[str, ...]) -> str:
    """An address in a NAT64 prefix (DNS64, RFC 6052: 64:ff9b::/96) stands for the IPv4 address it embeds."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        for prefix in nat64_prefixes:
            network = ipaddress.ip_network(prefix, strict=False)
            if network.version == 6 and network.prefixlen == 96 and ip in network:
                return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return address


def udp_lookups(dns: DnsObservations) -> list[DnsLookup]:
    return [lookup for lookup in dns.lookups("system", "system_udp", "control", "control_plain")
            if lookup.transport == "udp"]  # fmt: skip


def reply_addresses(reply: DnsReply, nat64_prefixes: tuple[str, ...] = ()) -> set[str]:
    return {embedded_ipv4(a.data, nat64_prefixes) for a in reply.answers if a.type in ("A", "AAAA")}


def _reply_key(reply: DnsReply) -> tuple[str | None, frozenset[str]]:
    return reply.rcode, frozenset(reply_addresses(reply))


def _proxy_answers(dns: DnsObservations) -> set[tuple[str | None, frozenset[str]]]:
    """What the network's own resolver answers for the name over plain UDP (A queries)."""
    found = set()
    for lookup in dns.lookups("system_udp", "control_plain"):
        if lookup.transport != "udp":
            continue
        for query in lookup.queries:
            if query.query_type == "A" and query.replies:
                found.add(_reply_key(query.replies[0]))
    return found


@dataclass(frozen=True)
class InjectionSigns:
    injected: bool  # a wrong answer where no resolver runs, or a wrong one racing the resolver's
    proxy_answered_probe: bool  # the injection probe got the transparent proxy's own answer
    ip_ttl_differs: bool  # a hint only: a reply's IP TTL differs from the resolver's usual one


def injection_signs(
    dns: DnsObservations, consistent: set[str], proxied: bool, nat64_prefixes: tuple[str, ...]
) -> InjectionSigns:
    """`consistent`: addresses shown correct (the control's, or TLS-validated for the name)."""
    injected = proxy_probe = False
    probe = dns.injection
    if probe is not None:
        proxy_answers = _proxy_answers(dns) if proxied else set()
        for reply in probe.replies:
            # Some sites' addresses do run a DNS server: one that refuses, fails, or tells the
            # truth is no injector; nor is a transparent proxy giving its own answer.
            addresses = reply_addresses(reply, nat64_prefixes)
            if addresses and addresses <= consistent:
                continue
            if _reply_key(reply) in proxy_answers:
                proxy_probe = True
                continue
            if addresses or reply.rcode == "NXDOMAIN":
                injected = True
    ttl_differs = _ip_ttl_differs(dns)
    for lookup in udp_lookups(dns):
        for query in lookup.queries:
            replies = query.replies
            if len(replies) < 2:
                continue
            # Two different answers to one question, one of them wrong: an injector raced the resolver.
            wrong = [
                r for r in replies if not reply_addresses(r, nat64_prefixes) <= consistent or r.rcode == "NXDOMAIN"
            ]
            if len({_reply_key(r) for r in replies}) > 1 and wrong:
                injected = True
            elif len({r.ip_ttl for r in replies}) > 1:
                ttl_differs = True  # the same answer twice, by two paths: a hint only
    return InjectionSigns(injected, proxy_probe, ttl_differs)


def _ip_ttl_differs(dns: DnsObservations) -> bool:
    """A reply from the system's nameserver with another IP TTL than its reply for an ordinary name.
    Anycast resolvers' paths vary: a hint, recorded, never a verdict on its own."""
    baseline = dns.resolver_baseline
    if baseline is None or not baseline.replies or baseline.replies[0].ip_ttl is None:
        return False
    expected = baseline.replies[0].ip_ttl
    resolver = baseline.replies[0].source
    for asked in dns.lookups("system", "system_udp"):
        if asked.transport != "udp":
            continue
        for query in asked.queries:
            for reply in query.replies:
                if reply.source == resolver and reply.ip_ttl not in (None, expected):
                    return True
    return False


def _identity_texts(query: DnsQuery) -> tuple[str, ...]:
    return tuple(sorted(a.data for a in query.answers if a.type == "TXT"))


def transparent_proxy(dns: DnsObservations, control_addresses: set[str], validated: set[str]) -> bool:
    """Plain DNS to the control's address is answered by someone else than its encrypted channel."""
    plain = dns.control_plain
    if plain is not None and control_addresses:
        single = all(len(q.replies) <= 1 for q in plain.queries)  # several: injection
        if single and plain.addresses and not set(plain.addresses) & (control_addresses | validated):
            return True
        if single and plain.failure in DENIALS:
            return True
    identity = dns.control_identity
    if identity is not None and identity.plain is not None and identity.encrypted is not None:
        plain_id, encrypted_id = identity.plain, identity.encrypted
        if encrypted_id.failure is None and _identity_texts(encrypted_id) and plain_id.replies:
            return plain_id.failure is not None or _identity_texts(plain_id) != _identity_texts(encrypted_id)
    return False
