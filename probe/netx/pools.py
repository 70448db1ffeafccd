"""What a run pools (`Pools`): its long-lived clients and semaphores, in one object the run owns.

The run's runtime (`probe/run/runtime.py`) makes it with the run's event loop and closes it on that
loop before the loop closes; what measures gets it from the run (`MeasureConfig.pools`), never from
a module. What is pooled, and how, is its user's business: one DoH client per roots file
(`netx.dnsloop`), one client per helper on a few connections (`observe.helperclient`), the run's one
throughput slot (`observe.throughput`). A caller outside a run (a test, a one-off question) makes a
`Pools` of its own and closes it at its end: `async with Pools() as pools: ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Protocol, TypeVar, cast

CLOSE_SECONDS = 5.0  # closing every pooled client (a peer that never acknowledges is not waited for)


class Closing(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=Closing)


class Pools:
    """A run's pooled clients and semaphores, each made on first use (by key) and kept for the run.

    Bound to one event loop (the one given, or the first it is used on) and closed once: a client made on one loop is
    of no use on another, and nothing is pooled after the run."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._clients: dict[Hashable, Closing] = {}
        self._semaphores: dict[Hashable, asyncio.Semaphore] = {}
        self.closed = False

    def _usable(self) -> None:
        loop = asyncio.get_running_loop()
        if self.closed:
            raise RuntimeError("the run's pools are closed: nothing is pooled after the run")
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("a run's pools are used on the run's event loop only")

    def client(self, key: Hashable, make: Callable[[], C]) -> C:
        """The client pooled under `key`, made by `make` on first use."""
        self._usable()
        found = self._clients.get(key)
        if found is None:
            found = self._clients[key] = make()
        return cast(C, found)

    def semaphore(self, key: Hashable, value: int) -> asyncio.Semaphore:
        """The semaphore kept under `key` (of `value` places, from its first use)."""
        self._usable()
        found = self._semaphores.get(key)
        if found is None:
            found = self._semaphores[key] = asyncio.Semaphore(value)
        return found

    def __len__(self) -> int:
        """How many clients are open."""
        return len(self._clients)

    async def aclose(self) -> None:
        """Every pooled client closed (on the loop it was made on); the pools unusable after."""
        self.closed = True
        clients = list(self._clients.values())
        self._clients.clear()
        self._semaphores.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                for client in clients:
                    with contextlib.suppress(Exception):  # closing only
                        await client.aclose()

    async def __aenter__(self) -> Pools:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def needed(pools: Pools | None, what: str) -> Pools:
    """`pools`, or a clear error naming `what` needed them (never a pool made on the side). Pools
    missing, closed or on another loop is a bug (a RuntimeError), never an observation."""
    if pools is None:
        raise RuntimeError(f"{what} needs the run's pools (probe/netx/pools.py): a run's runtime hands them in, "
                      "a caller outside a run makes a Pools of its own and closes it")  # fmt: skip
    return pools
