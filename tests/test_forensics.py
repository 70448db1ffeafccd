"""Packet forensics in a lab of several real routers: the censor's hop, and injected resets.

The same run is made twice: as root (CAP_NET_RAW: the capture and the TTL sweep run), and with
CAP_NET_RAW dropped by capsh (both recorded as skipped, with the reason); the verdicts must be the
same. Unit tests cover the capability check, the rules, and that scapy stays unimported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from probe.analyze import forensics as judged
from probe.forensics.capability import raw_capability
from probe.vocabulary.observations import SweepTry
from probe.vocabulary.observations_codec import decode, decode_sweep
from probe.vocabulary.observations_encode import encode_sweep
from tests.conftest import by_host, read_results
from tests.lab.lab import missing_prerequisites

ROOT = Path(__file__).resolve().parents[1]


def test_the_capability_is_read_from_the_process_not_the_user_id(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tprobe\nUid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n", encoding="ascii")
    assert raw_capability(status) == "no CAP_NET_RAW (effective capabilities)"  # root, but no capability
    status.write_text("Name:\tprobe\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000002000\n", encoding="ascii")
    assert raw_capability(status) is None  # a user given cap_net_raw alone


def test_ordinary_packets_are_read_as_scapy_reads_them() -> None:
    """A server's SYN-ACK and data are read with struct (a clean run never loads scapy): the same
    summary as scapy's dissection, for every combination of flags."""
    from probe.forensics import scapy_quiet
    from probe.forensics.capture import _plain_tcp_summary

    layers = scapy_quiet.load()
    for flags in ("SA", "A", "PA", "FA", "FPA", "S", "R", "RA", "SEC", "U"):
        for payload in (b"", b"hello"):
            raw = bytes(layers.IP(src="203.0.113.1", dst="192.0.2.1", ttl=57, id=4242)
                        / layers.TCP(sport=443, dport=5555, flags=flags) / payload)  # fmt: skip
            packet = layers.IP(raw)
            expected = {"flags": str(packet[layers.TCP].flags), "ip_ttl": 57, "ip_id": 4242, "payload": len(payload)}
            assert _plain_tcp_summary(raw) == expected, flags


def _typed(observations: dict) -> Any:
    """The rules read typed observations: a partial record's, with what it leaves out empty."""
    return decode({"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": [], **observations})


def injected_resets(observations: dict) -> list[dict]:
    return judged.injected_resets(_typed(observations))


def censor_hop(locate: dict, forged: set[str], ctx: Any) -> dict | None:
    return judged.censor_hop(decode_sweep(locate), forged, ctx)


def _packet(flags: str, ttl: int, ip_id: int = 0) -> dict:
    return {"flags": flags, "ip_ttl": ttl, "ip_id": ip_id, "payload": 0, "t": 0.1}


def test_a_reset_is_injected_only_when_it_does_not_come_from_where_the_server_is() -> None:
    def observations(reset: dict, extra: list[dict] | None = None) -> dict:
        tcp = {"address": "203.0.113.9", "port": 443, "failure": None, "purpose": "target",
               "wire": [_packet("SA", 52), *(extra or []), reset]}  # fmt: skip
        handshake = {"address": "203.0.113.9", "purpose": "target", "failure": "connection_reset"}
        return {"tcp_connect": [tcp], "tls_handshakes": [handshake]}

    assert injected_resets(observations(_packet("R", 52))) == []  # the server's own reset
    (mark,) = injected_resets(observations(_packet("R", 61)))  # born nine hops nearer
    assert (mark["stage"], mark["why"], mark["rst"], mark["server"]["ip_ttl"]) == (
        "tls",
        ["ip_ttl"],
        {"ip_ttl": 61, "ip_id": 0},
        52,
    )
    numbered = [_packet("A", 52, 4000), _packet("PA", 52, 4001)]
    assert injected_resets(observations(_packet("R", 52, 4002), numbered)) == []  # next in the server's sequence
    (mark,) = injected_resets(observations(_packet("R", 52, 17), numbered))  # same TTL, foreign IP ID
    assert mark["why"] == ["ip_id"]
    lonely = {"tcp_connect": [{"address": "203.0.113.9", "failure": "connection_reset", "purpose": "target",
                               "wire": [_packet("RA", 61)]}], "tls_handshakes": []}  # fmt: skip
    assert injected_resets(lonely) == []  # nothing of the server's to compare with: no claim


