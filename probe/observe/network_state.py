"""Observing the network's state: the reference endpoints asked at once, at the run's start and again
during a long run, on the run's event loop.

Each endpoint is asked cheaply and within a bound: a TCP connect and a TLS handshake (verification
off: any server's answer counts, nothing is fetched), or one question to a resolver. A round is a
`NetworkCheck`; `NetworkWatch` keeps the latest one and starts another every `every_targets`
targets or `every_seconds`, one at a time. What the rounds mean is analysis's business
(`analyze.network_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import msgspec

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.connect import open_tcp, open_tls
from probe.netx.dns import ResolverSpec, ResolverSpecError, parse_resolver
from probe.netx.dnsloop import lookup_system, lookup_with_resolver
from probe.netx.netcheck import source_address
from probe.observe.config import MeasureConfig, ordered
from probe.vocabulary.failures import Failure, unknown
from probe.vocabulary.netstate import Endpoint, EndpointResult, Kind, NetworkCheck, Origin, Side
from probe.vocabulary.observations import DnsLookup

DNS_WINDOW = 0.05  # seconds to listen after a resolver's first reply: one reply is all a check needs
SLACK = 1.0  # seconds past an endpoint's own steps before it is cut as a whole


def run_endpoints(catalog: tuple[Endpoint, ...], config: MeasureConfig) -> tuple[Endpoint, ...]:
    """The catalog's endpoints for the run, with the run's own foreign ones: its control resolver
    (asked for the control name) and every helper (a handshake with its address)."""
    found = list(catalog)
    control = config.control_resolver
    if control is not None:
        found.append(Endpoint("control resolver", Side.FOREIGN, Kind.DNS, resolver=control.url,
                              query=config.control_sni or "example.org", origin=Origin.CONTROL_RESOLVER))  # fmt: skip
    for number, url in enumerate(config.helpers, start=1):
        parts = urlsplit(url)
        if parts.hostname:
            found.append(Endpoint(f"helper {number}", Side.FOREIGN, Kind.HTTPS, host=parts.hostname,
                                  port=parts.port or 443, origin=Origin.HELPER))  # fmt: skip
    return tuple(found)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _replied(lookup: DnsLookup) -> bool:
    """A resolver replied to one of the lookup's questions (an error rcode is a reply too)."""
    return any(q.failure is None or q.rcode is not None or q.replies for q in lookup.queries)


async def _https(endpoint: Endpoint, config: MeasureConfig, clock: Clock) -> tuple[bool, str | None]:
    address = endpoint.address
    if address is None:
        assert endpoint.host is not None
        if _is_ip(endpoint.host):
            address = endpoint.host
        else:
            async with asyncio.timeout(config.timeout):
                lookup = await lookup_system(endpoint.host, endpoint.port, clock)
            addresses = ordered(list(lookup.addresses))
            if not addresses:
                return False, str(lookup.failure or Failure.DNS_NO_ANSWER)
            address = addresses[0]
    sock, connect = await open_tcp(address, endpoint.port, config.timeout, clock, config.own_addresses)
    if sock is None:
        return False, connect.failure
    name = endpoint.host if endpoint.host and not _is_ip(endpoint.host) else None
    stream, handshake = await open_tls(sock, address, endpoint.port, name, config.timeout, clock)
    if stream is None:
        return False, handshake.failure
    stream.close()
    return True, None


def _resolver_of(endpoint: Endpoint, config: MeasureConfig) -> ResolverSpec | None:
    if endpoint.kind == Kind.SYSTEM_RESOLVER:
        return config.system_udp or config.resolver  # None: getaddrinfo, the system's own way
    assert endpoint.resolver is not None
    return parse_resolver(endpoint.resolver)


async def _dns(endpoint: Endpoint, config: MeasureConfig, clock: Clock) -> tuple[bool, str | None]:
    spec = _resolver_of(endpoint, config)
    if spec is None:
        async with asyncio.timeout(config.timeout):
            lookup = await lookup_system(endpoint.query, 443, clock)
        failure = lookup.failure
        # getaddrinfo's "no such name" is the resolver's reply; its other failures cannot be told from silence
        return failure in (None, Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER), failure
    lookup = await lookup_with_resolver(spec, endpoint.query, config.timeout, DNS_WINDOW, config.roots.path, clock,
                                        pools=config.pools)  # fmt: skip
    return _replied(lookup), None if _replied(lookup) else lookup.failure


