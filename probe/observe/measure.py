"""Observe one target: DNS, TCP, TLS and HTTP (and the helpers' view of it, asked meanwhile),
recorded as raw facts, never judged here.

What else is observed to make a handshake worth judging (control SNI, retry, AIA completion) is
`connections`' job; the page and its redirects are `redirects`'.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from probe.netx.classify import short_traceback
from probe.netx.clock import Clock
from probe.netx.connect import close_quietly
from probe.netx.dns import (
    ResolverSpec,
    UdpAsk,
    combine_lookup,
    identity_query,
    lookup_system,
    lookup_with_resolver,
    udp_ask_for,
    udp_batch,
    udp_batch_async,
)
from probe.netx.wire import TargetWatch
from probe.observe.config import MeasureConfig, TrustAnchors, ordered
from probe.observe.connections import TARGET, connect_with_contrast, open_connection
from probe.observe.helperclient import HelperQuestions
from probe.observe.redirects import fetch_with_redirects
from probe.vocabulary.failures import Failure
from probe.vocabulary.targets import Target

__all__ = ["MeasureConfig", "Pending", "TrustAnchors", "observe_run_dns", "start_measurement"]


def _injection_address(config: MeasureConfig, control: dict[str, Any] | None) -> str | None:
    if config.injection_address:
        return config.injection_address
    if control is None:
        return None
    v4 = [a for a in control["addresses"] if ipaddress.ip_address(a).version == 4]
    return (v4 or control["addresses"] or [None])[0]


class DnsInFlight:
    """Every DNS question of a target at once, so that no fixed wait sits on the critical path.

    Three tasks start together: the control lookup (then, when the control names the address, the
    injection probe), one UDP batch (the system's nameserver asked directly, the control's address
    in plain UDP), and getaddrinfo as every program on the machine resolves. The connection goes
    ahead as soon as the system's answer is in; listening for late or duplicate replies (injection)
    goes on meanwhile, and `finish` joins it all before the record is written.
    """

    def __init__(self, hostname: str, port: int, config: MeasureConfig, clock: Clock) -> None:
        self.hostname, self.config, self.clock = hostname, config, clock
        self.started = clock.now()
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
        watch = config.watch if fixed_probe is not None else None
        self._batch: Future[dict[str, list[dict[str, Any]]]] | None = (
            udp_batch_async(asks, config.timeout, config.dns_window, clock, watch) if asks else None
        )
        self._control = self._control_and_probe(config.control_resolver) if config.control_resolver else None
        self._system: Future[dict[str, Any]] | None = None
        if config.resolver is None:
            self._system = _LOOKUPS.submit(lookup_system, hostname, port, clock)
        elif config.resolver.transport != "udp":
            self._system = _background(
                lookup_with_resolver, config.resolver, hostname, config.timeout, config.dns_window,
                config.roots.path, clock,
            )  # fmt: skip

    def _control_lookup(self, spec: ResolverSpec) -> Future[dict[str, Any]]:
        """The control's lookup: over UDP listened to by the run's DNS listener (no thread held),
        over TCP, DoT or DoH in a worker."""
        config = self.config
        if spec.transport != "udp":
            return _background(
                lookup_with_resolver, spec, self.hostname, config.timeout, config.dns_window, config.roots.path,
                self.clock,
            )  # fmt: skip
        lookup: Future[dict[str, Any]] = Future()
        asked = udp_batch_async([udp_ask_for(spec, "lookup", self.hostname)], config.timeout, config.dns_window,
                                self.clock)  # fmt: skip
        hostname = self.hostname
        asked.add_done_callback(
            lambda done: _settle(lookup, lambda: combine_lookup(spec.url, "udp", hostname, done.result()["lookup"]))
        )
        return lookup

    def _control_and_probe(self, spec: ResolverSpec) -> Future[tuple[dict[str, Any], dict[str, Any] | None]]:
        """The control's lookup, then (when it names the address) the injection probe, as callbacks."""
        config, hostname, clock = self.config, self.hostname, self.clock
        result: Future[tuple[dict[str, Any], dict[str, Any] | None]] = Future()

        def probed(control: dict[str, Any], address: str, done: Future[dict[str, list[dict[str, Any]]]]) -> None:
            _settle(result, lambda: (control, {"address": address, "port": 53, **done.result()["injection"][0]}))

        def looked_up(done: Future[dict[str, Any]]) -> None:
            try:
                control = done.result()
                silent = None
                if config.injection_check and config.injection_address is None:
                    silent = _injection_address(config, control)
                if silent is None:
                    result.set_result((control, None))
                    return
                probe = udp_batch_async(
                    [_injection_ask(silent, hostname)], config.timeout, config.dns_window, clock, config.watch
                )
                probe.add_done_callback(functools.partial(probed, control, silent))
            except Exception as exc:  # noqa: BLE001 - handed to whoever waits
                result.set_exception(exc)

        self._control_lookup(spec).add_done_callback(looked_up)
        return result

    def _lookup_of(self, answered: dict[str, list[dict[str, Any]]], label: str, spec: ResolverSpec | None) -> Any:
        if label not in answered or spec is None:
            return None
        return combine_lookup(spec.url, "udp", self.hostname, answered[label])

    def system(self) -> dict[str, Any]:
        """The system resolver's answer: what the connection uses. getaddrinfo has no timeout of its
        own: it runs in a worker, and past the step's bound the lookup is recorded as timed out."""
        if self._system is not None:
            try:
                return self._system.result(timeout=self.config.timeout + 1)
            except FutureTimeout:
                timed_out = _timed_out(self.hostname, self.started, self.clock)
                return combine_lookup("system", "system", self.hostname, [timed_out])
        assert self._batch is not None  # --resolver over UDP: asked in the batch
        found = self._lookup_of(self._batch.result(), "system_udp", self.udp_system)
        assert found is not None
        return dict(found)

    def _control_result(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The control's lookup and the injection probe, within one bound for the whole exchange:
        DoT and DoH time out per operation, and a throttled path could stall them step by step."""
        if self._control is None:
            return None, None
        config = self.config
        try:
            return self._control.result(timeout=2 * config.timeout + 2 * config.dns_window + 1)
        except FutureTimeout:
            assert config.control_resolver is not None
            spec = config.control_resolver
            timed_out = {**_timed_out(self.hostname, self.started, self.clock), "resolver": spec.url,
                         "transport": spec.transport, "query_type": "A"}  # fmt: skip
            return combine_lookup(spec.url, spec.transport, self.hostname, [timed_out]), None

    def control(self) -> dict[str, Any] | None:
        return self._control_result()[0]

    def waits(self) -> list[Future[Any]]:
        """What `finish` waits for: the late replies' listening, the control and the system lookup."""
        return [f for f in (self._batch, self._control, self._system) if f is not None]

    @property
    def bound(self) -> float:
        """Seconds within which every one of `waits` ends (each is bounded; this is the longest)."""
        return 2 * self.config.timeout + 2 * self.config.dns_window + 1

    def finish(self) -> dict[str, Any]:
        """Every answer, late replies included, in the record's `dns` shape."""
        answered = self._batch.result() if self._batch is not None else {}
        control, injection = self._control_result()
        system_udp = self._lookup_of(answered, "system_udp", self.udp_system)
        system = self.system()
        if self.config.resolver is not None and self.config.resolver.transport == "udp":
            system_udp = None  # --resolver over UDP: its lookup is the system's
        if "injection" in answered:
            (query,) = answered["injection"]
            injection = {"address": self.config.injection_address, "port": 53, **query}
        return {
            "system": system,
            "system_udp": system_udp,
            "control": control,
            "control_plain": self._lookup_of(answered, "control_plain", self.config.control_plain),
            "injection": injection,
        }


# Threads are made on demand and reused. UDP listening is the DNS listener's (udpwire); these
# serve the lookups that block: TCP, DoT and DoH (the control, `--resolver`), and getaddrinfo,
# which has a pool of its own so that the critical path's lookup never queues behind the others.
_WORKERS = ThreadPoolExecutor(max_workers=512, thread_name_prefix="dns")
_LOOKUPS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="getaddrinfo")


