"""Judging, scrubbing and writing each record, off the measuring path.

Measuring waits on the network, in threads; judging a record (chain verification, catalogs,
fingerprints), scrubbing and encoding it is work for the CPU, and in the run's own process it
competes with every measuring thread for the interpreter's lock: at a hundred targets at once,
judging in the run's thread was what set the pace. So on Linux a run forks one recorder process
before any of its threads starts; it inherits the loaded roots and catalogs and the open results
file, receives each target's observations through a pipe, judges, scrubs, writes and syncs the
record (those waiting together as one group, with one sync), and sends back its verdict for the
summary once it is synced. Where there is no fork (macOS, Windows), or
the recorder cannot start, records are judged in the run's own thread (`InlineRecorder`).

Nothing measured is lost, nothing is written twice. Each item carries its record's `measurement_id`
from the run, which keeps the item until its verdict comes back. If the recorder dies (or cannot
take an item), the run takes over: it cuts a half line the recorder may have left, counts the items
whose records the recorder wrote but did not confirm (found by their ids in the file), and judges
and writes the others, and every later one, itself. Every record takes one path (`record_line`): a
record that JSON cannot carry (an integer beyond 64 bits in a hostile status line or a helper's
answer) is written without its observations, its `error` saying where, and the run goes on. A line
that cannot be written (a full disk) stops the run: the recorder says so and ends, and the run
raises the writer's error.

The recorder keeps nothing of the run's but its inbox, its outbox and the results file (the run's
lock above all is let go), and it does not outlive the run: when the run dies, its inbox ends and
the kernel signals it (PR_SET_PDEATHSIG); it writes what the run had sent, and ends (the process's
own side: probe/run/recorder_process.py).
The run's loop never waits for it (`handed` awaits a slot: probe/run/outbox.py); at the run's end,
one that makes no progress for STALLED seconds (stopped, stuck) is killed, and the run takes over.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import multiprocessing
import os
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from probe.analyze.verdict import AnalysisContext, Judgement, judge_observations
from probe.results.privacy import error_text, scrub, scrubbed_line
from probe.results.record import RunContext, build_record
from probe.results.writer import ResultsWriter, encodable, encode_record, unencodable_place
from probe.run.outbox import Outbox
from probe.run.recorder_process import GROUP, LineOf, open_descriptors, serve
from probe.vocabulary.anomalies import Blocking, Confidence
from probe.vocabulary.observations import Observations
from probe.vocabulary.observations_encode import encode
from probe.vocabulary.targets import Target

IN_FLIGHT = 2 * GROUP  # items sent and not yet confirmed (two of its groups); past it, measuring waits
CLOSE_WAIT = 60.0  # seconds at most for the recorder to finish what it holds when the run ends
STALLED = 5.0  # seconds without progress (nothing read, nothing confirmed) after which it is stuck
_UNKILLABLE = "the recorder process could not be stopped (a disk that hangs?): the records it held are not written"


def _measurement_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Item:
    """One target's outcome, on its way to the results file."""

    target: Target
    started: datetime
    observations: Observations | None
    error: str | None
    offline: bool
    own_addresses: frozenset[str]
    not_measured: str | None = None  # why it was not measured (the run's deadline)
    probe_lag: float | None = None  # how far behind the probe was while measuring it (seconds)
    network_state: dict[str, Any] | None = None  # issue 22: the network's state meanwhile (analyze.network_state)
    measurement_id: str = field(default_factory=_measurement_id)  # its record's: found again, never written twice


@dataclass(frozen=True)
class Verdict:
    """What the run's summary needs of a written record."""

    blocking: Blocking
    confidence: Confidence
    interceptor: dict[str, Any] | None


@dataclass(frozen=True)
class Encoded:
    """An item the run judged and encoded itself (it could not be sent as it was)."""

    line: bytes
    verdict: Verdict


Written = Callable[[Item, Verdict], None]


