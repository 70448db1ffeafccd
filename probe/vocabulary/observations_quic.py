"""QUIC observations (issue 22): HTTP/3's handshake over UDP, with the target's name and the control
name, typed, with their decoding and encoding (`observations_codec` and `observations_encode` call
these for the record's `observations.quic`). A record without the key has none: QUIC was not tried.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from probe.vocabulary.failures import Failure
from probe.vocabulary.purposes import DEFAULT_PURPOSE, Purpose

Json = dict[str, Any]


class QuicHandshake(Struct, frozen=True):
    """One QUIC handshake (probe/netx/quic.py)."""

    address: str
    port: int
    server_name: str | None
    purpose: Purpose  # target or control_sni
    quic_version: str | None  # "0x00000001": QUIC v1 (None when nothing came back)
    negotiated_protocol: str | None  # the ALPN: h3
    peer_certificates: tuple[str, ...]  # base64 DER, leaf first, as presented
    failure: str | None
    alert: str | None  # the TLS alert a CRYPTO_ERROR close carried
    error_code: int | None  # the QUIC error code of the peer's close
    datagrams_received: int
    t0: float
    t_first_reply: float | None
    t: float | None
    http_status: int | None = None  # the HTTP/3 GET's status, once the handshake completed
    http_failure: str | None = None

    @property
    def silent(self) -> bool:
        """A timeout with not one datagram back: UDP/443 dropped somewhere, or nothing listening."""
        return self.failure == Failure.GENERIC_TIMEOUT and self.datagrams_received == 0

    @property
    def completed(self) -> bool:
        return self.failure is None


class QuicObservations(Struct, frozen=True):
    """Why QUIC was tried (`alt_svc`: the HTTPS response advertised h3; `asked`: `--quic always`) and
    the handshakes made (none when the advertised endpoint is another host)."""

    reason: str
    alt_svc: str | None
    handshakes: tuple[QuicHandshake, ...]

    def by_purpose(self, purpose: Purpose) -> list[QuicHandshake]:
        return [h for h in self.handshakes if h.purpose == purpose]


_HANDSHAKE_KEYS = ("address", "port", "server_name", "quic_version", "negotiated_protocol", "failure", "alert",
                   "error_code", "t0", "t_first_reply", "t", "http_status", "http_failure")  # fmt: skip


def decode_quic(d: Json | None) -> QuicObservations | None:
    """The record's `observations.quic` (KeyError, TypeError or ValueError when malformed: the codec
    names the section). Rejudging only: netx/quic.py makes its `QuicHandshake`s directly."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise TypeError(f"quic is {type(d).__name__}, not an object")

    def handshake(h: Json) -> QuicHandshake:
        purpose = DEFAULT_PURPOSE if h.get("purpose") is None else Purpose(h["purpose"])
        return QuicHandshake(
            h["address"], h["port"], h.get("server_name"), purpose, h.get("quic_version"),
            h.get("negotiated_protocol"), tuple(h.get("peer_certificates") or ()), h.get("failure"), h.get("alert"),
            h.get("error_code"), int(h.get("datagrams_received") or 0), h["t0"], h.get("t_first_reply"), h.get("t"),
            h.get("http_status"), h.get("http_failure"),
        )  # fmt: skip

    return QuicObservations(d["reason"], d.get("alt_svc"), tuple(map(handshake, d.get("handshakes") or ())))


def encode_quic(q: QuicObservations) -> Json:
    """The record's `observations.quic`, exactly as the probe writes it."""
    handshakes = []
    for h in q.handshakes:
        out: Json = {key: getattr(h, key) for key in _HANDSHAKE_KEYS}
        out["purpose"] = str(h.purpose)
        out["peer_certificates"] = list(h.peer_certificates)
        out["datagrams_received"] = h.datagrams_received
        handshakes.append(out)
    return {"reason": q.reason, "alt_svc": q.alt_svc, "handshakes": handshakes}
