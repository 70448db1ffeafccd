"""Throughput flows of one target, off its critical path (docs/verdicts.md, "throttled").

With a helper: downloads of the same fixed size from the helper's bulk endpoint (`GET /v1/bulk`,
which answers any name) that differ only in the SNI their ClientHello carries: the target's name,
the control name, none. Same server, same path, same size, one after the other: what tells them
apart is the name alone. The three are made in rounds, each round in another order (so that no
flow always comes first after an idle link), and a run makes one target's rounds at a time (the
probe's own flows never compete with each other). A first round in which the target's flow is
about as fast as the others ends it: rounds are repeated only when they can show something.

Without a helper (only with `--throughput on`), the site itself is downloaded (a ranged GET of
its page, bounded) with the target's name and with the control name at the address the target
used: a server may treat names differently, so this can never confirm anything.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from probe.netx.bulk import download
from probe.observe.config import MeasureConfig, Visit
from probe.vocabulary.failures import Failure
from probe.vocabulary.targets import Target
from probe.vocabulary.throughput import FLOW_CONTROL, FLOW_NONE, FLOW_TARGET, BulkFlow, Throughput

BULK_PATH = "/v1/bulk"
SIZE = 256 << 10  # bytes a flow reads: past a TSPU's 16-20 KB freeze, and long enough to leave slow start
ROUNDS = 3  # at most; a healthy first round ends it
MIN_FLOW_SECONDS = 5.0
STALL_SECONDS = 3.0  # no byte for this long: the flow stalled (beyond a few of TCP's backed-off retransmissions)
QUEUE_SECONDS = 30.0  # the longest a target waits for the run's one throughput slot
ANSWERED = (200, 206)  # a flow that downloaded (the helper's 200, a site's ranged 206)
FAST_SECONDS = 0.5  # SIZE within this is as fast as a flow of SIZE can tell (analyze/throttle.py)
HEALTHY = 0.5  # a first round whose target flow has at least this share of the others' speed ends it
# The order of the flows in each round: each kind leads once.
ORDERS = ((FLOW_TARGET, FLOW_CONTROL, FLOW_NONE), (FLOW_CONTROL, FLOW_NONE, FLOW_TARGET),
          (FLOW_NONE, FLOW_TARGET, FLOW_CONTROL))  # fmt: skip


def flow_seconds(timeout: float) -> float:
    """The bound of one flow: a throttled flow is measured for this long, not read to its end."""
    return max(MIN_FLOW_SECONDS, timeout)


def bound(timeout: float) -> float:
    """Seconds within which a target's throughput observation ends, its wait for the slot included."""
    return QUEUE_SECONDS + ROUNDS * len(ORDERS[0]) * (flow_seconds(timeout) + 1) + timeout + 1


def completion_seconds(config: MeasureConfig) -> float:
    """What the throughput observation adds to a target's completion bound (0 when it is off)."""
    return bound(config.timeout) if config.throughput else 0.0


def _slot(visit: Visit) -> asyncio.Semaphore:
    """The run's one throughput slot, kept in the run's pools."""
    return visit.config.run_pools("throughput flows").semaphore("throughput", 1)


