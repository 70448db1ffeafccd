"""One presented chain, judged: valid or why not, catalog matches, and how a forgery was made.

Why a chain fails matters before calling it forged: the real web is full of certificates that
fail for reasons no censor made (an intermediate left out, an expired certificate, a certificate
for `www.` only). Each failure is classified by cause (`failure_cause`), by asking the verifier the
same question with one thing changed: with the certificates fetched from the AIA URL, at a time
when every certificate was valid, for the leaf's own name, with a longer chain allowed.
"""

from __future__ import annotations

import base64
import functools
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from probe.analyze.catalog import Catalogs, CertificateEntry, NameRule, NationalCertificate
from probe.analyze.certs import (
    CERTIFICATE_ERRORS,
    ReferenceRoots,
    decode_chain,
    describe_certificate,
    hostname_matches,
    name_attributes,
    raw_fingerprints,
    spki_der,
    verify_chain,
)
from probe.vocabulary.anomalies import Anomaly

LONG_CHAIN_DEPTH = 32  # cryptography's verifier allows 8 by default


class FailureCause(StrEnum):
    """Why a presented chain does not validate under the reference roots."""

    INCOMPLETE_CHAIN = "incomplete_chain"  # an intermediate is missing and could not be fetched
    EXPIRED = "expired"  # valid but for time: a certificate's notAfter has passed
    NOT_YET_VALID = "not_yet_valid"  # valid but for time: a notBefore is still to come
    NAME_MISMATCH = "name_mismatch"  # a valid public chain, for other names
    CHAIN_TOO_LONG = "chain_too_long"  # valid but longer than the verifier allows
    POLICY = "policy"  # signed up to a reference root for the name, in its dates, refused all the same
    SELF_SIGNED = "self_signed"  # the leaf signs itself
    UNKNOWN_ISSUER = "unknown_issuer"  # leads to no reference root
    UNUSABLE = "unusable"  # no certificate, or one that cannot be parsed


# Causes under which the chain is signed, certificate by certificate, up to a reference root: no
# forger can make one.
PUBLICLY_SIGNED = frozenset({
    FailureCause.EXPIRED, FailureCause.NOT_YET_VALID, FailureCause.NAME_MISMATCH, FailureCause.CHAIN_TOO_LONG,
    FailureCause.POLICY,
})  # fmt: skip
CAUSE_CODES = {
    FailureCause.EXPIRED: Anomaly.TLS_EXPIRED_CERTIFICATE,
    FailureCause.NOT_YET_VALID: Anomaly.TLS_EXPIRED_CERTIFICATE,
    FailureCause.CHAIN_TOO_LONG: Anomaly.TLS_CHAIN_TOO_LONG,
    FailureCause.POLICY: Anomaly.TLS_PUBLIC_CHAIN_REJECTED,
    FailureCause.UNUSABLE: Anomaly.TLS_UNPARSEABLE_CERTIFICATE,
    FailureCause.SELF_SIGNED: Anomaly.TLS_SELF_SIGNED,
    FailureCause.UNKNOWN_ISSUER: Anomaly.TLS_UNKNOWN_ISSUER,
    FailureCause.INCOMPLETE_CHAIN: Anomaly.TLS_UNKNOWN_ISSUER,
}


MAX_PATH = 10  # certificates on a path built by signatures: more is a loop or a joke
MAX_SIGNATURE_CHECKS = 64  # per path search: an honest chain needs a handful


def _same_certificate(a: x509.Certificate, b: x509.Certificate) -> bool:
    """One CA, whatever its validity dates: a re-issued CA certificate keeps its name and its key."""
    return a.subject == b.subject and spki_der(a) == spki_der(b)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s name and key signed `cert` (dates, key usage and constraints aside)."""
    if cert.issuer != issuer.subject:
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
        return _issued_by(cert, issuer)

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        current = path[-1]
        for anchor in anchors:
            if _same_certificate(current, anchor):
                return path
            if issued(current, anchor):
                return [*path, anchor]
        if len(path) >= MAX_PATH:
            return None
        for candidate in candidates:
            if any(_same_certificate(candidate, seen) for seen in path) or not issued(current, candidate):
                continue
            found = extend([*path, candidate])
            if found is not None:
                return found
        return None

    return extend([leaf])


def _out_of_dates(path: list[x509.Certificate], at: datetime) -> FailureCause | None:
    if any(cert.not_valid_after_utc < at for cert in path):
        return FailureCause.EXPIRED
    if any(cert.not_valid_before_utc > at for cert in path):
        return FailureCause.NOT_YET_VALID
    return None


def _names_its_issuer(cert: x509.Certificate) -> bool:
    """Whether the certificate has an AIA "CA Issuers" URL, from which a browser completes a chain."""
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return any(d.access_method == AuthorityInformationAccessOID.CA_ISSUERS for d in access)


def failure_cause(
    chain: list[x509.Certificate], fetched: list[x509.Certificate], host: str, at: datetime, roots: ReferenceRoots
) -> FailureCause:
    """Why a chain the verifier refused fails. First a path to a reference root by names and
    signatures alone; only a chain on such a path is publicly signed, and then its names, then
    its dates, then the verifier's other limits say why it failed. No path: an issuer problem."""
    full = chain + fetched
    leaf = chain[0]
    path = signed_path(leaf, full[1:], roots.certificates)
    if path is not None:
        if not hostname_matches(leaf, host):
            return FailureCause.NAME_MISMATCH
        dated = _out_of_dates(path, at)
        if dated is not None:
            return dated
        if verify_chain(full, host, at, roots, max_depth=LONG_CHAIN_DEPTH)[0]:
            return FailureCause.CHAIN_TOO_LONG
        return FailureCause.POLICY
    if leaf.issuer == leaf.subject and len(chain) == 1:
        return FailureCause.SELF_SIGNED
    issuers_present = {cert.subject for cert in chain} | {cert.subject for cert in roots.certificates}
    top = chain[-1]
    if top.issuer != top.subject and top.issuer not in issuers_present and _names_its_issuer(top):
        return FailureCause.INCOMPLETE_CHAIN  # an issuer to fetch, which did not complete the chain
    return FailureCause.UNKNOWN_ISSUER


