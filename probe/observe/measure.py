"""Observe one target: DNS, TCP, TLS and HTTP (and the helpers' view of it, asked meanwhile),
recorded as raw facts, never judged here. Coroutines on the run's event loop.

What else is observed to make a handshake worth judging (control SNI, retry, AIA completion) is
`connections`' job; the page and its redirects are `redirects`'.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgspec import Struct

from probe.netx.classify import short_traceback
from probe.netx.clock import Clock
from probe.netx.deadline import Deadline
from probe.netx.dns import ReplyFields, ResolverSpec, UdpAsk, combine_lookup, udp_ask_for
from probe.netx.dnsloop import identity_query, lookup_system, lookup_with_resolver, udp_batch
from probe.observe.config import MeasureConfig, TrustAnchors, Visit, ordered
from probe.observe.connections import TARGET, connect_with_contrast, open_connection
from probe.observe.helperclient import HelperQuestions
from probe.observe.quic import QuicInFlight  # issue 22: QUIC
from probe.observe.redirects import fetch_with_redirects
from probe.observe.throughput import completion_seconds, observe_throughput  # issue 22: throughput
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import ControlIdentity, DnsLookup, DnsObservations, DnsQuery, Observations
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


def _injection_address(config: MeasureConfig, control: DnsLookup | None) -> str | None:
    if config.injection_address:
        return config.injection_address
    if control is None:
        return None
    v4 = [a for a in control.addresses if ipaddress.ip_address(a).version == 4]
    found = v4 or control.addresses
    return found[0] if found else None


def _task(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coroutine)


class DnsInFlight:
    """Every DNS question of a target at once, so that no fixed wait sits on the critical path.

    Three tasks start together: the control lookup (then, when the control names the address, the
    injection probe), one UDP batch (the system's nameserver asked directly, the control's address
    in plain UDP), and getaddrinfo as every program on the machine resolves. The connection goes
    ahead as soon as the system's answer is in; listening for late or duplicate replies (injection)
    goes on meanwhile, and `finish` joins it all before the record is written.
    """

    def __init__(self, hostname: str, port: int, visit: Visit) -> None:
        config, deadline = visit.config, visit.deadline
        self.hostname, self.config, self.clock, self.deadline = hostname, config, visit.clock, deadline
        self.started = self.clock.now()
        self.watch = visit.watch
        self.udp_system = config.resolver if config.resolver is not None else config.system_udp
        asks: list[UdpAsk] = []
        if self.udp_system is not None and self.udp_system.transport == "udp":
            asks.append(udp_ask_for(self.udp_system, "system_udp", hostname))
        if config.control_plain is not None:
            asks.append(udp_ask_for(config.control_plain, "control_plain", hostname))
        fixed_probe = config.injection_address if config.injection_check else None
        if fixed_probe is not None:
            asks.append(_injection_ask(fixed_probe, hostname))
        # The capture watches the injection probe's socket: its replies are the ones that matter.
        watch = visit.watch if fixed_probe is not None else None
        timeout, window = deadline.timeout, deadline.window
        self._batch = _task(udp_batch(asks, timeout, window, self.clock, watch)) if asks else None
        self._control = _task(self._control_and_probe(config.control_resolver)) if config.control_resolver else None
        self._system: asyncio.Task[DnsLookup] | None = None
        if config.resolver is None:
            self._system = _task(lookup_system(hostname, port, self.clock))
        elif config.resolver.transport != "udp":
            self._system = _task(
                lookup_with_resolver(config.resolver, hostname, timeout, window, config.roots.path, self.clock,
                                     pools=config.pools)  # issue 21: the run's pools
            )  # fmt: skip

    async def _control_and_probe(self, spec: ResolverSpec) -> tuple[DnsLookup, DnsQuery | None]:
        """The control's lookup and (when it names the address) the injection probe. The probe goes
        out as soon as the control's first A reply names the address, so that its listening window
        runs alongside the control's rather than after it."""
        config, deadline = self.config, self.deadline
        probing = config.injection_check and config.injection_address is None
        named: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

        def first_reply(qtype: str, reply: ReplyFields) -> None:
            if qtype == "A" and not named.done():
                named.set_result(reply.first_v4)

        control_task = _task(lookup_with_resolver(
            spec, self.hostname, deadline.timeout, deadline.window, config.roots.path, self.clock,
            on_first_reply=first_reply if probing else None, pools=config.pools,  # issue 21: the run's pools
        ))  # fmt: skip
        try:
            if not probing:
                return await control_task, None
            await asyncio.wait([control_task, named], return_when=asyncio.FIRST_COMPLETED)
            silent = named.result() if named.done() else None
            if silent is None:  # no A reply with an address (yet): the whole lookup decides
                silent = _injection_address(config, await asyncio.shield(control_task))
            if silent is None:
                return await control_task, None
            asks = [_injection_ask(silent, self.hostname)]
            probed = await udp_batch(asks, deadline.timeout, deadline.window, self.clock, self.watch)
            return await control_task, probed["injection"][0]  # it names where it went
        finally:
            if not control_task.done():
                control_task.cancel()
            if not named.done():
                named.cancel()

    def when_answered(self, callback: Callable[[], None]) -> None:
        """`callback` once the system's answer is in (or its lookup ended otherwise): the run's slow
        start is clocked by the resolver's answers."""
        task = self._system if self._system is not None else self._batch
        if task is None:
            callback()
        else:
            task.add_done_callback(lambda _: callback())

    def _lookup_of(
        self, answered: dict[str, list[DnsQuery]], label: str, spec: ResolverSpec | None
    ) -> DnsLookup | None:
        if label not in answered or spec is None:
            return None
        return combine_lookup(spec.url, "udp", self.hostname, answered[label])

    async def system(self) -> DnsLookup:
        """The system resolver's answer: what the connection uses. getaddrinfo has no timeout of its
        own: past the step's bound the lookup is recorded as timed out."""
        if self._system is not None:
            # Bounded from the lookup's start, not from when its target got a slot: the same slow
            # resolver is a timeout for every target, however long each waited ahead of its slot.
            left = self.deadline.timeout + 1 - (self.clock.now() - self.started)
            try:
                async with asyncio.timeout(max(0.0, left)):  # not wait_for: 3.11's can swallow a cancel
                    return await asyncio.shield(self._system)
            except TimeoutError:
                timed_out = _timed_out(self.hostname, self.started, self.clock)
                return combine_lookup("system", "system", self.hostname, [timed_out])
        assert self._batch is not None  # --resolver over UDP: asked in the batch
        found = self._lookup_of(await asyncio.shield(self._batch), "system_udp", self.udp_system)
        assert found is not None
        return found

    async def _control_result(self) -> tuple[DnsLookup | None, DnsQuery | None]:
        """The control's lookup and the injection probe, within one bound for the whole exchange:
        DoT and DoH time out per operation, and a throttled path could stall them step by step."""
        if self._control is None:
            return None, None
        try:
            async with asyncio.timeout(self.deadline.lookup_bound):
                return await asyncio.shield(self._control)
        except TimeoutError:
            assert self.config.control_resolver is not None
            spec = self.config.control_resolver
            timed_out = _timed_out(self.hostname, self.started, self.clock, spec.url, spec.transport, "A")
            return combine_lookup(spec.url, spec.transport, self.hostname, [timed_out]), None

    async def control(self) -> DnsLookup | None:
        return (await self._control_result())[0]

    async def finish(self) -> DnsObservations:
        """Every answer, late replies included (the run's own facts, `RunDns`, are the run's to add)."""
        answered = await asyncio.shield(self._batch) if self._batch is not None else {}
        control, injection = await self._control_result()
        system_udp = self._lookup_of(answered, "system_udp", self.udp_system)
        system = await self.system()
        if self.config.resolver is not None and self.config.resolver.transport == "udp":
            system_udp = None  # --resolver over UDP: its lookup is the system's
        if "injection" in answered:
            (injection,) = answered["injection"]  # it names where it went (the fixed address, port 53)
        control_plain = self._lookup_of(answered, "control_plain", self.config.control_plain)
        return DnsObservations(system, system_udp, control, control_plain, injection)

    def cancel(self) -> None:
        """What is still running past its bound (a getaddrinfo that never returns) is let go."""
        for task in (self._batch, self._control, self._system):
            if task is not None and not task.done():
                task.cancel()


def _timed_out(
    hostname: str, started: float, clock: Clock, resolver: str = "system", transport: str = "system",
    query_type: str = "ANY",
) -> DnsQuery:  # fmt: skip
    """A question that got no answer within its bound: no reply, a timeout."""
    return DnsQuery(resolver, transport, hostname, query_type, (), None, Failure.GENERIC_TIMEOUT, None, started,
                    clock.now(), ())  # fmt: skip


def _injection_ask(address: str, hostname: str) -> UdpAsk:
    return UdpAsk("injection", f"udp://{address}:53", address, 53, hostname, ("A",), expects_reply=False,
                  names_where=True)  # fmt: skip


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
