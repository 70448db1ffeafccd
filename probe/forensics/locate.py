"""Where on the path the censor sits: the blocked exchange again, at rising IP TTLs.

For a TLS finding the connection is made as usual, then `IP_TTL` is lowered on the socket so that
only the ClientHello (and what follows it) carries the low TTL; the same is done with the control
SNI beside it. A ClientHello that dies on the way makes the router at that hop send ICMP "time
exceeded" (captured); one that reaches the censor is reset, forged or swallowed; one that passes
reaches the server. For a TCP finding the SYN itself carries the low TTL. Each step is recorded as
seen (the routers, what answered, what the capture saw); `probe.analyze.forensics` concludes.

An exchange that meets silence (no router, no answer) or whose connection failed is tried once more
at the same TTL (`retry`): a router that rate-limits its ICMP, or one lost packet, is not a censor.

Bounded: at most MAX_HOPS TTLs, at most two exchanges per side and TTL, a short wait per exchange,
the target's own deadline, and it stops as soon as the target's exchange is answered by anything
but a router, when the control got through where the target did not (one TTL later if the target
met silence there, so that the next TTL can agree), or when nothing at all answers for a few TTLs
in a row.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import time
from typing import Any

from probe.forensics.capture import PacketCapture
from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.vocabulary.failures import Failure

MAX_HOPS = 32
STEP_WAIT = 1.0  # seconds for one exchange at one TTL (an ICMP reply takes milliseconds)
QUIET_HOPS = 3  # TTLs in a row with no answer and no router: the path beyond is silent
ICMP_GRACE = 0.05  # seconds for a router's ICMP to be read after the exchange ended


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _exchange(
    capture: PacketCapture,
    address: str,
    port: int,
    ttl: int,
    server_name: str | None,
    wait: float,
    clock: Clock,
) -> dict[str, Any]:
    """One exchange at one TTL: a ClientHello (server_name given) or a SYN (None) limited to `ttl`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("0.0.0.0", 0))
    routers = capture.watch_icmp(sock, address, port, clock.now)
    packets = capture.watch_tcp(sock, address, port, clock.now)
    step: dict[str, Any] = {"outcome": None, "failure": None, "leaf_sha256": None}
    try:
        sock.settimeout(wait)
        if server_name is None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        try:
            sock.connect((address, port))
        except Exception as exc:
            step["failure"] = errors.classify(exc)
            step["outcome"] = "connect_failed" if server_name is not None else _outcome(step["failure"])
            return step
        if server_name is None:
            step["outcome"] = "connected"
            return step
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)  # from here on: the ClientHello
        tls = _context().wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
        sock = tls
        try:
            tls.do_handshake()
            leaf = tls.getpeercert(binary_form=True)
            step["leaf_sha256"] = hashlib.sha256(leaf).hexdigest() if leaf else None
            step["outcome"] = "handshake"
        except Exception as exc:
            step["failure"] = errors.classify(exc)
            step["outcome"] = _outcome(step["failure"])
        return step
    finally:
        time.sleep(ICMP_GRACE)
        capture.forget(routers)
        capture.forget(packets)
        with contextlib.suppress(OSError):
            sock.close()
        step["routers"] = sorted({r["router"] for r in routers if r["icmp_type"] == 11})
        step["unreachable_from"] = sorted({r["router"] for r in routers if r["icmp_type"] == 3})
        step["packets"] = [dict(p) for p in packets]
        if step["outcome"] == "timeout" and any(p["payload"] for p in packets):
            step["outcome"] = "answered"  # the server spoke (a TLS 1.2 flight) though the handshake could not end
        elif step["outcome"] in ("timeout", "failed") and step["routers"]:
            step["outcome"] = "expired"  # died at a router on the way (a SYN's connect says "unreachable")


def _outcome(failure: str | None) -> str:
    if failure in (Failure.CONNECTION_RESET, Failure.CONNECTION_REFUSED):
        return "reset"
    if failure == Failure.GENERIC_TIMEOUT:
        return "timeout"
    return "failed"


def _answered(step: dict[str, Any]) -> bool:
    """Something other than a router answered: the server, or the censor in its name."""
    return step["outcome"] not in ("timeout", "expired", "connect_failed", None) or bool(step["unreachable_from"])


def _unclear(side: dict[str, Any]) -> bool:
    """Worth a second try: nothing came back (no router, no answer), or no connection to try on."""
    return side["outcome"] == "connect_failed" or (side["outcome"] == "timeout" and not side["routers"])


def _tries(step: dict[str, Any], side: str) -> list[dict[str, Any]]:
    return [t for t in (step.get(side), (step.get("retry") or {}).get(side)) if t is not None]


def locate(
    capture: PacketCapture,
    address: str,
    port: int,
    server_name: str | None,
    control_sni: str | None,
    timeout: float,
    ends: float | None,
) -> dict[str, Any]:
    """Every TTL's exchanges, target and control side by side, until the path's answer is clear."""
    mode = "client_hello" if server_name is not None else "syn"
    clock = Clock()
    wait = min(timeout, STEP_WAIT)
    record: dict[str, Any] = {"status": "done", "address": address, "port": port, "mode": mode,
                              "server_name": server_name, "control_sni": control_sni, "steps": []}  # fmt: skip
    names = {"target": server_name, **({"control": control_sni} if mode == "client_hello" and control_sni else {})}
    quiet = 0
    control_through = False  # the control got through at the TTL before, where the target met silence
    for ttl in range(1, MAX_HOPS + 1):
        if ends is not None and time.monotonic() + 2 * wait > ends:
            record["stopped"] = "deadline"
            break
        step: dict[str, Any] = {"ttl": ttl}
        for side, name in names.items():
            step[side] = _exchange(capture, address, port, ttl, name, wait, clock)
        for side, name in names.items():  # a second try only where the first met silence or no connection
            if _unclear(step[side]) and (ends is None or time.monotonic() + wait <= ends):
                step.setdefault("retry", {})[side] = _exchange(capture, address, port, ttl, name, wait, clock)
        record["steps"].append(step)
        targets, controls = _tries(step, "target"), _tries(step, "control")
        if any(_answered(side) for side in targets):
            record["stopped"] = "answered"
            break
        if any(_answered(side) for side in controls):  # the control got through where the target did not
            silent = all(side["outcome"] == "timeout" and not side["routers"] for side in targets)
            if control_through or not silent:
                record["stopped"] = "control_answered"
                break
            control_through = True  # one TTL more: does the target's silence hold beyond?
        quiet = quiet + 1 if not any(side["routers"] for side in (*targets, *controls)) else 0
        if quiet >= QUIET_HOPS:
            record["stopped"] = "silent_path"
            break
    else:
        record["stopped"] = "max_hops"
    record["t"] = clock.now()
    return record