async def observe_throughput(target: Target, visit: Visit) -> Throughput | None:
    """The target's throughput observation (the record's `observations.throughput`), or None when
    nothing name-based can be compared (an IP literal, plain http:// without a helper)."""
    config = visit.config
    if target.is_ip_literal:
        return None
    if config.helpers:
        source, url = "helper", config.helpers[0].rstrip("/") + BULK_PATH
        where = await _helper_address(config.helpers[0], config.timeout)
        headers = {"Authorization": f"Bearer {config.helper_token}"} if config.helper_token else {}
        host, path = urlsplit(url).hostname or "", urlsplit(url).path  # a helper may sit under a path
    elif target.scheme == "https":
        source, url = "site", target.url
        reached = visit.draft.reached_address()
        where = (reached, target.port) if reached is not None else None
        headers = {"Range": f"bytes=0-{SIZE - 1}"}
        host, path = target.host, target.path
    else:
        return None
    if where is None:
        return Throughput(source, url, SIZE, config.control_sni, (), 0, "no_address")
    if target.scheme == "https" and visit.draft.reached_address() is None:
        # The name's own handshake did not complete (reset, silence, a dead site): the TLS rules
        # judge that, and flows with the name would only repeat it at the helper's expense.
        return Throughput(source, url, SIZE, config.control_sni, (), 0, "no_handshake")
    names = {FLOW_TARGET: target.host, FLOW_CONTROL: config.control_sni, FLOW_NONE: None}
    if config.control_sni is None:
        names.pop(FLOW_CONTROL)
    if source == "site":
        names.pop(FLOW_NONE)  # a site without a name serves its default host: no comparison
    try:
        async with asyncio.timeout(QUEUE_SECONDS):
            await _slot(visit).acquire()
    except TimeoutError:
        return Throughput(source, url, SIZE, config.control_sni, (), 0, "busy")
    try:
        flows, rounds, stopped = await _rounds(names, where, host, path, headers, visit)
    finally:
        _slot(visit).release()
    return Throughput(source, url, SIZE, config.control_sni, tuple(flows), rounds, stopped)


async def _rounds(
    names: dict[str, str | None],
    where: tuple[str, int],
    host: str,
    path: str,
    headers: dict[str, str],
    visit: Visit,
) -> tuple[list[BulkFlow], int, str | None]:
    """The flows made, the rounds made, and why no more were (None: every round was made)."""
    config = visit.config
    flows: list[BulkFlow] = []
    for number in range(ROUNDS):
        for kind in ORDERS[number % len(ORDERS)]:
            if kind not in names:
                continue
            flow = await download(
                where[0], where[1], names[kind], host, path, size=SIZE, bound=flow_seconds(config.timeout),
                stall=STALL_SECONDS, step_timeout=config.timeout, clock=visit.clock, headers=headers,
                own=config.own_addresses, kind=kind, round_number=number,
            )  # fmt: skip
            flows.append(flow)
        verdict = _round_shows(flows, number)
        if verdict is not None:
            return flows, number + 1, verdict
    return flows, ROUNDS, None


def _rate(flow: BulkFlow) -> float | None:
    """Body bytes a second, capped at what a flow of SIZE can measure (analysis counts alike)."""
    samples = flow.samples
    if not samples or samples[-1][0] <= 0:
        return None
    return min(float(samples[-1][1]) / float(samples[-1][0]), SIZE / FAST_SECONDS)


def _round_shows(flows: list[BulkFlow], number: int) -> str | None:
    """Why no more rounds are worth making after this one (None: go on). Observing does not judge:
    this only decides whether repeating could show anything (docs/verdicts.md gives the rule)."""
    this = [f for f in flows if f.round == number]
    target = [f for f in this if f.kind == FLOW_TARGET]
    others = [f for f in this if f.kind != FLOW_TARGET]
    if not target or not others or all(f.status not in ANSWERED for f in others):
        return "no_contrast"  # the helper unreachable or refusing for every other name: nothing to compare with
    failed = target[0].failure not in (None, Failure.GENERIC_TIMEOUT)  # reset, closed: not a slowdown
    if number == 0 and failed and target[0].stalled_at is None:
        return "target_failed"
    if number > 0:
        return None
    rate, other_rates = _rate(target[0]), [r for r in map(_rate, others) if r is not None]
    healthy = target[0].stalled_at is None and not target[0].failure and target[0].status in ANSWERED
    if healthy and rate is not None and other_rates and rate >= HEALTHY * min(other_rates):
        return "healthy"
    return None


async def _helper_address(helper_url: str, timeout: float) -> tuple[str, int] | None:
    """The helper's address (IPv4 first) and port, from its URL."""
    parts = urlsplit(helper_url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return None
    try:
        async with asyncio.timeout(timeout):
            found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        return None
    addresses = sorted((str(info[4][0]) for info in found), key=lambda a: ":" in a)
    return (addresses[0], port) if addresses else None
