"""The record's `observations.throughput` object to `Throughput` and back (`encode(decode(x)) == x`).
Malformed input raises the KeyError, TypeError or ValueError that `observations_codec` names."""

from __future__ import annotations

from typing import Any

from probe.vocabulary.throughput import NO_EXTRA, BulkFlow, TcpInfo, Throughput

Json = dict[str, Any]
_INFO_KEYS = ("rtt_us", "rttvar_us", "total_retrans", "bytes_received", "segs_in")
_FLOW_KEYS = ("kind", "round", "address", "port", "server_name", "status", "failure", "bytes", "content_length",
              "samples", "stalled_at", "stalled_at_wire", "tcp_info", "t_connect", "t_handshake", "t_request",
              "t0", "t")  # fmt: skip
_THROUGHPUT_KEYS = frozenset({"source", "url", "size", "control_sni", "flows", "rounds", "stopped"})


def _info(d: Json | None) -> TcpInfo | None:
    if d is None:
        return None
    return TcpInfo(int(d["rtt_us"]), int(d["rttvar_us"]), int(d["total_retrans"]), int(d["bytes_received"]),
                   int(d["segs_in"]), d.get("min_rtt_us"), d.get("rcv_ooopack"))  # fmt: skip


def _flow(d: Json) -> BulkFlow:
    samples = tuple((float(t), int(n)) for t, n in d["samples"])
    return BulkFlow(
        d["kind"], int(d["round"]), d["address"], int(d["port"]), d.get("server_name"), d.get("status"),
        d.get("failure"), int(d["bytes"]), d.get("content_length"), samples, d.get("stalled_at"),
        d.get("stalled_at_wire"), _info(d.get("tcp_info")), d.get("t_connect"), d.get("t_handshake"),
        d.get("t_request"), float(d["t0"]), d.get("t"),
    )  # fmt: skip


def decode_throughput(d: Json | None) -> Throughput | None:
    """The record's `observations.throughput`. Rejudging only: netx/bulk.py makes its `BulkFlow`s directly."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise TypeError(f"throughput is {type(d).__name__}, not an object")
    extra = {k: v for k, v in d.items() if k not in _THROUGHPUT_KEYS}
    return Throughput(d["source"], d["url"], int(d["size"]), d.get("control_sni"),
                      tuple(_flow(f) for f in d["flows"]), int(d["rounds"]), d.get("stopped"),
                      extra or NO_EXTRA)  # fmt: skip


def _e_info(info: TcpInfo | None) -> Json | None:
    if info is None:
        return None
    out: Json = {k: getattr(info, k) for k in _INFO_KEYS}
    for key in ("min_rtt_us", "rcv_ooopack"):
        if getattr(info, key) is not None:
            out[key] = getattr(info, key)
    return out


def _e_flow(flow: BulkFlow) -> Json:
    out = {k: getattr(flow, k) for k in _FLOW_KEYS}
    out["samples"] = [[t, n] for t, n in flow.samples]
    out["tcp_info"] = _e_info(flow.tcp_info)
    return out


def encode_throughput(t: Throughput) -> Json:
    out: Json = {"source": t.source, "url": t.url, "size": t.size, "control_sni": t.control_sni,
                 "flows": [_e_flow(f) for f in t.flows], "rounds": t.rounds}  # fmt: skip
    if t.stopped is not None:
        out["stopped"] = t.stopped
    out.update(t.extra)
    return out
