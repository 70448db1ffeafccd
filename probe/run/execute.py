"""A run: every target measured, several at once, each record written as soon as it is judged.

Run owns concurrency, progress and the offline check; nothing below it knows about them.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from probe.analyze.verdict import AnalysisContext
from probe.forensics.examine import Forensics
from probe.netx.classify import short_traceback
from probe.netx.netcheck import has_route, source_address
from probe.netx.watchdog import WATCHDOG
from probe.observe.measure import MeasureConfig, Pending, observe_run_dns, start_measurement
from probe.results.offline import CAPTIVE_PORTAL, NO_INTERNET, NO_ROUTE, captive_portal, mark_offline, no_internet
from probe.results.record import RunContext
from probe.results.writer import ResultsWriter
from probe.run.progress import OFFLINE as OFFLINE  # re-exported: what commands print
from probe.run.progress import Progress
from probe.run.progress import format_summary as format_summary
from probe.run.progress import offline_words as offline_words
from probe.run.recorder import Item, Verdict, start_recorder
from probe.run.signals import Interrupted
from probe.vocabulary.anomalies import CENSORSHIP, Blocking, Confidence
from probe.vocabulary.targets import Target


@dataclass
class RunSummary:
    results_path: Path
    total: int
    run_id: str = ""
    started: datetime | None = None
    duration: float = 0.0
    measured: int = 0  # judged from what was observed
    not_measured: int = 0  # left when the run's deadline came, or offline (below)
    verdicts: Counter[str] = field(default_factory=Counter)
    confirmed: Counter[str] = field(default_factory=Counter)
    interceptions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    offline: str | None = None  # why nothing was measured: NO_ROUTE, NO_INTERNET, CAPTIVE_PORTAL (results.offline)
    portal: str | None = None  # with CAPTIVE_PORTAL: the portal's host (or address), never the volunteer's
    interrupted: bool = False
    deadline_reached: bool = False
    capture_stopped: str | None = None  # why the packet capture stopped mid-run, if it did

    @property
    def blocking_found(self) -> bool:
        return any(self.verdicts[v] for v in CENSORSHIP)

    @property
    def exit_reason(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.offline:
            return "offline"
        return "deadline" if self.deadline_reached else "completed"

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable summary (`--json`), for cron jobs and timers."""
        return {
            "run_id": self.run_id,
            "results_file": str(self.results_path),
            "started": self.started.isoformat() if self.started else None,
            "duration_s": round(self.duration, 3),
            "targets": self.total,
            "measured": self.measured,
            "not_measured": self.not_measured,
            "verdicts": dict(self.verdicts),
            "confirmed": dict(self.confirmed),
            "findings": self.findings,
            "exit_reason": self.exit_reason,
            "offline": self.offline,
            "portal": self.portal,
            "capture_stopped": self.capture_stopped,
        }

    def conclude(self, cause: str | None) -> None:
        """A finished run: with no route, no internet or a captive portal (`probe.results.offline`), its
        records are marked offline, and nothing measured is claimed: every target counts as not measured."""
        cause = cause or (NO_INTERNET if self.measured and no_internet(self.results_path) else None)
        if cause is None and self.measured:
            self.portal = captive_portal(self.results_path)
            cause = CAPTIVE_PORTAL if self.portal else None
        if cause is None:
            return
        self.offline, self.verdicts = cause, mark_offline(self.results_path, cause)
        offline = self.verdicts[Blocking.OFFLINE]
        self.measured, self.not_measured = self.measured - offline, self.not_measured + offline
        self.confirmed, self.findings, self.interceptions = Counter(), [], []


# Targets measured and waiting for their last replies (a DNS window, the injection probe: about two
# seconds), per measuring slot: enough that the windows never hold the measuring slots back.
FINISHING = 6

Outcome = tuple[datetime, Any, str | None]  # started, observations (or a Pending), error


def _trim_malloc() -> None:
    """Hand glibc's free memory back to the system (every TRIM_EVERY records): the many threads'
    short-lived buffers otherwise leave a run's memory growing with its length."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


TRIM_EVERY = 500


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _glibc()


def _few_malloc_arenas() -> None:
    """glibc gives threads malloc arenas of their own (up to eight per core); with a thousand
    measuring and listening threads they fragment, and a run's memory grew with its length. Two
    arenas hold a run of 10,000 targets under 150 MB at no measured cost in speed (docs/performance.md).
    Set before the run's threads start; nothing elsewhere (no glibc, no mallopt)."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.mallopt(M_ARENA_MAX, 2)


M_ARENA_MAX = -8  # glibc's malloc.h


