"""What a measurement needs to know: timeouts, resolvers, controls, helpers, trust anchors."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from probe.netx.dns import ResolverSpec
from probe.netx.own_addresses import OwnAddresses
from probe.netx.wire import PacketWatcher, TargetWatch
from probe.observe.aia import IssuerFetcher

MAX_ADDRESSES = 3


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
    minting_test: bool = True  # an untrusted chain: ask the same address for a name that cannot exist
    helpers: tuple[str, ...] = ()  # control vantages (`probe helper serve`), asked while measuring
    helper_token: str | None = None
    own_addresses: OwnAddresses = field(default_factory=OwnAddresses)  # learned, scrubbed, never recorded
    os_store: TrustAnchors | None = None  # the machine's trust store: a second opinion only
    issuer_fetcher: IssuerFetcher | None = None  # completes incomplete chains from AIA URLs (once per run)
    target_deadline: float | None = None  # seconds for the whole of one target's critical path
    ends: float | None = None  # this target's deadline (time.monotonic()); set per target by `for_target`
    capture: PacketWatcher | None = None  # the run's packet capture (forensics, CAP_NET_RAW), if any
    watch: TargetWatch | None = None  # this target's registrations with it; set per target

    def for_target(self) -> MeasureConfig:
        """A copy for one target, its deadline running from now."""
        if self.target_deadline is None:
            return self
        return replace(self, ends=time.monotonic() + self.target_deadline)

    def step(self) -> float:
        """The bound of the next network step: `timeout`, or what is left of the target's deadline."""
        if self.ends is None:
            return self.timeout
        return max(0.05, min(self.timeout, self.ends - time.monotonic()))

    @property
    def expired(self) -> bool:
        return self.ends is not None and time.monotonic() >= self.ends


def ordered(addresses: list[str]) -> list[str]:
    """IPv4 first (most volunteers have no IPv6 route), at most MAX_ADDRESSES."""
    parsed = []
    for address in addresses:
        try:
            parsed.append(ipaddress.ip_address(address))
        except ValueError:  # a scoped or malformed answer: nothing to connect to
            continue
    return [str(ip) for ip in sorted(parsed, key=lambda ip: ip.version)][:MAX_ADDRESSES]
