"""Typed `Observations` to a record's `observations` JSON object, exactly as the probe writes it.

`observations_codec.decode` is the way back; optional keys (None in the types) are left out.
"""

from __future__ import annotations

from typing import Any

from probe.vocabulary.observations import (
    AiaFetch,
    DnsAnswer,
    DnsLookup,
    DnsObservations,
    DnsQuery,
    DnsReply,
    ForensicState,
    HelperAnswer,
    HttpExchange,
    Observations,
    SweepStep,
    SweepTry,
    TcpConnect,
    TlsHandshake,
    TtlSweep,
    WirePacket,
)
from probe.vocabulary.observations_quic import encode_quic  # issue 22: QUIC
from probe.vocabulary.throughput_codec import encode_throughput  # issue 22

Json = dict[str, Any]


def _put(out: Json, key: str, value: Any) -> None:
    """An optional key: written only when there (None is absent)."""
    if value is not None:
        out[key] = value


def _with_extra(out: Json, extra: Any) -> Json:
    if extra:
        out.update(extra)
    return out


def _e_answer(a: DnsAnswer) -> Json:
    return {"name": a.name, "type": a.type, "ttl": a.ttl, "data": a.data}


def _e_reply(r: DnsReply) -> Json:
    return {"source": r.source, "ip_ttl": r.ip_ttl, "t": r.t, "raw_reply": r.raw_reply, "rcode": r.rcode,
            "answers": [_e_answer(a) for a in r.answers], "failure": r.failure}  # fmt: skip


def _e_query(q: DnsQuery | None) -> Json | None:
    if q is None:
        return None
    out: Json = {}
    _put(out, "address", q.address)
    _put(out, "port", q.port)
    out.update({
        "resolver": q.resolver, "transport": q.transport, "hostname": q.hostname, "query_type": q.query_type,
        "answers": [_e_answer(a) for a in q.answers], "rcode": q.rcode, "failure": q.failure,
        "raw_reply": q.raw_reply, "replies": [_e_reply(r) for r in q.replies], "t0": q.t0, "t": q.t,
    })  # fmt: skip
    _put(out, "replies_dropped", q.replies_dropped)
    _put(out, "unmatched_replies", q.unmatched_replies)
    if q.wire_replies is not None:
        out["wire_replies"] = [{"source": w.source, "ip_ttl": w.ip_ttl, "ip_id": w.ip_id, "dns_id": w.dns_id,
                                "t": w.t} for w in q.wire_replies]  # fmt: skip
    return _with_extra(out, q.extra)


def _e_lookup(lookup: DnsLookup | None) -> Json | None:
    if lookup is None:
        return None
    out = {"resolver": lookup.resolver, "transport": lookup.transport, "hostname": lookup.hostname,
           "addresses": list(lookup.addresses), "failure": lookup.failure,
           "queries": [_e_query(q) for q in lookup.queries]}  # fmt: skip
    _put(out, "hop", lookup.hop)
    return _with_extra(out, lookup.extra)


def _e_dns(dns: DnsObservations | None) -> Json | None:
    if dns is None:
        return None
    identity = dns.control_identity
    out = {
        "system": _e_lookup(dns.system), "system_udp": _e_lookup(dns.system_udp), "control": _e_lookup(dns.control),
        "control_plain": _e_lookup(dns.control_plain), "injection": _e_query(dns.injection),
        "control_identity": None if identity is None else {"plain": _e_query(identity.plain),
                                                           "encrypted": _e_query(identity.encrypted)},
        "resolver_baseline": _e_query(dns.resolver_baseline),
    }  # fmt: skip
    return _with_extra(out, dns.extra)


def _e_packet(p: WirePacket) -> Json:
    out: Json = {"flags": p.flags, "ip_ttl": p.ip_ttl, "ip_id": p.ip_id, "payload": p.payload}
    _put(out, "t", p.t)
    return out


def _e_tcp(c: TcpConnect) -> Json:
    out: Json = {"address": c.address, "port": c.port, "failure": c.failure, "t0": c.t0, "t": c.t,
                 "purpose": str(c.purpose)}  # fmt: skip
    _put(out, "hop", c.hop)
    if c.wire is not None:
        out["wire"] = [_e_packet(p) for p in c.wire]
    return out


def _e_aia(f: AiaFetch) -> Json:
    return {"url": f.url, "address": f.address, "status": f.status, "failure": f.failure,
            "certificates": list(f.certificates), "cached": f.cached, "t0": f.t0, "t": f.t}  # fmt: skip


