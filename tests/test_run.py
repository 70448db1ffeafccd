"""The run keeps going, and keeps every record, when the probe itself fails on one target."""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.verdict import AnalysisContext, judge_observations
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx.deadline import Deadline
from probe.observe.measure import MeasureConfig, Measured
from probe.run import execute as run_module
from probe.run import recorder as recorder_module
from probe.vocabulary.observations import Observations
from probe.vocabulary.targets import parse_target
from tests.conftest import PkiFixture, read_results


def _context(test_pki: PkiFixture) -> tuple[MeasureConfig, AnalysisContext, dict[str, Any], dict[str, Any]]:
    roots = load_roots(test_pki.roots_pem)
    config = MeasureConfig(timeout=1, roots=roots, resolver=None, control_resolver=None, control_sni=None)
    context = AnalysisContext(roots=roots, catalogs=load_catalogs(), documentation_is_public=True)
    network = {"resolver": "system", "system_resolver_addresses": [], "control_resolver": None, "helpers": [],
               "asn": None, "country": None}  # fmt: skip
    reference = {"roots": roots.describe(), "catalogs": {}, "control_sni": None, "documentation_addresses_public": True}
    return config, context, network, reference


def _observed(target: Any, config: Any, started: datetime) -> Observations:
    if target.host == "192.0.2.3":
        raise RuntimeError("a bug while measuring")
    return Observations(None, (), (), (), addresses_from="literal")


async def _measured(
    target: Any, config: Any, started: datetime, critical_done: Any = None, begun: Any = None
) -> Measured:
    """A finished measurement, nothing left to wait for."""
    return Measured(_observed(target, config, started), None, Deadline(1))


@pytest.mark.parametrize("recorder", ["process", "inline"])
def test_a_failure_on_one_target_costs_no_record(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path, recorder: str
) -> None:
    """Whether records are judged in the recorder process (Linux) or in the run's thread (where
    there is no fork), a bug on one target costs nothing but that target's verdict."""
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"], 1)]

    def judge_or_fail(host: str, *args: Any) -> Any:
        if host == "192.0.2.2":
            raise ValueError(f"a bug while judging in process {os.getpid()}")
        return judge_observations(host, *args)

    monkeypatch.setattr(run_module, "measure_target", _measured)  # a finished measurement, no pending part
    monkeypatch.setattr(recorder_module, "judge_observations", judge_or_fail)
    if recorder == "inline":
        monkeypatch.setattr(recorder_module.sys, "platform", "darwin")
    else:  # earlier tests leave idle pool threads behind; a run forks before it starts any
        monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    config, context, network, reference = _context(test_pki)
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 2, io.StringIO())
    records = {r["target"]["host"]: r for r in read_results(tmp_path)}
    assert summary.measured == 3 and set(records) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert records["192.0.2.1"]["blocking"] == "none" and "error" not in records["192.0.2.1"]
    assert records["192.0.2.2"]["blocking"] == "inconclusive"
    assert "a bug while judging" in records["192.0.2.2"]["error"]
    judged_here = f"in process {os.getpid()}" in records["192.0.2.2"]["error"]
    assert judged_here == (recorder == "inline")  # on Linux, judging is off the measuring process
    assert records["192.0.2.2"]["observations"]["addresses_from"] == "literal"  # kept, to re-judge later
    assert records["192.0.2.3"]["observations"] is None and "a bug while measuring" in records["192.0.2.3"]["error"]
    assert all(r["probe_lag"] >= 0 for r in records.values())  # how far behind the probe was, in every record