def _background(function: Callable[..., Any], *args: Any) -> Future[Any]:
    return _WORKERS.submit(function, *args)


def _settle(future: Future[Any], compute: Callable[[], Any]) -> None:
    """`future`'s result is what `compute` returns, or what it raises."""
    try:
        future.set_result(compute())
    except Exception as exc:  # noqa: BLE001 - handed to whoever waits
        future.set_exception(exc)


def _timed_out(hostname: str, started: float, clock: Clock) -> dict[str, Any]:
    return {"resolver": "system", "transport": "system", "hostname": hostname, "query_type": "ANY", "answers": [],
            "rcode": None, "failure": Failure.GENERIC_TIMEOUT, "raw_reply": None, "replies": [], "t0": started,
            "t": clock.now()}  # fmt: skip


def _injection_ask(address: str, hostname: str) -> UdpAsk:
    return UdpAsk("injection", f"udp://{address}:53", address, 53, hostname, ("A",), expects_reply=False)


@dataclass
class Pending:
    """A target measured up to the page: what is left (late DNS replies, the helpers' answers) is
    only waiting, and `complete` finishes it off the measuring path, freeing the slot for the next."""

    target: Target
    config: MeasureConfig
    clock: Clock
    observations: dict[str, Any]
    dns: DnsInFlight | None
    questions: HelperQuestions | None

    def waits(self) -> list[Future[Any]]:
        """What `complete` would wait for: when all are done, completing takes no waiting."""
        dns = self.dns.waits() if self.dns is not None else []
        return dns + (self.questions.waits() if self.questions is not None else [])

    @property
    def bound(self) -> float:
        helpers = self.questions.bound if self.questions is not None else 0.0
        return max(self.dns.bound if self.dns is not None else 0.0, helpers)

    def complete(self) -> dict[str, Any]:
        observations, config = self.observations, self.config
        if self.dns is not None:
            observations["dns"] = self.dns.finish()  # late and duplicate replies join the record here
            if self.target.scheme == "http":
                # Off the critical path and a step of its own: the target's deadline does not cut it,
                # or a late check would fail and an honest CDN answer be judged inconsistent.
                check = replace(config, ends=None)
                _check_answer_over_tls(self.target.host, observations["dns"], check, self.clock, observations)
        if config.watch is not None:
            config.watch.close()  # what arrived for the target's connections is in their records now
        observations["helpers"] = self.questions.collect() if self.questions is not None else []
        for asked in observations["helpers"]:
            if isinstance(asked["response"], dict):  # where the helper saw us come from: ours, not for the record
                config.own_addresses.add(asked["response"].pop("client_address", None))
        return observations