NO_ROUTE = "no_route"  # the routing table has no route to the endpoint's address: not asked


def _unroutable(endpoint: Endpoint) -> bool:
    """An endpoint at an address this machine has no route to (an IPv4 anycast service on an IPv6-only
    network): asking it would say nothing of the network's state, as the run's own offline check
    reads the routing table, never one connect's error."""
    address = endpoint.address or (endpoint.host if endpoint.host and _is_ip(endpoint.host) else None)
    if endpoint.kind == Kind.DNS and endpoint.resolver is not None:
        with contextlib.suppress(ResolverSpecError):
            address = parse_resolver(endpoint.resolver).route_address
    return address is not None and source_address(address) is None


async def ask_endpoint(endpoint: Endpoint, config: MeasureConfig) -> EndpointResult:
    """One endpoint, asked once within its bound; every failure is an observation, never an error."""
    clock = Clock()
    started = time.monotonic()
    if _unroutable(endpoint):
        return EndpointResult(endpoint.name, endpoint.side, endpoint.kind, endpoint.origin, False, NO_ROUTE, 0.0,
                              asked=False)  # fmt: skip
    try:
        async with asyncio.timeout(2 * config.timeout + SLACK):
            if endpoint.kind == Kind.HTTPS:
                answered, failure = await _https(endpoint, config, clock)
            else:
                answered, failure = await _dns(endpoint, config, clock)
    except ResolverSpecError:
        answered, failure = False, unknown("the resolver URL cannot be used")
    except (OSError, EOFError, TimeoutError) as exc:  # the network's: its bound passed, a socket's error
        answered, failure = False, errors.classify(exc)
    except Exception as exc:  # the probe's own bug: no evidence either way, never the network's failure
        return EndpointResult(endpoint.name, endpoint.side, endpoint.kind, endpoint.origin, False,
                              _probe_error(exc), time.monotonic() - started,
                              asked=False)  # fmt: skip
    return EndpointResult(endpoint.name, endpoint.side, endpoint.kind, endpoint.origin, answered,
                          None if answered else str(failure), time.monotonic() - started)  # fmt: skip


def _probe_error(exc: BaseException) -> str:
    """A bug as an endpoint's failure: `probe_error: ` the exception, then where (module-relative)."""
    *frames, last = errors.short_traceback(exc).splitlines()
    return f"probe_error: {last} (at {'; '.join(frame.strip() for frame in frames)})"[:500]


async def check_network(endpoints: tuple[Endpoint, ...], config: MeasureConfig, index: int) -> NetworkCheck:
    """One round: every endpoint at once."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    results = await asyncio.gather(*(ask_endpoint(endpoint, config) for endpoint in endpoints))
    return NetworkCheck(index, at, tuple(results))


class NetworkWatch:
    """The run's rounds: the first before any target, then one every `every_targets` targets started
    or `every_seconds` (whichever comes first; never two at once). `on_check` hears each round."""

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        config: MeasureConfig,
        every_targets: int | None,
        every_seconds: float | None,
        on_check: Callable[[NetworkCheck], None] | None = None,
    ) -> None:
        self.endpoints, self.config = endpoints, config
        self.every_targets, self.every_seconds = every_targets, every_seconds
        self.on_check = on_check
        self.current: NetworkCheck | None = None
        self._started = 0
        self._running: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None

    async def _check(self) -> None:
        index = 0 if self.current is None else self.current.index + 1
        check = await check_network(self.endpoints, self.config, index)
        self.current = check
        if self.on_check is not None:
            self.on_check(check)

    async def start(self) -> NetworkCheck | None:
        """The first round, awaited: every record of the run has a state. Then the timer."""
        await self._check()
        if self.every_seconds:
            self._timer = asyncio.get_running_loop().create_task(self._periodic(self.every_seconds))
        return self.current

    async def _periodic(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self._again()

    def _again(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._check())

    def target_started(self) -> None:
        self._started += 1
        if self.every_targets and self._started % self.every_targets == 0:
            self._again()

    def close(self) -> None:
        for task in (self._timer, self._running):
            if task is not None:
                task.cancel()


class NetworkChecks(msgspec.Struct, frozen=True):
    """What a run asks of the network's state: its endpoints, and how often to ask again."""

    endpoints: tuple[Endpoint, ...]
    every_targets: int | None = None  # a round every so many targets started (None: never by count)
    every_seconds: float | None = None  # a round every so many seconds (None: never by time)
