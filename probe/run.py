"""A run: every target measured, several at once, each record written as soon as it is judged.

Run owns concurrency, progress and the offline check; nothing below it knows about them.
"""

from __future__ import annotations

import sys
import traceback
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from probe.analyze.verdict import AnalysisContext, Judgement, judge
from probe.observe.measure import MeasureConfig, measure, observe_run_dns
from probe.observe.netcheck import has_route, source_address
from probe.results.privacy import scrub
from probe.results.record import RunContext, build_record
from probe.results.writer import ResultsWriter
from probe.signals import Interrupted
from probe.targets import Target
from probe.vocabulary.anomalies import CENSORSHIP, Blocking


@dataclass
class RunSummary:
    results_path: Path
    total: int
    measured: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    interceptions: list[dict[str, Any]] = field(default_factory=list)
    offline: bool = False
    interrupted: bool = False

    @property
    def blocking_found(self) -> bool:
        return any(self.verdicts[v] for v in CENSORSHIP)


class Progress:
    """One line on a terminal, rewritten in place; silent when not a terminal."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream, self.total = stream, total
        self.enabled = stream.isatty()

    def update(self, done: int, target: Target, blocking: str) -> None:
        if self.enabled:
            line = f"[{done}/{self.total}] {target.host}: {blocking}"
            self.stream.write("\r\x1b[K" + line[:100])
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _measure_one(target: Target, config: MeasureConfig) -> tuple[datetime, dict[str, Any] | None, str | None]:
    started = datetime.now(UTC)
    try:
        return started, measure(target, config, started), None
    except Exception:  # a probe bug must not cost the other targets; the record says what happened
        return started, None, traceback.format_exc(limit=3)[-1000:]


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
) -> RunSummary:
    """Measure every target and write its record as soon as it is judged.

    An interruption stops the run between records: the summary says so, every finished record is
    in the file, and the measurements still running are abandoned (their threads are bounded).
    """
    run_started = datetime.now(UTC)
    run = RunContext(run_id=uuid.uuid4().hex, network=network, reference=reference, probe_id=probe_id)
    writer = ResultsWriter(out_dir, run.run_id, run_started)
    summary = RunSummary(results_path=writer.path, total=len(targets))
    progress = Progress(progress_stream, len(targets))

    def finish(
        target: Target, started: datetime, observations: dict[str, Any] | None, error: str | None, offline: bool
    ) -> None:
        judgement = Judgement(blocking=Blocking.INCONCLUSIVE)
        if error is None:
            try:
                judgement = judge({"host": target.host}, observations, started, offline, analysis)
            except Exception:  # an analysis bug: keep the observations, re-judge them later
                error = traceback.format_exc(limit=3)[-1000:]
        record = build_record(run, target, started, observations, judgement, error)
        writer.write(scrub(record, config.own_addresses.snapshot()))
        summary.measured += 1
        summary.verdicts[judgement.blocking] += 1
        if judgement.interceptor is not None:
            summary.interceptions.append({"host": target.host, "blocking": judgement.blocking, **judgement.interceptor})
        progress.update(summary.measured, target, judgement.blocking)

    try:
        # Asking the kernel's routing table sends nothing; its answer is also our own source address.
        route_probe = config.control_resolver.route_address if config.control_resolver else None
        source = source_address(route_probe) if route_probe is not None else None
        online = source is not None if route_probe is not None else has_route()
        if not online:
            summary.offline = True
            for target in targets:
                finish(target, datetime.now(UTC), None, None, offline=True)
            return summary
        config.own_addresses.add(source)
        config = replace(config, run_dns=observe_run_dns(config, config.control_sni or "example.org"))
        pending: dict[Future[tuple[datetime, dict[str, Any] | None, str | None]], Target] = {}
        queue = iter(targets)
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="measure")
        try:
            while True:
                while len(pending) < concurrency * 2:
                    upcoming = next(queue, None)
                    if upcoming is None:
                        break
                    pending[pool.submit(_measure_one, upcoming, config)] = upcoming
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    target = pending.pop(future)
                    started, observations, error = future.result()
                    finish(target, started, observations, error, offline=False)
        except (Interrupted, KeyboardInterrupt):
            summary.interrupted = True
            return summary
        finally:
            pool.shutdown(wait=not summary.interrupted, cancel_futures=True)
        summary.offline = summary.measured > 0 and summary.verdicts[Blocking.OFFLINE] == summary.measured
        return summary
    finally:
        progress.finish()
        writer.close()


def format_summary(summary: RunSummary) -> str:
    lines = [f"Measured {summary.measured} of {summary.total} targets; records in {summary.results_path}"]
    if summary.interrupted:
        lines.append("The run was interrupted; every finished record is in the file.")
    if summary.offline:
        lines.append("No network: this machine could not reach any network, so nothing is claimed about any site.")
    counts = ", ".join(f"{verdict}: {count}" for verdict, count in summary.verdicts.most_common())
    if counts:
        lines.append(f"Verdicts: {counts}")
    for item in summary.interceptions:
        catalog = item["catalog_id"] or "not in the catalog"
        how = f" (matched by {item['matched_by'].replace('_', ' ')})" if item["matched_by"] else ""
        lines.append(f"  {item['host']}: {item['blocking']}, issuer {item['issuer']}; {catalog}{how}")
    return "\n".join(lines)
