"""The run's one thread boundary: what blocks, and only that, runs in these threads.

Everything a run measures is a coroutine on its event loop (`probe.run.runtime`), the helpers'
questions included (`probe.observe.helperclient`), but for three things that block and have no
asynchronous form:
- getaddrinfo, as every program on the machine resolves (`netx.dnsloop.lookup_system` runs it here,
  the loop's default executor);
- the TTL sweep of packet forensics (`probe.forensics.locate`: raw sockets and waits, seconds long);
- the packet capture's reader (`probe.forensics.capture`), a long-lived thread of its own, started by
  the run after its recorder is forked.
Nothing else in a run starts a thread or hands work to one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
MIN_WORKERS = 16


def pool(concurrency: int) -> ThreadPoolExecutor:
    """The run's blocking calls' threads, made on demand (none before the first call): enough that a
    getaddrinfo for every target on the critical path, and as many abandoned ones (a name whose DNS is
    dropped keeps its thread until glibc gives up), run at once: a lookup that waited for a thread
    would be recorded as the network's timeout."""
    return ThreadPoolExecutor(max_workers=max(MIN_WORKERS, 2 * concurrency), thread_name_prefix="blocking")


async def blocking(function: Callable[[], T]) -> T:
    """`function()` in the run's threads (the loop's default executor), awaited."""
    return await asyncio.get_running_loop().run_in_executor(None, function)
