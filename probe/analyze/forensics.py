"""Packet forensics, judged: injected resets, and the hop at which the censor sits.

A reset sent by the server comes from the same host, over the same path, as the SYN-ACK and data
of the same connection: the same IP TTL on arrival, and (when the server numbers that connection's
packets) an IP ID that follows theirs. Only that connection is compared: another connection to the
same address starts its own IP ID sequence (Linux picks a random start per connection), and a
stateless reset carries IP ID 0, which says nothing. One sent by a box on the path was born nearer
(another TTL), or out of the connection's sequence.

The TTL sweep's hop is the censor's when the target's exchange meets interference there (a reset,
a forged certificate, a failed handshake, silence) while the control's passes, and no later TTL
shows the target's exchange getting past it (a router's "time exceeded" from beyond, or the server
answering). Silence, which one lost ICMP message can fake, counts only when every try at that TTL
was silent and the TTLs after it agree. The router that answered the hop before is the last one
before the censor.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from probe.analyze.common import AnalysisContext, Judgement, RuleContext
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import Observations, SweepStep, SweepTry, TtlSweep, WirePacket
from probe.vocabulary.proofs import Proof
from probe.vocabulary.purposes import Purpose

IP_ID_NEAR = 256  # a server's own next packet: within this many IDs after its last one

RESETS = (Failure.CONNECTION_RESET, Failure.CONNECTION_REFUSED)


def _is_reset(packet: WirePacket) -> bool:
    return "R" in str(packet.flags)


def _follows(earlier: int, later: int) -> bool:
    return 0 < (later - earlier) % 65536 <= IP_ID_NEAR


def _numbered(ids: list[int]) -> bool:
    """The server numbers this connection's packets: two or more IDs, each a little after the last."""
    return len(ids) >= 2 and all(_follows(a, b) for a, b in pairwise(ids))


def _inconsistency(rst: WirePacket, server: list[WirePacket]) -> list[str]:
    """What tells `rst` from the server's own packets of the same connection (`server`, not empty)."""
    why = []
    if rst.ip_ttl not in {p.ip_ttl for p in server}:
        why.append("ip_ttl")
    ids = [p.ip_id for p in server if p.ip_id]  # ID 0 (a SYN-ACK, a stateless packet): no number
    if rst.ip_id and _numbered(ids) and not any(_follows(last, rst.ip_id) for last in ids):
        why.append("ip_id")  # the server numbers this connection's packets; the reset is not among them
    return why


def injected_resets(obs: Observations) -> list[dict[str, Any]]:
    """Each connection's reset whose IP TTL or IP ID is not that connection's server's, with both values."""
    handshake_resets = {(h.address, h.purpose, h.hop) for h in obs.tls_handshakes if h.failure in RESETS}
    marks = []
    for tcp in obs.tcp_connect:
        wire = tcp.wire or ()
        resets = [p for p in wire if _is_reset(p)]
        server = [p for p in wire if not _is_reset(p)]  # this connection's own: never another's
        if not resets or not server:
            continue  # nothing of this connection's server to compare a reset with: no claim
        if tcp.failure is not None:
            stage = "tcp"
        elif (tcp.address, tcp.purpose, tcp.hop) in handshake_resets:
            stage = "tls"
        else:
            continue
        why = _inconsistency(resets[0], server)
        if why:
            reference = next((p for p in server if "S" in str(p.flags)), server[0])
            marks.append({
                "stage": stage, "address": tcp.address, "purpose": str(tcp.purpose), "why": why,
                "rst": {"ip_ttl": resets[0].ip_ttl, "ip_id": resets[0].ip_id},
                "server": {"ip_ttl": reference.ip_ttl, "ip_id": reference.ip_id, "flags": reference.flags},
            })  # fmt: skip
    return marks


# --- the TTL sweep --------------------------------------------------------------------------------


def _silent(side: SweepTry) -> bool:
    """Nothing came back: no router, no answer (a ClientHello or SYN that vanished)."""
    return side.outcome == "timeout" and not side.routers and not side.unreachable_from


def _view(tries: list[SweepTry]) -> SweepTry:
    """What one side showed at one TTL: its first informative try; silence only if every try was silent."""
    for side in tries:
        if not _silent(side) and side.outcome != "connect_failed":
            return side
    return next((side for side in tries if side.outcome == "connect_failed"), tries[0])


def _answered(side: SweepTry) -> bool:
    return side.outcome not in ("timeout", "expired", "connect_failed", None)


def _passed(tries: list[SweepTry]) -> bool:
    return any(_answered(side) or bool(side.routers) for side in tries)