def test_a_reset_is_compared_with_its_own_connection_only() -> None:
    """Linux starts each connection's IP IDs at random and sends stateless resets with IP ID 0: a
    server's reset is compared with that connection's packets, never with another connection's."""

    def connection(purpose: str, *wire: dict) -> dict:
        return {"address": "203.0.113.9", "port": 443, "failure": None, "purpose": purpose, "wire": list(wire)}

    def observations(*connections: dict) -> dict:
        handshakes = [{"address": "203.0.113.9", "purpose": "target", "failure": "connection_reset"},
                      {"address": "203.0.113.9", "purpose": "control_sni", "failure": None}]  # fmt: skip
        return {"tcp_connect": list(connections), "tls_handshakes": handshakes}

    answered = connection("control_sni", _packet("SA", 52), _packet("PA", 52, 4000), _packet("PA", 52, 4001))
    # The server resets the target's ClientHello (its own counter: 900), then answers the control.
    own_reset = connection("target", _packet("SA", 52), _packet("RA", 52, 900))
    assert injected_resets(observations(own_reset, answered)) == []
    # IP ID 0 on a reset (stateless) says nothing, even against the same connection's numbered packets.
    stateless = connection("target", _packet("SA", 52), _packet("PA", 52, 4000), _packet("PA", 52, 4001),
                           _packet("R", 52, 0))  # fmt: skip
    assert injected_resets(observations(stateless)) == []
    # A server that numbers its packets at random (not one after another) says nothing by its IP IDs.
    scattered = connection("target", _packet("SA", 52), _packet("PA", 52, 4000), _packet("PA", 52, 31000),
                           _packet("R", 52, 17))  # fmt: skip
    assert injected_resets(observations(scattered)) == []
    # The TTL is the connection's own too: a reset with another connection's TTL, not this one's.
    router_reset = connection("target", _packet("SA", 63), _packet("R", 64))
    other_path = connection("control_sni", _packet("SA", 64), _packet("PA", 64, 4000))
    (mark,) = injected_resets(observations(router_reset, other_path))
    assert (mark["purpose"], mark["why"], mark["rst"], mark["server"]["ip_ttl"]) == (
        "target",
        ["ip_ttl"],
        {"ip_ttl": 64, "ip_id": 0},
        63,
    )
    # The SYN-ACK alone is one packet of the server's: it counts for the TTL, not for the IP ID.
    (mark,) = injected_resets(observations(connection("target", _packet("SA", 61), _packet("R", 63, 5))))
    assert mark["why"] == ["ip_ttl"]
    assert injected_resets(observations(connection("target", _packet("SA", 61), _packet("R", 61, 5)))) == []


OWN_RESET_CHECK = """
import json, socket, struct, threading, time
from probe.forensics.capture import PacketCapture
from probe.netx.clock import Clock
from probe.netx.connect import close_quietly, tcp_connect, tls_handshake
from probe.netx.wire import TargetWatch

ADDRESS = "127.0.0.1"
listener = socket.create_server((ADDRESS, 0))
port = listener.getsockname()[1]


def serve():
    conn, _ = listener.accept()  # the target's name: read the ClientHello, then abort (SO_LINGER 0)
    conn.recv(4096)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
    conn, _ = listener.accept()  # the control name: answered (a TLS alert), in two pushed segments
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.recv(4096)
    conn.sendall(bytes([0x15, 3, 3]))  # the client waits for the whole record: both segments arrive
    time.sleep(0.05)
    conn.sendall(bytes([0, 2, 2, 40]))  # fatal, handshake_failure
    time.sleep(0.5)
    conn.close()


threading.Thread(target=serve, daemon=True).start()
capture, clock = PacketCapture(), Clock()
watch = TargetWatch(capture, clock.now)
observations = {"tcp_connect": [], "tls_handshakes": []}
for purpose, name in (("target", "blocked.example"), ("control_sni", "example.com")):
    sock, tcp = tcp_connect(ADDRESS, port, 3, clock, None, watch)
    tcp["purpose"] = purpose
    tls, handshake = tls_handshake(sock, ADDRESS, port, name, 3, clock)
    handshake["purpose"] = purpose
    time.sleep(0.3)  # what is still on its way
    close_quietly(tls)
    observations["tcp_connect"].append(tcp)
    observations["tls_handshakes"].append(handshake)
watch.close()
print(json.dumps(observations, default=str))
"""


