"""A record's `observations` JSON object to typed `Observations`, and back.

`encode(decode(x)) == x` for every record the probe writes (the test holds it against the schema
and every record the repository ships or a lab run writes). Older or hand-made records may leave
keys out; they are read with the defaults the rules always used, and written back with them:
a connection without `purpose` is the target's (`Purpose.TARGET`), a handshake without
`os_store_valid` or `alert` has None, a missing list is empty, a record without `helpers` asked
none. Only `dns` must be there (None for an IP literal; every record since the first has it).
Anything else malformed (a list where an object belongs, an unknown purpose) raises
`ObservationsError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from probe.vocabulary.errors import InputError
from probe.vocabulary.observations import (
    NO_EXTRA,
    AiaFetch,
    ControlIdentity,
    DnsAnswer,
    DnsLookup,
    DnsObservations,
    DnsQuery,
    DnsReply,
    Forensics,
    ForensicState,
    HelperAnswer,
    HelperDns,
    HelperHttp,
    HelperResponse,
    HelperTcp,
    HelperTls,
    HttpExchange,
    HttpRequestLine,
    Observations,
    RedirectError,
    RedirectRefused,
    SweepRetry,
    SweepStep,
    SweepTry,
    TcpConnect,
    TlsHandshake,
    TtlSweep,
    WirePacket,
    WireReply,
)
from probe.vocabulary.observations_encode import encode
from probe.vocabulary.observations_quic import decode_quic  # issue 22: QUIC
from probe.vocabulary.purposes import DEFAULT_PURPOSE, Purpose
from probe.vocabulary.throughput_codec import decode_throughput  # issue 22

__all__ = ["ObservationsError", "decode", "decode_sweep", "encode"]

Json = dict[str, Any]
T = TypeVar("T")


class ObservationsError(InputError):
    """A record's observations that are not what the probe writes; the message says where."""


def _extra(d: Json, known: frozenset[str], usual: int) -> Any:
    """Keys this module does not know, kept; counted only when there are more keys than usual."""
    if len(d) <= usual:
        return NO_EXTRA
    return {k: v for k, v in d.items() if k not in known} or NO_EXTRA


def _many(items: Iterable[Any] | None, one: Callable[[Json], T]) -> tuple[T, ...]:
    return tuple(map(one, items)) if items else ()


def _maybe_many(items: Iterable[Any] | None, one: Callable[[Json], T]) -> tuple[T, ...] | None:
    return None if items is None else tuple(map(one, items))


# --- decode -----------------------------------------------------------------------------------------


def _answer(d: Json) -> DnsAnswer:
    return DnsAnswer(d.get("name"), d.get("type"), d.get("ttl"), d.get("data"))  # type: ignore[arg-type]


def _reply(d: Json) -> DnsReply:
    return DnsReply(d.get("source"), d.get("ip_ttl"), d.get("t"), d.get("raw_reply"), d.get("rcode"),  # type: ignore[arg-type]
                    _many(d.get("answers"), _answer), d.get("failure"))  # fmt: skip


def _wire_reply(d: Json) -> WireReply:
    return WireReply(d["source"], d["ip_ttl"], d["ip_id"], d.get("dns_id"), d["t"])


_QUERY_KEYS = frozenset({"resolver", "transport", "hostname", "query_type", "answers", "rcode", "failure",
                         "raw_reply", "t0", "t", "replies", "replies_dropped", "unmatched_replies",
                         "wire_replies", "address", "port"})  # fmt: skip


def _query(d: Json) -> DnsQuery:
    return DnsQuery(
        d.get("resolver"), d.get("transport"), d.get("hostname"), d.get("query_type"),  # type: ignore[arg-type]
        _many(d.get("answers"), _answer), d.get("rcode"), d.get("failure"), d.get("raw_reply"),
        d.get("t0"), d.get("t"), _many(d.get("replies"), _reply),  # type: ignore[arg-type]
        d.get("replies_dropped"), d.get("unmatched_replies"), _maybe_many(d.get("wire_replies"), _wire_reply),
        d.get("address"), d.get("port"), _extra(d, _QUERY_KEYS, 11),
    )  # fmt: skip


def _maybe_query(d: Json | None) -> DnsQuery | None:
    return None if d is None else _query(d)


_LOOKUP_KEYS = frozenset({"resolver", "transport", "hostname", "addresses", "failure", "queries", "hop"})


def _lookup(d: Json) -> DnsLookup:
    return DnsLookup(d.get("resolver"), d.get("transport"), d.get("hostname"),  # type: ignore[arg-type]
                     tuple(d.get("addresses") or ()), d.get("failure"), _many(d.get("queries"), _query),
                     d.get("hop"), _extra(d, _LOOKUP_KEYS, 6))  # fmt: skip


