"""Observe one target: DNS, TCP, TLS and HTTP, recorded as raw facts, never judged here.

One decision is taken while observing, because it decides what else to observe: when the
target's handshake fails or presents a chain that does not validate, the same address is asked
again with a control SNI, so that analysis can tell a name-triggered block from a broken site.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from probe import certs
from probe.clock import Clock
from probe.connect import close_quietly, tcp_connect, tls_handshake
from probe.dnsquery import ResolverSpec, lookup_system, lookup_with_resolver
from probe.httpget import http_get
from probe.targets import Target

MAX_ADDRESSES = 3


@dataclass(frozen=True)
class MeasureConfig:
    timeout: float
    roots: certs.ReferenceRoots
    resolver: ResolverSpec | None  # None: the system resolver (getaddrinfo)
    control_resolver: ResolverSpec | None
    control_sni: str | None


def _ordered(addresses: list[str]) -> list[str]:
    """IPv4 first (most volunteers have no IPv6 route), at most MAX_ADDRESSES."""
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    return (v4 + v6)[:MAX_ADDRESSES]


def _chain_valid(handshake: dict[str, Any], host: str, at: datetime, roots: certs.ReferenceRoots) -> bool:
    try:
        chain = certs.decode_chain(handshake["peer_certificates"])
    except (ValueError, TypeError):
        return False
    return certs.verify_chain(chain, host, at, roots)[0]


def _handshake(
    address: str, port: int, server_name: str | None, purpose: str, config: MeasureConfig, clock: Clock
) -> tuple[dict[str, Any], dict[str, Any] | None, Any]:
    sock, tcp = tcp_connect(address, port, config.timeout, clock)
    tcp["purpose"] = purpose
    if sock is None:
        return tcp, None, None
    tls, handshake = tls_handshake(sock, address, port, server_name, config.timeout, clock)
    handshake["purpose"] = purpose
    return tcp, handshake, tls


def measure(target: Target, config: MeasureConfig, started: datetime) -> dict[str, Any]:
    """Every observation for one target, in the record's `observations` shape."""
    clock = Clock()
    observations: dict[str, Any] = {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": []}
    if target.is_ip_literal:
        addresses = [target.host]
        address_source = "literal"
    else:
        if config.resolver is None:
            system = lookup_system(target.host, target.port, clock)
        else:
            system = lookup_with_resolver(config.resolver, target.host, config.timeout, config.roots.path, clock)
        control = None
        if config.control_resolver is not None:
            control = lookup_with_resolver(
                config.control_resolver, target.host, config.timeout, config.roots.path, clock
            )
        observations["dns"] = {"system": system, "control": control}
        addresses, address_source = system["addresses"], "system"
        if not addresses and control is not None and control["addresses"]:
            # The local resolver denied the name: still look at what the path does to the real site.
            addresses, address_source = control["addresses"], "control"
    observations["addresses_from"] = address_source if addresses else None
    server_name = None if target.is_ip_literal else target.host

    for address in _ordered(addresses):
        if target.scheme == "http":
            sock, tcp = tcp_connect(address, target.port, config.timeout, clock)
            tcp["purpose"] = "target"
            observations["tcp_connect"].append(tcp)
            if sock is None:
                continue
            try:
                request = http_get(sock, target.host, target.path, config.timeout, clock)
            finally:
                close_quietly(sock)
            request["address"] = address
            observations["http_requests"].append(request)
            break
        tcp, handshake, tls = _handshake(address, target.port, server_name, "target", config, clock)
        observations["tcp_connect"].append(tcp)
        if handshake is None:
            continue
        observations["tls_handshakes"].append(handshake)
        close_quietly(tls)
        suspicious = handshake["failure"] is not None or not _chain_valid(handshake, target.host, started, config.roots)
        if suspicious and config.control_sni and server_name is not None:
            control_tcp, control_handshake, control_tls = _handshake(
                address, target.port, config.control_sni, "control_sni", config, clock
            )
            observations["tcp_connect"].append(control_tcp)
            if control_handshake is not None:
                observations["tls_handshakes"].append(control_handshake)
            close_quietly(control_tls)
        break
    return observations