def test_a_servers_own_reset_on_real_kernel_packets_is_not_marked() -> None:
    """A Linux server resets the target's ClientHello itself, then answers the control name: each
    connection has its own IP ID sequence, so the reset must not be compared with the other's."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a namespace, raw sockets)")
    from probe.analyze.common import AnalysisContext, Judgement, RuleContext
    from probe.analyze.forensics import judge_forensics
    from probe.vocabulary.anomalies import Blocking

    namespace = f"rst{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ran = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", OWN_RESET_CHECK],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert ran.returncode == 0, ran.stderr[-2000:]
    observations = json.loads(ran.stdout)
    (target_tcp, control_tcp), (target, control) = observations["tcp_connect"], observations["tls_handshakes"]
    assert target["failure"] == "connection_reset"  # the server's own reset, seen by the socket
    assert [p["flags"] for p in target_tcp["wire"]] == ["SA", "RA"], target_tcp["wire"]
    numbered = [p["ip_id"] for p in control_tcp["wire"] if p["flags"] == "PA"]
    assert len(set(numbered)) == 2 and 0 not in numbered, control_tcp["wire"]  # the control's own sequence
    assert control["alert"] is not None  # the server answered the control name
    assert injected_resets(observations) == []
    j = Judgement(blocking=Blocking.TLS)
    context = AnalysisContext(roots=None, catalogs=None)  # type: ignore[arg-type]  # neither is read here
    judge_forensics(_typed(observations), RuleContext("site.lab", context, lambda _: {}, None), j)
    assert (j.anomalies, j.confidence, j.forensics) == ([], "unconfirmed", None)


def _side(outcome: str, routers: list[str], leaf: str | None = None) -> dict:
    return {"outcome": outcome, "routers": routers, "unreachable_from": [], "leaf_sha256": leaf}


def _tried(side: dict) -> SweepTry:
    """A scripted exchange's result, typed as the sweep's own exchanges make theirs."""
    return msgspec.convert(side, SweepTry)


def test_the_censor_hop_is_where_the_target_meets_interference_and_the_control_passes() -> None:
    from probe.analyze.common import AnalysisContext

    side = _side
    steps = [
        {"ttl": 1, "target": side("expired", ["192.0.2.1"]), "control": side("expired", ["192.0.2.1"])},
        {"ttl": 2, "target": side("expired", ["198.51.100.2"]), "control": side("expired", ["198.51.100.2"])},
        {"ttl": 3, "target": side("timeout", []), "control": side("expired", ["198.51.100.6"]),
         "retry": {"target": side("timeout", [])}},
        {"ttl": 4, "target": side("timeout", []), "control": side("handshake", [], "cd"),
         "retry": {"target": side("timeout", [])}},
    ]  # fmt: skip
    context = AnalysisContext(roots=None, catalogs=None)  # type: ignore[arg-type]  # neither is read here
    hop = censor_hop({"address": "203.0.113.10", "steps": steps}, set(), context)
    assert hop is not None
    assert (hop["hop"], hop["interference"], hop["router_before"], hop["control_passed"]) == (
        3,
        "silence",
        "198.51.100.2",
        True,
    )
    both_silent = [*steps[:2], {"ttl": 3, "target": side("timeout", []), "control": side("timeout", [])}]
    assert censor_hop({"address": "x", "steps": both_silent}, set(), context) is None  # a silent path: no claim
    forged = [steps[0], {"ttl": 2, "target": side("handshake", [], "ab"), "control": side("handshake", [], "cd")}]
    assert censor_hop({"address": "x", "steps": forged}, {"ab"}, context)["interference"] == "forged_certificate"
    real = [steps[0], {"ttl": 2, "target": side("handshake", [], "ef"), "control": side("handshake", [], "cd")}]
    assert censor_hop({"address": "x", "steps": real}, {"ab"}, context) is None  # the server's own certificate
    both_reset = [steps[0], {"ttl": 4, "target": side("reset", []), "control": side("reset", [])}]
    assert censor_hop({"address": "x", "steps": both_reset}, set(), context) is None  # a server resetting all


def test_one_missing_icmp_does_not_name_the_censors_hop() -> None:
    """Rate-limited routers and lost packets leave a TTL silent; a later TTL that shows the target's
    ClientHello passing that hop refutes it, and silence alone needs the next TTLs to agree."""
    from probe.analyze.common import AnalysisContext

    side, context = _side, AnalysisContext(roots=None, catalogs=None)  # type: ignore[arg-type]
    edge, core, transit = "192.0.2.1", "198.51.100.2", "198.51.100.6"
    first = {"ttl": 1, "target": side("expired", [edge]), "control": side("expired", [edge])}
    # The SNI filter in the core's forwarding path (the multi-hop lab), its ICMP at TTL 2 lost twice:
    # the reset at TTL 3 shows the ClientHello passed hop 2.
    lost = {"ttl": 2, "target": side("timeout", []), "control": side("expired", [core]),
            "retry": {"target": side("timeout", [])}}  # fmt: skip
    reset = {"ttl": 3, "target": side("reset", []), "control": side("expired", [transit])}
    hop = censor_hop({"address": "x", "steps": [first, lost, reset]}, set(), context)
    assert (hop["hop"], hop["interference"], hop["router_before"]) == (3, "reset", core)
    # The second try at TTL 2 got the core's ICMP: hop 2 was never silent.
    retried = {**lost, "retry": {"target": side("expired", [core])}}
    hop = censor_hop({"address": "x", "steps": [first, retried, reset]}, set(), context)
    assert (hop["hop"], hop["interference"], hop["router_before"]) == (3, "reset", core)
    # A silent hop followed by a router answering the target at the next TTL: not the censor, and
    # nothing else on the way met the target: no claim.
    beyond = {"ttl": 3, "target": side("expired", [transit]), "control": side("expired", [transit])}
    assert censor_hop({"address": "x", "steps": [first, lost, beyond]}, set(), context) is None
    # The server answering the target beyond a silent hop refutes it too.
    served = {"ttl": 3, "target": side("handshake", [], "ef"), "control": side("handshake", [], "ef")}
    assert censor_hop({"address": "x", "steps": [first, lost, served]}, set(), context) is None
    # Silence at the last TTL tried, with nothing after it to agree: no claim.
    assert censor_hop({"address": "x", "steps": [first, lost]}, set(), context) is None
    # An old record (one try per TTL) reads the same way.
    once = {key: value for key, value in lost.items() if key != "retry"}
    hop = censor_hop({"address": "x", "steps": [first, once, reset]}, set(), context)
    assert (hop["hop"], hop["interference"]) == (3, "reset")


def test_the_sweep_tries_a_silent_exchange_twice_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A silent (or unconnected) exchange is tried once more at the same TTL, an answered one never;
    a control that got through where the target met silence earns one TTL more, no further. The
    window's TTLs beyond the stopping one are tried (several TTLs at once) but never kept."""
    from probe.forensics import locate as sweep

    def scripted(path: dict[tuple[int, str], list[dict]]):  # type: ignore[no-untyped-def]
        calls: list[tuple[int, str | None]] = []

        class Exchange:  # ends at once with the scripted answer (the n-th for the n-th try)
            def __init__(self, capture, address, port, ttl, name, wait, clock):  # type: ignore[no-untyped-def]
                calls.append((ttl, name))
                answers = path.get((ttl, name)) or [_side("timeout", [])]
                self.step = _tried(answers[min(len(answers) - 1, sum(1 for c in calls if c == (ttl, name)) - 1)])
                self.finished = True

        monkeypatch.setattr(sweep, "_Exchange", Exchange)
        return calls

    def kept(calls: list[tuple[int, str | None]], last: int) -> list[tuple[int, str | None]]:
        """The exchanges at the TTLs kept, in a stable order; none beyond the window."""
        assert max(ttl for ttl, _ in calls) <= last - 1 + sweep.WINDOW, calls
        return sorted((ttl, name) for ttl, name in calls if ttl <= last)  # type: ignore[type-var]

    edge, core = "192.0.2.1", "198.51.100.2"
    calls = scripted({(1, "t"): [_side("expired", [edge])], (1, "c"): [_side("expired", [edge])],
                      (2, "t"): [_side("timeout", []), _side("expired", [core])], (2, "c"): [_side("expired", [core])],
                      (3, "t"): [_side("reset", [])], (3, "c"): [_side("expired", ["198.51.100.6"])]})  # fmt: skip
    record = encode_sweep(sweep.locate(None, "203.0.113.10", 443, "t", "c", 3, None))  # type: ignore[arg-type]
    assert kept(calls, 3) == sorted([(1, "t"), (1, "c"), (2, "t"), (2, "c"), (2, "t"), (3, "t"), (3, "c")])
    assert [sorted(step) for step in record["steps"]] == [["control", "target", "ttl"],
                                                          ["control", "retry", "target", "ttl"],
                                                          ["control", "target", "ttl"]]  # fmt: skip
    assert record["stopped"] == "answered"
    # The target silent where the control reached the server: one TTL more, then the sweep ends.
    calls = scripted({(1, "t"): [_side("expired", [edge])], (1, "c"): [_side("expired", [edge])],
                      (2, "c"): [_side("handshake", [], "cd")], (3, "c"): [_side("handshake", [], "cd")]})  # fmt: skip
    record = encode_sweep(sweep.locate(None, "203.0.113.10", 443, "t", "c", 3, None))  # type: ignore[arg-type]
    assert ([step["ttl"] for step in record["steps"]], record["stopped"]) == ([1, 2, 3], "control_answered")
    assert calls.count((2, "t")) == calls.count((3, "t")) == 2 and calls.count((2, "c")) == 1
    # A silent path: three quiet TTLs, each tried twice on both sides, then it stops.
    calls = scripted({})
    record = encode_sweep(sweep.locate(None, "203.0.113.10", 443, "t", "c", 3, None))  # type: ignore[arg-type]
    assert (len(record["steps"]), len(kept(calls, 3)), record["stopped"]) == (3, 12, "silent_path")


