"""The run's intake: questions sent ahead of a measuring slot, targets in flight bounded by the
files the run may open, the loop it runs on, and what a run's start does not import."""

from __future__ import annotations

import asyncio
import io
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from probe.netx.deadline import Deadline
from probe.observe.measure import Measured
from probe.run import execute as run_module
from probe.run import recorder as recorder_module
from probe.run import runtime as runtime_module
from probe.run.lag import PERIOD, LagMonitor
from probe.vocabulary.observations import Observations
from probe.vocabulary.targets import parse_target
from tests.conftest import PkiFixture, read_results
from tests.test_run import _context

ROOT = Path(__file__).resolve().parents[1]


class _Begun:
    """What `begin_target` hands over, as the fakes below see it."""

    def __init__(self, host: str, log: list[tuple[str, str, float]]) -> None:
        self.host, self.log = host, log
        self.dns = _Answered()

    def cancel(self) -> None:
        self.log.append(("cancelled", self.host, time.monotonic()))


class _Answered:
    """A target's DNS in flight whose system answer comes at once (the next loop iteration)."""

    def when_answered(self, callback: Any) -> None:
        asyncio.get_running_loop().call_soon(callback)


def _fakes(
    monkeypatch: pytest.MonkeyPatch, critical: dict[str, float], completion: float
) -> list[tuple[str, str, float]]:
    """begin_target and measure_target replaced: each step logged with its time; a target's critical
    path takes `critical[host]` seconds (0.05 unless named), its completion `completion`."""
    log: list[tuple[str, str, float]] = []

    def begin(target: Any, config: Any, started: datetime) -> _Begun:
        log.append(("begun", target.host, time.monotonic()))
        return _Begun(target.host, log)

    async def measure(target: Any, config: Any, started: datetime, critical_done: Any, begun: Any) -> Measured:
        assert isinstance(begun, _Begun) and begun.host == target.host  # its own questions, handed on
        log.append(("measuring", target.host, time.monotonic()))
        await asyncio.sleep(critical.get(target.host, 0.05))
        log.append(("critical_done", target.host, time.monotonic()))
        critical_done()
        await asyncio.sleep(completion)  # its last replies, the slot free meanwhile
        log.append(("complete", target.host, time.monotonic()))
        return Measured(Observations(None, (), (), (), addresses_from="literal"), None, Deadline(1))

    monkeypatch.setattr(run_module, "begin_target", begin)
    monkeypatch.setattr(run_module, "measure_target", measure)
    monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)  # forks before its threads
    return log


def _when(log: list[tuple[str, str, float]], step: str, host: str) -> float:
    return next(t for s, h, t in log if s == step and h == host)


def test_a_targets_questions_go_out_before_its_slot_is_free(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """One measuring slot: the third target's questions go out while the second is still on its
    critical path, so that its listening window overlaps the second's handshake; slots are still
    taken in the list's order, and each record is written once."""
    hosts = [f"192.0.2.{n}" for n in range(1, 6)]
    log = _fakes(monkeypatch, {host: 0.2 for host in hosts[1:]}, completion=0.3)
    config, context, network, reference = _context(test_pki)
    targets = [parse_target(host, None, n) for n, host in enumerate(hosts, 1)]
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 1, io.StringIO())
    assert summary.measured == len(hosts)
    assert sorted(r["target"]["host"] for r in read_results(tmp_path)) == sorted(hosts)
    # Before any target has passed its critical path, none is begun ahead (the slow start).
    assert _when(log, "begun", hosts[1]) >= _when(log, "critical_done", hosts[0])
    # Then questions run ahead: the third's went out before the second left its slot.
    assert _when(log, "begun", hosts[2]) < _when(log, "critical_done", hosts[1])
    assert _when(log, "begun", hosts[3]) < _when(log, "critical_done", hosts[2])
    measuring = [h for s, h, _ in log if s == "measuring"]
    assert measuring == hosts  # one slot, in order
    for first, second in zip(hosts, hosts[1:], strict=False):  # never two on the critical path at once
        assert _when(log, "measuring", second) >= _when(log, "critical_done", first)


