"""The run's runtime, made and closed by one function (`runtime`): one event loop that every
target's measurement runs on, the run's thread boundary (`threads`) as its executor, the run's
pooled clients and slots (`Pools`: closed on the loop before it is), the lag monitor that sets the
intake, SIGINT and SIGTERM turned into an event the run reads, and glibc's memory tuning.
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

from probe.netx.pools import Pools
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


FILES_PER_LOOKUP = 2  # sockets a getaddrinfo thread may hold (glibc asks A and AAAA)


def open_files_allowed() -> int:
    """How many files the run may hold open: the soft limit raised to the hard one first (a shell's
    1,024 is fewer than a hundred measuring slots' sockets, each target's DNS window holding three).
    A socket the kernel refused would be recorded as the network's failure."""
    try:
        import resource
    except ImportError:  # not on Unix: the platform's own limits
        return 1 << 16
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft if soft != resource.RLIM_INFINITY else 1 << 16


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (declared for Linux and macOS): asyncio's API, with
    its selector, callbacks and timers in C (a tenth less CPU per target: docs/performance.md);
    asyncio's own loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop
    lag: LagMonitor
    pools: Pools  # the run's pooled clients and slots (what measures gets them as MeasureConfig.pools)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # the run's main task has news
    interrupted: bool = False  # SIGINT or SIGTERM came while measuring
    open_files: int = 1 << 16  # files the run's targets may hold open (`open_files_allowed`, less its lookups')

    def _interrupt(self) -> None:
        self.interrupted = True
        self.wake.set()

    def run(self, main: Callable[[Runtime], Coroutine[Any, Any, None]]) -> None:
        """Run the coroutine `main(self)` on the loop, the run's signals caught meanwhile."""
        with _signals_to(self.loop, self._interrupt):
            self.loop.run_until_complete(main(self))


@contextlib.contextmanager
def runtime(concurrency: int, lookups: int | None = None) -> Iterator[Runtime]:
    """The run's loop, threads, pools and lag monitor; everything still running when it closes is
    cancelled, then the pools are closed on the loop, whatever ended the run.
    `lookups`: how many targets' getaddrinfo may be in flight at once (`concurrency` by default)."""
    _few_malloc_arenas()
    loop = new_loop()
    allowed = open_files_allowed()
    # A getaddrinfo thread holds its sockets even once its target has let it go (past its bound, it
    # cannot be stopped): the threads take at most half the files (never fewer than `concurrency`),
    # and the targets' budget is what is left when every one of them holds its own.
    lookups = min(lookups or concurrency, max(concurrency, (allowed - 64) // (2 * FILES_PER_LOOKUP)))
    pool = threads.pool(lookups)
    loop.set_default_executor(pool)
    asyncio.set_event_loop(loop)
    pools = Pools(loop)
    lag = LagMonitor(concurrency)
    try:
        yield Runtime(loop, lag, pools, open_files=allowed - FILES_PER_LOOKUP * lookups)
    finally:
        lag.close()
        try:
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=5))
        finally:
            try:
                loop.run_until_complete(pools.aclose())
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