class _Timed:
    """A scripted exchange that ends `delay` seconds after it began (no socket: nothing to poll)."""

    script: dict[tuple[int, str | None], tuple[float, dict]] = {}
    made: list[_Timed] = []

    def __init__(self, capture, address, port, ttl, name, wait, clock) -> None:  # type: ignore[no-untyped-def]
        import time

        delay, self.answer = self.script.get((ttl, name), (wait, _side("expired", ["198.51.100.1"])))
        self.key, self.events, self.until = (ttl, name), 0, time.monotonic() + delay
        self.finished = self.cancelled = False
        self.step: SweepTry | None = None
        self.made.append(self)

    def advance(self, revents: int) -> None:
        import time

        if time.monotonic() >= self.until:
            self.step, self.finished = _tried(self.answer), True

    def cancel(self) -> None:
        self.finished = self.cancelled = True


def test_the_sweep_reads_its_ttls_in_order_and_keeps_none_beyond_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """TTLs in flight together: an answer at TTL 2 that comes before TTL 1's ends waits for it (the
    rules read TTLs in order); the TTLs beyond the answer, still in flight, are closed, not kept."""
    from probe.forensics import locate as sweep

    edge = "192.0.2.1"
    monkeypatch.setattr(sweep, "_Exchange", _Timed)
    monkeypatch.setattr(_Timed, "made", [])
    monkeypatch.setattr(_Timed, "script", {
        (1, "t"): (0.05, _side("expired", [edge])), (1, "c"): (0.05, _side("expired", [edge])),
        (2, "t"): (0.0, _side("reset", [])), (2, "c"): (0.0, _side("expired", ["198.51.100.2"])),
        **{(ttl, name): (5.0, _side("reset", [])) for ttl in (3, 4) for name in ("t", "c")},
    })  # fmt: skip
    record = encode_sweep(sweep.locate(None, "203.0.113.10", 443, "t", "c", 3, None))  # type: ignore[arg-type]
    assert ([step["ttl"] for step in record["steps"]], record["stopped"]) == ([1, 2], "answered")
    assert record["steps"][0]["target"]["routers"] == [edge]  # TTL 1 ended after TTL 2's answer: read first
    beyond = sorted(exchange.key for exchange in _Timed.made if exchange.cancelled)
    assert beyond == [(3, "c"), (3, "t"), (4, "c"), (4, "t")]  # in flight at the answer: closed, not kept
    assert {exchange.key[0] for exchange in _Timed.made} == {1, 2, 3, 4}  # the window: no TTL past it