def record_line(item: Item, run: RunContext, analysis: AnalysisContext) -> tuple[bytes, Verdict]:
    """The record of one item, judged and scrubbed, as its results line: the one path every record
    takes to the file, in the recorder and in the run's thread alike. It never raises."""
    judgement, error = Judgement(blocking=Blocking.INCONCLUSIVE), item.error
    if error is None and item.not_measured is None:
        try:
            judgement = judge_observations(item.target.host, item.observations, item.started, item.offline, analysis)
        except Exception as exc:  # an analysis bug: keep the observations, re-judge them later
            error = error_text(exc)  # module-relative frames: never a local path
    try:
        observations = encode(item.observations) if item.observations is not None else None
    except Exception as exc:  # a bug in encoding: the record says so, without its observations
        observations, error = None, "\n".join(filter(None, [error, f"observations not encodable: {error_text(exc)}"]))
    record = build_record(run, item.target, item.started, observations, judgement, error, item.probe_lag,
                          item.measurement_id)  # fmt: skip
    if item.not_measured is not None:
        record["not_measured"] = item.not_measured
    if item.network_state is not None:  # issue 22
        record["network_state"] = item.network_state
    verdict = Verdict(judgement.blocking, judgement.confidence, judgement.interceptor)
    try:
        return scrubbed_line(record, item.own_addresses), verdict
    except Exception as exc:  # a value JSON cannot carry: an integer beyond 64 bits, a lone surrogate
        return _unencodable(item, run, record, exc)


def _unencodable(item: Item, run: RunContext, record: dict[str, Any], exc: Exception) -> tuple[bytes, Verdict]:
    """The record of a target whose record could not be encoded: why and where, without the
    observations (nothing is claimed without them)."""
    error = (
        f"the record could not be written as JSON: {unencodable_place(record) or error_text(exc)}; "
        "its observations are left out and nothing is judged"
    )
    if record.get("error"):
        error = f"{record['error']}\n{error}"
    judgement = Judgement(blocking=Blocking.INCONCLUSIVE)
    fallback = build_record(run, item.target, item.started, None, judgement, error, None, item.measurement_id)
    if item.not_measured is not None:
        fallback["not_measured"] = item.not_measured
    if item.network_state is not None:  # issue 22
        fallback["network_state"] = item.network_state
    try:
        line = scrubbed_line(fallback, item.own_addresses)
    except Exception:  # then the run's own parts hold it: every value made JSON
        line = encode_record(scrub(encodable(fallback), item.own_addresses))
    return line, Verdict(judgement.blocking, judgement.confidence, None)


