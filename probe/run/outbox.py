"""The run's end of the recorder's inbox: slots awaited and frames written without blocking the loop.

A run measures every target on one event loop, and while that loop waits nothing else of the run
happens: not even Ctrl-C, which asyncio hears on the loop. A recorder that stops reading (a disk
that hangs, a stopped process) must then never block it. So:
- At most `slots` items are in the recorder's hands at once (written, their verdicts not yet back).
  On the loop a target awaits a free slot (`slot`), holding its place in the run meanwhile, so that
  a slow recorder slows the run's intake, never its memory; the verdict reader frees slots
  (`freed`) and wakes the loop (`call_soon_threadsafe`) only when a task awaits one.
- Each item is pickled on the loop and written as one frame in `multiprocessing.connection`'s format
  (a 4-byte big-endian length, then the pickle), so that the recorder's `Connection.recv` reads it,
  to a descriptor made non-blocking: what the pipe cannot take now is kept, in order, and written as
  it drains (the loop's `add_writer`). One writer and one buffer: frames never interleave. The
  pickling stays on the loop: a sender thread doing it was measured slower (pickling competed for
  the interpreter's lock). The pipe is made large enough (1 MiB) for the slots' items, as a rule.
- Outside the loop (the offline path, the run's end) the same frames are written by waiting for the
  pipe in the calling thread (`take`, `drain`), where signals are heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import select
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

PIPE_SIZE = 1 << 20  # the pipe's buffer: Linux's default limit for a process without privileges


def _frame_header(size: int) -> bytes:
    """multiprocessing.connection's: a signed 4-byte length, or -1 and an 8-byte one."""
    if size > 0x7FFFFFFF:
        return struct.pack("!i", -1) + struct.pack("!Q", size)
    return struct.pack("!i", size)


class Outbox:
    """The write end of the recorder's inbox, and its slots."""

    def __init__(self, connection: Connection, slots: int) -> None:
        self._connection = connection  # closed here once the recorder has read everything
        self._fd = fd = connection.fileno()
        os.set_blocking(fd, False)
        with contextlib.suppress(ImportError, OSError, AttributeError):  # a smaller pipe only means more waits
            import fcntl  # POSIX: the recorder process is forked on Linux only

            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # a slot freed, for `take`
        self._free = slots
        self._waiters: deque[asyncio.Future[bool]] = deque()  # tasks awaiting a slot, first come first
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_due = False  # a `_grant` is scheduled on the loop already
        self._ended = False  # no slot will be freed again: the recorder is gone
        self._buffer = bytearray()  # frames (or the rest of one) the pipe could not take yet
        self._watched: asyncio.AbstractEventLoop | None = None  # the loop writing the buffer as it drains
        self.broken = False  # the pipe broke (the recorder is gone): nothing more is written

    # --- slots ---------------------------------------------------------------------------------

    def try_take(self) -> bool:
        """A free slot, taken now if there is one and nobody awaits one already."""
        with self._lock:
            if self._free > 0 and not self._waiters and not self._ended:
                self._free -= 1
                return True
            return False

    async def slot(self) -> bool:
        """On the loop: a slot, awaited (True), or False once the recorder is gone. Cancelled while
        it waits, it takes none (one granted meanwhile goes to the next)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._ended:
                return False
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            self._loop = loop
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.freed()
            raise

    def take(self) -> bool:
        """Outside the loop: a slot, waited for in this thread (a signal's handler may raise meanwhile),
        or False once the recorder is gone."""
        with self._room:
            while self._free == 0 and not self._ended:
                self._room.wait()
            if self._ended:
                return False
            self._free -= 1
            return True

    def freed(self) -> None:
        """A slot is free again (a verdict came back, from the reader's thread)."""
        with self._lock:
            self._free += 1
            self._room.notify()
            loop = self._due()
        if loop is not None:
            self._wake(loop)

    def end(self) -> None:
        """The recorder is gone: whoever waits for a slot is told so."""
        with self._lock:
            self._ended = True
            self._room.notify_all()
            loop = self._due()
        if loop is not None:
            self._wake(loop)

    def _due(self) -> asyncio.AbstractEventLoop | None:
        """The loop to wake, if a task awaits a slot and no wake-up is on its way (under the lock)."""
        if not self._waiters or self._wake_due or self._loop is None:
            return None
        self._wake_due = True
        return self._loop

    def _wake(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(self._grant)
        except RuntimeError:  # the loop is closed: its tasks were cancelled, nobody waits
            with self._lock:
                self._wake_due = False

    def _grant(self) -> None:
        """On the loop: free slots to the tasks awaiting them, in order (or the news that none will come)."""
        with self._lock:
            self._wake_due = False
            while self._waiters and (self._free > 0 or self._ended):
                waiter = self._waiters.popleft()
                if waiter.done():  # cancelled meanwhile
                    continue
                if not self._ended:
                    self._free -= 1
                waiter.set_result(not self._ended)

    # --- frames --------------------------------------------------------------------------------

    def put(self, message: object, loop: asyncio.AbstractEventLoop | None) -> None:
        """`message`'s frame, written now or, as the pipe drains, by `loop` (None: by `drain`).
        Raises what pickling raises: then nothing is written."""
        payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        header = _frame_header(len(payload))
        if self.broken:
            return
        if not self._buffer:
            try:
                written = os.writev(self._fd, (header, payload))
            except BlockingIOError:
                written = 0
            except OSError:  # the recorder is gone: its items stay pending, written on taking over
                self.broken = True
                return
            if written == len(header) + len(payload):
                return
            self._buffer += (header + payload)[written:]
        else:
            self._buffer += header
            self._buffer += payload
        if loop is not None and self._watched is None:
            loop.add_writer(self._fd, self._write_some)
            self._watched = loop

    def _write_some(self) -> None:
        """What the pipe takes now of the buffer (the loop's writer, or `drain`)."""
        try:
            written = os.write(self._fd, self._buffer)
        except BlockingIOError:
            return
        except OSError:
            self.broken = True
            self._buffer.clear()
        else:
            del self._buffer[:written]
        if not self._buffer:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._watched is not None:
            if not self._watched.is_closed():
                self._watched.remove_writer(self._fd)
            self._watched = None

    def drain(self, within: float | None) -> bool:
        """Outside the loop: write the buffer, waiting for the pipe in this thread; False if the pipe
        took nothing for `within` seconds (None: no bound) and some is left."""
        self._unwatch()
        poller = select.poll()
        poller.register(self._fd, select.POLLOUT)
        while self._buffer and not self.broken:
            if not poller.poll(None if within is None else int(within * 1000)):
                return False
            self._write_some()
        return not self._buffer

    def let_finish(self, process: BaseProcess, confirmed: Callable[[], int], within: float, stalled: float) -> None:
        """Outside the loop, at the run's end: what the pipe could not take yet is written as the
        recorder (`process`) reads, then its inbox ends (closed here); it is waited for while it makes
        progress (the pipe takes bytes, `confirmed()` grows), `within` seconds at most. Returns when
        it has ended, or made no progress for `stalled` seconds (stopped, stuck): for the run to kill."""
        ends = progressed = time.monotonic()
        ends, seen = ends + within, (-1, -1)
        while process.is_alive():
            now, progress = time.monotonic(), (len(self._buffer), confirmed())
            progressed, seen = (now, progress) if progress != seen else (progressed, seen)
            if now >= ends or now - progressed >= stalled:
                return
            if self._buffer and not self.broken:
                self.drain(0.1)
            else:
                self._connection.close()  # idempotent: the recorder reads to the end, and stops
                process.join(0.1)