def test_a_sweep_without_a_deadline_is_bounded_by_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """No target deadline: the sweep still ends within SWEEP_TIMEOUTS x --timeout, here before the
    32 hops a path whose every router answers would take (each round of four TTLs lasts a wait)."""
    from probe.forensics import locate as sweep

    monkeypatch.setattr(sweep, "_Exchange", _Timed)
    monkeypatch.setattr(_Timed, "made", [])
    monkeypatch.setattr(_Timed, "script", {})  # every exchange: a router's "time exceeded", after a wait
    timeout = 0.05  # 8 rounds of 0.05 s for 32 hops; the bound: 6 x 0.05 s
    record = encode_sweep(sweep.locate(None, "203.0.113.10", 443, "t", "c", timeout, None))  # type: ignore[arg-type]
    assert record["stopped"] == "deadline" and 0 < len(record["steps"]) < sweep.MAX_HOPS, record["stopped"]


SILENT_SWEEP = """
import json
from probe.forensics.capture import PacketCapture
from probe.forensics.locate import locate
from probe.vocabulary.observations_encode import encode_sweep

capture = PacketCapture()
print(json.dumps(encode_sweep(locate(capture, "203.0.113.99", 443, None, None, 2.0, None))))
capture.close()
"""


def test_a_sweep_over_a_silent_path_sends_its_ttls_at_once() -> None:
    """Every packet to the site dropped (as the bench's blackholed names): the sweep meets silence at
    each TTL. Its TTLs are tried at once (their tries overlap), each retry after its first try's
    silence, the retries at once too: the sweep lasts about two waits, not two per TTL."""
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root (namespaces, raw sockets) and iptables")
    from tests.lab.lab import NETNS_ETC, tear_down

    client, site = f"silc{os.getpid()}", f"sils{os.getpid()}"
    try:
        for namespace in (client, site):
            subprocess.run(["ip", "netns", "add", namespace], check=True)
            (NETNS_ETC / namespace).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / namespace / "resolv.conf").write_text("nameserver 127.0.0.1\n", encoding="ascii")
        subprocess.run(["ip", "link", "add", "sil0", "netns", client, "type", "veth", "peer", "name", "sil1",
                        "netns", site], check=True)  # fmt: skip
        for namespace, command in (
            (client, "ip addr add 198.51.100.1/30 dev sil0"), (client, "ip link set sil0 up"),
            (client, "ip link set lo up"), (client, "ip route add 203.0.113.0/24 via 198.51.100.2"),
            (site, "ip addr add 198.51.100.2/30 dev sil1"), (site, "ip link set sil1 up"),
            (site, "ip addr add 203.0.113.99/32 dev lo"), (site, "iptables -A INPUT -d 203.0.113.99 -j DROP"),
        ):  # fmt: skip
            subprocess.run(["ip", "netns", "exec", namespace, *command.split()], check=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        ran = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", SILENT_SWEEP],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        tear_down([], (client, site))
    assert ran.returncode == 0, ran.stderr[-2000:]
    record = json.loads(ran.stdout)
    steps = record["steps"]
    assert ([step["ttl"] for step in steps], record["stopped"]) == ([1, 2, 3], "silent_path")
    firsts, retries = [step["target"] for step in steps], [step["retry"]["target"] for step in steps]
    assert all((t["outcome"], t["routers"]) == ("timeout", []) for t in firsts + retries), steps
    assert all(t.get("t0") is not None and t.get("t") is not None for t in firsts + retries), steps  # when
    assert max(t["t0"] for t in firsts) < min(t["t"] for t in firsts)  # the TTLs' first tries: all at once
    assert all(again["t0"] >= first["t"] for first, again in zip(firsts, retries, strict=True))  # after silence
    assert max(t["t0"] for t in retries) < min(t["t"] for t in retries)  # the retries: at once too
    assert record["t"] < sum(t["t"] - t["t0"] for t in firsts + retries) / 2  # not one after another


def test_scapy_is_not_imported_for_help_or_a_run_without_forensics(tmp_path: Path) -> None:
    """scapy takes a while to load and writes caches: only the forensic steps may import it."""
    code = (
        "import sys\nfrom probe.cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(any(name.split('.')[0] == 'scapy' for name in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, env=env)
    assert helped.stdout.strip().endswith("False"), helped.stdout[-300:]
    if os.geteuid() != 0:
        pytest.skip("the run half needs a network namespace (root)")
    targets = tmp_path / "t.txt"
    targets.write_text("192.0.2.1\n", encoding="ascii")
    run = ["run", "--targets", str(targets), "--out", str(tmp_path / "out"), "--no-forensics", "--quiet", "--lab",
           "--yes"]  # fmt: skip
    namespace = f"noscapy{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:  # a namespace with no route at all: the run is offline, nothing leaves this machine
        ran = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code, *run],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert "offline" in (tmp_path / "out").rglob("*.jsonl").__next__().read_text()
    assert ran.stdout.strip().endswith("False"), ran.stdout[-300:] + ran.stderr[-1000:]


# --- the multi-hop lab ---------------------------------------------------------------------------

_REASON = missing_prerequisites() or (None if shutil.which("capsh") else "capsh is needed (libcap2-bin)")


@pytest.fixture(scope="module")
def path_lab() -> Iterator:
    if _REASON:
        pytest.skip(_REASON)
    from tests.lab.chainworld import running
    from tests.lab.multihop import MultiHopLab

    with running(MultiHopLab(f"mh{os.getpid() % 100000}")) as lab:
        yield lab


def _run(lab, drop_raw: bool) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    from tests.lab import multihop as m

    out = lab.directory / ("without" if drop_raw else "with")
    targets = lab.directory / "targets.txt"
    names = [m.FILTERED_NAME, m.INTERCEPTED_NAME, m.RESETTING_NAME, m.SYN_RESET_NAME, m.CLEAN_NAME]
    targets.write_text("\n".join(names) + "\n")
    result = lab.probe(
        "run", "--targets", str(targets), "--out", str(out), "--roots", str(lab.roots_pem), "--control-resolver",
        f"udp://{m.RESOLVER}", "--control-sni", m.CONTROL_NAME, "--lab", "--os-store", "none", "--timeout", "3",
        "--asn-db", str(lab.asn_table), "--quiet", "--forensics-limit", "5", "--yes", drop_raw=drop_raw,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]  # blocking found
    return by_host(read_results(out))


@pytest.fixture(scope="module")
def with_capability(path_lab) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return _run(path_lab, drop_raw=False)


@pytest.fixture(scope="module")
def without_capability(path_lab) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return _run(path_lab, drop_raw=True)


@pytest.mark.lab
def test_an_sni_filter_is_located_after_the_core_router_and_its_reset_marked(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.FILTERED_NAME]
    assert (record["blocking"], record["confidence"]) == ("tls", "confirmed")
    assert "tls.injected_rst" in record["anomalies"]
    forensics = record["analysis"]["forensics"]
    # The filter acts in the core router's forwarding path: a ClientHello with TTL 2 expires at the
    # core (ICMP from it), one with TTL 3 is forwarded there, and reset. The control name passes on
    # to the transit router.
    assert forensics["censor_hop"] == {"hop": 3, "interference": "reset", "router_before": m.CORE_EDGE_SIDE,
                                       "router_before_asn": "AS64501", "control_passed": True,
                                       "address": m.SITES_ADDRESS}  # fmt: skip
    mark = next(mark for mark in forensics["injected_rst"] if mark["purpose"] == "target")
    # The core is two hops away (its reset arrives with 64 - 1), the server four (64 - 3).
    assert (mark["stage"], mark["rst"]["ip_ttl"], mark["server"]["ip_ttl"]) == ("tls", 63, 61)
    steps = record["observations"]["forensics"]["locate"]["steps"]
    # The core lost its ICMP for the first try at TTL 2 (the lab's rate limit): tried again, answered.
    assert [step["target"]["routers"] for step in steps] == [[m.EDGE_CLIENT_SIDE], [], []]
    assert [step.get("retry", {}).get("target", {}).get("routers") for step in steps] == [
        None, [m.CORE_EDGE_SIDE], None
    ]  # fmt: skip
    assert steps[-1]["control"]["routers"] == [m.TRANSIT_CORE_SIDE]


@pytest.mark.lab
def test_a_tls_interceptor_is_located_at_the_core_router(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.INTERCEPTED_NAME]
    assert record["blocking"] == "tls_mitm"
    # A transparent proxy terminates the connection: the ClientHello that reaches the core (TTL 2)
    # gets the forged certificate; the control name, passed through, the real one. The edge lost its
    # ICMP about both tries of the target's at TTL 1: the forged certificate at TTL 2 shows the
    # ClientHello passed it, so the silence there names no censor.
    steps = record["observations"]["forensics"]["locate"]["steps"]
    assert [(try_["outcome"], try_["routers"]) for try_ in (steps[0]["target"], steps[0]["retry"]["target"])] == [
        ("timeout", []), ("timeout", [])
    ]  # fmt: skip
    assert steps[0]["control"]["routers"] == [m.EDGE_CLIENT_SIDE]
    hop = record["analysis"]["forensics"]["censor_hop"]
    assert (hop["hop"], hop["interference"], hop["router_before"], hop["router_before_asn"]) == (
        2,
        "forged_certificate",
        m.EDGE_CLIENT_SIDE,
        "AS64500",
    )
    assert hop["control_passed"] is True


@pytest.mark.lab
def test_a_reset_answering_the_syn_is_located_by_the_syn_itself(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.SYN_RESET_NAME]
    assert record["blocking"] == "tcp"
    located = record["observations"]["forensics"]["locate"]
    assert (located["mode"], located["server_name"]) == ("syn", None), located  # the SYN carries the TTL
    assert record["analysis"]["forensics"] is not None, json.dumps(located)
    hop = record["analysis"]["forensics"]["censor_hop"]
    assert (hop["hop"], hop["interference"], hop["router_before"]) == (3, "reset", m.CORE_EDGE_SIDE)
    # No packet of the server's reached the probe: nothing to compare the reset with, no mark.
    assert "tcp.injected_rst" not in record["anomalies"]


@pytest.mark.lab
def test_a_servers_own_reset_is_not_marked(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.RESETTING_NAME]
    assert record["blocking"] == "inconclusive"  # every name is reset: a broken server, no claim
    assert not {"tls.injected_rst", "tcp.injected_rst"} & set(record["anomalies"])
    wire = record["observations"]["tcp_connect"][0]["wire"]
    resets = [p for p in wire if "R" in p["flags"]]
    synack = next(p for p in wire if p["flags"] == "SA")
    assert resets and {p["ip_ttl"] for p in resets} == {synack["ip_ttl"]} == {61}  # captured, and consistent


@pytest.mark.lab
def test_without_the_capability_the_steps_are_skipped_and_the_verdicts_are_the_same(
    with_capability: dict, without_capability: dict
) -> None:
    assert {h: r["blocking"] for h, r in without_capability.items()} == {
        h: r["blocking"] for h, r in with_capability.items()
    }
    for host, record in without_capability.items():
        state = record["observations"]["forensics"]
        assert state["capture"] == {"status": "skipped", "reason": "no CAP_NET_RAW (effective capabilities)"}, host
        assert record["analysis"]["forensics"] is None, host
        assert all("wire" not in tcp for tcp in record["observations"]["tcp_connect"]), host
    from tests.lab import multihop as m

    for host in (m.FILTERED_NAME, m.INTERCEPTED_NAME, m.SYN_RESET_NAME):
        assert without_capability[host]["observations"]["forensics"]["locate"] == {
            "status": "skipped", "reason": "no CAP_NET_RAW (effective capabilities)"
        }  # fmt: skip
    assert with_capability[m.CLEAN_NAME]["observations"]["forensics"]["locate"] is None  # nothing to locate


@pytest.mark.lab
def test_probe_show_says_where_the_censor_sits_in_plain_words(path_lab, with_capability: dict) -> None:  # type: ignore[no-untyped-def]
    from probe.results.files import results_files
    from probe.results.show import show_file
    from tests.lab import multihop as m

    (path,) = results_files([path_lab.directory / "with"])
    text = show_file(path)
    assert (
        f"forensics: censor located at hop 3 from the probe, just after router {m.CORE_EDGE_SIDE}, AS64501: "
        "the target name met a reset; the control name passed there"
    ) in text
    injected = "forensics: TLS reset injected by the path (target connection to 203.0.113.10): it came with IP TTL 63"
    assert injected in text
    assert "the target name met a forged certificate" in text


@pytest.mark.lab
def test_the_report_page_shows_the_censors_hop_in_a_browser(path_lab, with_capability: dict) -> None:  # type: ignore[no-untyped-def]
    """As a person sees it: the monitoring record opened in chromium, the event's evidence expanded."""
    from probe.cli.main import main
    from tests.test_report_html import CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    out = path_lab.directory / "report.html"
    assert main(["report", str(path_lab.directory / "with"), "--all-confidence", "--out", str(out)]) == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1400})
            tab.goto(out.as_uri())
            episode = tab.locator("#events tbody tr:not(.evidence)", has_text="filtered.lab")
            row = episode.locator("xpath=following-sibling::tr[1]")  # its evidence, in a row of its own
            row.locator("summary").click()
            evidence = row.locator("details ul")
            assert evidence.is_visible()
            text = evidence.inner_text()
            tab.screenshot(path=str(path_lab.directory.parent / "forensics-report.png"), full_page=True)
        finally:
            browser.close()
    assert "censor located at hop 3 from the probe, just after router 198.51.100.2, AS64501" in text
    assert "TLS reset injected by the path" in text


