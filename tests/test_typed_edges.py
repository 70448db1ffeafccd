"""The measuring code builds its observations typed (issue 21): QUIC handshakes (netx/quic.py), bulk
flows (netx/bulk.py) and the TTL sweep (forensics/locate.py) make their Structs where they measure,
and the decoders serve only rejudging. What they make must encode to exactly the JSON the record
always held (key order included) and decode back to the same value.

Each primitive runs for real on 127.0.0.1 (an HTTP/3 server, a TLS server, a closed port); the
sweep's packet capture is a stand-in (raw sockets need root) whose lists say what a capture saw.
Times vary from run to run: they are checked to be numbers and blanked before the comparison.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from probe.forensics.locate import locate
from probe.netx.bulk import download
from probe.netx.clock import Clock
from probe.netx.quic import quic_handshake
from probe.vocabulary.observations import Forensics, ForensicState, Observations
from probe.vocabulary.observations_codec import decode, decode_sweep, encode
from probe.vocabulary.observations_encode import encode_sweep
from probe.vocabulary.observations_quic import QuicObservations, decode_quic, encode_quic
from probe.vocabulary.purposes import Purpose
from probe.vocabulary.throughput import FLOW_CONTROL, FLOW_TARGET, Throughput
from probe.vocabulary.throughput_codec import decode_throughput, encode_throughput
from tests import pki
from tests.conftest import PkiFixture
from tests.quicserver import serve_h3

TIMES = frozenset({"t0", "t", "t_first_reply", "t_connect", "t_handshake", "t_request"})
BODY = 40000  # bytes the TLS server's page holds


def _blank(value: Any, key: str | None = None) -> Any:
    """The JSON with its times (and the kernel's counters, a flow's samples) as placeholders, order kept."""
    if key == "tcp_info" and value is not None:
        assert all(isinstance(n, int) for n in value.values()), value
        return list(value)
    if isinstance(value, dict):
        return {k: _blank(v, k) for k, v in value.items()}
    if key in TIMES and value is not None:
        assert isinstance(value, float), (key, value)
        return "<t>"
    if key == "samples" and value:
        assert all(isinstance(t, float) and isinstance(n, int) for t, n in value), value
        return [["<t>", value[-1][1]]]
    if key in ("port", "stalled_at_wire", "datagrams_received") and value:
        assert isinstance(value, int), (key, value)
        return "<n>"
    if isinstance(value, list):
        return [_blank(v) for v in value]
    return value


def _same_text(encoded: Any, expected: Any) -> None:
    """Byte for byte once blanked: the key order matters as much as the values."""
    assert json.dumps(_blank(json.loads(json.dumps(encoded)))) == json.dumps(expected)


def _observations(**parts: Any) -> Observations:
    return Observations(None, (), (), (), **parts)


def _round_trips(observations: Observations) -> None:
    """The codec's decode (rejudging) reads back exactly what the measuring code made."""
    assert decode(json.loads(json.dumps(encode(observations)))) == observations


@pytest.fixture(scope="module")
def site(test_pki: PkiFixture) -> tuple[Path, Path, pki.Leaf]:
    leaf = pki.make_leaf(test_pki.public_intermediate, ["site.test"])
    cert, key = leaf.write(test_pki.directory, "typed-edges")
    return cert, key, leaf


