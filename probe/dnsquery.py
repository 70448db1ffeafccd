"""DNS observations: the system resolver, a given resolver, and the control resolver.

Each lookup is recorded in full (resolver, transport, question, answers with TTLs, rcode,
failure, timing and the raw wire reply) so that analysts can audit it; nothing here judges.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import requests

from probe import failures
from probe.clock import Clock

QUERY_TYPES = ("A", "AAAA")
_RCODE_FAILURES = {
    dns.rcode.NXDOMAIN: failures.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: failures.DNS_SERVFAIL,
    dns.rcode.REFUSED: failures.DNS_REFUSED,
}
_DEFAULT_PORTS = {"udp": 53, "tcp": 53, "tls": 853, "https": 443}


class ResolverSpecError(ValueError):
    """A resolver address or URL that cannot be used."""


@dataclass(frozen=True)
class ResolverSpec:
    """Where to send DNS queries: `udp://IP[:port]`, `tcp://`, `tls://IP[:port][#name]`, or a DoH URL."""

    transport: str  # "udp", "tcp", "tls" or "https"
    address: str  # IP address, or the DoH URL for "https"
    port: int
    tls_name: str | None = None

    @property
    def url(self) -> str:
        if self.transport == "https":
            return self.address
        host = f"[{self.address}]" if ":" in self.address else self.address
        suffix = f"#{self.tls_name}" if self.tls_name else ""
        return f"{self.transport}://{host}:{self.port}{suffix}"

    @property
    def route_address(self) -> str | None:
        """An IP address that shows whether the resolver is routable at all, when one is known."""
        if self.transport != "https":
            return self.address
        host = urlsplit(self.address).hostname or ""
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return None


def parse_resolver(text: str, default_transport: str = "udp") -> ResolverSpec:
    """Parse a resolver given on the command line: a URL, or a bare `IP[:port]`."""
    if "://" not in text:
        text = f"{default_transport}://{text}"
    if text.lower().startswith("https://"):
        parts = urlsplit(text)
        if not parts.hostname:
            raise ResolverSpecError(f"no host in DoH URL {text!r}")
        return ResolverSpec("https", text, parts.port or 443)
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in ("udp", "tcp", "tls"):
        raise ResolverSpecError(f"unknown resolver transport {scheme!r} in {text!r} (udp, tcp, tls, https)")
    rest, _, tls_name = rest.partition("#")
    parts = urlsplit(f"//{rest}")
    try:
        address = str(ipaddress.ip_address(parts.hostname or ""))
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise ResolverSpecError(f"resolver {text!r}: expected an IP address and optional port") from None
    if tls_name and scheme != "tls":
        raise ResolverSpecError(f"resolver {text!r}: '#name' only applies to tls://")
    return ResolverSpec(scheme, address, port, tls_name or None)


def _answers(message: dns.message.Message) -> list[dict[str, Any]]:
    rows = []
    for rrset in message.answer:
        for rdata in rrset:
            rows.append(
                {
                    "name": rrset.name.to_text(omit_final_dot=True),
                    "type": dns.rdatatype.to_text(rrset.rdtype),
                    "ttl": rrset.ttl,
                    "data": rdata.to_text(),
                }
            )
    return rows


def _udp_exchange(query: dns.message.Message, address: str, port: int, timeout: float) -> bytes:
    """Send one query over UDP and return the first reply that answers it (raw wire bytes)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((address, port))
        sock.send(query.to_wire())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no DNS reply")
            sock.settimeout(remaining)
            wire = sock.recv(65535)
            if len(wire) >= 2 and int.from_bytes(wire[:2], "big") == query.id:
                return wire


def _doh_exchange(query: dns.message.Message, url: str, timeout: float, roots: str) -> bytes:
    response = requests.post(
        url,
        data=query.to_wire(),
        headers={"Content-Type": "application/dns-message", "Accept": "application/dns-message"},
        timeout=timeout,
        verify=roots,
        allow_redirects=False,
    )
    if response.status_code != 200:
        raise dns.exception.DNSException(f"DoH server answered HTTP {response.status_code}")
    return response.content


def _classify_dns_exception(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.Timeout):
        return failures.GENERIC_TIMEOUT
    if isinstance(exc, requests.exceptions.SSLError):
        return failures.SSL_FAILED_HANDSHAKE
    if isinstance(exc, requests.exceptions.ConnectionError):
        inner = exc.args[0] if exc.args else None
        reason = getattr(inner, "reason", None)
        if isinstance(reason, BaseException):
            text = str(reason)
            if "Network is unreachable" in text:
                return failures.NETWORK_UNREACHABLE
            if "Connection refused" in text:
                return failures.CONNECTION_REFUSED
            if "timed out" in text:
                return failures.GENERIC_TIMEOUT
        return f"unknown_failure: {exc}"[:200]
    if isinstance(exc, dns.exception.Timeout):
        return failures.GENERIC_TIMEOUT
    if isinstance(exc, (dns.message.ShortHeader, dns.message.TrailingJunk, dns.exception.FormError)):
        return failures.DNS_BOGUS_REPLY
    return failures.classify(exc)


