"""The network's own state during a run: the reference endpoints asked, what each did, and the states.

A run asks a small set of reference endpoints (`Endpoint`), domestic and foreign, at its start and
again during a long run; one round is a `NetworkCheck` of `EndpointResult`s, observed by
`observe.network_state` and judged by `analyze.network_state` into a `NetworkState`. Every record
of the run carries the state that held while its target was measured (`network_state`).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class NetworkState(StrEnum):
    FULL = "full"  # every foreign endpoint answered (or all but none): nothing cut
    CUT_OFF_ABROAD = "cut_off_abroad"  # domestic endpoints answered, no foreign one did
    ALLOW_LIST = "allow_list"  # domestic answered; some foreign endpoints answered and others did not
    NO_INTERNET = "no_internet"  # nothing answered (but, at most, the system's own resolver)
    UNKNOWN = "unknown"  # too little evidence to tell (no domestic endpoint known, one foreign one down)


# The states in which a site's failure says nothing about the site: the report attributes the
# records measured meanwhile to the network's state, never to site blocking.
RESTRICTED = (NetworkState.CUT_OFF_ABROAD, NetworkState.ALLOW_LIST, NetworkState.NO_INTERNET)


class Side(StrEnum):
    DOMESTIC = "domestic"  # inside the country (the national e-government, its banks, the ISP's resolver)
    FOREIGN = "foreign"  # outside it (the control resolvers, the helpers, anycast services)


class Kind(StrEnum):
    HTTPS = "https"  # a TCP connect and a TLS handshake (verification off: any server's answer counts)
    DNS = "dns"  # a question to a resolver (`resolver`: udp://, tcp://, tls:// or a DoH URL)
    SYSTEM_RESOLVER = "system_resolver"  # the system's own resolver: a home router answers from its cache,
    # so it is weak evidence, never enough alone to say that domestic services answer


class Origin(StrEnum):
    CATALOG = "catalog"  # the shipped catalog, or --reference-endpoints
    CONTROL_RESOLVER = "control_resolver"  # the run's --control-resolver
    HELPER = "helper"  # a --helper of the run


class Endpoint(msgspec.Struct, frozen=True):
    """One reference endpoint: where to go and how to ask it."""

    name: str
    side: Side
    kind: Kind
    host: str | None = None  # HTTPS: the name (SNI; resolved by the system when `address` is not given)
    address: str | None = None  # an IP address: asked as it is, no DNS
    port: int = 443
    resolver: str | None = None  # DNS: the resolver's URL
    query: str = "example.org"  # DNS and the system resolver: the name asked
    origin: Origin = Origin.CATALOG


class EndpointResult(msgspec.Struct, frozen=True):
    """What one endpoint did in one check."""

    name: str
    side: Side
    kind: Kind
    origin: Origin
    answered: bool  # a TLS handshake completed, or the resolver replied (any rcode)
    failure: str | None  # the failure string (vocabulary.failures) when it did not answer
    elapsed: float  # seconds
    asked: bool = True  # False: the routing table has no route to its address (an IPv6-only network and
    # an IPv4 endpoint): nothing was sent; or asking it met a bug of the probe's (`probe_error: ...`);
    # either way it counts neither way


class NetworkCheck(msgspec.Struct, frozen=True):
    """One round of the reference endpoints, all asked at once."""

    index: int  # 0 at the run's start, then 1, 2, ...
    at: str  # UTC, ISO 8601, when the round began
    results: tuple[EndpointResult, ...]


class StateJudgement(msgspec.Struct, frozen=True):
    """A check judged: the state and the rule that decided it (`basis`)."""

    state: NetworkState
    basis: str  # the rule, in a word: see docs/verdicts.md, "The network's state"
    domestic_asked: int
    domestic_answered: int
    foreign_asked: int
    foreign_answered: int