def _measure_one(target: Target, config: MeasureConfig) -> Outcome:
    """The critical path of one target, in a measuring slot."""
    started = datetime.now(UTC)
    try:
        return started, start_measurement(target, config, started), None
    except Exception as exc:  # a probe bug must not cost the other targets; the record says what happened
        return started, None, short_traceback(exc)


def _complete(
    outcome: Outcome, run_dns: Future[dict[str, Any]], forensics: Forensics | None, analysis: AnalysisContext
) -> Outcome:
    """The rest of a target, off the measuring path: late DNS replies, the helpers' answers, and
    for a finding the forensic steps."""
    started, pending, error = outcome
    if not isinstance(pending, Pending):
        return outcome
    try:
        observations = pending.complete()
        if observations["dns"] is not None:
            observations["dns"].update(run_dns.result())  # the run's own DNS facts, in every record
        if forensics is not None:
            target = pending.target
            stopped = forensics.capture.failure if forensics.capture is not None else None
            forensics.examine(target.host, target.port, observations, started, pending.config, analysis)
            if stopped is not None:  # the capture stopped before this target was complete: it says so
                observations["forensics"]["capture"] = {"status": "stopped", "reason": stopped}
    except Exception as exc:
        return started, pending.observations, short_traceback(exc)
    return started, observations, error or observations.get("stage_error")


class _Ready:
    """Calls `then` once: when `count` awaited things are done, or when `fire` is called first (the
    watchdog, at the bound). `then` is dropped once called: what it holds (a target's observations)
    must not live on in the awaited futures' callback lists or the watchdog's queue."""

    def __init__(self, count: int, then: Callable[[], None]) -> None:
        self._left, self._lock = count, threading.Lock()
        self._then: Callable[[], None] | None = then

    def one_done(self, _: Future[Any]) -> None:
        with self._lock:
            self._left -= 1
            if self._left > 0:
                return
        self.fire()

    def fire(self) -> None:
        with self._lock:
            then, self._then = self._then, None
        if then is not None:
            then()


def _when_ready(
    outcome: Outcome,
    run_dns: Future[dict[str, Any]],
    finishers: ThreadPoolExecutor,
    forensics: Forensics | None,
    analysis: AnalysisContext,
) -> Future[Outcome]:
    """`_complete` in a finishing thread once every reply the target waits for is in (or its bound
    has passed, so that nothing waits for ever): no thread is held while the replies are awaited."""
    finished: Future[Outcome] = Future()
    pending = outcome[1]

    def start() -> None:
        try:
            job = finishers.submit(_complete, outcome, run_dns, forensics, analysis)
        except RuntimeError:  # the run is over (interrupted, or past its deadline): abandoned
            finished.cancel()
            return
        job.add_done_callback(lambda done: _pass_on(done, finished))

    if not isinstance(pending, Pending):
        start()
        return finished
    waits = pending.waits()
    ready = _Ready(len(waits), start)
    WATCHDOG.arm(pending.bound + 1, ready.fire)  # each wait is bounded: this only guards against a bug
    for waited in waits:
        waited.add_done_callback(ready.one_done)
    if not waits:
        ready.fire()
    return finished


def _pass_on(done: Future[Outcome], finished: Future[Outcome]) -> None:
    if done.cancelled():
        finished.cancel()
    elif done.exception() is not None:
        finished.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        finished.set_result(done.result())