def _maybe_lookup(d: Json | None) -> DnsLookup | None:
    return None if d is None else _lookup(d)


_DNS_KEYS = frozenset({"system", "system_udp", "control", "control_plain", "injection", "control_identity",
                       "resolver_baseline"})  # fmt: skip


def _dns(d: Json | None) -> DnsObservations | None:
    if d is None:
        return None
    identity = d.get("control_identity")
    return DnsObservations(
        _lookup(d["system"]), _maybe_lookup(d.get("system_udp")), _maybe_lookup(d.get("control")),
        _maybe_lookup(d.get("control_plain")), _maybe_query(d.get("injection")),
        None if identity is None else ControlIdentity(_maybe_query(identity.get("plain")),
                                                      _maybe_query(identity.get("encrypted"))),
        _maybe_query(d.get("resolver_baseline")), _extra(d, _DNS_KEYS, 7),
    )  # fmt: skip


def _packet(d: Json) -> WirePacket:
    return WirePacket(d["flags"], d["ip_ttl"], d["ip_id"], d.get("payload", 0), d.get("t"))


def _purpose(value: Any) -> Purpose:
    return DEFAULT_PURPOSE if value is None else Purpose(value)


def _tcp(d: Json) -> TcpConnect:
    return TcpConnect(d.get("address"), d.get("port"), d.get("failure"), d.get("t0"), d.get("t"),  # type: ignore[arg-type]
                      _purpose(d.get("purpose")), d.get("hop"), _maybe_many(d.get("wire"), _packet))  # fmt: skip


def _aia(d: Json) -> AiaFetch:
    return AiaFetch(d.get("url"), d.get("address"), d.get("status"), d.get("failure"),  # type: ignore[arg-type]
                    tuple(d.get("certificates") or ()), bool(d.get("cached", False)), d.get("t0"), d.get("t"))  # type: ignore[arg-type]  # fmt: skip


_TLS_KEYS = frozenset({"address", "port", "server_name", "tls_version", "cipher_suite", "negotiated_protocol",
                       "peer_certificates", "failure", "alert", "t0", "t", "purpose", "os_store_valid", "hop",
                       "aia_fetches"})  # fmt: skip


def _tls(d: Json) -> TlsHandshake:
    return TlsHandshake(
        d.get("address"), d.get("port"), d.get("server_name"), d.get("tls_version"), d.get("cipher_suite"),  # type: ignore[arg-type]
        d.get("negotiated_protocol"), tuple(d.get("peer_certificates") or ()), d.get("failure"), d.get("alert"),
        d.get("t0"), d.get("t"), _purpose(d.get("purpose")), d.get("os_store_valid"), d.get("hop"),  # type: ignore[arg-type]
        _maybe_many(d.get("aia_fetches"), _aia), _extra(d, _TLS_KEYS, 13),
    )  # fmt: skip


_HTTP_KEYS = frozenset({"request", "status", "headers", "location", "title", "body_length", "body_sha256",
                        "body_prefix", "body_truncated", "failure", "t0", "t", "address", "url", "redirect_index",
                        "status_line"})  # fmt: skip


