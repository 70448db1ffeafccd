"""DNS on the run's event loop: the same questions and records as `dns`, as coroutines.

UDP is listened to by the loop (`udpwire.listen`), TCP, DoT and DoH go through dnspython's asyncio
transports, and getaddrinfo (which blocks) through the loop's executor: the run's thread boundary.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from probe.netx import classify as errors
from probe.netx import udpwire
from probe.netx.clock import Clock
from probe.netx.dns import (
    QUERY_TYPES,
    Asking,
    ReplyFields,
    ResolverSpec,
    UdpAsk,
    _classify_dns_exception,
    _make_query,
    _message_fields,
    _reply_fields,
    _verifying_context,
    batch_records,
    combine_lookup,
    query_ids,
    query_wire,
    system_lookup,
    udp_ask_for,
)
from probe.netx.pools import Pools, needed
from probe.netx.wire import TargetWatch
from probe.vocabulary.observations import DnsLookup, DnsQuery

if TYPE_CHECKING:
    import dns.message

FirstReply = Callable[[str, ReplyFields], None]  # (query type, what the first reply says)


def _told(asking: Asking, on_first_reply: FirstReply, wire: bytes) -> None:
    """A question's first reply, read once: for the caller now, for the record later."""
    asking.first = (wire, _reply_fields(wire))
    on_first_reply(asking.query_type, asking.first[1])


async def udp_batch(
    asks: list[UdpAsk], timeout: float, window: float, clock: Clock, watch: TargetWatch | None = None,
    on_first_reply: FirstReply | None = None,
) -> dict[str, list[DnsQuery]]:  # fmt: skip
    """Ask every question at once from one socket; each label's query records, every reply kept
    (and, with a `watch`, each reply as the packet capture saw it: `wire_replies`). `on_first_reply`
    is told each question's first reply as soon as it is read, while the listening goes on."""
    pending: list[Asking] = []
    ids = iter(query_ids(sum(len(ask.query_types) for ask in asks)))  # unique within the exchange
    for ask in asks:
        for qtype in ask.query_types:
            query_id = next(ids)
            wire = query_wire(ask.hostname, qtype, ask.rdclass, query_id)
            asking = Asking(ask, qtype, clock.now(), udpwire.Question(wire, query_id, ask.address, ask.port,
                                                                      ask.expects_reply))  # fmt: skip
            if on_first_reply is not None:
                asking.question.on_first_reply = functools.partial(_told, asking, on_first_reply)
            pending.append(asking)
    try:
        await udpwire.listen([asking.question for asking in pending], timeout, window, clock.now, watch)
    finally:
        for asking in pending:  # the question's callback refers back to it: let go, freed at once
            asking.question.on_first_reply = None
    return batch_records(asks, pending, clock)


def udp_batch_blocking(
    asks: list[UdpAsk], timeout: float, window: float, clock: Clock, watch: TargetWatch | None = None
) -> dict[str, list[DnsQuery]]:
    """`udp_batch`, for a caller outside any event loop (a loop of its own for the exchange)."""
    return asyncio.run(udp_batch(asks, timeout, window, clock, watch))


def _doh_client(roots: str, pools: Pools | None) -> Any:
    """The run's pooled DoH client for a roots file (HTTP/2 where the server offers it)."""
    import httpx2

    def make() -> httpx2.AsyncClient:
        return httpx2.AsyncClient(verify=_verifying_context(roots), http1=True, http2=True)

    return needed(pools, "DNS over HTTPS").client(("doh", roots), make)


async def query_stream(
    spec: ResolverSpec, hostname: str, qtype: str, timeout: float, roots: str, clock: Clock, rdclass: str = "IN",
    *, pools: Pools | None,
) -> DnsQuery:  # fmt: skip
    """One question over TCP, DNS over TLS or DNS over HTTPS (on the run's pooled client: `pools`),
    recorded whatever happens."""
    import dns.asyncquery  # here: its import (DoQ, HTTP/3 and trio among it) costs 0.2 s, and UDP needs none

    query = _make_query(hostname, qtype, rdclass)
    if spec.transport == "https":
        needed(pools, "DNS over HTTPS")  # no pools is a bug, never an observation: checked before the try
    t0 = clock.now()
    try:
        reply: dns.message.Message
        async with asyncio.timeout(timeout):  # DoT and DoH time out per operation: one bound for all
            if spec.transport == "https":
                client = _doh_client(roots, pools)
                reply = await dns.asyncquery.https(query, spec.address, timeout=timeout, client=client)
            elif spec.transport == "tcp":
                reply = await dns.asyncquery.tcp(query, spec.address, timeout=timeout, port=spec.port)
            else:
                reply = await dns.asyncquery.tls(
                    query, spec.address, timeout=timeout, port=spec.port, ssl_context=_verifying_context(roots),
                    server_hostname=spec.tls_name or spec.address,
                )  # fmt: skip
        # The reply as dnspython read it (its bytes as it writes them back): not parsed a second time.
        fields = _message_fields(reply, base64.b64encode(reply.to_wire()).decode("ascii"))
    except Exception as exc:  # every failure becomes an observation
        fields = ReplyFields(None, None, (), _classify_dns_exception(exc))
    return DnsQuery(spec.url, spec.transport, hostname, qtype, fields.answers, fields.rcode, fields.failure,
                    fields.raw_reply, t0, clock.now(), ())  # fmt: skip


async def lookup_with_resolver(
    spec: ResolverSpec, hostname: str, timeout: float, window: float, roots: str, clock: Clock,
    on_first_reply: FirstReply | None = None, *, pools: Pools | None,
) -> DnsLookup:  # fmt: skip
    """Ask a resolver for A and AAAA; the lookup with its queries and combined result. Over UDP,
    `on_first_reply` is told each question's first reply while the window for later ones is open;
    over DoH, the run's `pools` hold the client (none needed otherwise)."""
    if spec.transport == "udp":
        ask = udp_ask_for(spec, "lookup", hostname)
        queries = (await udp_batch([ask], timeout, window, clock, on_first_reply=on_first_reply))["lookup"]
    else:
        asked = (query_stream(spec, hostname, q, timeout, roots, clock, pools=pools) for q in QUERY_TYPES)
        queries = list(await asyncio.gather(*asked))
    return combine_lookup(spec.url, spec.transport, hostname, queries)


async def identity_query(
    spec: ResolverSpec, timeout: float, window: float, roots: str, clock: Clock, *, pools: Pools | None
) -> DnsQuery:
    """Ask a resolver who it is (CHAOS TXT id.server): a transparent proxy answers as itself."""
    if spec.transport == "udp":
        ask = UdpAsk("id", spec.url, spec.address, spec.port, "id.server", ("TXT",), rdclass="CH")
        return (await udp_batch([ask], timeout, window, clock))["id"][0]
    return await query_stream(spec, "id.server", "TXT", timeout, roots, clock, rdclass="CH", pools=pools)


async def lookup_system(hostname: str, port: int, clock: Clock) -> DnsLookup:
    """Resolve with getaddrinfo, as every program on the volunteer's machine would (in the loop's
    executor: the run's thread boundary; getaddrinfo has no timeout of its own)."""
    t0 = clock.now()
    try:
        loop = asyncio.get_running_loop()
        resolve = functools.partial(
            socket.getaddrinfo, hostname, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        infos = await loop.run_in_executor(None, resolve)  # the run's threads, whatever the loop
    except Exception as exc:
        return system_lookup(hostname, t0, None, errors.classify(exc), clock)
    return system_lookup(hostname, t0, infos, None, clock)
