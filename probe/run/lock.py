"""One run at a time: an advisory lock on a file in the results directory.

The kernel holds the lock for the process (`flock`, or `msvcrt.locking` on Windows) and drops it
when the process dies, however it dies: a lock file left by a killed run is stale by construction,
and the next run takes it over, saying whose it was. The file holds the holder's pid and start
time, for the message a second run prints. A `flock` belongs to the open file, not the process: a
forked child holds it too, until it closes its copy; the run's recorder does so at once
(probe/recorder.py), or one outliving a killed run would keep every later run out.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import IO

from probe.vocabulary.errors import ProbeError


class Locked(ProbeError):
    """Another run holds the lock; the message says which."""


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: str | None = None  # what a stale lock file said, when one was taken over
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise Locked(f"another probe run holds {self.path} ({holder}); this run did not start") from None
        handle.seek(0)
        self.previous = handle.read().strip() or None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
                _unlock(self._handle)
            self._handle.close()
            self._handle = None


def holder(path: Path) -> str | None:
    """What the run holding this lock says (`pid N since T`), or None when no run holds it (or
    there is no such file). Never creates the file, and never holds the lock beyond an instant."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            _peek(handle)
        except OSError:
            handle.seek(0)
            return handle.read().strip() or "unknown"
    return None


if sys.platform == "win32":
    import msvcrt

    def _lock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

    def _peek(handle: IO[str]) -> None:
        _lock(handle)
        _unlock(handle)

else:
    import fcntl

    def _lock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _peek(handle: IO[str]) -> None:
        """A shared lock for an instant: it fails while a run holds the lock, and it keeps no run
        from taking it for longer than that instant."""
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
