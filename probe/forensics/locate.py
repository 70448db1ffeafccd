"""Where on the path the censor sits: the blocked exchange again, at rising IP TTLs.

For a TLS finding the connection is made as usual, then `IP_TTL` is lowered on the socket so that
only the ClientHello (and what follows it) carries the low TTL; the same is done with the control
SNI beside it. A ClientHello that dies on the way makes the router at that hop send ICMP "time
exceeded" (captured); one that reaches the censor is reset, forged or swallowed; one that passes
reaches the server. For a TCP finding the SYN itself carries the low TTL. Each step is recorded as
seen (the routers, what answered, what the capture saw, when each try began and ended: `t0`, `t`);
`probe.analyze.forensics` concludes.

An exchange that meets silence (no router, no answer) or whose connection failed is tried once more
at the same TTL (`retry`), as soon as the first try ended: a router that rate-limits its ICMP, or one
lost packet, is not a censor. Not with the first try: a router that rate-limits its ICMP (a token
bucket) and had none left for the first try's packet has none for one sent beside it either.

Several TTLs at once, as traceroute does (Linux traceroute sends up to 16 probes at once): WINDOW
TTLs are in flight together, both sides of each and their retries, each exchange its own socket
(its own source port, which is how the capture tells their packets and ICMP messages apart), all
driven without blocking in the one thread the run gives the sweep. A silent path is then over in
two waits (the first tries, then the retries), not two waits per TTL. The stopping rules are read
in TTL order over complete TTLs, exactly as one TTL after another: the sweep stops as soon as the
target's exchange is answered by anything but a router (`answered`), when the control got through
where the target did not (`control_answered`; one TTL later if the target met silence there, so that
the next TTL can agree), when nothing at all answers for QUIET_HOPS TTLs in a row (`silent_path`),
at MAX_HOPS (`max_hops`), or when there is no time left for a TTL's two tries (`deadline`).

The steps kept are those up to the TTL at which the answer became clear, and only those. The TTLs
beyond it that were already in flight are closed and forgotten, not recorded (neither marked): the
record is then the one a sweep of one TTL at a time would have made from the same answers, and
`probe.analyze.forensics` concludes from it exactly as before. Kept, they would change conclusions
(a hop is named only if every later TTL leaves it standing, and the later TTLs a sequential sweep
never tried would become evidence), every reader (the rules, `probe show`, the report, old tools
reading records) would have to learn to skip them, and the typed record has no place for a mark.

Bounded: at most MAX_HOPS TTLs, WINDOW TTLs in flight, at most two exchanges per side and TTL, a
short wait per exchange, and a deadline: the target's own, or SWEEP_TIMEOUTS x `--timeout` from the
sweep's start if that comes first (a target's default whole time: a sweep never makes a run's tail
longer than a target could have taken; at `--timeout` 2 or more, 32 hops whose routers all answer
fit in it: eight rounds of a second).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import select
import socket
import ssl
import time

from probe.forensics.capture import PacketCapture
from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import SweepRetry, SweepStep, SweepTry, TtlSweep, WirePacket

MAX_HOPS = 32
STEP_WAIT = 1.0  # seconds for one exchange at one TTL (an ICMP reply takes milliseconds)
QUIET_HOPS = 3  # TTLs in a row with no answer and no router: the path beyond is silent
ICMP_GRACE = 0.05  # seconds for a router's ICMP to be read after the exchange ended
WINDOW = 4  # TTLs in flight at once (QUIET_HOPS and one more: a silent path takes one round)
SWEEP_TIMEOUTS = 6  # a sweep's own bound: this many --timeout from its start (a target's default deadline)

Side = tuple[int, str]  # a TTL, and `target` or `control`


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Exchange:
    """One exchange at one TTL, a ClientHello (server_name given) or a SYN (None) limited to `ttl`,
    driven without blocking: `advance` with what `poll` said of its socket (`events`) until
    `finished`, at the latest at `until`. Its result is `step`, typed once it is over."""

    def __init__(
        self, capture: PacketCapture, address: str, port: int, ttl: int, server_name: str | None, wait: float,
        clock: Clock,
    ) -> None:  # fmt: skip
        self.ttl, self.server_name, self.wait, self.clock, self.capture = ttl, server_name, wait, clock, capture
        self.t0 = clock.now()
        self.outcome: str | None = None
        self.failure: str | None = None
        self.leaf_sha256: str | None = None
        self.step: SweepTry | None = None  # once finished (None: cancelled before its end)
        self.finished = False
        self.events = select.POLLOUT  # what it waits for on its socket; 0 in its ICMP grace
        self.tls: ssl.SSLSocket | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind(("0.0.0.0", 0))
        except BaseException:
            self.sock.close()
            raise
        self.routers = capture.watch_icmp(self.sock, address, port, clock.now)
        self.packets = capture.watch_tcp(self.sock, address, port, clock.now)
        try:
            if server_name is None:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            self.until = time.monotonic() + wait
            code = self.sock.connect_ex((address, port))
            if code == 0:
                self._connected()
            elif code != errno.EINPROGRESS:
                self._failed(OSError(code, os.strerror(code)))
        except BaseException:
            self.cancel()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def advance(self, revents: int) -> None:
        """Go on with what the socket has (`revents`, 0 for nothing); end the exchange at its time."""
        if self.events and revents:
            if self.tls is not None:
                self._handshake()
            else:
                code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self._failed(OSError(code, os.strerror(code)))
                else:
                    self._connected()
        if time.monotonic() < self.until:
            return
        if self.events:  # still waiting at its time: as a blocking socket's timeout
            self._failed(TimeoutError("timed out"))
        else:  # its ICMP grace is over
            self._close()

    def _connected(self) -> None:
        if self.server_name is None:
            self._ended("connected")
            return
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, self.ttl)  # from here on: the ClientHello
        self.tls = _context().wrap_socket(self.sock, server_hostname=self.server_name, do_handshake_on_connect=False)
        self.sock = self.tls
        self.until = time.monotonic() + self.wait
        self._handshake()

    def _handshake(self) -> None:
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.events = select.POLLIN
            return
        except ssl.SSLWantWriteError:
            self.events = select.POLLOUT
            return
        except Exception as exc:
            self._failed(exc)
            return
        leaf = self.tls.getpeercert(binary_form=True)
        self.leaf_sha256 = hashlib.sha256(leaf).hexdigest() if leaf else None
        self._ended("handshake")

    def _failed(self, exc: BaseException) -> None:
        self.failure = failure = errors.classify(exc)
        connecting = self.tls is None and self.server_name is not None
        self._ended("connect_failed" if connecting else _outcome(failure))

    def _ended(self, outcome: str) -> None:
        """The exchange is over: its ICMP grace begins (the socket stays open, unread)."""
        self.outcome = outcome
        self.events = 0
        self.until = time.monotonic() + ICMP_GRACE

    def _close(self) -> None:
        self.cancel()
        routers = tuple(sorted({r["router"] for r in self.routers if r["icmp_type"] == 11}))
        unreachable_from = tuple(sorted({r["router"] for r in self.routers if r["icmp_type"] == 3}))
        packets = tuple(WirePacket(p["flags"], p["ip_ttl"], p["ip_id"], p["payload"], p["t"]) for p in self.packets)
        outcome = self.outcome
        if outcome == "timeout" and any(p.payload for p in packets):
            outcome = "answered"  # the server spoke (a TLS 1.2 flight) though the handshake could not end
        elif outcome in ("timeout", "failed") and routers:
            outcome = "expired"  # died at a router on the way (a SYN's connect says "unreachable")
        self.step = SweepTry(outcome, routers, self.failure, self.leaf_sha256, unreachable_from, packets, self.t0,
                             self.clock.now())  # fmt: skip

    def cancel(self) -> None:
        """Stop at once: the capture forgets it, the socket is closed (a try beyond the sweep's end)."""
        self.finished = True
        self.capture.forget(self.routers)
        self.capture.forget(self.packets)
        with contextlib.suppress(OSError):
            self.sock.close()


def _outcome(failure: str | None) -> str:
    if failure in (Failure.CONNECTION_RESET, Failure.CONNECTION_REFUSED):
        return "reset"
    if failure == Failure.GENERIC_TIMEOUT:
        return "timeout"
    return "failed"


def _answered(side: SweepTry) -> bool:
    """Something other than a router answered: the server, or the censor in its name."""
    return side.outcome not in ("timeout", "expired", "connect_failed", None) or bool(side.unreachable_from)


def _unclear(side: SweepTry) -> bool:
    """Worth a second try: nothing came back (no router, no answer), or no connection to try on."""
    return side.outcome == "connect_failed" or (side.outcome == "timeout" and not side.routers)


class _Sweep:
    """The TTLs in flight (at most WINDOW beyond the last one read), their exchanges, and the
    stopping rules, read in TTL order over complete TTLs."""

    def __init__(
        self, capture: PacketCapture, address: str, port: int, names: dict[str, str | None], wait: float,
        clock: Clock, ends: float,
    ) -> None:  # fmt: skip
        self.capture, self.address, self.port, self.names = capture, address, port, names
        self.wait, self.clock, self.ends = wait, clock, ends
        self.running: list[tuple[_Exchange, Side, bool]] = []  # each exchange, its TTL and side, a retry?
        self.first: dict[Side, SweepTry] = {}
        self.again: dict[Side, SweepTry] = {}
        self.settled: set[Side] = set()  # every try this side of this TTL will have is over
        self.launched = 0  # TTLs started: 1 .. launched
        self.read = 0  # TTLs read by the stopping rules: 1 .. read
        self.out_of_time = False  # TTL launched + 1 had no time left for its two tries
        self.quiet = 0
        self.control_through = False  # the control got through at the TTL before, where the target met silence

    def run(self, steps: list[SweepStep]) -> str:
        """Exchanges until the path's answer is clear; the steps up to it appended; why it stopped."""
        while True:
            self._launch()
            before = self.read
            stopped = self._read(steps)
            if stopped is not None:
                return stopped
            if self.read == before:
                self._wait()

    def cancel(self) -> None:
        for exchange, _, _ in self.running:
            exchange.cancel()
        self.running.clear()

    def _launch(self) -> None:
        while not self.out_of_time and self.launched < min(MAX_HOPS, self.read + WINDOW):
            if time.monotonic() + 2 * self.wait > self.ends:
                self.out_of_time = True
                return
            self.launched += 1
            for side, name in self.names.items():
                self._start((self.launched, side), name, retry=False)

    def _start(self, key: Side, name: str | None, retry: bool) -> None:
        exchange = _Exchange(self.capture, self.address, self.port, key[0], name, self.wait, self.clock)
        if exchange.finished:
            self._over(exchange, key, retry)
        else:
            self.running.append((exchange, key, retry))

    def _over(self, exchange: _Exchange, key: Side, retry: bool) -> None:
        """One try ended: kept; a second try at once where the first met silence or no connection."""
        step = exchange.step
        assert step is not None, "an exchange over without its step"
        if retry:
            self.again[key] = step
        else:
            self.first[key] = step
            if _unclear(step) and time.monotonic() + self.wait <= self.ends:
                self._start(key, self.names[key[1]], retry=True)
                return
        self.settled.add(key)

    def _wait(self) -> None:
        """Until a socket has something or an exchange's time comes; each exchange goes on."""
        poller, watched = select.poll(), {}
        for exchange, _, _ in self.running:
            if exchange.events:
                watched[exchange.fileno()] = exchange
                poller.register(exchange.fileno(), exchange.events)
        soonest = min(exchange.until for exchange, _, _ in self.running)
        milliseconds = math.ceil(max(0.0, soonest - time.monotonic()) * 1000)
        ready = {watched[fd]: revents for fd, revents in poller.poll(milliseconds)}
        for entry in list(self.running):
            exchange, key, retry = entry
            exchange.advance(ready.get(exchange, 0))
            if exchange.finished:
                self.running.remove(entry)
                self._over(exchange, key, retry)

    def _read(self, steps: list[SweepStep]) -> str | None:
        """The complete TTLs after the last one read, in order, through the stopping rules."""
        while True:
            ttl = self.read + 1
            if ttl > MAX_HOPS:
                return "max_hops"
            if ttl > self.launched:
                return "deadline" if self.out_of_time else None
            if not all((ttl, side) in self.settled for side in self.names):
                return None
            retry = SweepRetry(self.again.get((ttl, "target")), self.again.get((ttl, "control")))
            step = SweepStep(ttl, self.first.get((ttl, "target")), self.first.get((ttl, "control")),
                             retry if retry.target is not None or retry.control is not None else None)  # fmt: skip
            steps.append(step)
            self.read = ttl
            stopped = self._stops(step)
            if stopped is not None:
                return stopped

    def _stops(self, step: SweepStep) -> str | None:
        """The stopping rules, for one TTL after the ones before it."""
        targets, controls = step.tries("target"), step.tries("control")
        if any(_answered(side) for side in targets):
            return "answered"
        if any(_answered(side) for side in controls):  # the control got through where the target did not
            silent = all(side.outcome == "timeout" and not side.routers for side in targets)
            if self.control_through or not silent:
                return "control_answered"
            self.control_through = True  # one TTL more: does the target's silence hold beyond?
        self.quiet = self.quiet + 1 if not any(side.routers for side in (*targets, *controls)) else 0
        return "silent_path" if self.quiet >= QUIET_HOPS else None


def locate(
    capture: PacketCapture,
    address: str,
    port: int,
    server_name: str | None,
    control_sni: str | None,
    timeout: float,
    ends: float | None,
) -> TtlSweep:
    """Every TTL's exchanges, target and control side by side, until the path's answer is clear,
    typed as they are made (the run's forensic steps add the finding the sweep was asked for)."""
    mode = "client_hello" if server_name is not None else "syn"
    clock = Clock()
    bound = time.monotonic() + SWEEP_TIMEOUTS * timeout
    names = {"target": server_name, **({"control": control_sni} if mode == "client_hello" and control_sni else {})}
    ends = bound if ends is None else min(ends, bound)
    sweep = _Sweep(capture, address, port, names, min(timeout, STEP_WAIT), clock, ends)
    steps: list[SweepStep] = []
    try:
        stopped = sweep.run(steps)
    finally:
        sweep.cancel()  # the TTLs beyond the answer, still in flight: closed, not recorded
    return TtlSweep("done", address, port, mode, server_name, control_sni, tuple(steps), stopped, clock.now())
