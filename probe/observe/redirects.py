"""The target's page, and the redirects after it: at most MAX_REDIRECTS hops, each recorded.

Each `Location` is read as browsers read it (the WHATWG URL standard, `probe.vocabulary.targets.resolve_url`:
`\\` is `/`, `//host` keeps the scheme, IDNA 2008 names), each hop is resolved as a browser on this
machine would, and connected to with the same contrasts as the target (control SNI, a retry, AIA
completion), so that a hop the network breaks can be judged. A user name or password in a Location
(`https://user:pw@host/`) is dropped: the hop goes to the host a browser would go to, without them.
"""

from __future__ import annotations

import ipaddress

import msgspec

from probe.netx.connect import Stream
from probe.netx.dnsloop import lookup_system, lookup_with_resolver
from probe.netx.http import get
from probe.observe.config import Visit, ordered
from probe.observe.connections import connect_with_contrast, redirect_hop
from probe.vocabulary.observations import DnsLookup, RedirectError, RedirectRefused
from probe.vocabulary.targets import is_ip_literal, resolve_url

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


async def fetch_with_redirects(stream: Stream, host: str, path: str, address: str, url: str, visit: Visit) -> None:
    """GET over a connected stream, then follow at most MAX_REDIRECTS redirects, each recorded."""
    config, clock, draft = visit.config, visit.clock, visit.draft
    try:
        request = await get(stream, host, path, visit.deadline.step(), clock, own=config.own_addresses,
                            address=address, url=url, redirect_index=0)  # fmt: skip
    finally:
        stream.close()
    draft.http_requests.append(request)
    for index in range(1, MAX_REDIRECTS + 1):
        if request.status not in REDIRECT_STATUSES or not request.location:
            return
        if visit.deadline.expired:
            draft.deadline_reached = "redirect"  # the target's time is up: no further hop
            return
        try:
            hop = resolve_url(request.url or url, _as_sent(request.location))
        except ValueError as exc:
            # A Location no browser could follow (`http://[x`, port 0): recorded, and the chain ends here.
            draft.redirect_error = RedirectError(str(request.location)[:2000], str(exc)[:200])
            return
        if hop is None:  # not http(s): `mailto:`, `ftp:`, nothing a browser fetches over HTTP
            return
        # A user name or password in the Location is dropped: the hop goes where a browser goes (the
        # host after the last '@'), never sends them; the Location as sent is in the request above.
        next_url, next_host, port, scheme, next_path = hop.url, hop.host, hop.port, hop.scheme, hop.path
        if is_ip_literal(next_host):
            addresses = [next_host]
        else:
            lookup = msgspec.structs.replace(await _lookup_for_redirect(next_host, port, visit), hop=index)
            draft.redirect_lookups.append(lookup)
            addresses = list(lookup.addresses)
        candidates = ordered(addresses)
        if not candidates:
            return
        next_address = candidates[0]
        if not _may_follow_to(next_address):
            # A page must not steer the probe into this machine or its link (router admin pages,
            # metadata services). ISP blockpage servers on private addresses are still followed.
            draft.redirect_refused = RedirectRefused(next_url, next_address)
            return
        sni = None if is_ip_literal(next_host) else next_host
        connection, _ = await connect_with_contrast(
            next_address, port, scheme == "https", sni, redirect_hop(index), visit
        )
        if connection is None:
            return
        try:
            step = visit.deadline.step()
            request = await get(connection, next_host, next_path, step, clock, own=config.own_addresses,
                                address=next_address, url=next_url, redirect_index=index)  # fmt: skip
        finally:
            connection.close()
        draft.http_requests.append(request)


def _as_sent(location: str) -> str:
    """The Location as a browser reads it: its bytes as UTF-8 (headers are recorded as Latin-1)."""
    try:
        return location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return location


def _may_follow_to(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


async def _lookup_for_redirect(host: str, port: int, visit: Visit) -> DnsLookup:
    """Resolve a redirect's host as a browser on this machine would."""
    config, clock = visit.config, visit.clock
    if config.resolver is not None:
        return await lookup_with_resolver(config.resolver, host, visit.deadline.step(), 0.0, config.roots.path, clock,
                                          pools=config.pools)  # fmt: skip
    return await lookup_system(host, port, clock)