@pytest.fixture
def tls_server(site: tuple[Path, Path, pki.Leaf]) -> Iterator[int]:
    """TLS on 127.0.0.1: every request gets a 200 page of BODY bytes, then the connection is closed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(site[0]), str(site[1]))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer(raw: socket.socket) -> None:
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    head += data
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY + b"x" * BODY)
        except OSError:
            raw.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=answer, args=(raw,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        server.join(5)
        listener.close()


def _closed_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- QUIC ----------------------------------------------------------------------------------------


def test_quic_handshakes_are_made_typed_and_encode_as_the_record_always_held(
    site: tuple[Path, Path, pki.Leaf],
) -> None:
    cert, key, leaf = site

    async def go() -> tuple[Any, ...]:
        server = await serve_h3("127.0.0.1", 0, str(cert), str(key))
        try:
            port = server._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
            return await asyncio.gather(
                quic_handshake("127.0.0.1", port, "site.test", 3, Clock(), "/", Purpose.TARGET),
                quic_handshake("127.0.0.1", port, "example.org", 3, Clock(), None, Purpose.CONTROL_SNI),
                quic_handshake("127.0.0.1", _closed_port(socket.SOCK_DGRAM), "site.test", 2, Clock()),
            )
        finally:
            server.close()

    made = QuicObservations("alt_svc", 'h3=":443"', tuple(asyncio.run(go())))  # as observe/quic.py makes it
    chain = [base64.b64encode(pki.der(c)).decode() for c in leaf.chain]

    def handshake(name: str, purpose: str, completed: bool, status: int | None = None) -> dict[str, Any]:
        return {"address": "127.0.0.1", "port": "<n>", "server_name": name,
                "quic_version": "0x00000001" if completed else None, "negotiated_protocol": "h3" if completed else None,
                "failure": None if completed else "connection_refused", "alert": None, "error_code": None,
                "t0": "<t>", "t_first_reply": "<t>" if completed else None, "t": "<t>", "http_status": status,
                "http_failure": None, "purpose": purpose, "peer_certificates": chain if completed else [],
                "datagrams_received": "<n>" if completed else 0}  # fmt: skip

    _same_text(encode_quic(made), {"reason": "alt_svc", "alt_svc": 'h3=":443"', "handshakes": [
        handshake("site.test", "target", True, 200), handshake("example.org", "control_sni", True),
        handshake("site.test", "target", False)]})  # fmt: skip
    assert decode_quic(json.loads(json.dumps(encode_quic(made)))) == made
    _round_trips(_observations(quic=made))


# --- bulk flows ----------------------------------------------------------------------------------


def test_bulk_flows_are_made_typed_and_encode_as_the_record_always_held(tls_server: int) -> None:
    async def go() -> tuple[Any, ...]:
        options: dict[str, Any] = {"size": BODY, "bound": 5, "stall": 3, "step_timeout": 3, "clock": Clock()}
        return (
            await download("127.0.0.1", tls_server, "site.test", "site.test", "/v1/bulk", **options,
                           kind=FLOW_TARGET, round_number=0),
            await download("127.0.0.1", _closed_port(), "example.org", "site.test", "/v1/bulk", **options,
                           kind=FLOW_CONTROL, round_number=1),
        )  # fmt: skip

    flows = asyncio.run(go())
    made = Throughput("helper", "https://helper.test/v1/bulk", BODY, "example.org", flows, 2, "healthy")
    info = msgspec.structs.asdict(flows[0].tcp_info) if flows[0].tcp_info is not None else None
    expected_info = None if info is None else [k for k, v in info.items() if v is not None]

    def flow(kind: str, number: int, done: bool) -> dict[str, Any]:
        return {"kind": kind, "round": number, "address": "127.0.0.1", "port": "<n>",
                "server_name": "site.test" if done else "example.org", "status": 200 if done else None,
                "failure": None if done else "connection_refused", "bytes": BODY if done else 0,
                "content_length": BODY if done else None, "samples": [["<t>", BODY]] if done else [],
                "stalled_at": None, "stalled_at_wire": None, "tcp_info": expected_info if done else None,
                "t_connect": "<t>", "t_handshake": "<t>" if done else None, "t_request": "<t>" if done else None,
                "t0": "<t>", "t": "<t>"}  # fmt: skip

    _same_text(encode_throughput(made), {"source": "helper", "url": "https://helper.test/v1/bulk", "size": BODY,
                                         "control_sni": "example.org", "flows": [flow("target", 0, True),
                                         flow("control", 1, False)], "rounds": 2, "stopped": "healthy"})  # fmt: skip
    assert expected_info is None or expected_info[:5] == ["rtt_us", "rttvar_us", "total_retrans", "bytes_received",
                                                          "segs_in"]  # fmt: skip
    assert decode_throughput(json.loads(json.dumps(encode_throughput(made)))) == made
    _round_trips(_observations(throughput=made))


# --- the TTL sweep -------------------------------------------------------------------------------


class _Capture:
    """A stand-in for the packet capture: the first `routers` exchanges were dropped by a router once
    (ICMP time exceeded from 192.0.2.1), and every exchange saw the server's SYN-ACK."""

    def __init__(self, routers: int) -> None:
        self.routers, self.watched = routers, 0

    def watch_icmp(self, sock: socket.socket, address: str, port: int, now: Any) -> list[dict[str, Any]]:
        self.watched += 1
        return [{"router": "192.0.2.1", "icmp_type": 11, "t": 0.5}] if self.watched <= self.routers else []

    def watch_tcp(self, sock: socket.socket, address: str, port: int, now: Any) -> list[dict[str, Any]]:
        return [{"flags": "SA", "ip_ttl": 64, "ip_id": 7, "payload": 0, "t": 0.25}]

    def forget(self, packets: list[dict[str, Any]]) -> None:
        pass


def _try(outcome: str, routers: list[str], failure: str | None = None, leaf: str | None = None) -> dict[str, Any]:
    return {"outcome": outcome, "failure": failure, "leaf_sha256": leaf, "routers": routers, "unreachable_from": [],
            "packets": [{"flags": "SA", "ip_ttl": 64, "ip_id": 7, "payload": 0, "t": "<t>"}], "t0": "<t>",
            "t": "<t>"}  # fmt: skip


