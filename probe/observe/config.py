"""What a measurement needs to know (timeouts, resolvers, controls, helpers, trust anchors, the
run's pooled clients: the run's `MeasureConfig`, never changed), and one target's measurement in
progress (`Visit`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from probe.netx.clock import Clock
from probe.netx.deadline import Deadline
from probe.netx.dns import ResolverSpec
from probe.netx.own_addresses import OwnAddresses
from probe.netx.pools import Pools, needed
from probe.netx.wire import PacketWatcher, TargetWatch
from probe.observe.aia import IssuerFetcher
from probe.observe.draft import Draft

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
    capture: PacketWatcher | None = None  # the run's packet capture (forensics, CAP_NET_RAW), if any
    throughput: bool = False  # issue 22: throughput flows (observe/throughput.py), after the page
    quic: str = "auto"  # issue 22: QUIC handshakes where h3 is advertised (auto), always, or off
    # The run's pooled clients and slots (DoH, helpers, throughput): its runtime's, handed in by the
    # run (probe/run/runtime.py closes them); None outside a run, where nothing pooled may be asked.
    pools: Pools | None = None

    def run_pools(self, what: str) -> Pools:
        """The run's pools, or a clear error naming `what` needed them (a caller's bug)."""
        return needed(self.pools, what)

    def deadline(self) -> Deadline:
        """A new target's deadline, its time running from now."""
        return Deadline.start(self.timeout, self.dns_window, self.target_deadline)


@dataclass
class Visit:
    """One target being measured: the run's config, the target's own deadline, clock and capture
    registrations, and what has been observed so far (filled in step by step)."""

    config: MeasureConfig
    deadline: Deadline
    clock: Clock
    started: datetime
    draft: Draft  # what has been observed so far, typed, filled in step by step (`build` makes the Observations)
    watch: TargetWatch | None = None

    @classmethod
    def begin(cls, config: MeasureConfig, started: datetime) -> Visit:
        clock = Clock()
        watch = TargetWatch(config.capture, clock.now) if config.capture is not None else None
        return cls(config, config.deadline(), clock, started, Draft(), watch)


def ordered(addresses: list[str]) -> list[str]:
    """IPv4 first (most volunteers have no IPv6 route), at most MAX_ADDRESSES."""
    parsed = []
    for address in addresses:
        try:
            parsed.append(ipaddress.ip_address(address))
        except ValueError:  # a scoped or malformed answer: nothing to connect to
            continue
    return [str(ip) for ip in sorted(parsed, key=lambda ip: ip.version)][:MAX_ADDRESSES]