def _interference(side: SweepTry, control: list[SweepTry] | None, forged: set[str]) -> str | None:
    if side.outcome == "reset":
        return "reset"
    if side.outcome == "handshake" and side.leaf_sha256 in forged:
        return "forged_certificate"
    if not control:
        return None
    if side.outcome == "failed" and _passed(control):
        return "handshake_failure"
    if _silent(side) and _passed(control):
        return "silence"
    return None


def _got_past(side: SweepTry, forged: set[str]) -> bool:
    """This try went further than the hop before: a router beyond answered, or the server did."""
    if side.routers:
        return True  # "time exceeded" from a router further on
    if side.outcome in ("answered", "connected"):
        return True
    return side.outcome == "handshake" and side.leaf_sha256 not in forged


def _stands(interference: str, later: tuple[SweepStep, ...], forged: set[str]) -> bool:
    """The interference met at a hop persists at every later TTL tried; silence needs one to agree."""
    agreed = False
    for step in later:
        tries = step.tries("target")
        if any(_got_past(side, forged) for side in tries):
            return False
        if interference == "silence":
            if any(side.outcome in ("reset", "failed", "handshake") for side in tries):
                return False  # something answered beyond: the packet was not dropped at this hop
            agreed = agreed or (bool(tries) and all(_silent(side) for side in tries))
    return agreed or interference != "silence"


def censor_hop(locate: TtlSweep, forged: set[str], ctx: AnalysisContext) -> dict[str, Any] | None:
    """The first hop at which the target's exchange meets interference that the later TTLs do not
    refute, while the control's passes; and the router before it."""
    steps = locate.steps
    for index, step in enumerate(steps):
        targets = step.tries("target")
        if not targets:
            continue
        controls = step.tries("control") or None
        interference = _interference(_view(targets), controls, forged)
        if interference is None or not _stands(interference, steps[index + 1 :], forged):
            continue
        if controls is not None and _interference(_view(controls), None, forged) is not None:
            return None  # the control name met it too: the server's doing, or no contrast; no claim
        routers: tuple[str, ...] = ()
        if index:
            before = steps[index - 1]
            for side in (*before.tries("target"), *before.tries("control")):
                routers = routers or side.routers
        router = routers[0] if routers else None
        hop: dict[str, Any] = {
            "hop": step.ttl,
            "interference": interference,
            "router_before": router,
            "router_before_asn": None,
            "control_passed": None if controls is None else True,
            "address": locate.address,
        }
        if router is not None and ctx.asn is not None:
            number = ctx.asn.lookup(router)
            hop["router_before_asn"] = f"AS{number}" if number is not None else None
        return hop
    return None


CONFIRMING_TTL_GAP = 2  # hops between the reset's origin and the server for it to prove anything


def _far_from_server(mark: dict[str, Any]) -> bool:
    """A reset born at least two hops nearer than the server: one hop nearer is also where a
    server's own firewall or load balancer sits, which resets honestly. Recorded either way."""
    if "ip_ttl" not in mark["why"]:
        return False  # an IP ID out of sequence alone: a firewall in front of the server numbers its own
    return bool(_hops(mark["server"]["ip_ttl"]) - _hops(mark["rst"]["ip_ttl"]) >= CONFIRMING_TTL_GAP)


def _hops(ttl: int) -> int:
    """Hops a packet travelled, from the usual initial TTL at or above the one that arrived."""
    return next(start for start in (32, 64, 128, 255) if start >= ttl) - ttl


def forged_leaves(obs: Observations, rules: RuleContext) -> set[str]:
    """SHA-256 of the leaves the target's handshakes presented that do not validate."""
    leaves = set()
    for handshake in obs.tls_handshakes:
        if handshake.purpose == Purpose.TARGET and handshake.peer_certificates:
            analysis = rules.analysis_of(handshake)
            if not analysis["valid"] and analysis.get("certificates"):
                leaves.add(analysis["certificates"][0]["sha256_der"])
    return leaves


def judge_forensics(obs: Observations, rules: RuleContext, j: Judgement) -> None:
    """Marks injected resets and names the censor's hop; an injected reset confirms the finding."""
    marks = injected_resets(obs)
    located = obs.forensics.locate if obs.forensics is not None else None
    hop = None
    if isinstance(located, TtlSweep) and located.status == "done":
        hop = censor_hop(located, forged_leaves(obs, rules), rules.analysis)
    if not marks and hop is None:
        return
    j.forensics = {"injected_rst": marks, "censor_hop": hop}
    for mark in marks:
        j.add(Anomaly.TCP_INJECTED_RST if mark["stage"] == "tcp" else Anomaly.TLS_INJECTED_RST)
        if mark["purpose"] == "target" and j.blocking == Blocking(mark["stage"]) and _far_from_server(mark):
            j.confidence = Confidence.CONFIRMED  # the path sent it: not the server, not the probe's network
            if Proof.INJECTED_RESET not in j.basis:
                j.basis.append(Proof.INJECTED_RESET)