def start_measurement(target: Target, config: MeasureConfig, started: datetime) -> Pending:
    """The critical path of one target: DNS until the system's answer, TCP, TLS, HTTP, within the
    target's own deadline (`--target-deadline`) when one is set: each step gets what is left."""
    config = config.for_target()
    clock = Clock()
    if config.capture is not None:
        config = replace(config, watch=TargetWatch(config.capture, clock.now))
    observations: dict[str, Any] = {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": []}
    questions = None
    if config.helpers:
        questions = HelperQuestions(
            list(config.helpers), target.url, config.helper_token, config.timeout, config.roots.path, clock
        )
    dns = None if target.is_ip_literal else DnsInFlight(target.host, target.port, config, clock)
    try:
        _observe_target(target, config, started, clock, observations, dns)
    except Exception as exc:  # a bug in one stage keeps what the earlier stages observed
        observations["stage_error"] = short_traceback(exc)  # module-relative frames, never a local path
    return Pending(target, config, clock, observations, dns, questions)


def _observe_target(
    target: Target,
    config: MeasureConfig,
    started: datetime,
    clock: Clock,
    observations: dict[str, Any],
    dns: DnsInFlight | None,
) -> None:
    if dns is None:
        addresses, address_source = [target.host], "literal"
    else:
        addresses, address_source = dns.system()["addresses"], "system"
        if not addresses:
            control = dns.control()
            if control is not None and control["addresses"]:
                # The local resolver denied the name: still look at what the path does to the real site.
                addresses, address_source = control["addresses"], "control"
    observations["addresses_from"] = address_source if addresses else None
    server_name = None if target.is_ip_literal else target.host

    use_tls = target.scheme == "https"
    for address in ordered(addresses):
        if config.expired:
            observations["deadline_reached"] = "connect"  # the target's time is up: no further address
            break
        conn, handshake = connect_with_contrast(
            address, target.port, use_tls, server_name, TARGET, config, started, clock, observations
        )
        if conn is None and handshake is None:
            continue  # no TCP connection: try the next address
        if conn is not None:
            # The page over the connection the network gave us, forged or not: a blockpage
            # behind an interceptor is evidence too.
            fetch_with_redirects(
                conn, target.host, target.path, address, target.url, config, started, clock, observations
            )
        break


def _check_answer_over_tls(
    host: str, dns: dict[str, Any], config: MeasureConfig, clock: Clock, observations: dict[str, Any]
) -> None:
    """For an http:// target whose answer the control does not share: does the address serve a
    certificate for the name on port 443? A valid one shows the answer is correct (a CDN edge)."""
    control = dns.get("control")
    answers = ordered(dns["system"]["addresses"])
    if not answers or control is None or not control["addresses"] or set(answers) & set(control["addresses"]):
        return
    conn, _ = open_connection(answers[0], 443, True, host, "dns_check", config, clock, observations)
    close_quietly(conn)


def observe_run_dns(config: MeasureConfig, baseline_name: str) -> dict[str, Any]:
    """Observations made once a run, copied into every record so that each stands alone:
    who answers the control over plain UDP and over its encrypted channel (a transparent proxy
    answers as itself), and the IP TTL of the system's nameserver for an ordinary name."""
    clock = Clock()
    result: dict[str, Any] = {"control_identity": None, "resolver_baseline": None}
    if config.control_resolver is not None and config.control_plain is not None:
        result["control_identity"] = {
            "plain": identity_query(config.control_plain, config.timeout, config.dns_window, config.roots.path, clock),
            "encrypted": identity_query(
                config.control_resolver, config.timeout, config.dns_window, config.roots.path, clock
            ),
        }
    udp_system = config.resolver if config.resolver is not None else config.system_udp
    if udp_system is not None and udp_system.transport == "udp":
        ask = UdpAsk("baseline", udp_system.url, udp_system.address, udp_system.port, baseline_name, ("A",))
        result["resolver_baseline"] = udp_batch([ask], config.timeout, config.dns_window, clock)["baseline"][0]
    return result
