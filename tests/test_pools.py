"""What a run pools (issue 21, "one runtime"): the DoH clients, the helpers' clients and the
throughput slot are one object (`netx.pools.Pools`) that the run's runtime makes and closes with its
loop, handed to what measures; no module keeps a pool of its own."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import types
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from probe.netx import dnsloop
from probe.netx import pools as pools_module
from probe.netx.clock import Clock
from probe.netx.dns import parse_resolver
from probe.netx.pools import Pools
from probe.observe import helperclient, throughput
from probe.observe.config import MeasureConfig, Visit
from probe.run import runtime as runtime_module
from probe.run.runtime import Runtime, runtime
from tests.conftest import PkiFixture
from tests.dnsmasq import free_udp_port

WAIT = 10.0  # seconds at most for the helper to see a closed connection close (a bound, not a goal)


class _Helper(http.server.ThreadingHTTPServer):
    """A helper that refuses every question on a kept connection, and counts the connections that ended."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Refusing)
        self.opened = self.ended = 0
        self.changed = threading.Condition()

    def count(self, opened: int = 0, ended: int = 0) -> None:
        with self.changed:
            self.opened, self.ended = self.opened + opened, self.ended + ended
            self.changed.notify_all()

    def all_ended(self) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.opened > 0 and self.ended == self.opened, timeout=WAIT)


class _Refusing(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections are kept between questions
    server: _Helper

    def setup(self) -> None:
        super().setup()
        self.server.count(opened=1)

    def finish(self) -> None:
        super().finish()
        self.server.count(ended=1)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"error": "not a public address"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def helper() -> Iterator[_Helper]:
    server = _Helper()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _config(pools: Pools | None) -> MeasureConfig:
    return MeasureConfig(timeout=1, roots=None, resolver=None, control_resolver=None, control_sni=None,  # type: ignore[arg-type]
                         pools=pools)  # fmt: skip


def test_no_module_keeps_a_pool() -> None:
    """The modules that pool something keep nothing of a run at module level: no dict of clients
    keyed by loop, no semaphore per loop, no session per thread."""
    kept = (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary, threading.local)
    found = [
        f"{module.__name__}.{name}"
        for module in (dnsloop, helperclient, throughput, runtime_module, pools_module)
        for name, value in vars(module).items()
        if not name.startswith("__") and isinstance(value, kept) and not isinstance(value, types.ModuleType)
    ]
    assert found == []


def _measure_with(rt: Runtime, helper: _Helper, roots: Path) -> tuple[list[object], list[asyncio.Semaphore]]:
    """Ask the helper twice and a DoH resolver (at a closed port) once on the run's pools; the
    clients and the throughput slot they held."""
    helper_url = f"http://127.0.0.1:{helper.server_address[1]}/"
    doh = parse_resolver(f"https://127.0.0.1:{free_udp_port()}/dns-query")
    seen: list[object] = []
    slots: list[asyncio.Semaphore] = []

    async def main(rt: Runtime) -> None:
        for n in range(2):
            answer, _ = await helperclient.ask_helper(helper_url, f"https://10.0.0.{n}/", None, 2, str(roots), Clock(),
                                                      rt.pools)  # fmt: skip
            assert (answer.status, answer.failure) == (403, "helper_refused: HTTP 403: not a public address")
        query = await dnsloop.query_stream(doh, "site.example", "A", 2, str(roots), Clock(), pools=rt.pools)
        assert query.failure is not None  # refused, on the pooled client, which stays for the run
        seen.extend([helperclient._client(helper_url, str(roots), rt.pools), dnsloop._doh_client(str(roots), rt.pools)])
        for _ in range(2):  # one slot for the run, whichever target asks
            slots.append(throughput._slot(Visit.begin(_config(rt.pools), datetime.now(UTC))))
        assert len(rt.pools) == 2  # one client per helper, one DoH client per roots file

    rt.run(main)
    return seen, slots


def test_each_run_closes_its_own_clients(helper: _Helper, test_pki: PkiFixture) -> None:
    """Two runs in a row, each on its own loop: each pools its own clients and slot, and closes
    them (and the helper's kept connection) when its runtime ends."""
    runs = []
    for _ in range(2):
        with runtime(2) as rt:
            clients, slots = _measure_with(rt, helper, test_pki.roots_pem)
            assert not any(client.is_closed for client in clients)  # type: ignore[attr-defined]
        runs.append((rt.pools, clients, slots))
        assert rt.pools.closed and len(rt.pools) == 0
        assert all(client.is_closed for client in clients)  # type: ignore[attr-defined]
        assert helper.all_ended(), f"{helper.opened} connections to the helper, {helper.ended} closed"
        assert slots[0] is slots[1]
    (first, clients1, slots1), (second, clients2, slots2) = runs
    assert first is not second and not set(map(id, clients1)) & set(map(id, clients2)) and slots1[0] is not slots2[0]
    assert helper.opened == 2  # one kept connection a run, both questions on it


def test_the_pools_close_when_the_run_fails(test_pki: PkiFixture) -> None:
    doh = parse_resolver(f"https://127.0.0.1:{free_udp_port()}/dns-query")
    made = []

    async def failing(rt: Runtime) -> None:
        await dnsloop.query_stream(doh, "site.example", "A", 2, str(test_pki.roots_pem), Clock(), pools=rt.pools)
        made.append(dnsloop._doh_client(str(test_pki.roots_pem), rt.pools))
        raise RuntimeError("a bug in the run")

    with pytest.raises(RuntimeError, match="a bug in the run"), runtime(2) as rt:
        rt.run(failing)
    assert rt.pools.closed and len(rt.pools) == 0
    assert made and made[0].is_closed


def test_nothing_pooled_without_the_runs_pools() -> None:
    """Outside a run, asking for something pooled without pools is a caller's bug, said as such:
    never an observation of the network, never a client made on the side."""
    doh = parse_resolver(f"https://127.0.0.1:{free_udp_port()}/dns-query")
    with pytest.raises(RuntimeError, match="DNS over HTTPS needs the run's pools"):
        asyncio.run(dnsloop.query_stream(doh, "site.example", "A", 1, "", Clock(), pools=None))

    async def slot() -> asyncio.Semaphore:
        return throughput._slot(Visit.begin(_config(None), datetime.now(UTC)))

    with pytest.raises(RuntimeError, match="throughput flows needs the run's pools"):
        asyncio.run(slot())


def test_pools_are_one_loops_and_end_closed() -> None:
    pools = Pools()

    async def slot() -> asyncio.Semaphore:
        return pools.semaphore("throughput", 1)

    first = asyncio.run(slot())
    with pytest.raises(RuntimeError, match="on the run's event loop only"):
        asyncio.run(slot())  # a semaphore (or a client) of one loop is no use on another

    async def closed() -> None:
        async with Pools() as short_lived:
            assert short_lived.semaphore("throughput", 1) is short_lived.semaphore("throughput", 1)
        short_lived.semaphore("throughput", 1)

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(closed())
    assert first is not None