def _match_names(chain: list[x509.Certificate], rules: list[NameRule]) -> tuple[NameRule, int, str] | None:
    """The rule matching the name nearest the top of the chain: the root names the operator."""
    for index in range(len(chain) - 1, -1, -1):
        cert = chain[index]
        for which, name in (("issuer", cert.issuer), ("subject", cert.subject)):
            attributes = name_attributes(name)
            for rule in rules:
                if rule.matches(attributes):
                    return rule, index, which
    return None


def _supporting_evidence(leaf: x509.Certificate, host: str) -> list[Anomaly]:
    evidence: list[Anomaly] = []
    if not hostname_matches(leaf, host):
        evidence.append(Anomaly.TLS_HOSTNAME_MISMATCH)
    extension_classes = {type(ext.value) for ext in leaf.extensions}
    if x509.PrecertificateSignedCertificateTimestamps not in extension_classes:
        evidence.append(Anomaly.TLS_NO_SCTS)
    try:
        public_key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError, InternalError):  # a key type this build cannot load
        public_key = None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.public_numbers().e == 3:
        evidence.append(Anomaly.TLS_RSA_EXPONENT_3)
    usual = {
        x509.AuthorityInformationAccess,
        x509.CRLDistributionPoints,
        x509.CertificatePolicies,
        x509.PrecertificateSignedCertificateTimestamps,
    }
    if not extension_classes & usual:
        evidence.append(Anomaly.TLS_EXTENSIONS_STRIPPED)
    return evidence


def describe_interceptor(
    leaf_issuer: str,
    top_issuer: str,
    catalog: str | None = None,
    entry: CertificateEntry | NameRule | None = None,
    matched_by: str | None = None,
    matched_certificate: int | None = None,
) -> dict[str, Any]:
    """The record's `interceptor`: who issued the substituted chain, and the catalog entry if any."""
    return {
        "catalog": catalog,
        "catalog_id": entry.id if entry is not None else None,
        "name": entry.name if entry is not None else None,
        "country": entry.country if entry is not None else None,
        "issuer": leaf_issuer,
        "chain_top_issuer": top_issuer,
        "matched_by": matched_by,
        "matched_certificate": matched_certificate,
    }


def _catalogued(chain_b64: list[str], catalogs: Catalogs) -> tuple[CertificateEntry, str, int] | None:
    """The first presented certificate whose DER or key the catalog holds, from the bytes alone."""
    by_der = {entry.sha256_der: entry for entry in catalogs.interception_certificates if entry.sha256_der}
    by_spki = {entry.sha256_spki: entry for entry in catalogs.interception_certificates if entry.sha256_spki}
    for index, item in enumerate(chain_b64):
        try:
            der_hash, spki_hash = raw_fingerprints(base64.b64decode(item, validate=True))
        except (ValueError, TypeError):
            continue
        if der_hash in by_der:
            return by_der[der_hash], "sha256_der", index
        if spki_hash is not None and spki_hash in by_spki:
            return by_spki[spki_hash], "sha256_spki", index
    return None


def _leaf_fingerprints(chain_b64: list[str]) -> dict[str, str | None] | None:
    """The leaf's SHA-256 (DER and key) from its bytes alone: known even when it cannot be parsed."""
    if not chain_b64:
        return None
    try:
        der_hash, spki_hash = raw_fingerprints(base64.b64decode(chain_b64[0], validate=True))
    except (ValueError, TypeError):
        return None
    return {"sha256_der": der_hash, "sha256_spki": spki_hash}


@functools.lru_cache(maxsize=64)
def _anchor(der: bytes) -> x509.Certificate | None:
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
        loaded = _anchor(entry.der)
        if loaded is not None:
            anchors[entry.sha256_der] = (loaded, entry)
    if not anchors:
        return None
    full = chain + fetched
    path = signed_path(chain[0], full[1:], tuple(cert for cert, _ in anchors.values()))
    if path is None:
        return None
    entry = next(e for cert, e in anchors.values() if _same_certificate(cert, path[-1]))
    dated = _out_of_dates(path, at)
    return {
        "id": entry.id,
        "name": entry.name,
        "country": entry.country,
        "matched_by": "signature",
        "anchor_sha256_der": entry.sha256_der,
        "hostname_matches": hostname_matches(chain[0], host),
        "dates": None if dated is None else str(dated),
    }


