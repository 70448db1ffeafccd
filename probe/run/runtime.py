"""The run's runtime, made and closed by one function (`runtime`): one event loop that every
target's measurement runs on, the run's thread boundary (`threads`) as its executor, the lag monitor
that sets the intake, SIGINT and SIGTERM turned into an event the run reads, and glibc's memory
tuning.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import platform
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from probe.netx.dnsloop import close_clients
from probe.observe.helperclient import close_clients as close_helper_clients
from probe.run import threads
from probe.run.lag import LagMonitor

M_ARENA_MAX = -8  # glibc's malloc.h
TRIM_EVERY = 500  # records between handing glibc's free memory back


def _glibc() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _glibc()


def trim_memory() -> None:
    """Hand glibc's free memory back to the system (every TRIM_EVERY records): short-lived buffers
    otherwise leave a run's memory growing with its length."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _few_malloc_arenas() -> None:
    """glibc gives threads malloc arenas of their own (up to eight per core); two hold a run of
    10,000 targets under 150 MB at no measured cost in speed (docs/performance.md). Set before the
    run's threads start; nothing elsewhere (no glibc, no mallopt)."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.mallopt(M_ARENA_MAX, 2)


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop
    lag: LagMonitor
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the run's main task has news
    interrupted: bool = False  # SIGINT or SIGTERM came while measuring

    def _interrupt(self) -> None:
        self.interrupted = True
        self.wake.set()

    def run(self, main: Callable[[Runtime], Coroutine[Any, Any, None]]) -> None:
        """Run the coroutine `main(self)` on the loop, the run's signals caught meanwhile."""
        with _signals_to(self.loop, self._interrupt):
            self.loop.run_until_complete(main(self))


@contextlib.contextmanager
def runtime(concurrency: int) -> Iterator[Runtime]:
    """The run's loop, threads and lag monitor; everything still running when it closes is cancelled."""
    _few_malloc_arenas()
    loop = asyncio.new_event_loop()
    pool = threads.pool(concurrency)
    loop.set_default_executor(pool)
    asyncio.set_event_loop(loop)
    lag = LagMonitor(concurrency)
    try:
        yield Runtime(loop, lag)
    finally:
        lag.close()
        try:
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=5))
            loop.run_until_complete(close_clients())
            loop.run_until_complete(close_helper_clients())
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a getaddrinfo that never returns is not waited for
            asyncio.set_event_loop(None)
            loop.close()


@contextlib.contextmanager
def _signals_to(loop: asyncio.AbstractEventLoop, then: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call `then` on the loop while the run measures; the handlers before are
    put back after (the command's own, which raise `Interrupted`)."""
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in wanted}
    installed = []
    try:
        for sig in wanted:
            loop.add_signal_handler(sig, then)
            installed.append(sig)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such signals
        pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous[sig])
