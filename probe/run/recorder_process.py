"""The recorder process's own side (probe/run/recorder.py forks it): items in, records written in
groups with one sync each, verdicts out; and how it lets go of the run's descriptors and dies with
the run."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from probe.results.writer import ResultsWriter

GROUP = 32  # records written with one sync at most: half of what the run may have in flight (IN_FLIGHT)
GROUP_SECONDS = 0.5  # a group takes no more once judging it has taken this long
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
    are written as one group, with one sync, and confirmed once it is done. A line that cannot be
    written (a full disk: each of the group's lines is then tried alone) is answered with the
    writer's error, as is every later one of its group, and the recorder ends: the run stops."""
    _detach(inherited, {inbox.fileno(), outbox.fileno(), writer.fileno()}, parent)
    write_groups(inbox, outbox, line_of, writer)


def write_groups(inbox: Connection, outbox: Connection, line_of: LineOf, writer: ResultsWriter) -> None:
    """`serve`'s work, in groups, until the run says stop or goes away, or a line cannot be written."""
    while True:
        keys, lines, verdicts, ended = _next_group(inbox, line_of)
        if keys:
            written = writer.write_group(lines)  # as many as fit (all, but on a full disk)
            failure = writer.failure
            answers = verdicts[:written] + [failure] * (len(keys) - written)
            with contextlib.suppress(OSError):  # the run is gone: what it sent is written all the same
                for key, answer in zip(keys, answers, strict=True):
                    outbox.send((key, answer))
            if written < len(keys):
                return
        if ended:
            return


def _next_group(inbox: Connection, line_of: LineOf) -> tuple[list[int], list[bytes], list[Any], bool]:
    """The next item and those already waiting behind it, each made its line as it is read (GROUP
    at most, and no more once GROUP_SECONDS have passed: the run counts confirmations as the
    recorder's progress); and whether the run said stop (None) or went away (the inbox ended, or
    broke mid-message: the run takes over)."""
    keys: list[int] = []
    lines: list[bytes] = []
    verdicts: list[Any] = []
    began = time.monotonic()
    while len(keys) < GROUP and time.monotonic() - began < GROUP_SECONDS:
        try:
            if keys and not inbox.poll():
                break
            message = inbox.recv()
        except Exception:
            return keys, lines, verdicts, True
        if message is None:
            return keys, lines, verdicts, True
        key, item = message
        line, verdict = line_of(item)
        keys.append(key)
        lines.append(line)
        verdicts.append(verdict)
    return keys, lines, verdicts, False


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