def test_scapy_loads_quietly_with_its_caches_under_the_xdg_directories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("XDG_CONFIG_HOME", None)
    loaded = subprocess.run([sys.executable, "-c", "from probe.forensics import scapy_quiet; scapy_quiet.load()"],
                            capture_output=True, text=True, env=env, cwd=work, timeout=60)  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout == "" and loaded.stderr == ""  # not a word on the terminal
    assert (tmp_path / "cache" / "scapy").is_dir()
    assert list(work.iterdir()) == []  # nothing in the working directory


FILTER_CHECK = """
import socket, time
from probe.forensics.capture import PacketCapture
from probe.forensics import scapy_quiet
from scapy.sendrecv import send
layers = scapy_quiet.load()
capture = PacketCapture()
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
packets = capture.watch_tcp(sock, "127.0.0.1", 443, time.monotonic)
for flags, payload in (("A", b""), ("A", b"data without push"), ("PA", b"pushed"), ("R", b""), ("SA", b"")):
    send(layers.IP(src="127.0.0.1", dst="127.0.0.1") / layers.TCP(sport=443, dport=port, flags=flags) / payload)
time.sleep(0.3)
print(sorted(p["flags"] for p in packets))
"""


def test_the_kernel_filter_passes_only_syns_resets_and_pushed_data() -> None:
    """What the rest of the machine receives never reaches Python: checked on a namespace's loopback."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a namespace, raw sockets)")
    namespace = f"bpf{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        seen = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", FILTER_CHECK],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert seen.stdout.strip() == "['PA', 'R', 'SA']", seen.stdout + seen.stderr[-2000:]


def test_no_ttl_sweep_runs_after_the_capture_stopped() -> None:
    """A sweep without the capture would see no router at any TTL: silence everywhere, a censor's
    hop named from nothing. After the capture stopped, the sweep is skipped, with the reason."""
    import datetime
    from types import SimpleNamespace

    from probe.forensics.examine import Forensics
    from probe.vocabulary.observations import ForensicState, Observations, TcpConnect
    from probe.vocabulary.purposes import Purpose

    forensics = Forensics(None)
    forensics.capture = SimpleNamespace(failure="the packet capture stopped mid-run: socket closed")  # type: ignore[assignment]
    connect = TcpConnect("198.51.100.7", 443, "generic_timeout_error", 0.0, 1.0, Purpose.TARGET)
    observations = Observations(None, (connect,), (), ())
    at = datetime.datetime.now(datetime.UTC)
    seen, suspect = forensics.prepare("site.example", observations, at, None, None)  # type: ignore[arg-type]
    assert not suspect
    assert seen.locate == ForensicState("skipped", "the packet capture stopped mid-run: socket closed")