def _signed_by_catalogued(
    chain: list[x509.Certificate], catalogs: Catalogs
) -> tuple[CertificateEntry, str, int] | None:
    """The catalogued interception CA whose key signed a presented certificate, checked by signature."""
    anchors = catalogs.interception_anchors()
    if not anchors:
        return None
    for cert_index, cert in enumerate(chain):
        for anchor, entry in anchors.get(cert.issuer, ()):
            if _issued_by(cert, anchor):
                return entry, "signature", cert_index
    return None


def analyze_chain(
    chain_b64: list[str],
    host: str,
    at: datetime,
    roots: ReferenceRoots,
    catalogs: Catalogs,
    fetched_b64: list[str] | None = None,
) -> dict[str, Any]:
    """Judge one presented chain: validity, catalog matches and supporting evidence.

    The catalog's fingerprints are matched on the raw bytes first, so that a certificate this
    parser rejects (a duplicated extension, say) still names its interception CA."""
    result: dict[str, Any] = {
        "valid": False,
        "validation_error": None,
        "hostname_matches": None,
        "interceptor": None,
        "evidence": [],
        "certificates": [],
        "failure_cause": None,
        "completed_from_aia": False,
        "national_ca": None,
        "leaf_fingerprints": _leaf_fingerprints(chain_b64),
    }
    catalogued = _catalogued(chain_b64, catalogs)
    try:
        return _analyze_parsed(result, catalogued, chain_b64, host, at, roots, catalogs, fetched_b64)
    except CERTIFICATE_ERRORS as exc:
        result.update({"valid": False, "validation_error": f"unparseable certificate: {exc}"[:300],
                       "failure_cause": FailureCause.UNUSABLE, "evidence": [], "interceptor": None})  # fmt: skip
        if catalogued is not None:
            entry, how, index = catalogued
            result["interceptor"] = describe_interceptor("(unparseable)", "(unparseable)", "interception_cas",
                                                         entry, how, index)  # fmt: skip
        return result


def _analyze_parsed(
    result: dict[str, Any],
    catalogued: tuple[CertificateEntry, str, int] | None,
    chain_b64: list[str],
    host: str,
    at: datetime,
    roots: ReferenceRoots,
    catalogs: Catalogs,
    fetched_b64: list[str] | None,
) -> dict[str, Any]:
    chain = decode_chain(chain_b64)
    if not chain:
        result["validation_error"] = "no certificate presented"
        result["failure_cause"] = FailureCause.UNUSABLE
        return result
    try:
        fetched = decode_chain(fetched_b64 or [])
    except CERTIFICATE_ERRORS:  # what a URL brought is only ever a candidate
        fetched = []
    result["certificates"] = [describe_certificate(cert) for cert in chain]
    result["hostname_matches"] = hostname_matches(chain[0], host)
    valid, reason = verify_chain(chain, host, at, roots)
    if not valid and fetched and verify_chain(chain + fetched, host, at, roots)[0]:
        # Completed as browsers do; the fetched certificates chain by signature to a reference root.
        valid, reason, result["completed_from_aia"] = True, None, True
    result["valid"], result["validation_error"] = valid, reason
    if not valid:
        result["failure_cause"] = failure_cause(chain, fetched, host, at, roots)
        result["national_ca"] = national_ca(chain, fetched, host, at, catalogs)
    leaf_issuer = chain[0].issuer.rfc4514_string()
    top_issuer = chain[-1].issuer.rfc4514_string()

    # Strong: a presented certificate whose DER or key is in the interception catalog, or one that
    # a catalogued CA's key signed (forged chains leave the root out).
    if catalogued is None:
        catalogued = _signed_by_catalogued(chain, catalogs)
    if catalogued is not None:
        entry, how, index = catalogued
        result["interceptor"] = describe_interceptor(leaf_issuer, top_issuer, "interception_cas", entry, how, index)
    if valid and result["interceptor"] is None:
        return result

    result["evidence"] = _supporting_evidence(chain[0], host)
    if result["interceptor"] is not None:
        return result
    if result["national_ca"] is not None:
        return result  # the chain verifies to a national CA's own key: no name need be read
    # Weaker: names. An interception CA's name with an unknown key is named, as a name match; a
    # national CA's name with another key is what a forger would make (`national_ca_name`).
    for catalog_name, rules in (
        ("national_cas", catalogs.national_names),  # first: Kazakhstan's 2015 root is both
        ("interception_cas", catalogs.interception_names),
        ("local_interceptors", catalogs.local_interceptors),
    ):
        found = _match_names(chain, rules)
        if found is not None:
            rule, index, which = found
            result["interceptor"] = describe_interceptor(
                leaf_issuer, top_issuer, catalog_name, rule, f"{which}_name", index
            )
            return result
    result["interceptor"] = describe_interceptor(leaf_issuer, top_issuer)
    return result