def test_the_slow_start_is_clocked_by_the_resolvers_answers(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The intake starts at a quarter of the slots and, with a resolver that answers at once, is
    whole within its first answers, not after the lag timer's periods (three at concurrency 8)."""
    hosts = [f"192.0.2.{n}" for n in range(1, 9)]
    log = _fakes(monkeypatch, dict.fromkeys(hosts, 0.6), completion=0.0)
    config, context, network, reference = _context(test_pki)
    targets = [parse_target(host, None, n) for n, host in enumerate(hosts, 1)]
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 8, io.StringIO())
    assert summary.measured == len(hosts)
    measuring = sorted(t for s, _, t in log if s == "measuring")
    assert len(measuring) == 8
    # The timer alone lets a quarter more in each PERIOD: the eighth would start 0.3 s after the first.
    assert measuring[-1] - measuring[0] < 2 * PERIOD


def test_targets_freed_together_are_taken_in_a_burst_a_turn(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """Critical paths that end in the same turn of the loop free their slots together: the targets
    taken in for them send their questions at most a burst (the slow start's first, 25 at
    concurrency 100) a turn, so that a resolver's socket buffer never gets them all at once."""
    hosts = [f"192.0.2.{n}" for n in range(1, 201)]
    log = _fakes(monkeypatch, {}, completion=0.0)
    turns = [0]

    def tick() -> None:
        turns[0] += 1
        asyncio.get_running_loop().call_soon(tick)

    begin = run_module.begin_target

    def counted(target: Any, config: Any, started: datetime) -> Any:
        if turns[0] == 0:
            asyncio.get_running_loop().call_soon(tick)
        log.append(("turn", target.host, float(turns[0])))
        return begin(target, config, started)

    monkeypatch.setattr(run_module, "begin_target", counted)
    config, context, network, reference = _context(test_pki)
    targets = [parse_target(host, None, n) for n, host in enumerate(hosts, 1)]
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 100, io.StringIO())
    assert summary.measured == len(hosts)
    per_turn = Counter(t for s, _, t in log if s == "turn")
    assert sum(per_turn.values()) == len(hosts)
    assert max(per_turn.values()) <= 25


def test_answers_grow_the_intake_only_while_the_probe_keeps_up() -> None:
    lag = LagMonitor(100)
    assert lag.allowed == 25
    for _ in range(25):
        lag.answered()
    assert lag.allowed == 50  # each answer lets one more in: doubling each round trip
    lag.note(1.0, 1.5)  # behind: the intake shrinks, and answers do not grow it back
    assert lag.allowed == 35
    for _ in range(30):
        lag.answered()
    assert lag.allowed == 35
    lag.note(1.1, 0.0)  # caught up: the timer and the answers grow it again
    for _ in range(100):
        lag.answered()
    assert lag.allowed == 100


def test_the_runs_deadline_records_targets_waiting_for_a_slot_as_not_measured(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """A target whose questions went out but which never got a slot is not measured, once, and its
    questions are let go."""
    hosts = [f"192.0.2.{n}" for n in range(1, 5)]
    log = _fakes(monkeypatch, {hosts[1]: 5.0}, completion=0.2)
    config, context, network, reference = _context(test_pki)
    targets = [parse_target(host, None, n) for n, host in enumerate(hosts, 1)]
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 1, io.StringIO(),
                                 deadline=0.6)  # fmt: skip
    records = {r["target"]["host"]: r for r in read_results(tmp_path)}
    assert sorted(records) == sorted(hosts) and summary.deadline_reached
    assert records[hosts[0]].get("not_measured") is None and records[hosts[0]]["blocking"] == "none"
    assert [records[h].get("not_measured") for h in hosts[1:]] == ["deadline"] * 3
    begun_ahead = {h for s, h, _ in log if s == "begun"} - {hosts[0]}
    assert hosts[2] in begun_ahead  # it waited for the slot the second held
    assert {h for s, h, _ in log if s == "cancelled"} == begun_ahead  # their questions let go


def test_targets_in_flight_never_need_more_files_than_the_run_may_open(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """A socket the kernel refuses would be recorded as the network's failure: the targets in flight
    and every getaddrinfo thread (one may outlive its target, holding its sockets) never need more
    files than the run may open, whatever the concurrency: with 120, 14 lookup threads and three
    targets."""
    hosts = [f"192.0.2.{n}" for n in range(1, 13)]
    log = _fakes(monkeypatch, {}, completion=0.1)
    room = 120
    monkeypatch.setattr(runtime_module, "open_files_allowed", lambda: room)
    sizes: list[int] = []
    pool = runtime_module.threads.pool
    monkeypatch.setattr(runtime_module.threads, "pool", lambda size: (sizes.append(size), pool(size))[1])
    config, context, network, reference = _context(test_pki)
    targets = [parse_target(host, None, n) for n, host in enumerate(hosts, 1)]
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 8, io.StringIO())
    assert summary.measured == len(hosts)
    # From its questions to its completion (a little before its task ends: never more than it held).
    events = sorted([(t, +1) for s, _, t in log if s == "begun"] + [(t, -1) for s, _, t in log if s == "complete"])
    in_flight = peak = 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert sizes == [14]  # half the files at most for the lookups (8 x 6 asked)
    assert peak == 3
    assert 64 + runtime_module.FILES_PER_LOOKUP * sizes[0] + peak * run_module.FILES_PER_TARGET <= room