def execute(
    targets: list[Target],
    config: MeasureConfig,
    analysis: AnalysisContext,
    network: dict[str, Any],
    reference: dict[str, Any],
    out_dir: Path,
    concurrency: int,
    progress_stream: TextIO = sys.stderr,
    probe_id: str | None = None,
    deadline: float | None = None,
    show_progress: bool | None = None,
    forensics: Forensics | None = None,
) -> RunSummary:
    """Measure every target and write its record as soon as it is judged.

    An interruption stops the run between records: the summary says so, every finished record is
    in the file, and the measurements still running are abandoned (their threads are bounded).
    With a `deadline` (seconds for the whole run), targets not finished by then are recorded as not
    measured, and every finished record is kept.
    """
    run_started = datetime.now(UTC)
    clock_started = time.monotonic()
    ends = clock_started + deadline if deadline is not None else None
    run = RunContext(run_id=uuid.uuid4().hex, network=network, reference=reference, probe_id=probe_id)
    writer = ResultsWriter(out_dir, run.run_id, run_started)
    summary = RunSummary(results_path=writer.path, total=len(targets), run_id=run.run_id, started=run_started)

    def written(item: Item, verdict: Verdict) -> None:
        """A record is in the file: count it (called by the recorder, one record at a time)."""
        if item.not_measured is not None:
            summary.not_measured += 1
            return
        summary.measured += 1
        summary.verdicts[verdict.blocking] += 1
        if verdict.confidence == Confidence.CONFIRMED:
            summary.confirmed[verdict.blocking] += 1
        if verdict.blocking in CENSORSHIP or verdict.blocking == Blocking.LOCAL_INTERCEPTION:
            summary.findings.append(
                {"target": item.target.input, "blocking": verdict.blocking, "confidence": verdict.confidence}
            )
        if verdict.interceptor is not None:
            interception = {"host": item.target.host, "blocking": verdict.blocking, **verdict.interceptor}
            summary.interceptions.append(interception)
        progress.update(summary.measured, item.target.host, verdict.blocking, time.monotonic() - clock_started)
        if summary.measured % TRIM_EVERY == 0:
            _trim_malloc()

    # Forked before any thread of the run starts (the progress display's and the capture's included).
    recorder = start_recorder(run, analysis, writer, written)
    _few_malloc_arenas()
    if forensics is not None and forensics.start() is not None:
        config = replace(config, capture=forensics.capture)
    progress = Progress(progress_stream, len(targets), show_progress)

    def finish(
        target: Target, started: datetime, observations: dict[str, Any] | None, error: str | None, offline: bool
    ) -> None:
        own = config.own_addresses.snapshot()
        recorder.submit(Item(target, started, observations, error, offline, own))

    def not_measured(target: Target) -> None:
        recorder.submit(Item(target, datetime.now(UTC), None, None, False, frozenset(), not_measured="deadline"))

    ended: str | None = None  # set when the run ends (not interrupted, nor failed): NO_ROUTE, or ""
    try:
        # Asking the kernel's routing table sends nothing; its answer is also our own source address.
        route_probe = config.control_resolver.route_address if config.control_resolver else None
        source = source_address(route_probe) if route_probe is not None else None
        online = source is not None if route_probe is not None else has_route()
        if not online:
            for target in targets:
                finish(target, datetime.now(UTC), None, None, offline=True)
            ended = NO_ROUTE
            return summary
        config.own_addresses.add(source)
        # Once a run (who answers the control, the resolver's usual IP TTL), meanwhile: joined per record.
        # Completing a target takes a thread only once what it waits for is in (`_when_ready`): a
        # few threads serve every target that is waiting for its last replies.
        finishers = ThreadPoolExecutor(max_workers=concurrency + 1, thread_name_prefix="complete")
        run_dns = finishers.submit(observe_run_dns, config, config.control_sni or "example.org")
        measuring: dict[Future[Outcome], Target] = {}
        finishing: dict[Future[Outcome], Target] = {}
        queue = iter(targets)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="measure")
        try:
            while True:
                # Targets are streamed in: at most `concurrency` on the measuring path at once, and
                # a bounded number waiting for their last replies.
                while len(measuring) < concurrency and len(finishing) < concurrency * FINISHING:
                    upcoming = next(queue, None)
                    if upcoming is None:
                        break
                    measuring[pool.submit(_measure_one, upcoming, config)] = upcoming
                if not measuring and not finishing:
                    break
                remaining = None if ends is None else max(0.0, ends - time.monotonic())
                done, _ = wait([*measuring, *finishing], timeout=remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    if future in measuring:
                        target = measuring.pop(future)
                        outcome = future.result()
                        finishing[_when_ready(outcome, run_dns, finishers, forensics, analysis)] = target
                    else:
                        target = finishing.pop(future)
                        started, observations, error = future.result()
                        finish(target, started, observations, error, offline=False)
                if ends is not None and time.monotonic() >= ends:
                    summary.deadline_reached = True
                    for target in [*measuring.values(), *queue]:
                        not_measured(target)
                    measuring.clear()
                    for future in list(finishing):  # measured already: only their last replies are awaited
                        target = finishing.pop(future)
                        started, observations, error = future.result()
                        finish(target, started, observations, error, offline=False)
                    break
        except (Interrupted, KeyboardInterrupt):
            summary.interrupted = True
            return summary
        finally:
            # Past the deadline, measurements still running are abandoned too (each is bounded).
            abandon = summary.interrupted or summary.deadline_reached or writer.failure is not None
            pool.shutdown(wait=not abandon, cancel_futures=True)
            finishers.shutdown(wait=not abandon, cancel_futures=True)
        recorder.close()
        ended = ""
        return summary
    finally:
        recorder.close()  # every record handed over is in the file before the summary is read
        if forensics is not None:
            forensics.close()
            summary.capture_stopped = forensics.capture.failure if forensics.capture is not None else None
        summary.duration = time.monotonic() - clock_started
        progress.finish()
        writer.close()
        if writer.failure is not None:  # a line could not be written (a full disk): the run stopped there
            raise writer.failure
        if ended is not None:  # the run ended, not interrupted nor failed: was it offline?
            summary.conclude(ended or None)
