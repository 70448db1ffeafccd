"""Observe one target: DNS, TCP, TLS and HTTP (and the helpers' view of it, asked meanwhile),
recorded as raw facts, never judged here. Coroutines on the run's event loop.

What else is observed to make a handshake worth judging (control SNI, retry, AIA completion) is
`connections`' job; the page and its redirects are `redirects`'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from msgspec import Struct

from probe.netx.classify import short_traceback
from probe.netx.clock import Clock
from probe.netx.deadline import Deadline
from probe.netx.dns import UdpAsk
from probe.netx.dnsloop import identity_query, udp_batch
from probe.observe.config import MeasureConfig, TrustAnchors, Visit, ordered
from probe.observe.connections import TARGET, connect_with_contrast, open_connection
from probe.observe.dnsflight import DnsInFlight
from probe.observe.helperclient import HelperQuestions
from probe.observe.quic import QuicInFlight  # issue 22: QUIC
from probe.observe.redirects import fetch_with_redirects
from probe.observe.throughput import completion_seconds, observe_throughput  # issue 22: throughput
from probe.vocabulary.observations import ControlIdentity, DnsObservations, DnsQuery, Observations
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.targets import Target

__all__ = [
    "Begun",
    "MeasureConfig",
    "Measured",
    "RunDns",
    "TrustAnchors",
    "begin_target",
    "measure_target",
    "observe_run_dns",
]


@dataclass
class Measured:
    """One target's observations, the probe's own error if a stage failed, and its deadline."""

    observations: Observations
    error: str | None
    deadline: Deadline


@dataclass
class Begun:
    """A target whose questions are out (its DNS, the helpers'), not yet on its critical path: the
    run starts them ahead of a measuring slot, so that their listening windows overlap other
    targets' handshakes instead of trailing the run (`begin_target`)."""

    visit: Visit
    dns: DnsInFlight | None
    questions: HelperQuestions | None

    def cancel(self) -> None:
        """A target that never got its slot (the run's deadline, an interruption): let it all go."""
        if self.dns is not None:
            self.dns.cancel()
        if self.questions is not None:
            self.questions.cancel()
        if self.visit.watch is not None:
            self.visit.watch.close()


def begin_target(target: Target, config: MeasureConfig, started: datetime) -> Begun:
    """A target's DNS questions (and the helpers') sent now; its critical path waits for `measure_target`."""
    visit = Visit.begin(config, started)
    questions = None
    if config.helpers:
        questions = HelperQuestions(list(config.helpers), target.url, config.helper_token, config.timeout,
                                    config.roots.path, visit.clock, config.run_pools("the helpers"))  # fmt: skip
    dns = None if target.is_ip_literal else DnsInFlight(target.host, target.port, visit)
    return Begun(visit, dns, questions)


async def measure_target(
    target: Target, config: MeasureConfig, started: datetime, critical_done: Callable[[], None] | None = None,
    begun: Begun | None = None,
) -> Measured:  # fmt: skip
    """The critical path of one target (DNS until the system's answer, TCP, TLS, HTTP) within its own
    deadline, each step getting what is left; then (`critical_done` called: the run may take the
    next target in) late DNS replies and the helpers' answers are awaited and joined. `begun`: its
    questions sent already (`begin_target`); its deadline runs from now all the same."""
    if begun is None:
        begun = begin_target(target, config, started)
    else:
        begun.visit.deadline = config.deadline()  # the critical path's time runs from its slot
    visit, dns, questions = begun.visit, begun.dns, begun.questions
    draft = visit.draft
    try:
        try:
            await _observe_target(target, visit, dns)
        except Exception as exc:  # a bug in one stage keeps what the earlier stages observed
            draft.stage_error = short_traceback(exc)  # module-relative frames, never a local path
        if critical_done is not None:
            critical_done()
        try:
            bound = completion_bound(visit.deadline, questions) + completion_seconds(config)  # issue 22
            async with asyncio.timeout(bound):
                error = await _complete(target, visit, dns, questions)
        except TimeoutError:  # every wait is bounded: this only guards against a bug, and says so
            error = "TimeoutError: the target's completion passed its bound (a probe bug): observations incomplete"
    finally:
        begun.cancel()  # what arrived for the target's connections is in their records now
    return Measured(draft.build(), error or draft.stage_error, visit.deadline)


def completion_bound(deadline: Deadline, questions: HelperQuestions | None) -> float:
    """Seconds within which every wait of a target's completion ends (each is bounded; the longest)."""
    return max(deadline.lookup_bound, questions.bound if questions is not None else 0.0) + 1


async def _complete(
    target: Target, visit: Visit, dns: DnsInFlight | None, questions: HelperQuestions | None
) -> str | None:
    """What is left once the page is in: late DNS replies, the helpers' answers. A bug here is the
    record's error, the observations kept."""
    draft, config = visit.draft, visit.config
    quic: QuicInFlight | None = None  # issue 22: QUIC
    try:
        quic = QuicInFlight.start(target, visit)  # issue 22: QUIC handshakes, beside the late replies
        if dns is not None:
            draft.dns = found = await dns.finish()  # late and duplicate replies join the record here
            if target.scheme == "http":
                # Off the critical path and a step of its own: the target's deadline does not cut it,
                # or a late check would fail and an honest CDN answer be judged inconsistent.
                check = Visit(config, visit.deadline.untimed(), visit.clock, visit.started, draft, visit.watch)
                await _check_answer_over_tls(target.host, found, check)
        if questions is not None:
            # Where each helper saw us come from (`seen`) is ours, never for the record: the answers
            # come without it, and only then is it learned, so that the address book refusing one
            # cannot leave the others' in the record.
            answers, seen = await questions.collected()
            draft.helpers = answers
            for address in seen:
                config.own_addresses.add(address)
        throughput = await observe_throughput(target, visit) if config.throughput else None  # issue 22
        if throughput is not None:  # issue 22: throughput flows, after the page and the helpers' answers
            draft.throughput = throughput
        await quic.finish(draft)  # issue 22: QUIC (two steps at most: within the completion bound)
    except Exception as exc:
        return short_traceback(exc)
    finally:
        if quic is not None:  # issue 22: QUIC
            quic.cancel()
    return None


async def _observe_target(target: Target, visit: Visit, dns: DnsInFlight | None) -> None:
    draft = visit.draft
    if dns is None:
        addresses, address_source = [target.host], "literal"
    else:
        addresses, address_source = list((await dns.system()).addresses), "system"
        if not addresses:
            control = await dns.control()
            if control is not None and control.addresses:
                # The local resolver denied the name: still look at what the path does to the real site.
                addresses, address_source = list(control.addresses), "control"
    draft.addresses_from = address_source if addresses else None
    server_name = None if target.is_ip_literal else target.host

    use_tls = target.scheme == "https"
    for address in ordered(addresses):
        if visit.deadline.expired:
            draft.deadline_reached = "connect"  # the target's time is up: no further address
            break
        conn, handshake = await connect_with_contrast(address, target.port, use_tls, server_name, TARGET, visit)
        if conn is None and handshake is None:
            continue  # no TCP connection: try the next address
        if conn is not None:
            # The page over the connection the network gave us, forged or not: a blockpage
            # behind an interceptor is evidence too.
            await fetch_with_redirects(conn, target.host, target.path, address, target.url, visit)
        break


async def _check_answer_over_tls(host: str, dns: DnsObservations, visit: Visit) -> None:
    """For an http:// target whose answer the control does not share: does the address serve a
    certificate for the name on port 443? A valid one shows the answer is correct (a CDN edge)."""
    control = dns.control
    answers = ordered(list(dns.system.addresses))
    if not answers or control is None or not control.addresses or set(answers) & set(control.addresses):
        return
    conn, _ = await open_connection(answers[0], 443, True, host, Purpose.DNS_CHECK, visit)
    if conn is not None:
        conn.close()


class RunDns(Struct, frozen=True):
    """The run's own DNS facts, the same in every record's `dns` (`DnsObservations`' last two)."""

    control_identity: ControlIdentity | None = None
    resolver_baseline: DnsQuery | None = None


async def observe_run_dns(config: MeasureConfig, baseline_name: str) -> RunDns:
    """Observations made once a run, copied into every record so that each stands alone:
    who answers the control over plain UDP and over its encrypted channel (a transparent proxy
    answers as itself), and the IP TTL of the system's nameserver for an ordinary name."""
    clock = Clock()
    timeout, window, roots = config.timeout, config.dns_window, config.roots.path
    identity = baseline = None
    if config.control_resolver is not None and config.control_plain is not None:
        plain, encrypted = await asyncio.gather(
            identity_query(config.control_plain, timeout, window, roots, clock, pools=config.pools),  # issue 21
            identity_query(config.control_resolver, timeout, window, roots, clock, pools=config.pools),
        )
        identity = ControlIdentity(plain, encrypted)
    udp_system = config.resolver if config.resolver is not None else config.system_udp
    if udp_system is not None and udp_system.transport == "udp":
        ask = UdpAsk("baseline", udp_system.url, udp_system.address, udp_system.port, baseline_name, ("A",))
        baseline = (await udp_batch([ask], timeout, window, clock))["baseline"][0]
    return RunDns(identity, baseline)
