"""The certificates an episode's evidence cites, read from the record's own chain (base64 DER, leaf
first, exactly as the network presented it, in the target's handshake) with `cryptography`:
subject, issuer, serial, validity and SHA-256, so that an analyst can cite more than a fingerprint.

The chain reaches here as a column of the episode's first measurement (`queries.EVIDENCE_PATHS`),
the same on every engine; a certificate that cannot be parsed is named by its SHA-256 and said
unreadable."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from cryptography import x509


def describe(der: bytes) -> dict[str, Any]:
    """One certificate in words: what it names, who signed it, when it is valid."""
    described: dict[str, Any] = {"sha256": hashlib.sha256(der).hexdigest()}
    try:
        cert = x509.load_der_x509_certificate(der)
        described.update(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%SZ"),
            not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%SZ"),
        )
    except ValueError:
        described["unreadable"] = True
    return described


def described_chain(certificates: Any) -> list[dict[str, Any]]:
    """A presented chain (a list of base64 DER certificates, leaf first), each certificate in words."""
    chain: list[dict[str, Any]] = []
    for encoded in certificates if isinstance(certificates, list) else []:
        try:
            chain.append(describe(base64.b64decode(str(encoded), validate=True)))
        except (binascii.Error, ValueError):
            chain.append({"unreadable": True})
    return chain
