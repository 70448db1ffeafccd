"""A run: every target measured, several at once, each record written as soon as it is judged.

Run owns concurrency, progress and the offline check; nothing below it knows about them. Every
target is a task on the run's one event loop (`runtime`): it takes the critical path (DNS, TCP,
TLS, HTTP) in one of `concurrency` measuring slots (fewer while the probe is behind: `lag`), then
frees the slot while it waits for its last replies, and its record goes to the recorder.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from probe.analyze.network_state import judge_check, no_route_fields, state_fields
from probe.analyze.verdict import AnalysisContext, judge_observations
from probe.forensics.examine import Forensics, stopped_capture
from probe.netx.classify import short_traceback
from probe.netx.netcheck import has_route, source_address
from probe.observe.measure import Begun, MeasureConfig, RunDns, begin_target, measure_target, observe_run_dns
from probe.observe.network_state import NetworkChecks, NetworkWatch
from probe.results.offline import NO_ROUTE
from probe.results.record import RunContext
from probe.results.writer import ResultsWriter
from probe.run import threads
from probe.run.lag import PERIOD
from probe.run.progress import OFFLINE as OFFLINE  # re-exported: what commands print
from probe.run.progress import Progress
from probe.run.progress import format_summary as format_summary
from probe.run.progress import offline_words as offline_words
from probe.run.recorder import Item, Recorder, Verdict, start_recorder
from probe.run.runtime import TRIM_EVERY, Runtime, runtime, trim_memory
from probe.run.signals import Interrupted
from probe.run.summary import RunSummary as RunSummary  # re-exported: what commands read
from probe.vocabulary.netstate import NetworkCheck
from probe.vocabulary.observations import ForensicState, Observations
from probe.vocabulary.targets import Target

# Targets measured and waiting for their last replies (a DNS window, the injection probe: about two
# seconds), per measuring slot: enough that the windows never hold the measuring slots back.
FINISHING = 6
# Targets whose questions are out ahead of a measuring slot, per slot (`begin_target`): at a few
# hundred targets a second, about a DNS window's worth, so that the last targets' windows overlap
# the handshakes before them instead of trailing the run by a second. Never more than have finished
# their critical path so far: the first questions of a run still go out in the intake's slow start.
AHEAD = 5
# Files a target may hold open at most while in flight (its DNS sockets, a connection): targets in
# flight are never more than the run's open files allow (`runtime.open_files_allowed`).
FILES_PER_TARGET = 8


@dataclass
class _Run:
    """What one run's targets share while they are measured."""

    config: MeasureConfig
    analysis: AnalysisContext
    forensics: Forensics | None
    recorder: Recorder
    rt: Runtime
    summary: RunSummary
    network_state: dict[str, Any] | None = None  # the latest round's state, as every record carries it

    def heard(self, check: NetworkCheck) -> None:
        """A round of the reference endpoints, judged: the state of the records that follow."""
        self.network_state = state_fields(check, judge_check(check))
        self.summary.network_states.append(
            {k: self.network_state[k] for k in ("check", "checked_at", "state", "basis", "domestic", "foreign")}
        )

    def item(
        self, target: Target, started: datetime, observations: Observations | None, error: str | None, offline: bool,
        began: float | None = None,
    ) -> Item:  # fmt: skip
        """A target's outcome for the recorder, with how far behind the probe was meanwhile (from
        `began`, time.monotonic() when its measuring started, the lag monitor's clock)."""
        own = self.config.own_addresses.snapshot()
        behind = None
        if not offline and began is not None:
            behind = self.rt.lag.lag_between(began, time.monotonic())
        return Item(target, started, observations, error, offline, own, probe_lag=behind,
                    network_state=self.network_state)  # fmt: skip

    async def finish(
        self, target: Target, started: datetime, observations: Observations | None, error: str | None, offline: bool,
        began: float | None = None,
    ) -> None:  # fmt: skip
        """A target's outcome to the recorder: a slot awaited (the loop never waits for the recorder)."""
        await self.recorder.handed(self.item(target, started, observations, error, offline, began))

    async def not_measured(self, targets: list[Target]) -> None:
        for target in targets:  # in turn, each awaiting a slot
            await self.recorder.handed(Item(target, datetime.now(UTC), None, None, False, frozenset(),
                                            not_measured="deadline", network_state=self.network_state))  # fmt: skip

    async def forensic_steps(
        self, target: Target, started: datetime, observations: Observations, ends: float | None
    ) -> Observations:
        """The capture's state in every record and, for a finding (judged here, first), the TTL sweep."""
        forensics, config = self.forensics, self.config
        if forensics is None:
            return observations
        stopped = forensics.capture.failure if forensics.capture is not None else None
        seen, suspect = forensics.prepare(target.host, observations, started, config.roots, config.control_sni)
        if suspect:
            finding = judge_observations(target.host, observations, started, False, self.analysis).blocking
            sweep = forensics.sweep(target.host, target.port, observations, finding, config.control_sni,
                                    config.timeout, ends)  # fmt: skip
            if isinstance(sweep, ForensicState):  # why it was not run
                seen = msgspec.structs.replace(seen, locate=sweep)
            elif sweep is not None:
                seen = msgspec.structs.replace(seen, locate=await threads.blocking(sweep))
        if stopped is not None:  # the capture stopped before this target was complete: it says so
            seen = msgspec.structs.replace(seen, capture=stopped_capture(stopped))
        return msgspec.structs.replace(observations, forensics=seen)

    async def one(
        self, target: Target, run_dns: asyncio.Task[RunDns], slot: asyncio.Event, critical_done: Any,
        answered: Callable[[], None],
    ) -> None:  # fmt: skip
        """One target: its questions sent (`answered` called once the system's answer is in), then
        (once `slot` is set) measured, completed and handed to the recorder."""
        started, began = datetime.now(UTC), time.monotonic()
        begun: Begun | None = None
        try:
            begun = begin_target(target, self.config, started)
            if begun.dns is not None:
                begun.dns.when_answered(answered)
            else:  # an address: no question for the resolver
                answered()
            await slot.wait()
            measured = await measure_target(target, self.config, started, critical_done, begun)
        except Exception as exc:  # a probe bug must not cost the other targets; the record says what happened
            critical_done()
            await self.finish(target, started, None, short_traceback(exc), offline=False, began=began)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                if begun is not None:
                    begun.cancel()
                raise  # the run cancelled it (its deadline, an interruption): accounted for there
            critical_done()  # a step shared with another target was cancelled under it: a probe bug, recorded
            await self.finish(target, started, None, "CancelledError: a step shared with another target", False, began)
            return
        observations, error = measured.observations, measured.error
        try:
            if observations.dns is not None:  # the run's own DNS facts, in every record
                once = await asyncio.shield(run_dns)
                dns = msgspec.structs.replace(observations.dns, control_identity=once.control_identity,
                                              resolver_baseline=once.resolver_baseline)  # fmt: skip
                observations = msgspec.structs.replace(observations, dns=dns)
            observations = await self.forensic_steps(target, started, observations, measured.deadline.ends)
        except Exception as exc:
            error = short_traceback(exc)
        await self.finish(target, started, observations, error, offline=False, began=began)


