"""The run keeps going, and keeps every record, when the probe itself fails on one target."""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.observe.measure import MeasureConfig
from probe.run import execute as run_module
from probe.run import recorder as recorder_module
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


def _observed(target: Any, config: Any, started: datetime) -> dict[str, Any]:
    if target.host == "192.0.2.3":
        raise RuntimeError("a bug while measuring")
    return {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": [],
            "addresses_from": "literal", "helpers": []}  # fmt: skip


@pytest.mark.parametrize("recorder", ["process", "inline"])
def test_a_failure_on_one_target_costs_no_record(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path, recorder: str
) -> None:
    """Whether records are judged in the recorder process (Linux) or in the run's thread (where
    there is no fork), a bug on one target costs nothing but that target's verdict."""
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"], 1)]

    def judge_or_fail(target: dict[str, Any], *args: Any) -> Any:
        if target["host"] == "192.0.2.2":
            raise ValueError(f"a bug while judging in process {os.getpid()}")
        return judge(target, *args)

    monkeypatch.setattr(run_module, "start_measurement", _observed)  # a finished measurement, no pending part
    monkeypatch.setattr(recorder_module, "judge", judge_or_fail)
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


def test_a_recorder_that_dies_loses_no_record(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """The recorder process killed in the middle of a run: the run writes what it had not confirmed,
    and every later record, itself."""
    run_pid = os.getpid()
    hosts = [f"192.0.2.{n}" for n in range(10, 50)]
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(hosts, 1)]

    def judge_or_die(target: dict[str, Any], *args: Any) -> Any:
        if target["host"] == "192.0.2.20" and os.getpid() != run_pid:
            os._exit(9)  # as if the kernel had killed the recorder
        return judge(target, *args)

    monkeypatch.setattr(run_module, "start_measurement", _observed)
    monkeypatch.setattr(recorder_module, "judge", judge_or_die)
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
    """Completing a target waits for its replies by callbacks, not a thread; were one never to come
    (every wait is bounded: this guards against a bug), the watchdog completes the target at its bound."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from probe.netx.clock import Clock
    from probe.observe.measure import Pending

    config, context, _, _ = _context(test_pki)
    target = parse_target("192.0.2.1", "NEWS", 1)
    observations = _observed(target, config, datetime.now())
    pending = Pending(target, config, Clock(), observations, None, None)
    never: Future[None] = Future()
    monkeypatch.setattr(Pending, "waits", lambda self: [never])
    monkeypatch.setattr(Pending, "bound", property(lambda self: 0.1))
    run_dns: Future[dict] = Future()
    run_dns.set_result({})
    with ThreadPoolExecutor(max_workers=1) as finishers:
        finished = run_module._when_ready((datetime.now(), pending, None), run_dns, finishers, None, context)
        started, completed, error = finished.result(timeout=30)
    assert error is None and completed is observations and not never.done()