class InlineRecorder:
    """Judges and writes each record in the calling thread."""

    def __init__(self, run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> None:
        self.run, self.analysis, self.writer = run, analysis, writer
        self._written = written
        self._lock = threading.Lock()

    def submit(self, item: Item) -> None:
        """Raises the writer's error when the line cannot be written (a full disk): the run stops."""
        line, verdict = record_line(item, self.run, self.analysis)
        with self._lock:
            self.writer.write_line(line)
            self._written(item, verdict)

    def found(self, item: Item, record: dict[str, Any]) -> None:
        """An item whose record is in the file already (a recorder wrote it and died): counted."""
        verdict = Verdict(Blocking(record["blocking"]), Confidence(record["confidence"]), record.get("interceptor"))
        with self._lock:
            self._written(item, verdict)

    async def handed(self, item: Item) -> None:
        """On the run's loop: judged and written here (where there is no recorder process)."""
        self.submit(item)

    def close(self) -> None:
        return


def _line_of(run: RunContext, analysis: AnalysisContext) -> LineOf:
    """What the recorder process makes of each item it receives: its line and verdict."""

    def line_of(item: Item | Encoded) -> tuple[bytes, Verdict]:
        return (item.line, item.verdict) if isinstance(item, Encoded) else record_line(item, run, analysis)

    return line_of


class ProcessRecorder:
    """Judges and writes records in a forked recorder process; falls back to the run's thread."""

    def __init__(self, run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> None:
        self._inline = InlineRecorder(run, analysis, writer, written)
        self._pending: dict[int, Item] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._confirmed = 0  # verdicts back: the recorder's progress
        self._gone = threading.Event()
        self._taken_over = False
        inherited = open_descriptors()  # the run's lock among them
        context = multiprocessing.get_context("fork")
        inbox, self._send = context.Pipe(duplex=False)
        self._receive, outbox = context.Pipe(duplex=False)
        inherited += [self._send.fileno(), self._receive.fileno()]  # the run's ends of both pipes
        self._process = context.Process(
            target=serve,
            args=(inbox, outbox, _line_of(run, analysis), writer, inherited, os.getpid()),
            name="probe-recorder",
            daemon=True,
        )
        self._process.start()
        inbox.close()
        outbox.close()
        self._outbox = Outbox(self._send, IN_FLIGHT)  # the only writer of the inbox
        self._reader = threading.Thread(target=self._read, name="recorder-verdicts", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                key, answer = self._receive.recv()
            except (EOFError, OSError):
                break
            if isinstance(answer, OSError):  # the line could not be written: the run stops
                self._inline.writer.failure = answer
                continue
            with self._lock:
                item = self._pending.pop(key)
                self._inline._written(item, answer)
                self._confirmed += 1
            self._outbox.freed()
        self._gone.set()
        self._outbox.end()  # whoever waits for a slot that will never come back is told

    def _register(self, item: Item) -> int | None:
        """The item kept until its verdict is back, under its key; None once the recorder is gone
        (the run has written the item itself)."""
        if self._gone.is_set():
            self._take_over()
            self._inline.submit(item)
            return None
        with self._lock:
            key = next(self._keys)
            self._pending[key] = item
        return key

    def _put(self, key: int, item: Item, loop: asyncio.AbstractEventLoop | None) -> None:
        """The item to the recorder, in the slot taken for it."""
        try:
            self._outbox.put((key, item), loop)
        except Exception:  # the item cannot be sent as it is (it would not pickle): encoded here
            try:
                self._outbox.put((key, Encoded(*record_line(item, self._inline.run, self._inline.analysis))), loop)
            except Exception:  # it stays pending, written on taking over; its slot is free again
                self._outbox.freed()

    async def handed(self, item: Item) -> None:
        """On the run's loop: a slot awaited, never the recorder; a task cancelled meanwhile (an
        interruption) leaves its item pending, written on closing. Raises as `submit` does."""
        key = self._register(item)
        if key is not None and (self._outbox.try_take() or await self._outbox.slot()):
            self._put(key, item, asyncio.get_running_loop())
        elif key is not None:  # the recorder went away meanwhile: the item is written on taking over
            self._take_over()

    def submit(self, item: Item) -> None:
        """Outside the loop (the offline path): the slot and the pipe waited for in this thread. Raises
        the writer's error once a line could not be written (a full disk): the run stops."""
        key = self._register(item)
        if key is not None and self._outbox.take():
            self._put(key, item, None)
            self._outbox.drain(None)
        elif key is not None:
            self._take_over()

    def _take_over(self) -> None:
        """The recorder is gone (or must go): the run writes from now on, first what it had handed
        over and not seen confirmed, but for the records the recorder wrote before it died. Raises
        the writer's error once a line could not be written (a full disk): the run stops."""
        if self._taken_over:
            return
        self._taken_over = True
        self._process.join(CLOSE_WAIT)
        if self._process.is_alive():  # stuck: it must write nothing once the run does
            self._process.kill()
            self._process.join(CLOSE_WAIT)
        writer = self._inline.writer
        if self._process.is_alive():  # unkillable: in the kernel, on a disk that hangs; nor can the run write
            writer.failure = writer.failure or OSError(errno.EIO, _UNKILLABLE)
        else:
            self._reader.join()  # it ends with the recorder's outbox
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        if writer.failure is not None:
            raise writer.failure  # nothing more can be written: the run stops
        writer.cut_partial_line()  # a recorder killed mid-line
        found = writer.records_among({item.measurement_id for item in left})
        if found:  # written by the recorder, perhaps not yet synced (it died between): on the disk first
            writer.sync()
        for item in left:
            record = found.get(item.measurement_id)
            if record is not None:
                self._inline.found(item, record)
            else:
                self._inline.submit(item)

    def close(self) -> None:
        """Let the recorder finish what it holds, then write here whatever it did not confirm. A line
        that could not be written is the writer's `failure`, for the run to raise."""
        if self._send.closed:
            return
        try:
            self._outbox.let_finish(self._process, lambda: self._confirmed, CLOSE_WAIT, STALLED)
        finally:  # a second Ctrl-C cuts the wait short: the run takes over all the same
            self._send.close()
            if self._process.is_alive():  # stuck: it must write nothing once the run does
                self._process.kill()
            try:
                self._take_over()
            except OSError as exc:
                self._inline.writer.failure = self._inline.writer.failure or exc


Recorder = InlineRecorder | ProcessRecorder


def start_recorder(run: RunContext, analysis: AnalysisContext, writer: ResultsWriter, written: Written) -> Recorder:
    """A recorder process on Linux (forked now, before the run's threads start), else inline."""
    if sys.platform == "linux" and threading.active_count() == 1:
        try:
            return ProcessRecorder(run, analysis, writer, written)
        except OSError:
            pass
    return InlineRecorder(run, analysis, writer, written)