def test_a_probe_that_falls_behind_takes_fewer_targets_in_and_says_so() -> None:
    """Load never becomes a finding: the run's intake starts small and grows while the probe keeps
    up; behind, it shrinks (at most once a second, to a floor) and grows back when the lag is gone;
    each target's record gets the most lag seen while it was measured."""
    from probe.run.lag import LagMonitor

    lag = LagMonitor(100)
    assert lag.allowed == 25  # a slow start: not a hundred targets' first questions at once
    for tick in range(3):
        lag.note(9.0 + tick / 10, 0.0)
    assert lag.allowed == 100
    lag.note(10.0, 0.01)
    lag.note(10.1, 1.5)  # the probe's timer woke 1.5 s late: behind
    assert lag.allowed == 70
    lag.note(10.2, 1.5)  # within the second of the last cut: its effect is not seen yet
    assert lag.allowed == 70
    for second in range(11, 30):
        lag.note(float(second), 2.0)
    assert lag.allowed == lag.floor == 10
    assert lag.lag_between(10.0, 10.05) == 1.5 and lag.lag_between(9.0, 9.5) == 0.0
    assert lag.lag_between(0.0, 9.95) == 0.01
    for tick in range(100):
        lag.note(30.0 + tick / 10, 0.0)
    assert lag.allowed == 100  # caught up: the whole intake again


def test_a_recorder_that_dies_loses_no_record(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The recorder process killed in the middle of a run: the run writes what it had not confirmed,
    and every later record, itself."""
    run_pid = os.getpid()
    hosts = [f"192.0.2.{n}" for n in range(10, 50)]
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(hosts, 1)]

    def judge_or_die(host: str, *args: Any) -> Any:
        if host == "192.0.2.20" and os.getpid() != run_pid:
            os._exit(9)  # as if the kernel had killed the recorder
        return judge_observations(host, *args)

    monkeypatch.setattr(run_module, "measure_target", _measured)
    monkeypatch.setattr(recorder_module, "judge_observations", judge_or_die)
    monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    config, context, network, reference = _context(test_pki)
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 4, io.StringIO())
    records = read_results(tmp_path)
    assert summary.measured == len(hosts)
    assert sorted(r["target"]["host"] for r in records) == sorted(hosts)  # each once: none lost, none twice
    assert all(r["blocking"] == "none" for r in records)


def test_the_recorder_is_forked_only_before_any_other_thread(test_pki: PkiFixture, tmp_path: Path) -> None:
    """A fork while another thread may hold a lock could leave the recorder stuck on it: with any
    other thread running, records are judged in the run's own thread instead."""
    import threading

    from probe.results.record import RunContext
    from probe.results.writer import ResultsWriter

    _, context, _, _ = _context(test_pki)
    run = RunContext(run_id="0" * 32, network={}, reference={})
    writer = ResultsWriter(tmp_path, run.run_id, datetime.now())
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        recorder = recorder_module.start_recorder(run, context, writer, lambda item, verdict: None)
        assert isinstance(recorder, recorder_module.InlineRecorder)
    finally:
        stop.set()
        writer.close()


def test_a_target_whose_wait_never_ends_is_completed_at_its_bound(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture
) -> None:
    """Completing a target awaits its last replies on the run's loop, no thread held; were one never
    to come (every wait is bounded: this guards against a bug), the target is completed at its bound."""
    import asyncio

    from probe.observe import measure

    async def never(*args: Any) -> str | None:
        await asyncio.get_running_loop().create_future()  # nobody ever sets it
        return "never"

    config, _, _, _ = _context(test_pki)
    target = parse_target("192.0.2.1", "NEWS", 1)
    monkeypatch.setattr(measure, "_observe_target", lambda *args: asyncio.sleep(0))
    monkeypatch.setattr(measure, "_complete", never)
    monkeypatch.setattr(measure, "completion_bound", lambda deadline, questions: 0.1)
    completed = asyncio.run(asyncio.wait_for(measure.measure_target(target, config, datetime.now()), 30))
    # Completed at its bound, not hung; and the record says its observations are incomplete (judged
    # inconclusive), never passes them off as whole.
    assert completed.error is not None and "completion passed its bound" in completed.error, completed.error
    assert completed.observations.tcp_connect == () and completed.observations.helpers == ()
