"""One presented chain, judged: valid or why not, catalog matches, and how a forgery was made.

Why a chain fails matters before calling it forged: the real web is full of certificates that
fail for reasons no censor made (an intermediate left out, an expired certificate, a certificate
for `www.` only). Each failure is classified by cause (`failure_cause`), by asking the verifier the
same question with one thing changed: with the certificates fetched from the AIA URL, at a time
when every certificate was valid, for the leaf's own name, with a longer chain allowed.
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from probe.analyze.catalog import Catalogs, CertificateEntry, NameRule
from probe.analyze.certs import (
    CERTIFICATE_ERRORS,
    ReferenceRoots,
    decode_chain,
    describe_certificate,
    hostname_matches,
    name_attributes,
    raw_fingerprints,
    verify_chain,
)
from probe.analyze.paths import national_ca, on_path, out_of_dates, signed_by_catalogued, signed_path
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
        dated = out_of_dates(path, at)
        if dated is not None:
            return FailureCause(dated)
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


def _match_names(
    chain: list[x509.Certificate], rules: list[NameRule], fields: tuple[str, ...]
) -> tuple[NameRule, int, str] | None:
    """The rule matching the name nearest the top of the chain: the root names the operator."""
    for index in range(len(chain) - 1, -1, -1):
        cert = chain[index]
        for which in fields:
            attributes = name_attributes(cert.issuer if which == "issuer" else cert.subject)
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
        "aia_brought": bool(fetched_b64),  # the issuer the leaf names was fetched (and did not sign it)
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

    # Strong: a presented certificate whose DER or key is in the interception catalog and that the
    # leaf leads to by signatures (not a stray certificate appended to the list), or one that a
    # catalogued CA's key signed (forged chains leave the root out).
    if catalogued is not None and not on_path(chain, catalogued[2]):
        catalogued = None
    if catalogued is None:
        catalogued = signed_by_catalogued(chain, catalogs)
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
        # A local interceptor is named by the CA that issued the leaf, never by a subject (a site's
        # own certificate may name the antivirus maker) or a certificate merely appended to the list.
        found = _match_names(chain[:1], rules, ("issuer",)) if catalog_name == "local_interceptors" else (
            _match_names(chain, rules, ("issuer", "subject")))  # fmt: skip
        if found is not None:
            rule, index, which = found
            result["interceptor"] = describe_interceptor(
                leaf_issuer, top_issuer, catalog_name, rule, f"{which}_name", index
            )
            return result
    result["interceptor"] = describe_interceptor(leaf_issuer, top_issuer)
    return result