def _http(d: Json) -> HttpExchange:
    request = d.get("request") or {}
    return HttpExchange(
        HttpRequestLine(request.get("method"), request.get("host"), request.get("path")),  # type: ignore[arg-type]
        d.get("status"), tuple((pair[0], pair[1]) for pair in d.get("headers") or ()), d.get("location"),
        d.get("title"), d.get("body_length"), d.get("body_sha256"), d.get("body_prefix"),
        bool(d.get("body_truncated", False)), d.get("failure"), d.get("t0"), d.get("t"), d.get("address"),  # type: ignore[arg-type]
        d.get("url"), d.get("redirect_index"), d.get("status_line"), _extra(d, _HTTP_KEYS, 15),
    )  # fmt: skip


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def helper_response(raw: Json | None) -> HelperResponse | None:
    """The helper's own JSON, kept whole, with the views the rules read (lenient: a part that is
    not an object is no view)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ObservationsError(f"a helper's response is {type(raw).__name__}, not an object")
    dns, tls, http = raw.get("dns"), raw.get("tls"), raw.get("http")
    names = http.get("header_names") if isinstance(http, dict) else None
    return HelperResponse(
        raw,
        HelperDns(tuple(dns.get("addresses") or ()), dns.get("failure")) if isinstance(dns, dict) else None,
        tuple(HelperTcp(attempt.get("failure")) for attempt in raw.get("tcp") or ()),
        HelperTls(tls.get("failure"), tls.get("leaf_spki_sha256"), tls.get("valid")) if isinstance(tls, dict) else None,
        HelperHttp(
            http.get("status"), http.get("failure"),
            http["title"] if isinstance(http.get("title"), str) else None,
            _int_or_none(http.get("body_length")), _int_or_none(http.get("body_length_normalized")),
            http.get("body_sha256"), tuple(str(n) for n in names) if isinstance(names, list) else None,
        ) if isinstance(http, dict) else None,
    )  # fmt: skip


def _helper(d: Json) -> HelperAnswer:
    return HelperAnswer(d.get("helper"), d.get("status"), d.get("failure"), helper_response(d.get("response")),  # type: ignore[arg-type]
                        d.get("t0"), d.get("t"))  # fmt: skip


_TRY_KEYS = frozenset({"outcome", "routers", "failure", "leaf_sha256", "unreachable_from", "packets", "t0", "t"})


def _try(d: Json | None) -> SweepTry | None:
    if d is None:
        return None
    return SweepTry(d.get("outcome"), tuple(d.get("routers") or ()), d.get("failure"), d.get("leaf_sha256"),
                    tuple(d.get("unreachable_from") or ()), _maybe_many(d.get("packets"), _packet),
                    d.get("t0"), d.get("t"), _extra(d, _TRY_KEYS, 6))  # fmt: skip


def _step(d: Json) -> SweepStep:
    retry = d.get("retry")
    again = None if retry is None else SweepRetry(_try(retry.get("target")), _try(retry.get("control")))
    return SweepStep(d["ttl"], _try(d.get("target")), _try(d.get("control")), again)


_STATE_KEYS = frozenset({"status", "reason"})
_SWEEP_KEYS = frozenset({"status", "address", "port", "mode", "server_name", "control_sni", "steps", "stopped",
                         "t", "finding"})  # fmt: skip


def _state(d: Json) -> ForensicState:
    return ForensicState(d["status"], d.get("reason"), _extra(d, _STATE_KEYS, 2))


def decode_sweep(d: Json) -> TtlSweep:
    """The TTL sweep's record (`forensics.locate` when it ran)."""
    return TtlSweep(d.get("status", "done"), d.get("address"), d.get("port"), d.get("mode"), d.get("server_name"),
                    d.get("control_sni"), _many(d.get("steps"), _step), d.get("stopped"), d.get("t"),
                    d.get("finding"), _extra(d, _SWEEP_KEYS, 10))  # fmt: skip


def _forensics(d: Json | None) -> Forensics | None:
    if d is None:
        return None
    locate = d.get("locate")
    if locate is not None:
        locate = decode_sweep(locate) if "steps" in locate or "address" in locate else _state(locate)
    return Forensics(_state(d["capture"]), locate)


_OBSERVATION_KEYS = frozenset({"dns", "tcp_connect", "tls_handshakes", "http_requests", "addresses_from", "helpers",
                               "redirect_lookups", "redirect_refused", "redirect_error", "forensics",
                               "deadline_reached", "stage_error", "throughput", "quic"})  # fmt: skip


def decode(record_observations: Json) -> Observations:
    """A record's `observations` object, typed. Raises ObservationsError for anything malformed."""
    if not isinstance(record_observations, dict):
        raise ObservationsError(f"observations are {type(record_observations).__name__}, not an object")
    d = record_observations
    section = "observations"
    try:
        if "dns" not in d:
            raise ObservationsError("observations have no 'dns'")
        section = "dns"
        dns = _dns(d["dns"])
        section = "tcp_connect"
        tcp = _many(d.get("tcp_connect"), _tcp)
        section = "tls_handshakes"
        tls = _many(d.get("tls_handshakes"), _tls)
        section = "http_requests"
        http = _many(d.get("http_requests"), _http)
        section = "helpers"
        helpers = _many(d.get("helpers"), _helper)
        section = "redirects"
        refused, error = d.get("redirect_refused"), d.get("redirect_error")
        redirect_lookups = _maybe_many(d.get("redirect_lookups"), _lookup)
        refused = None if refused is None else RedirectRefused(refused["url"], refused["address"])
        error = None if error is None else RedirectError(error["location"], error["reason"])
        section = "forensics"
        forensics = _forensics(d.get("forensics"))
        section = "throughput"  # issue 22
        throughput = decode_throughput(d.get("throughput"))  # issue 22
        section = "quic"  # issue 22: QUIC
        quic = decode_quic(d.get("quic"))  # issue 22: QUIC
    except ObservationsError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise ObservationsError(f"observations.{section}: {type(exc).__name__}: {exc}"[:300]) from None
    return Observations(
        dns, tcp, tls, http, d.get("addresses_from"), helpers, redirect_lookups, refused, error, forensics,
        d.get("deadline_reached"), d.get("stage_error"), _extra(d, _OBSERVATION_KEYS, 6),
        throughput=throughput,  # issue 22
        quic=quic,  # issue 22: QUIC
    )  # fmt: skip
