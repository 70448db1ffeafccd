"""A target's DNS questions in flight (`DnsInFlight`): every question at once, the system's answer
awaited on the critical path, the rest listened for meanwhile and joined before the record is made.
Coroutines on the run's event loop; nothing here judges."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Coroutine
from typing import Any

from probe.netx.clock import Clock
from probe.netx.dns import ReplyFields, ResolverSpec, UdpAsk, combine_lookup, udp_ask_for
from probe.netx.dnsloop import lookup_system, lookup_with_resolver, udp_batch
from probe.observe.config import MeasureConfig, Visit
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import DnsLookup, DnsObservations, DnsQuery


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


_ANSWERED = (None, Failure.DNS_NXDOMAIN, Failure.DNS_NO_ANSWER)  # the resolver answered the question


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
        """`callback` once the system's answer is in within its bound (addresses, or a name that does
        not exist): the run's slow start grows on answers only, never on a lookup that failed,
        timed out or was let go."""
        task = self._system if self._system is not None else self._batch
        if task is None:
            return
        bound = self.deadline.timeout + 1

        def done(finished: asyncio.Task[Any]) -> None:
            if finished.cancelled() or finished.exception() is not None or self.clock.now() - self.started > bound:
                return
            if finished is self._system:
                answered = finished.result().failure in _ANSWERED
            else:  # --resolver over UDP: its replies are in the batch
                answered = any(query.replies for query in finished.result().get("system_udp", ()))
            if answered:
                callback()

        task.add_done_callback(done)

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