def test_the_ttl_sweep_is_made_typed_and_encodes_as_the_record_always_held(
    tls_server: int, site: tuple[Path, Path, pki.Leaf]
) -> None:
    leaf = hashlib.sha256(pki.der(site[2].cert)).hexdigest()
    capture: Any = _Capture(routers=2)
    swept = locate(capture, "127.0.0.1", tls_server, "site.test", "example.org", 1.0, None)
    made = msgspec.structs.replace(swept, finding="tls")  # as forensics/examine.py makes it
    sides = {side: _try("handshake", ["192.0.2.1"], leaf=leaf) for side in ("target", "control")}
    _same_text(encode_sweep(made), {"status": "done", "address": "127.0.0.1", "port": "<n>", "mode": "client_hello",
                                    "server_name": "site.test", "control_sni": "example.org",
                                    "steps": [{"ttl": 1, **sides}], "stopped": "answered", "t": "<t>",
                                    "finding": "tls"})  # fmt: skip
    assert decode_sweep(json.loads(json.dumps(encode_sweep(made)))) == made
    _round_trips(_observations(forensics=Forensics(ForensicState("done"), made)))


def test_a_sweep_that_meets_no_connection_retries_and_encodes_as_the_record_always_held() -> None:
    capture: Any = _Capture(routers=2)
    made = locate(capture, "127.0.0.1", _closed_port(), None, None, 0.3, None)  # a SYN sweep: no control side
    refused = _try("reset", ["192.0.2.1"], "connection_refused")  # answered at once (no retry)
    encoded = encode_sweep(made)
    _same_text(encoded, {"status": "done", "address": "127.0.0.1", "port": "<n>", "mode": "syn", "server_name": None,
                         "control_sni": None, "steps": [{"ttl": 1, "target": refused}], "stopped": "answered",
                         "t": "<t>"})  # fmt: skip
    assert decode_sweep(json.loads(json.dumps(encoded))) == made
    capture = _Capture(routers=2)
    made = locate(capture, "127.0.0.1", _closed_port(), "site.test", "example.org", 0.3, None)
    encoded = encode_sweep(made)
    first = {side: _try("connect_failed", ["192.0.2.1"], "connection_refused") for side in ("target", "control")}
    later = {side: _try("connect_failed", [], "connection_refused") for side in ("target", "control")}
    _same_text(encoded["steps"][0], {"ttl": 1, **first, "retry": later})
    assert [step.ttl for step in made.steps] == [1, 2, 3, 4] and made.stopped == "silent_path"
    assert all(step.retry is not None for step in made.steps)  # no connection: each side tried twice
    assert decode_sweep(json.loads(json.dumps(encoded))) == made
    _round_trips(_observations(forensics=Forensics(ForensicState("done"), made)))


def test_a_sweep_try_of_an_older_record_without_times_reads_and_writes_back_the_same() -> None:
    """Records before the sweep kept each try's times have none: they stay absent, not null."""
    old = {"status": "done", "address": "203.0.113.10", "port": 443, "mode": "syn", "server_name": None,
           "control_sni": None, "steps": [{"ttl": 1, "target": {"outcome": "reset", "failure": "connection_reset",
           "leaf_sha256": None, "routers": [], "unreachable_from": []}}], "stopped": "answered"}  # fmt: skip
    typed = decode_sweep(old)
    assert typed.steps[0].target is not None and (typed.steps[0].target.t0, typed.steps[0].target.t) == (None, None)
    assert json.dumps(encode_sweep(typed)) == json.dumps(old)


# --- the decoders serve rejudging only -----------------------------------------------------------

DECODERS = frozenset({"decode_quic", "decode_throughput", "decode_sweep"})
CODEC = frozenset({"observations_codec.py", "observations_quic.py", "throughput_codec.py"})


def decoders_used_outside_the_codec(package: Path) -> list[str]:
    """Modules (other than the codec's own) that name a section's decoder: a measuring path that
    builds a dict only to decode it, instead of making its Struct."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name in CODEC and path.parent.name == "vocabulary":
            continue
        nodes = list(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
        names = {node.id for node in nodes if isinstance(node, ast.Name)}
        names |= {alias.name for node in nodes if isinstance(node, ast.ImportFrom) for alias in node.names}
        found += [f"{path.relative_to(package.parent)}: {name}" for name in sorted(names & DECODERS)]
    return found


def test_the_decoders_are_called_only_by_the_codec() -> None:
    assert decoders_used_outside_the_codec(Path(__file__).resolve().parents[1] / "probe") == []