def query_resolver(
    spec: ResolverSpec, hostname: str, qtype: str, timeout: float, roots: str, clock: Clock
) -> dict[str, Any]:
    """One question to one resolver, recorded whatever happens."""
    query = dns.message.make_query(hostname, qtype, want_dnssec=False)
    query.id = secrets.randbelow(65536)
    record: dict[str, Any] = {
        "resolver": spec.url,
        "transport": spec.transport,
        "hostname": hostname,
        "query_type": qtype,
        "answers": [],
        "rcode": None,
        "failure": None,
        "raw_reply": None,
        "t0": clock.now(),
        "t": None,
    }
    try:
        if spec.transport == "udp":
            wire = _udp_exchange(query, spec.address, spec.port, timeout)
        elif spec.transport == "https":
            wire = _doh_exchange(query, spec.address, timeout, roots)
        elif spec.transport == "tcp":
            wire = dns.query.tcp(query, spec.address, timeout=timeout, port=spec.port).to_wire()
        else:
            context = ssl.create_default_context(cafile=roots)
            wire = dns.query.tls(
                query,
                spec.address,
                timeout=timeout,
                port=spec.port,
                ssl_context=context,
                server_hostname=spec.tls_name or spec.address,
            ).to_wire()
        record["raw_reply"] = base64.b64encode(wire).decode("ascii")
        reply = dns.message.from_wire(wire)
        record["rcode"] = dns.rcode.to_text(reply.rcode())
        record["answers"] = _answers(reply)
        if reply.rcode() in _RCODE_FAILURES:
            record["failure"] = _RCODE_FAILURES[reply.rcode()]
        elif reply.rcode() != dns.rcode.NOERROR:
            record["failure"] = f"unknown_failure: rcode {record['rcode']}"
    except Exception as exc:  # every failure becomes an observation
        record["failure"] = _classify_dns_exception(exc)
    record["t"] = clock.now()
    return record


def lookup_with_resolver(spec: ResolverSpec, hostname: str, timeout: float, roots: str, clock: Clock) -> dict[str, Any]:
    """Ask a resolver for A and AAAA; return the lookup with its queries and combined result."""
    queries = [query_resolver(spec, hostname, qtype, timeout, roots, clock) for qtype in QUERY_TYPES]
    return combine_lookup(spec.url, spec.transport, hostname, queries)


def combine_lookup(resolver: str, transport: str, hostname: str, queries: list[dict[str, Any]]) -> dict[str, Any]:
    addresses: list[str] = []
    for query in queries:
        for answer in query["answers"]:
            if answer["type"] in QUERY_TYPES and answer["data"] not in addresses:
                addresses.append(answer["data"])
    failure = None
    if not addresses:
        found = [q["failure"] for q in queries if q["failure"]]
        if failures.DNS_NXDOMAIN in found:
            failure = failures.DNS_NXDOMAIN
        elif found:
            failure = found[0]
        else:
            failure = failures.DNS_NO_ANSWER
    return {
        "resolver": resolver,
        "transport": transport,
        "hostname": hostname,
        "addresses": addresses,
        "failure": failure,
        "queries": queries,
    }


def lookup_system(hostname: str, port: int, clock: Clock) -> dict[str, Any]:
    """Resolve with getaddrinfo, as every program on the volunteer's machine would."""
    query: dict[str, Any] = {
        "resolver": "system",
        "transport": "system",
        "hostname": hostname,
        "query_type": "ANY",
        "answers": [],
        "rcode": None,
        "failure": None,
        "raw_reply": None,
        "t0": clock.now(),
        "t": None,
    }
    try:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        for family, _, _, _, sockaddr in infos:
            kind = "AAAA" if family == socket.AF_INET6 else "A"
            query["answers"].append({"name": hostname, "type": kind, "ttl": None, "data": sockaddr[0]})
    except Exception as exc:
        query["failure"] = failures.classify(exc)
    query["t"] = clock.now()
    return combine_lookup("system", "system", hostname, [query])


def system_resolver_addresses(path: str = "/etc/resolv.conf") -> list[str]:
    """The nameservers the system resolver asks (a home router or the ISP; never the probe's own IP)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found