def test_a_run_raises_its_open_files_to_what_the_system_allows() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.fail(f"this test needs a finite hard limit above 256 (it is {hard})")
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "from probe.run.runtime import open_files_allowed\n"
        "print(open_files_allowed(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(hard), str(hard)]


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is declared for Linux and macOS only")
def test_the_run_measures_on_uvloop() -> None:
    with runtime_module.runtime(4) as rt:
        assert type(rt.loop).__module__.startswith("uvloop")


def test_a_runs_start_imports_nothing_only_some_targets_need() -> None:
    """What costs a run's start and only DoT/DoH, QUIC, a helper or a site's domain needs is imported
    where it is used: dnspython's query transports (0.2 s, DoQ and trio among them), its message and
    name parsers (25 ms: plain replies and names are read and written without them), aioquic, the
    helpers' HTTP clients (httpx2, requests), tldextract."""
    lazy = (
        "aioquic",
        "dns.asyncquery",
        "dns.message",
        "dns.name",
        "dns.query",
        "httpx2",
        "requests",
        "tldextract",
        "trio",
    )
    code = (
        "import sys\n"
        "import probe.cli.main, probe.cli.commands.run, probe.run.execute, probe.analyze.verdict\n"
        "import probe.observe.measure, probe.observe.quic, probe.observe.helperclient, probe.loaders.catalogs\n"
        f"print(' '.join(sorted(m for m in {lazy!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == []


def test_a_target_that_fails_before_its_slot_is_recorded_once_even_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A probe bug while its questions go out: the target's error record waits for a recorder slot
    (the recorder is behind); the run's deadline meanwhile must not record it again as not measured."""
    import types

    from probe.run.lag import LagMonitor
    from probe.run.summary import RunSummary

    handed: list[tuple[str, str | None]] = []

    class BehindRecorder:  # as the real one: the item registered first, then a slot awaited
        async def handed(self, item: Any) -> None:
            handed.append((item.target.host, item.not_measured))
            if item.not_measured is None:
                await asyncio.Event().wait()  # no slot before the deadline

    def begin(target: Any, config: Any, started: datetime) -> Any:
        if target.host == "bad.example":
            raise RuntimeError("a probe bug while the questions go out")
        return types.SimpleNamespace(cancel=lambda: None, dns=None)

    async def measure(target: Any, config: Any, started: datetime, critical_done: Any, begun: Any) -> Measured:
        if target.host.startswith("fast"):
            critical_done()
            await asyncio.sleep(0.2)
            raise asyncio.CancelledError  # ends the task quietly (a stand-in for its record)
        await asyncio.sleep(3600)
        raise AssertionError("cancelled by the run's deadline first")

    async def run_dns(config: Any, name: str) -> None:
        return None

    monkeypatch.setattr(run_module, "begin_target", begin)
    monkeypatch.setattr(run_module, "measure_target", measure)
    monkeypatch.setattr(run_module, "observe_run_dns", run_dns)
    hosts = [*(f"fast{n}.example" for n in range(1, 5)), *(f"slow{n}.example" for n in range(1, 5)), "bad.example"]
    targets = [parse_target(f"https://{host}/", None, n) for n, host in enumerate(hosts, 1)]

    async def main() -> None:
        rt = types.SimpleNamespace(lag=LagMonitor(4), wake=asyncio.Event(), interrupted=False, open_files=1 << 16)
        config = types.SimpleNamespace(control_sni=None, own_addresses=types.SimpleNamespace(snapshot=frozenset))
        run = run_module._Run(config, None, None, BehindRecorder(), rt, RunSummary(Path("/tmp/x"), len(hosts)))  # type: ignore[arg-type]
        measuring = asyncio.ensure_future(run_module._measure_targets(run, targets, 4, time.monotonic() + 1.0,
                                                                      run.summary, None))  # fmt: skip
        await asyncio.wait([measuring], timeout=3)
        rt.lag.close()
        measuring.cancel()

    asyncio.run(main())
    assert [h for h in handed if h[0] == "bad.example"] == [("bad.example", None)]  # its error, once
    assert {h for h, why in handed if why == "deadline"} == {f"slow{n}.example" for n in range(1, 5)}


def test_the_systems_lookup_is_bounded_from_its_start_not_from_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target that waited ahead of its slot gets no more time for getaddrinfo than one that did not:
    a lookup slower than `--timeout` + 1 s is a timeout for every target alike."""
    from probe.netx.clock import Clock
    from probe.observe import dnsflight
    from probe.observe.config import MeasureConfig, Visit
    from probe.vocabulary.failures import Failure
    from probe.vocabulary.observations import DnsLookup

    async def slow_getaddrinfo(hostname: str, port: int, clock: Clock) -> DnsLookup:
        await asyncio.sleep(2.5)  # past the bound (1 s + 1 s) from the lookup's start
        raise AssertionError("never answered within its bound")

    monkeypatch.setattr(dnsflight, "lookup_system", slow_getaddrinfo)
    config = MeasureConfig(timeout=1.0, roots=None, resolver=None, control_resolver=None, control_sni=None,  # type: ignore[arg-type]
                           injection_check=False)  # fmt: skip

    async def waited_then_asked() -> DnsLookup:
        dns = dnsflight.DnsInFlight("site.example", 443, Visit.begin(config, datetime.now()))
        await asyncio.sleep(1.0)  # waiting for a measuring slot
        found = await dns.system()  # what is left of its bound, not a new one (that would see it raise)
        dns.cancel()
        return found

    found = asyncio.run(waited_then_asked())
    assert found.failure == Failure.GENERIC_TIMEOUT and found.addresses == ()


@pytest.mark.parametrize(
    ("failure", "late", "grows"),
    [(None, False, True), ("dns_nxdomain_error", False, True), ("generic_timeout_error", False, False),
     (None, True, False), ("cancelled", False, False)],
)  # fmt: skip
def test_only_an_answer_in_time_grows_the_slow_start(
    monkeypatch: pytest.MonkeyPatch, failure: str | None, late: bool, grows: bool
) -> None:
    """The slow start grows on the resolver's answers: addresses or a name that does not exist, in
    time; not a lookup that failed, came back after its bound, or was let go."""
    from probe.netx.clock import Clock
    from probe.observe import dnsflight
    from probe.observe.config import MeasureConfig, Visit
    from probe.vocabulary.observations import DnsLookup

    async def lookup(hostname: str, port: int, clock: Clock) -> DnsLookup:
        await asyncio.sleep(2.2 if late else 0.01)  # the bound: --timeout (1 s) + 1 s
        found = None if failure == "cancelled" else failure
        return DnsLookup("system", "system", hostname, ("192.0.2.1",) if found is None else (), found, ())

    monkeypatch.setattr(dnsflight, "lookup_system", lookup)
    config = MeasureConfig(timeout=1.0, roots=None, resolver=None, control_resolver=None, control_sni=None,  # type: ignore[arg-type]
                           injection_check=False)  # fmt: skip
    heard: list[str] = []

    async def asked() -> None:
        dns = dnsflight.DnsInFlight("site.example", 443, Visit.begin(config, datetime.now()))
        dns.when_answered(lambda: heard.append("answered"))
        if failure == "cancelled":
            await asyncio.sleep(0.001)
            dns.cancel()
        await asyncio.sleep(2.4 if late else 0.1)
        dns.cancel()

    asyncio.run(asked())
    assert heard == (["answered"] if grows else [])


def test_a_deadline_with_less_than_a_steps_moment_left_is_expired() -> None:
    """A step's timer may fire a little early (the loop's clock, read once an iteration): the few
    milliseconds left then are no time for another step (the sandwich's second control would get a
    moment too short to mean anything)."""
    import dataclasses

    from probe.netx.deadline import MIN_STEP

    now = time.monotonic()
    assert not dataclasses.replace(Deadline(2.0), ends=now + 1.0).expired
    assert dataclasses.replace(Deadline(2.0), ends=now + MIN_STEP / 5).expired
    assert dataclasses.replace(Deadline(2.0), ends=now - 1.0).expired
    assert not Deadline(2.0).expired  # no end: never expired