async def _measure_all(
    run: _Run, targets: list[Target], concurrency: int, ends: float | None, summary: RunSummary,
    checks: NetworkChecks | None = None,
) -> None:  # fmt: skip
    """The network's state first (the reference endpoints, when asked for), then the targets."""
    if checks is None or not checks.endpoints:
        await _measure_targets(run, targets, concurrency, ends, summary, None)
        return
    watch = NetworkWatch(checks.endpoints, run.config, checks.every_targets, checks.every_seconds, run.heard)
    try:
        await watch.start()  # bounded: every endpoint at once, each within twice the timeout
        await _measure_targets(run, targets, concurrency, ends, summary, watch)
    finally:
        watch.close()


async def _measure_targets(
    run: _Run, targets: list[Target], concurrency: int, ends: float | None, summary: RunSummary,
    watch: NetworkWatch | None,
) -> None:  # fmt: skip
    """Targets are streamed in: at most the intake on the critical path at once (`concurrency`, fewer
    while the probe is behind), and a bounded number waiting for their last replies."""
    loop = asyncio.get_running_loop()
    run.rt.lag.start(loop)
    wake = run.rt.wake
    # Once a run (who answers the control, the resolver's usual IP TTL), meanwhile: joined per record.
    run_dns = loop.create_task(observe_run_dns(run.config, run.config.control_sni or "example.org"))
    waiting: dict[asyncio.Task[None], tuple[Target, asyncio.Event]] = {}  # questions out, in order
    measuring: dict[asyncio.Task[None], Target] = {}
    finishing: dict[asyncio.Task[None], Target] = {}
    # Targets taken in at once: never more than the slow start's first burst, all run long. Slots
    # freed together (a loop's turn can end a hundred critical paths) would otherwise send a hundred
    # targets' questions at once, and a resolver's socket buffer drops what it cannot hold (a home
    # router's, or this bench's dnsmasq on a busy machine); the rest are taken in the next turns.
    burst = run.rt.lag.burst
    failures: list[BaseException] = []
    queue = iter(targets)
    exhausted = False
    through = 0  # targets past their critical path: the most that may be ahead

    def done(task: asyncio.Task[None]) -> None:
        waiting.pop(task, None)
        measuring.pop(task, None)
        finishing.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]  # the results file failed (a full disk)
        wake.set()

    def answered() -> None:
        """A target's system answer is in: the resolver kept up, the slow start may let another in."""
        run.rt.lag.answered()
        wake.set()

    def start(target: Target) -> None:
        task: asyncio.Task[None] | None = None

        def critical_done() -> None:
            """Past its critical path (or failed before it: then from `waiting`), into `finishing`:
            its record is on its way, and the run's deadline never records it again."""
            nonlocal through
            if task is not None and (measuring.pop(task, None) or waiting.pop(task, None)) is not None:
                finishing[task] = target
                through += 1
                wake.set()

        slot = asyncio.Event()
        task = loop.create_task(run.one(target, run_dns, slot, critical_done, answered))
        waiting[task] = (target, slot)
        task.add_done_callback(done)
        if watch is not None:
            watch.target_started()  # every so many targets, the endpoints are asked again meanwhile

    in_flight = max(1, (run.rt.open_files - 64) // FILES_PER_TARGET)  # 64: the run's own files (results, lock)
    while True:
        allowed = run.rt.lag.allowed
        ahead = min(AHEAD * allowed, through)
        taken = 0
        while (
            len(measuring) + len(waiting) < allowed + ahead
            and len(finishing) < concurrency * FINISHING
            and len(waiting) + len(measuring) + len(finishing) < in_flight
        ):
            if taken == burst:  # the next turns take more in: these targets' questions go out first
                break
            upcoming = next(queue, None)
            if upcoming is None:
                exhausted = True
                break
            start(upcoming)
            taken += 1
        while waiting and len(measuring) < allowed:  # the longest waiting takes the free slot
            task = next(iter(waiting))
            target, slot = waiting.pop(task)
            measuring[task] = target
            slot.set()
        if failures:
            raise failures[0]
        if run.rt.interrupted:
            raise Interrupted
        if not waiting and not measuring and not finishing and exhausted:
            return
        if taken == burst and (ends is None or time.monotonic() < ends):  # more may be taken in: after a turn
            await asyncio.sleep(0)  # (those taken in begin their questions first)
            continue
        wake.clear()
        try:
            # Woken by a target, or after a lag period at most: the intake may have grown meanwhile.
            async with asyncio.timeout(PERIOD if ends is None else max(0.0, min(PERIOD, ends - time.monotonic()))):
                await wake.wait()
        except TimeoutError:
            if ends is None or time.monotonic() < ends:
                continue
            summary.deadline_reached = True
            unmeasured = [*measuring.values(), *(target for target, _ in waiting.values()), *queue]
            for task in [*measuring, *waiting]:
                task.cancel()  # before any await: no target is recorded both measured and not
            measuring.clear()
            waiting.clear()
            if unmeasured:  # recorded by a task, awaited as the finishing ones are (Ctrl-C heard meanwhile)
                recording = loop.create_task(run.not_measured(unmeasured))
                finishing[recording] = unmeasured[0]
                recording.add_done_callback(done)
            while finishing:  # measured already: only their last replies are awaited (each is bounded)
                if run.rt.interrupted:  # Ctrl-C or SIGTERM meanwhile: the run stops now, records kept
                    raise Interrupted from None
                wake.clear()
                news = asyncio.ensure_future(wake.wait())  # a target finished, or the interruption
                await asyncio.wait([*finishing, news], return_when=asyncio.FIRST_COMPLETED)
                news.cancel()
            if failures:
                raise failures[0] from None
            return


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
    network_checks: NetworkChecks | None = None,
) -> RunSummary:
    """Measure every target and write its record as soon as it is judged.

    An interruption stops the run between records: the summary says so, every finished record is
    in the file, and the measurements still running are abandoned. With a `deadline` (seconds for
    the whole run), targets not finished by then are recorded as not measured, and every finished
    record is kept. With `network_checks`, the reference endpoints are asked before the first target
    and again meanwhile, and every record carries the network's state (`network_state`).
    """
    run_started = datetime.now(UTC)
    clock_started = time.monotonic()
    ends = clock_started + deadline if deadline is not None else None
    context = RunContext(run_id=uuid.uuid4().hex, network=network, reference=reference, probe_id=probe_id)
    writer = ResultsWriter(out_dir, context.run_id, run_started)
    summary = RunSummary(results_path=writer.path, total=len(targets), run_id=context.run_id, started=run_started)

    def written(item: Item, verdict: Verdict) -> None:
        """A record is in the file: count it (called by the recorder, one record at a time)."""
        if item.not_measured is not None:
            summary.not_measured += 1
            return
        summary.count(item.target, verdict.blocking, verdict.confidence, verdict.interceptor, item.network_state)
        if progress is not None:
            progress.update(summary.measured, item.target.host, verdict.blocking, time.monotonic() - clock_started)
        if summary.measured % TRIM_EVERY == 0:
            trim_memory()

    progress: Progress | None = None
    # What the run loaded (modules, roots, catalogs) is never garbage: the collector stops scanning
    # it, and the recorder forked next shares its pages instead of copying each one the collector
    # touches (15 MiB less for the run's processes together; docs/performance.md).
    gc.freeze()
    try:  # forked before any thread of the run starts (the progress display's and the capture's included)
        recorder = start_recorder(context, analysis, writer, written)
    except BaseException:
        gc.unfreeze()
        raise
    ended: str | None = None  # set when the run ends (not interrupted, nor failed): NO_ROUTE, or ""
    try:
        with runtime(concurrency, lookups=concurrency * (1 + AHEAD)) as rt:
            config = replace(config, pools=rt.pools)  # issue 21: the run's pooled clients, closed with its loop
            if forensics is not None and forensics.start() is not None:
                config = replace(config, capture=forensics.capture)
            progress = Progress(progress_stream, len(targets), show_progress)
            run = _Run(config, analysis, forensics, recorder, rt, summary)
            # Asking the kernel's routing table sends nothing; its answer is also our own source address.
            route_probe = config.control_resolver.route_address if config.control_resolver else None
            source = source_address(route_probe) if route_probe is not None else None
            online = source is not None if route_probe is not None else has_route()
            if not online:
                if network_checks is not None and network_checks.endpoints:  # nothing was asked: no route
                    run.network_state = no_route_fields(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
                for target in targets:  # outside the loop: the recorder's `submit` waits in this thread
                    recorder.submit(run.item(target, datetime.now(UTC), None, None, offline=True))
                ended = NO_ROUTE
                return summary
            config.own_addresses.add(source)
            try:
                rt.run(lambda rt: _measure_all(run, targets, concurrency, ends, summary, network_checks))
            except (Interrupted, KeyboardInterrupt):
                summary.interrupted = True
                return summary
        recorder.close()
        ended = ""
        return summary
    finally:
        gc.unfreeze()  # a caller that runs again (the tests) collects what this run left
        recorder.close()  # every record handed over is in the file before the summary is read
        if forensics is not None:
            forensics.close()
            summary.capture_stopped = forensics.capture.failure if forensics.capture is not None else None
        summary.duration = time.monotonic() - clock_started
        if progress is not None:
            progress.finish()
        writer.close()
        if writer.failure is not None:  # a line could not be written (a full disk): the run stopped there
            raise writer.failure
        if ended is not None:  # the run ended, not interrupted nor failed: was it offline?
            summary.conclude(ended or None)
