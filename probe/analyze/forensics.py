"""Packet forensics, judged: injected resets, and the hop at which the censor sits.

A reset sent by the server comes from the same host, over the same path, as its SYN-ACK and its
data: the same IP TTL on arrival. One sent by a box on the path was born nearer (another TTL), and
its IP ID does not follow the server's sequence. The TTL sweep's first hop at which the target's
exchange meets interference (a reset, a forged certificate, silence) while the control's passes
is where the censor sits; the router that answered the hop before is the last one before it.
"""

from __future__ import annotations

from typing import Any

from probe.analyze.common import AnalysisContext, Judgement
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.failures import Failure

IP_ID_NEAR = 256  # a server's own next packet: within this many IDs after its last one

RESETS = (Failure.CONNECTION_RESET, Failure.CONNECTION_REFUSED)


def _is_reset(packet: dict[str, Any]) -> bool:
    return "R" in str(packet.get("flags", ""))


def _server_packets(obs: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every packet each address sent the probe that was no reset, across the record's connections."""
    found: dict[str, list[dict[str, Any]]] = {}
    for tcp in obs.get("tcp_connect") or []:
        for packet in tcp.get("wire") or []:
            if not _is_reset(packet):
                found.setdefault(tcp["address"], []).append(packet)
    return found


def _inconsistency(rst: dict[str, Any], server: list[dict[str, Any]]) -> list[str]:
    why = []
    if rst["ip_ttl"] not in {p["ip_ttl"] for p in server}:
        why.append("ip_ttl")
    ids = [p["ip_id"] for p in server if p["ip_id"]]
    if len(set(ids)) >= 2 and not any(0 < (rst["ip_id"] - last) % 65536 <= IP_ID_NEAR for last in ids):
        why.append("ip_id")  # the server numbers its packets; the reset is not among them
    return why


def injected_resets(obs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each reset the capture saw whose IP TTL or IP ID is not the server's, with both values."""
    server_by_address = _server_packets(obs)
    handshake_resets = {
        (h["address"], h.get("purpose"), h.get("hop"))
        for h in obs.get("tls_handshakes") or []
        if h.get("failure") in RESETS
    }
    marks = []
    for tcp in obs.get("tcp_connect") or []:
        resets = [p for p in tcp.get("wire") or [] if _is_reset(p)]
        server = server_by_address.get(tcp["address"], [])
        if not resets or not server:
            continue  # nothing to compare a reset with: no claim
        if tcp.get("failure") is not None:
            stage = "tcp"
        elif (tcp["address"], tcp.get("purpose"), tcp.get("hop")) in handshake_resets:
            stage = "tls"
        else:
            continue
        why = _inconsistency(resets[0], server)
        if why:
            reference = next((p for p in server if "S" in str(p["flags"])), server[0])
            marks.append({
                "stage": stage, "address": tcp["address"], "purpose": tcp.get("purpose", "target"), "why": why,
                "rst": {"ip_ttl": resets[0]["ip_ttl"], "ip_id": resets[0]["ip_id"]},
                "server": {"ip_ttl": reference["ip_ttl"], "ip_id": reference["ip_id"], "flags": reference["flags"]},
            })  # fmt: skip
    return marks


def _answered(side: dict[str, Any]) -> bool:
    return side["outcome"] not in ("timeout", "expired", "connect_failed", None)


def _interference(side: dict[str, Any], control: dict[str, Any] | None, forged: set[str]) -> str | None:
    if side["outcome"] == "reset":
        return "reset"
    if side["outcome"] == "handshake" and side.get("leaf_sha256") in forged:
        return "forged_certificate"
    if control is None:
        return None
    control_passed = _answered(control) or bool(control["routers"])
    if side["outcome"] == "failed" and control_passed:
        return "handshake_failure"
    if side["outcome"] == "timeout" and not side["routers"] and control_passed:
        return "silence"
    return None


def censor_hop(locate: dict[str, Any], forged: set[str], ctx: AnalysisContext) -> dict[str, Any] | None:
    """The first hop at which the target's exchange meets interference, and the router before it."""
    steps = locate.get("steps") or []
    for index, step in enumerate(steps):
        control = step.get("control")
        interference = _interference(step["target"], control, forged)
        if interference is None:
            continue
        if control is not None and _interference(control, None, forged) is not None:
            return None  # the control name met it too: the server's doing, or no contrast; no claim
        before = steps[index - 1] if index else None
        routers: list[str] = []
        if before is not None:
            routers = before["target"]["routers"] or (before.get("control") or {}).get("routers", [])
        router = routers[0] if routers else None
        hop: dict[str, Any] = {
            "hop": step["ttl"],
            "interference": interference,
            "router_before": router,
            "router_before_asn": None,
            "control_passed": None if control is None else True,
            "address": locate["address"],
        }
        if router is not None and ctx.asn is not None:
            number = ctx.asn.lookup(router)
            hop["router_before_asn"] = f"AS{number}" if number is not None else None
        return hop
    return None


def judge_forensics(obs: dict[str, Any], j: Judgement, forged: set[str], ctx: AnalysisContext) -> None:
    """Marks injected resets and names the censor's hop; an injected reset confirms the finding."""
    marks = injected_resets(obs)
    located = (obs.get("forensics") or {}).get("locate") or {}
    hop = censor_hop(located, forged, ctx) if located.get("status") == "done" else None
    if not marks and hop is None:
        return
    j.forensics = {"injected_rst": marks, "censor_hop": hop}
    for mark in marks:
        j.add(Anomaly.TCP_INJECTED_RST if mark["stage"] == "tcp" else Anomaly.TLS_INJECTED_RST)
        if mark["purpose"] == "target" and j.blocking == Blocking(mark["stage"]):
            j.confidence = Confidence.CONFIRMED  # the path sent it: not the server, not the probe's network
