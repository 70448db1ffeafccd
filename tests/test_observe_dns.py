"""One target's DNS questions on the run's loop, in-process: the resolver is a loopback socket.

The injection probe (a question to the site's own address, where nobody should answer) goes out as
soon as the control's first reply names that address: its listening window runs alongside the
control's, not after it, so that a target's last replies cost one window, not two (issue 21).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dns.message
import dns.rrset

from probe.netx.dns import parse_resolver
from probe.observe.config import MeasureConfig, Visit
from probe.observe.measure import DnsInFlight

SITE = "127.0.0.2"  # where the control says the site is: the injection probe's address (nobody answers)
WINDOW = 1.0


@contextlib.contextmanager
def loopback_resolver() -> Iterator[int]:
    """Answers every A question with SITE and every other with no answer, until the test ends."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, client = server.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            asked = dns.message.from_wire(query)
            response = dns.message.make_response(asked)
            if asked.question[0].rdtype == 1:
                response.answer.append(dns.rrset.from_text(asked.question[0].name, 60, "IN", "A", SITE))
            server.sendto(response.to_wire(), client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


class NoRoots:
    path = ""  # only DoT and DoH verify with it: neither is asked here


def observe_dns(port: int) -> dict[str, Any]:
    spec = parse_resolver(f"udp://127.0.0.1:{port}")
    config = MeasureConfig(timeout=3, roots=NoRoots(), resolver=spec, control_resolver=spec, control_sni=None,  # type: ignore[arg-type]
                           dns_window=WINDOW)  # fmt: skip

    async def scenario() -> dict[str, Any]:
        dns_in_flight = DnsInFlight("site.example", 443, Visit.begin(config, datetime.now(UTC)))
        try:
            return await dns_in_flight.finish()
        finally:
            dns_in_flight.cancel()

    return asyncio.run(scenario())


def test_the_injection_probe_listens_alongside_the_controls_window() -> None:
    with loopback_resolver() as port:
        found = observe_dns(port)
    control, injection = found["control"], found["injection"]
    assert control["addresses"] == [SITE]
    assert injection is not None and injection["address"] == SITE
    assert injection["answers"] == [] and injection["failure"] is None  # nobody answered: as it should be
    first_reply = control["queries"][0]["replies"][0]["t"]
    # Sent while the control's window was still open (before the fix: only after it closed).
    assert injection["t0"] < first_reply + WINDOW / 2
