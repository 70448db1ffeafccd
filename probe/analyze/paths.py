"""Paths by signatures: from a presented leaf to an anchor (a reference root, a national CA, a
catalogued interception CA) by names, keys and signatures alone, no date looked at.

A CA re-issued with the same name and key is the same CA, so an expired leaf served with its
re-issued intermediate still finds its root; only a CA (basic constraints, key usage) can issue,
so a forgery signed with a site's own publicly issued key is not publicly signed. The search is
bounded in signature checks: a hostile chain of look-alike CAs cannot make it exponential.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from cryptography import x509

from probe.analyze.catalog import Catalogs, CertificateEntry, NationalCertificate
from probe.analyze.certs import CERTIFICATE_ERRORS, hostname_matches, spki_der

MAX_PATH = 10  # certificates on a path built by signatures: more is a loop or a joke
MAX_SIGNATURE_CHECKS = 64  # per path search: an honest chain needs a handful


def same_certificate(a: x509.Certificate, b: x509.Certificate) -> bool:
    """One CA, whatever its validity dates: a re-issued CA certificate keeps its name and its key."""
    return a.subject == b.subject and spki_der(a) == spki_der(b)


def is_ca(cert: x509.Certificate) -> bool:
    """Whether the certificate may issue others: basic constraints say CA, and a key usage, when
    given, allows signing certificates. A site's own key (any domain owner holds one) may not:
    a forgery signed with it is no public CA's signature."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return cert.version == x509.Version.v1 and cert.issuer == cert.subject  # an old v1 root
    except CERTIFICATE_ERRORS:
        return False
    if not constraints.ca:
        return False
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    except CERTIFICATE_ERRORS:
        return False
    return bool(usage.key_cert_sign)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`, a CA, signed `cert` with its name and key (dates and path length aside)."""
    if cert.issuer != issuer.subject or not is_ca(issuer):
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - a bad signature, or a key this build cannot use: not issued by it
        return False
    return True


def signed_path(
    leaf: x509.Certificate, candidates: list[x509.Certificate], anchors: tuple[x509.Certificate, ...]
) -> list[x509.Certificate] | None:
    """A path from the leaf to one of `anchors` by names and signatures alone, or None.

    No date is looked at: an expired leaf served with a re-issued intermediate (same name, same
    key, newer dates) still leads to its root, and is then judged by its dates. The anchor ends the
    path (a presented copy of it counts as it, by name and key)."""

    checks = [MAX_SIGNATURE_CHECKS]  # a hostile chain of look-alike CAs must not make this exponential

    def issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        if cert.issuer != issuer.subject or checks[0] <= 0:
            return False
        checks[0] -= 1
        return issued_by(cert, issuer)

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        current = path[-1]
        for anchor in anchors:
            if same_certificate(current, anchor):
                return path
            if issued(current, anchor):
                return [*path, anchor]
        if len(path) >= MAX_PATH:
            return None
        for candidate in candidates:
            if any(same_certificate(candidate, seen) for seen in path) or not issued(current, candidate):
                continue
            found = extend([*path, candidate])
            if found is not None:
                return found
        return None

    return extend([leaf])


def out_of_dates(path: list[x509.Certificate], at: datetime) -> str | None:
    """ "expired" or "not_yet_valid" when a certificate on the path is out of its dates at `at`."""
    if any(cert.not_valid_after_utc < at for cert in path):
        return "expired"
    if any(cert.not_valid_before_utc > at for cert in path):
        return "not_yet_valid"
    return None


@functools.lru_cache(maxsize=64)
def anchor(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except CERTIFICATE_ERRORS:
        return None


def national_ca(
    chain: list[x509.Certificate], fetched: list[x509.Certificate], host: str, at: datetime, catalogs: Catalogs
) -> dict[str, Any] | None:
    """The catalogued national CA the chain leads to by signatures (its very key), or None.

    A root that only carries a national CA's name is not one: only the catalog's own certificate,
    as an anchor, can end the path. The name and the dates are then the site's own business."""
    anchors: dict[str, tuple[x509.Certificate, NationalCertificate]] = {}
    for entry in catalogs.national_roots:
        loaded = anchor(entry.der)
        if loaded is not None:
            anchors[entry.sha256_der] = (loaded, entry)
    if not anchors:
        return None
    full = chain + fetched
    path = signed_path(chain[0], full[1:], tuple(cert for cert, _ in anchors.values()))
    if path is None:
        return None
    entry = next(e for cert, e in anchors.values() if same_certificate(cert, path[-1]))
    dated = out_of_dates(path, at)
    return {
        "id": entry.id,
        "name": entry.name,
        "country": entry.country,
        "matched_by": "signature",
        "anchor_sha256_der": entry.sha256_der,
        "hostname_matches": hostname_matches(chain[0], host),
        "dates": dated,
    }


def on_path(chain: list[x509.Certificate], index: int) -> bool:
    """Whether the leaf leads, by names and signatures, to the presented certificate at `index`."""
    return index == 0 or signed_path(chain[0], chain[1:], (chain[index],)) is not None


def signed_by_catalogued(chain: list[x509.Certificate], catalogs: Catalogs) -> tuple[CertificateEntry, str, int] | None:
    """The catalogued interception CA the leaf leads to by signatures (its certificate need not be
    presented), with the presented certificate it signed."""
    anchors = catalogs.interception_anchors()
    if not anchors:
        return None
    path = signed_path(chain[0], chain[1:], tuple(cert for pairs in anchors.values() for cert, _ in pairs))
    if path is None:
        return None
    anchor = path[-1]
    entry = next(e for cert, e in anchors.get(anchor.subject, ()) if cert is anchor or same_certificate(cert, anchor))
    signed = path[-2] if len(path) > 1 and not any(same_certificate(anchor, c) for c in chain) else path[-1]
    index = next((i for i, cert in enumerate(chain) if cert is signed or cert == signed), len(chain) - 1)
    return entry, "signature", index
