"""The recorder process's own side (probe/run/recorder.py forks it): items in, records written in
groups with one sync each, verdicts out; and how it lets go of the run's descriptors and dies with
the run."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from probe.results.writer import ResultsWriter

GROUP = 64  # records written with one sync at most: as many as the run may have in flight (IN_FLIGHT)
ORPHANED_WAIT = 30  # seconds a recorder whose run died has to write what the run had sent it
PR_SET_PDEATHSIG = 1  # linux/prctl.h

LineOf = Callable[[Any], tuple[bytes, Any]]  # an item received: its results line, and its verdict


def serve(
    inbox: Connection,
    outbox: Connection,
    line_of: LineOf,
    writer: ResultsWriter,
    inherited: list[int],
    parent: int,
) -> None:
    """The recorder process: items in, records written, verdicts out, until the run says stop (None)
    or goes away (the inbox ends once everything the run sent is read). The items already waiting
    are written as one group, with one sync, and confirmed once it is done. A group that cannot be
    written is answered with the writer's error, and the recorder ends: the run stops."""
    _detach(inherited, {inbox.fileno(), outbox.fileno(), writer.fileno()}, parent)
    write_groups(inbox, outbox, line_of, writer)


def write_groups(inbox: Connection, outbox: Connection, line_of: LineOf, writer: ResultsWriter) -> None:
    """`serve`'s work, in groups, until the run says stop or goes away, or a group fails."""
    while True:
        group, ended = _next_group(inbox)
        if group:
            lines, verdicts = [], []
            for _, item in group:
                line, verdict = line_of(item)
                lines.append(line)
                verdicts.append(verdict)
            answers: list[Any] | list[OSError]
            try:
                writer.write_lines(lines)
                answers = verdicts
            except OSError as exc:
                answers = [writer.failure or exc] * len(group)
            with contextlib.suppress(OSError):  # the run is gone: what it sent is written all the same
                for (key, _), answer in zip(group, answers, strict=True):
                    outbox.send((key, answer))
            if isinstance(answers[0], OSError):
                return
        if ended:
            return


def _next_group(inbox: Connection) -> tuple[list[tuple[int, Any]], bool]:
    """The next item and those already waiting behind it (GROUP at most), and whether the run said
    stop (None) or went away (the inbox ended, or broke mid-message: the run takes over)."""
    group: list[tuple[int, Any]] = []
    while len(group) < GROUP:
        try:
            if group and not inbox.poll():
                break
            message = inbox.recv()
        except Exception:
            return group, True
        if message is None:
            return group, True
        group.append(message)
    return group, False


def _detach(inherited: list[int], keep: set[int], parent: int) -> None:
    """Let go of every descriptor the run had open at the fork but `keep`, and die with the run.

    A recorder that outlived a killed run held its lock (every later run exited "locked" until a
    reboot) and the run's end of its own inbox (so that the inbox never ended). Each is pointed at
    /dev/null rather than closed: its number cannot then be reused under an object that still thinks
    it owns it. A signal to the run's process group is the run's to handle, not the recorder's; but
    SIGTERM once the run is gone (the kernel sends it, PR_SET_PDEATHSIG) leaves the recorder
    ORPHANED_WAIT seconds to write what the run had sent before SIGALRM ends it."""
    null = os.open(os.devnull, os.O_RDWR)
    for descriptor in inherited:
        if descriptor > 2 and descriptor not in keep and descriptor != null:
            with contextlib.suppress(OSError):
                os.dup2(null, descriptor, inheritable=False)
    os.close(null)

    def orphaned(signum: int, frame: Any) -> None:
        if os.getppid() != parent:
            signal.alarm(ORPHANED_WAIT)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, orphaned)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    orphaned(signal.SIGTERM, None)  # the run may have died before the kernel was asked


def open_descriptors() -> list[int]:
    """The descriptors open in this process (Linux: /proc/self/fd, less the listing's own)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            os.fstat(int(name))
            found.append(int(name))
    return found
