"""Observe one target: DNS, TCP, TLS and HTTP (and the helpers' view of it, asked meanwhile),
recorded as raw facts, never judged here.

One decision is taken while observing, because it decides what else to observe: when the
target's handshake fails or presents a chain that does not validate, the same address is asked
again with a control SNI, so that analysis can tell a name-triggered block from a broken site.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from probe.observe.clock import Clock
from probe.observe.connect import close_quietly, tcp_connect, tls_handshake
from probe.observe.dns import (
    ResolverSpec,
    UdpAsk,
    combine_lookup,
    identity_query,
    lookup_system,
    lookup_with_resolver,
    udp_ask_for,
    udp_batch,
)
from probe.observe.helperclient import HelperQuestions
from probe.observe.http import http_get
from probe.observe.own_addresses import OwnAddresses
from probe.targets import DEFAULT_PORTS, Target, is_ip_literal

MAX_ADDRESSES = 3
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class TrustAnchors(Protocol):
    """A set of trusted roots, as observing needs it (analysis's `ReferenceRoots` is one).

    Observing does not judge, but one question decides what else to observe: whether a presented
    chain validates (if not, the control SNI is asked too, and the machine's own store is asked
    for a second opinion). `path` is the PEM file that DoT, DoH and helper connections verify with.
    """

    @property
    def path(self) -> str: ...

    def validates(self, chain_b64: list[str], host: str, at: datetime) -> bool: ...


@dataclass(frozen=True)
class MeasureConfig:
    timeout: float
    roots: TrustAnchors
    resolver: ResolverSpec | None  # None: the system resolver (getaddrinfo)
    control_resolver: ResolverSpec | None
    control_sni: str | None
    dns_window: float = 1.0  # seconds to keep listening for more DNS replies (injection)
    system_udp: ResolverSpec | None = None  # the system's nameserver, asked directly over UDP
    control_plain: ResolverSpec | None = None  # the control's address over plain UDP
    injection_address: str | None = None  # None: the target's address as the control sees it
    injection_check: bool = True
    run_dns: dict[str, Any] = field(default_factory=dict)  # run-level DNS observations (identity, baseline)
    helpers: tuple[str, ...] = ()  # control vantages (`probe helper serve`), asked while measuring
    helper_token: str | None = None
    own_addresses: OwnAddresses = field(default_factory=OwnAddresses)  # learned, scrubbed, never recorded
    os_store: TrustAnchors | None = None  # the machine's trust store: a second opinion only


def _ordered(addresses: list[str]) -> list[str]:
    """IPv4 first (most volunteers have no IPv6 route), at most MAX_ADDRESSES."""
    parsed = []
    for address in addresses:
        try:
            parsed.append(ipaddress.ip_address(address))
        except ValueError:  # a scoped or malformed answer: nothing to connect to
            continue
    return [str(ip) for ip in sorted(parsed, key=lambda ip: ip.version)][:MAX_ADDRESSES]


def _open(
    address: str,
    port: int,
    use_tls: bool,
    server_name: str | None,
    purpose: str,
    config: MeasureConfig,
    clock: Clock,
    observations: dict[str, Any],
) -> tuple[socket.socket | None, dict[str, Any] | None]:
    """Connect (and handshake, for TLS), recording each step with its purpose.

    Returns the socket to speak HTTP over (None if a step failed) and the handshake record."""
    sock, tcp = tcp_connect(address, port, config.timeout, clock, config.own_addresses)
    tcp["purpose"] = purpose
    observations["tcp_connect"].append(tcp)
    if sock is None or not use_tls:
        return sock, None
    tls, handshake = tls_handshake(sock, address, port, server_name, config.timeout, clock)
    handshake["purpose"] = purpose
    observations["tls_handshakes"].append(handshake)
    return tls, handshake


def _injection_address(config: MeasureConfig, control: dict[str, Any] | None) -> str | None:
    if config.injection_address:
        return config.injection_address
    if control is None:
        return None
    v4 = [a for a in control["addresses"] if ipaddress.ip_address(a).version == 4]
    return (v4 or control["addresses"] or [None])[0]


def observe_dns(hostname: str, port: int, config: MeasureConfig, clock: Clock) -> dict[str, Any]:
    """The control first (its answer names the injection probe's address), then every UDP question
    at once (the system's nameserver, the control's address in plain UDP, the injection probe),
    then getaddrinfo, as every program on the machine resolves."""
    control = None
    if config.control_resolver is not None:
        control = lookup_with_resolver(
            config.control_resolver, hostname, config.timeout, config.dns_window, config.roots.path, clock
        )
    asks: list[UdpAsk] = []
    udp_system = config.resolver if config.resolver is not None else config.system_udp
    if udp_system is not None and udp_system.transport == "udp":
        asks.append(udp_ask_for(udp_system, "system_udp", hostname))
    if config.control_plain is not None:
        asks.append(udp_ask_for(config.control_plain, "control_plain", hostname))
    silent = _injection_address(config, control) if config.injection_check else None
    if silent is not None:
        asks.append(UdpAsk("injection", f"udp://{silent}:53", silent, 53, hostname, ("A",), expects_reply=False))
    answered = udp_batch(asks, config.timeout, config.dns_window, clock) if asks else {}

    def lookup_of(label: str, spec: ResolverSpec | None) -> dict[str, Any] | None:
        if label not in answered or spec is None:
            return None
        return combine_lookup(spec.url, "udp", hostname, answered[label])

    system_udp = lookup_of("system_udp", udp_system)
    if config.resolver is not None and config.resolver.transport != "udp":
        system = lookup_with_resolver(
            config.resolver, hostname, config.timeout, config.dns_window, config.roots.path, clock
        )
    elif config.resolver is not None and system_udp is not None:  # --resolver over UDP: asked in the batch
        system, system_udp = system_udp, None
    else:
        system = lookup_system(hostname, port, clock)
    injection = None
    if "injection" in answered:
        (query,) = answered["injection"]
        injection = {"address": silent, "port": 53, **query}
    return {
        "system": system,
        "system_udp": system_udp,
        "control": control,
        "control_plain": lookup_of("control_plain", config.control_plain),
        "injection": injection,
        **config.run_dns,
    }


def measure(target: Target, config: MeasureConfig, started: datetime) -> dict[str, Any]:
    """Every observation for one target, in the record's `observations` shape."""
    clock = Clock()
    observations: dict[str, Any] = {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": []}
    questions = None
    if config.helpers:
        questions = HelperQuestions(
            list(config.helpers), target.url, config.helper_token, config.timeout, config.roots.path, clock
        )
    _observe_target(target, config, started, clock, observations)
    observations["helpers"] = questions.collect() if questions is not None else []
    for asked in observations["helpers"]:
        if isinstance(asked["response"], dict):  # where the helper saw us come from: ours, not for the record
            config.own_addresses.add(asked["response"].pop("client_address", None))
    return observations


def _observe_target(
    target: Target, config: MeasureConfig, started: datetime, clock: Clock, observations: dict[str, Any]
) -> None:
    if target.is_ip_literal:
        addresses, address_source = [target.host], "literal"
    else:
        observations["dns"] = observe_dns(target.host, target.port, config, clock)
        system, control = observations["dns"]["system"], observations["dns"]["control"]
        addresses, address_source = system["addresses"], "system"
        if not addresses and control is not None and control["addresses"]:
            # The local resolver denied the name: still look at what the path does to the real site.
            addresses, address_source = control["addresses"], "control"
    observations["addresses_from"] = address_source if addresses else None
    server_name = None if target.is_ip_literal else target.host

    use_tls = target.scheme == "https"
    for address in _ordered(addresses):
        conn, handshake = _open(address, target.port, use_tls, server_name, "target", config, clock, observations)
        if conn is None and handshake is None:
            continue  # no TCP connection: try the next address
        if conn is not None:
            # The page over the connection the network gave us, forged or not: a blockpage
            # behind an interceptor is evidence too.
            _fetch(conn, target.host, target.path, address, target.url, config, clock, observations)
        if handshake is None:
            break
        suspicious = handshake["failure"] is not None or not config.roots.validates(
            handshake["peer_certificates"], target.host, started
        )
        if handshake["failure"] is None and suspicious and config.os_store is not None:
            # Machine state, not a judgement: whether this machine's own store trusts the chain.
            handshake["os_store_valid"] = config.os_store.validates(
                handshake["peer_certificates"], target.host, started
            )
        if suspicious and config.control_sni and server_name is not None:
            control, _ = _open(
                address, target.port, True, config.control_sni, "control_sni", config, clock, observations
            )
            close_quietly(control)
        break


def _fetch(
    sock: socket.socket,
    host: str,
    path: str,
    address: str,
    url: str,
    config: MeasureConfig,
    clock: Clock,
    observations: dict[str, Any],
) -> None:
    """GET over a connected socket, then follow at most MAX_REDIRECTS redirects, each recorded."""
    try:
        request = http_get(sock, host, path, config.timeout, clock)
    finally:
        close_quietly(sock)
    request.update({"address": address, "url": url, "redirect_index": 0})
    observations["http_requests"].append(request)
    for index in range(1, MAX_REDIRECTS + 1):
        if request["status"] not in REDIRECT_STATUSES or not request["location"]:
            return
        next_url = urljoin(request["url"], request["location"])
        parts = urlsplit(next_url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return
        next_host = parts.hostname.lower()
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            return
        next_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if is_ip_literal(next_host):
            addresses = [next_host]
        else:
            lookup = _lookup_for_redirect(next_host, port, config, clock)
            observations.setdefault("redirect_lookups", []).append(lookup)
            addresses = lookup["addresses"]
        candidates = _ordered(addresses)
        if not candidates:
            return
        next_address = candidates[0]
        if not _may_follow_to(next_address):
            # A page must not steer the probe into this machine or its link (router admin pages,
            # metadata services). ISP blockpage servers on private addresses are still followed.
            observations["redirect_refused"] = {"url": next_url, "address": next_address}
            return
        sni = None if is_ip_literal(next_host) else next_host
        connection, _ = _open(next_address, port, scheme == "https", sni, "redirect", config, clock, observations)
        if connection is None:
            return
        try:
            request = http_get(connection, next_host, next_path, config.timeout, clock)
        finally:
            close_quietly(connection)
        request.update({"address": next_address, "url": next_url, "redirect_index": index})
        observations["http_requests"].append(request)


def _may_follow_to(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


def _lookup_for_redirect(host: str, port: int, config: MeasureConfig, clock: Clock) -> dict[str, Any]:
    """Resolve a redirect's host as a browser on this machine would."""
    if config.resolver is not None:
        return lookup_with_resolver(config.resolver, host, config.timeout, 0.0, config.roots.path, clock)
    return lookup_system(host, port, clock)


def observe_run_dns(config: MeasureConfig, baseline_name: str) -> dict[str, Any]:
    """Observations made once a run, copied into every record so that each stands alone:
    who answers the control over plain UDP and over its encrypted channel (a transparent proxy
    answers as itself), and the IP TTL of the system's nameserver for an ordinary name."""
    clock = Clock()
    result: dict[str, Any] = {"control_identity": None, "resolver_baseline": None}
    if config.control_resolver is not None and config.control_plain is not None:
        result["control_identity"] = {
            "plain": identity_query(config.control_plain, config.timeout, config.dns_window, config.roots.path, clock),
            "encrypted": identity_query(
                config.control_resolver, config.timeout, config.dns_window, config.roots.path, clock
            ),
        }
    udp_system = config.resolver if config.resolver is not None else config.system_udp
    if udp_system is not None and udp_system.transport == "udp":
        ask = UdpAsk("baseline", udp_system.url, udp_system.address, udp_system.port, baseline_name, ("A",))
        result["resolver_baseline"] = udp_batch([ask], config.timeout, config.dns_window, clock)["baseline"][0]
    return result