def _e_tls(h: TlsHandshake) -> Json:
    out: Json = {
        "address": h.address, "port": h.port, "server_name": h.server_name, "tls_version": h.tls_version,
        "cipher_suite": h.cipher_suite, "negotiated_protocol": h.negotiated_protocol,
        "peer_certificates": list(h.peer_certificates), "failure": h.failure, "alert": h.alert,
        "os_store_valid": h.os_store_valid, "t0": h.t0, "t": h.t, "purpose": str(h.purpose),
    }  # fmt: skip
    _put(out, "hop", h.hop)
    if h.aia_fetches is not None:
        out["aia_fetches"] = [_e_aia(f) for f in h.aia_fetches]
    return _with_extra(out, h.extra)


def _e_http(x: HttpExchange) -> Json:
    out: Json = {
        "request": {"method": x.request.method, "host": x.request.host, "path": x.request.path},
        "status": x.status, "headers": [[name, value] for name, value in x.headers], "location": x.location,
        "title": x.title, "body_length": x.body_length, "body_sha256": x.body_sha256, "body_prefix": x.body_prefix,
        "body_truncated": x.body_truncated, "failure": x.failure, "t0": x.t0, "t": x.t, "address": x.address,
        "url": x.url, "redirect_index": x.redirect_index,
    }  # fmt: skip
    _put(out, "status_line", x.status_line)
    return _with_extra(out, x.extra)


def _e_helper(a: HelperAnswer) -> Json:
    return {"helper": a.helper, "status": a.status, "failure": a.failure,
            "response": None if a.response is None else a.response.raw, "t0": a.t0, "t": a.t}  # fmt: skip


def _e_try(t: SweepTry | None) -> Json | None:
    if t is None:
        return None
    out: Json = {"outcome": t.outcome, "failure": t.failure, "leaf_sha256": t.leaf_sha256,
                 "routers": list(t.routers), "unreachable_from": list(t.unreachable_from)}  # fmt: skip
    if t.packets is not None:
        out["packets"] = [_e_packet(p) for p in t.packets]
    _put(out, "t0", t.t0)
    _put(out, "t", t.t)
    return _with_extra(out, t.extra)


def _e_step(s: SweepStep) -> Json:
    out: Json = {"ttl": s.ttl}
    _put(out, "target", _e_try(s.target))
    _put(out, "control", _e_try(s.control))
    if s.retry is not None:
        retry: Json = {}
        _put(retry, "target", _e_try(s.retry.target))
        _put(retry, "control", _e_try(s.retry.control))
        out["retry"] = retry
    return out


def _e_state(state: ForensicState | TtlSweep) -> Json:
    if isinstance(state, ForensicState):
        out: Json = {"status": state.status}
        _put(out, "reason", state.reason)
        return _with_extra(out, state.extra)
    out = {"status": state.status, "address": state.address, "port": state.port, "mode": state.mode,
           "server_name": state.server_name, "control_sni": state.control_sni,
           "steps": [_e_step(s) for s in state.steps]}  # fmt: skip
    for key in ("stopped", "t", "finding"):
        _put(out, key, getattr(state, key))
    return _with_extra(out, state.extra)


def encode_sweep(sweep: TtlSweep) -> Json:
    """The TTL sweep's record (`forensics.locate` when it ran), as `encode` writes it."""
    return _e_state(sweep)


def encode(observations: Observations) -> Json:
    """The record's `observations` object: the JSON the probe writes."""
    o = observations
    out: Json = {
        "dns": _e_dns(o.dns), "tcp_connect": [_e_tcp(c) for c in o.tcp_connect],
        "tls_handshakes": [_e_tls(h) for h in o.tls_handshakes], "http_requests": [_e_http(x) for x in o.http_requests],
        "addresses_from": o.addresses_from, "helpers": [_e_helper(a) for a in o.helpers],
    }  # fmt: skip
    if o.redirect_lookups is not None:
        out["redirect_lookups"] = [_e_lookup(lookup) for lookup in o.redirect_lookups]
    if o.redirect_refused is not None:
        out["redirect_refused"] = {"url": o.redirect_refused.url, "address": o.redirect_refused.address}
    if o.redirect_error is not None:
        out["redirect_error"] = {"location": o.redirect_error.location, "reason": o.redirect_error.reason}
    if o.forensics is not None:
        locate = o.forensics.locate
        out["forensics"] = {"capture": _e_state(o.forensics.capture),
                            "locate": None if locate is None else _e_state(locate)}  # fmt: skip
    _put(out, "deadline_reached", o.deadline_reached)
    _put(out, "stage_error", o.stage_error)
    if o.throughput is not None:  # issue 22
        out["throughput"] = encode_throughput(o.throughput)
    if o.quic is not None:  # issue 22: QUIC
        out["quic"] = encode_quic(o.quic)
    return _with_extra(out, o.extra)
