"""Observe one target: DNS, TCP, TLS and HTTP (and the helpers' view of it, asked meanwhile),
recorded as raw facts, never judged here.

What else is observed to make a handshake worth judging (control SNI, retry, AIA completion) is
`connections`' job; the page and its redirects are `redirects`'.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from probe.observe.clock import Clock
from probe.observe.config import MeasureConfig, TrustAnchors, ordered
from probe.observe.connect import close_quietly
from probe.observe.connections import TARGET, connect_with_contrast, open_connection
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
from probe.observe.redirects import fetch_with_redirects
from probe.targets import Target

__all__ = ["MeasureConfig", "TrustAnchors", "measure", "observe_dns", "observe_run_dns"]


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
    for address in ordered(addresses):
        conn, handshake = connect_with_contrast(
            address, target.port, use_tls, server_name, TARGET, config, started, clock, observations
        )
        if conn is None and handshake is None:
            continue  # no TCP connection: try the next address
        if conn is not None:
            # The page over the connection the network gave us, forged or not: a blockpage
            # behind an interceptor is evidence too.
            fetch_with_redirects(
                conn, target.host, target.path, address, target.url, config, started, clock, observations
            )
        break
    if not use_tls and server_name is not None and observations["dns"] is not None:
        _check_answer_over_tls(target.host, observations["dns"], config, clock, observations)


def _check_answer_over_tls(
    host: str, dns: dict[str, Any], config: MeasureConfig, clock: Clock, observations: dict[str, Any]
) -> None:
    """For an http:// target whose answer the control does not share: does the address serve a
    certificate for the name on port 443? A valid one shows the answer is correct (a CDN edge)."""
    control = dns.get("control")
    answers = ordered(dns["system"]["addresses"])
    if not answers or control is None or not control["addresses"] or set(answers) & set(control["addresses"]):
        return
    conn, _ = open_connection(answers[0], 443, True, host, "dns_check", config, clock, observations)
    close_quietly(conn)


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
