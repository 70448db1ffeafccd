"""One target's DNS questions on the run's loop, in-process: the resolver is a loopback socket.

The injection probe (a question to the site's own address, where nobody should answer) goes out as
soon as the control's first reply names that address: its listening window runs alongside the
control's, not after it, so that a target's last replies cost one window, not two (issue 21).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dns.message
import dns.rrset
import jsonschema
import msgspec

from probe.netx.dns import _reply_fields, parse_resolver
from probe.observe.config import MeasureConfig, Visit
from probe.observe.dnsflight import DnsInFlight
from probe.observe.measure import observe_run_dns
from probe.results.record import load_schema
from probe.vocabulary.observations import DnsObservations, Observations
from probe.vocabulary.observations_codec import decode, encode

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


def _config(port: int, **more: Any) -> MeasureConfig:
    spec = parse_resolver(f"udp://127.0.0.1:{port}")
    return MeasureConfig(timeout=3, roots=NoRoots(), resolver=spec, control_resolver=spec, control_sni=None,  # type: ignore[arg-type]
                         dns_window=WINDOW, **more)  # fmt: skip


def observe_dns(config: MeasureConfig) -> DnsObservations:
    async def scenario() -> DnsObservations:
        dns_in_flight = DnsInFlight("site.example", 443, Visit.begin(config, datetime.now(UTC)))
        try:
            return await dns_in_flight.finish()
        finally:
            dns_in_flight.cancel()

    return asyncio.run(scenario())


def test_the_injection_probe_listens_alongside_the_controls_window() -> None:
    with loopback_resolver() as port:
        found = observe_dns(_config(port))
    control, injection = found.control, found.injection
    assert control is not None and control.addresses == (SITE,)
    assert injection is not None and injection.address == SITE
    assert injection.answers == () and injection.failure is None  # nobody answered: as it should be
    first_reply = control.queries[0].replies[0].t
    # Sent while the control's window was still open (before the fix: only after it closed).
    assert injection.t0 < first_reply + WINDOW / 2


def test_the_dns_observations_made_encode_to_the_records_shape_and_decode_back() -> None:
    """What the measuring side builds is the record's `dns` as the schema describes it, and reads
    back equal: the injection probe names where it went, the run's own facts fill the last two."""
    with loopback_resolver() as port:
        config = _config(port, control_plain=parse_resolver(f"udp://127.0.0.1:{port}"))
        found = observe_dns(config)
        run = asyncio.run(observe_run_dns(config, "baseline.example"))
    assert run.control_identity is not None and run.resolver_baseline is not None
    dns = msgspec.structs.replace(found, control_identity=run.control_identity,
                                  resolver_baseline=run.resolver_baseline)  # fmt: skip
    assert dns.system.addresses == (SITE,) and dns.control_plain is not None and dns.injection is not None
    assert (dns.injection.address, dns.injection.port) == (SITE, 53)
    for lookup in dns.lookups("system", "control", "control_plain"):  # each reply read once, as its bytes say
        for query in lookup.queries:
            for reply in query.replies:
                assert reply.raw_reply is not None
                said = _reply_fields(base64.b64decode(reply.raw_reply))
                assert (reply.rcode, reply.answers, reply.failure) == (said.rcode, said.answers, said.failure)
    observations = Observations(dns=dns, tcp_connect=(), tls_handshakes=(), http_requests=(), addresses_from="system")
    written = json.loads(json.dumps(encode(observations)))
    schema = load_schema()
    dns_schema = schema["properties"]["observations"]["oneOf"][1]["properties"]["dns"]
    jsonschema.Draft202012Validator({"$defs": schema["$defs"], **dns_schema}).validate(written["dns"])
    assert written["dns"]["injection"]["address"] == SITE and written["dns"]["injection"]["port"] == 53
    assert decode(written).dns == dns
