"""Judging, scrubbing and writing each record, off the measuring path.

Measuring waits on the network, in threads; judging a record (chain verification, catalogs,
fingerprints), scrubbing and encoding it is work for the CPU, and in the run's own process it
competes with every measuring thread for the interpreter's lock: at a hundred targets at once,
judging in the run's thread was what set the pace. So on Linux a run forks one recorder process
before any of its threads starts; it inherits the loaded roots and catalogs and the open results
file, receives each target's observations through a pipe, judges, scrubs, writes and syncs the
record, and sends back its verdict for the summary. Where there is no fork (macOS, Windows), or
the recorder cannot start, records are judged in the run's own thread (`InlineRecorder`).

Nothing measured is lost: the run keeps each item until its verdict comes back; if the recorder
dies (or cannot take an item), the run judges and writes what it had not confirmed itself.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from probe.analyze.verdict import AnalysisContext, Judgement, judge
from probe.results.privacy import scrubbed_line
from probe.results.record import RunContext, build_record
from probe.results.writer import ResultsWriter
from probe.targets import Target
from probe.vocabulary.anomalies import Blocking, Confidence

IN_FLIGHT = 64  # items sent to the recorder and not yet confirmed; past it, measuring waits
CLOSE_WAIT = 60.0  # seconds for the recorder to finish what it holds when the run ends


@dataclass(frozen=True)
class Item:
    """One target's outcome, on its way to the results file."""

    target: Target
    started: datetime
    observations: dict[str, Any] | None
    error: str | None
    offline: bool
    own_addresses: frozenset[str]
    not_measured: str | None = None  # why it was not measured (the run's deadline)


@dataclass(frozen=True)
class Verdict:
    """What the run's summary needs of a written record."""

    blocking: Blocking
    confidence: Confidence
    interceptor: dict[str, Any] | None


Written = Callable[[Item, Verdict], None]


def record_line(item: Item, run: RunContext, analysis: AnalysisContext) -> tuple[bytes, Verdict]:
    """The record of one item, judged and scrubbed, as its results line."""
    judgement, error = Judgement(blocking=Blocking.INCONCLUSIVE), item.error
    if error is None and item.not_measured is None:
        try:
            judgement = judge({"host": item.target.host}, item.observations, item.started, item.offline, analysis)
        except Exception:  # an analysis bug: keep the observations, re-judge them later
            error = traceback.format_exc(limit=3)[-1000:]
    record = build_record(run, item.target, item.started, item.observations, judgement, error)
    if item.not_measured is not None:
        record["not_measured"] = item.not_measured
    verdict = Verdict(judgement.blocking, judgement.confidence, judgement.interceptor)
    return scrubbed_line(record, item.own_addresses), verdict


class InlineRecorder:
    """Judges and writes each record in the calling thread."""

    def __init__(self, run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> None:
        self.run, self.analysis, self.writer = run, analysis, writer
        self._written = written
        self._lock = threading.Lock()

    def submit(self, item: Item) -> None:
        line, verdict = record_line(item, self.run, self.analysis)
        with self._lock:
            self.writer.write_line(line)
            self._written(item, verdict)

    def close(self) -> None:
        return


def _serve(
    inbox: Connection, outbox: Connection, run: RunContext, analysis: AnalysisContext, writer: ResultsWriter
) -> None:
    """The recorder process: items in, records written, verdicts out, until the run says stop (None)
    or goes away. A signal to the run's process group is the run's to handle, not the recorder's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key, item = message
        line, verdict = record_line(item, run, analysis)
        writer.write_line(line)  # a write error ends the recorder: the run then writes, and reports it
        outbox.send((key, verdict))


class ProcessRecorder:
    """Judges and writes records in a forked recorder process; falls back to the run's thread."""

    def __init__(self, run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> None:
        self._inline = InlineRecorder(run, analysis, writer, written)
        self._pending: dict[int, Item] = {}
        self._keys = itertools.count()
        self._slots = threading.BoundedSemaphore(IN_FLIGHT)
        self._lock = threading.Lock()
        self._gone = threading.Event()
        context = multiprocessing.get_context("fork")
        inbox, self._send = context.Pipe(duplex=False)
        self._receive, outbox = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve, args=(inbox, outbox, run, analysis, writer), name="probe-recorder", daemon=True
        )
        self._process.start()
        inbox.close()
        outbox.close()
        self._reader = threading.Thread(target=self._read, name="recorder-verdicts", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                key, verdict = self._receive.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                item = self._pending.pop(key)
                self._inline._written(item, verdict)
            self._slots.release()
        self._gone.set()
        for _ in range(IN_FLIGHT):  # wake a submitter waiting for a slot that will never come back
            with contextlib.suppress(ValueError):
                self._slots.release()

    def submit(self, item: Item) -> None:
        if not self._gone.is_set():
            self._slots.acquire()
        if self._gone.is_set():
            self._inline.submit(item)
            return
        with self._lock:
            key = next(self._keys)
            self._pending[key] = item
        try:
            self._send.send((key, item))
        except Exception:  # the recorder is gone, or the item cannot be sent: write it here
            with self._lock:
                self._pending.pop(key, None)
            self._inline.submit(item)

    def close(self) -> None:
        """Let the recorder finish what it holds, then write here whatever it did not confirm."""
        if self._send.closed:
            return
        with contextlib.suppress(OSError):
            self._send.send(None)
        self._process.join(CLOSE_WAIT)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._reader.join(CLOSE_WAIT)
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        for item in left:
            self._inline.submit(item)
        self._send.close()


Recorder = InlineRecorder | ProcessRecorder


def start_recorder(run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> Recorder:
    """A recorder process on Linux (forked now, before the run's threads start), else inline."""
    if sys.platform == "linux" and threading.active_count() == 1:
        try:
            return ProcessRecorder(run, analysis, writer, written)
        except OSError:
            pass
    return InlineRecorder(run, analysis, writer, written)
