"""Catalogs: interception CAs, local interceptors, blockpages and national CAs, as data files with sources.

The shipped catalogs live in `probe/data/`; `--catalog FILE` adds entries to whichever catalog
the file names in its `"catalog"` field. Analysis reads only these objects, so a grown catalog
re-judges old records the same way it judges new ones. Reading the files is
`probe.loaders.catalogs`' job; this module checks and holds what they say.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from probe.analyze.certs import CERTIFICATE_ERRORS, raw_fingerprints
from probe.analyze.fingerprints import FingerprintTables
from probe.vocabulary.errors import InputError

KINDS = ("interception_cas", "local_interceptors", "blockpages", "national_cas")
NATIONAL_KINDS = ("root", "intermediate")
_PEM_BEGIN, _PEM_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
_HTTP_FIELDS = ("body", "title")
_HTTP_MATCHES = ("contains", "prefix", "exact")


class CatalogError(InputError):
    """A catalog file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class NameRule:
    """A distinguished-name pattern: every attribute given must match (`*` wildcards, any case)."""

    id: str
    name: str
    kind: str
    country: str | None
    match: dict[str, str]
    sources: tuple[str, ...]

    def matches(self, attributes: dict[str, list[str]]) -> bool:
        for attribute, pattern in self.match.items():
            values = attributes.get(attribute.upper(), [])
            if not any(fnmatch.fnmatchcase(" ".join(v.split()).casefold(), pattern.casefold()) for v in values):
                return False
        return True


@dataclass(frozen=True)
class CertificateEntry:
    id: str
    name: str
    country: str | None
    subject: str
    sha256_der: str | None
    sha256_spki: str | None
    sources: tuple[str, ...]
    der: bytes | None = field(default=None, repr=False)  # the certificate itself, when the catalog holds it


@dataclass(frozen=True)
class NationalCertificate:
    """A national CA's certificate (catalog `national_cas`), with its DER: a chain that verifies to its
    key is the site's own choice. The fingerprints were recomputed from the DER when it was loaded."""

    id: str
    name: str
    country: str | None
    subject: str
    sha256_der: str
    sha256_spki: str
    sources: tuple[str, ...]
    der: bytes = field(repr=False)
    kind: str  # "root" or "intermediate"


@dataclass(frozen=True)
class HttpFingerprint:
    id: str
    name: str
    country: str | None
    field: str  # "body", "title" or "header:<name>"
    match: str  # "contains", "prefix" or "exact"
    pattern: str
    sources: tuple[str, ...]

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.field != "body":
            value, pattern = value.casefold(), self.pattern.casefold()
        else:
            pattern = self.pattern
        if self.match == "contains":
            return pattern in value
        if self.match == "prefix":
            return value.startswith(pattern)
        return value == pattern


@dataclass(frozen=True)
class DnsFingerprint:
    id: str
    name: str
    country: str | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    sources: tuple[str, ...]


@dataclass
class Catalogs:
    interception_certificates: list[CertificateEntry] = field(default_factory=list)
    interception_names: list[NameRule] = field(default_factory=list)
    local_interceptors: list[NameRule] = field(default_factory=list)
    national_roots: list[NationalCertificate] = field(default_factory=list)  # roots and intermediates
    national_names: list[NameRule] = field(default_factory=list)
    http_blockpages: list[HttpFingerprint] = field(default_factory=list)
    dns_blockpages: list[DnsFingerprint] = field(default_factory=list)
    fingerprints: FingerprintTables = field(default_factory=FingerprintTables)  # OONI's public tables
    versions: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the verdicts were judged with, for the record."""
        return {kind: list(versions) for kind, versions in sorted(self.versions.items())}

    def interception_anchors(self) -> dict[x509.Name, tuple[tuple[x509.Certificate, CertificateEntry], ...]]:
        """The interception CAs whose certificate the catalog holds, by subject, parsed once: a
        presented certificate they signed is theirs, though the CA itself was left out of the chain."""
        return _anchors_by_subject(tuple(entry for entry in self.interception_certificates if entry.der is not None))

    def national_certificates(self) -> tuple[x509.Certificate, ...]:
        """The national certificates this build can verify against (a GOST key it cannot load is left
        out, though its fingerprints still match), parsed once for every chain of a run."""
        return _verifiable(tuple(entry.der for entry in self.national_roots))


@functools.lru_cache(maxsize=8)
def _anchors_by_subject(
    entries: tuple[CertificateEntry, ...],
) -> dict[x509.Name, tuple[tuple[x509.Certificate, CertificateEntry], ...]]:
    loaded = _verifiable(tuple(entry.der for entry in entries if entry.der is not None))
    by_der = {hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(): cert for cert in loaded}
    found: dict[x509.Name, list[tuple[x509.Certificate, CertificateEntry]]] = {}
    for entry in entries:
        if entry.sha256_der in by_der:
            cert = by_der[entry.sha256_der]
            found.setdefault(cert.subject, []).append((cert, entry))
    return {subject: tuple(pairs) for subject, pairs in found.items()}


@functools.lru_cache(maxsize=8)
def _verifiable(ders: tuple[bytes, ...]) -> tuple[x509.Certificate, ...]:
    found = []
    for der in ders:
        try:
            certificate = x509.load_der_x509_certificate(der)
            certificate.public_key()
        except CERTIFICATE_ERRORS:
            continue
        found.append(certificate)
    return tuple(found)


def _text(entry: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: '{key}' must be a non-empty string")
    return value


def _sources(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    sources = entry.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise CatalogError(f"{where}: 'sources' must be a non-empty list of strings")
    return tuple(sources)


def _hex_digest(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    text = str(value).lower().replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise CatalogError(f"{where}: '{key}' must be a SHA-256 in hex")
    return text


def _pem_der(entry: dict[str, Any], where: str) -> bytes:
    """The DER of the one certificate in `certificate_pem`."""
    text = _text(entry, "certificate_pem", where) or ""
    begin, end = text.find(_PEM_BEGIN), text.find(_PEM_END)
    if text.count(_PEM_BEGIN) != 1 or text.count(_PEM_END) != 1 or end < begin:
        raise CatalogError(f"{where}: 'certificate_pem' must hold one PEM certificate")
    body = "".join(text[begin + len(_PEM_BEGIN) : end].split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CatalogError(f"{where}: 'certificate_pem' is not valid base64 ({exc})") from None
    if not der:
        raise CatalogError(f"{where}: 'certificate_pem' is empty")
    return der


def _one_whole_sequence(der: bytes) -> bool:
    """Whether `der` is exactly one DER SEQUENCE, its length covering every byte."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first, start = der[1], 2
    if first & 0x80:
        count = first & 0x7F
        length, start = int.from_bytes(der[2 : 2 + count], "big"), 2 + count
    else:
        length = first
    return start + length == len(der)


def _checked_der(entry: dict[str, Any], where: str) -> bytes:
    """An interception CA's certificate, as its entry gives it: the fingerprints stated must be its own."""
    der = _pem_der(entry, where)
    der_sha256, spki_sha256 = raw_fingerprints(der)
    for key, computed in (("sha256_der", der_sha256), ("sha256_spki", spki_sha256)):
        stated = _hex_digest(entry, key, where)
        if stated is not None and stated != computed:
            raise CatalogError(f"{where}: '{key}' is {stated} but the certificate's is {computed}")
    return der


def _national_certificate(entry: dict[str, Any], where: str) -> NationalCertificate:
    """A national CA's certificate, its fingerprints recomputed from its PEM and checked against the entry's."""
    ident = _text(entry, "id", where) or ""
    where = f"{where} ({ident})"
    der = _pem_der(entry, where)
    try:
        subject, parsed = x509.load_der_x509_certificate(der).subject.rfc4514_string(), True
    except CERTIFICATE_ERRORS:  # a certificate this build cannot parse (a GOST one): its raw DER must be whole
        subject, parsed = str(entry.get("subject", "")), False
    der_sha256, spki_sha256 = raw_fingerprints(der)
    if spki_sha256 is None or not (parsed or _one_whole_sequence(der)):
        raise CatalogError(f"{where}: 'certificate_pem' is not a DER certificate")
    for key, computed in (("sha256_der", der_sha256), ("sha256_spki", spki_sha256)):
        stated = _hex_digest(entry, key, where)
        if stated is None:
            raise CatalogError(f"{where}: needs '{key}' (the certificate's is {computed})")
        if stated != computed:
            raise CatalogError(f"{where}: '{key}' is {stated} but the certificate's is {computed}")
    sha1, computed_sha1 = entry.get("sha1"), hashlib.sha1(der).hexdigest()  # noqa: S324 - a fingerprint, as sources cite it
    if sha1 is not None and str(sha1).lower().replace(":", "") != computed_sha1:
        raise CatalogError(f"{where}: 'sha1' is {sha1} but the certificate's is {computed_sha1}")
    kind = entry.get("kind")
    if kind not in NATIONAL_KINDS:
        raise CatalogError(f"{where}: 'kind' must be one of {', '.join(NATIONAL_KINDS)}")
    return NationalCertificate(
        id=ident,
        name=_text(entry, "name", where) or "",
        country=_text(entry, "country", where, required=False),
        subject=subject,
        sha256_der=der_sha256,
        sha256_spki=spki_sha256,
        sources=_sources(entry, where),
        der=der,
        kind=kind,
    )


def _name_rule(entry: dict[str, Any], where: str, default_kind: str) -> NameRule:
    match = entry.get("match")
    if not isinstance(match, dict) or not match or not all(isinstance(v, str) for v in match.values()):
        raise CatalogError(f"{where}: 'match' must map name attributes (CN, O, C, ...) to patterns")
    return NameRule(
        id=_text(entry, "id", where) or "",
        name=_text(entry, "name", where) or "",
        kind=str(entry.get("kind", default_kind)),
        country=_text(entry, "country", where, required=False),
        match={k.upper(): v for k, v in match.items()},
        sources=_sources(entry, where),
    )


def _entries(document: dict[str, Any], key: str, origin: str) -> list[tuple[dict[str, Any], str]]:
    rows = document.get(key, [])
    if not isinstance(rows, list):
        raise CatalogError(f"{origin}: '{key}' must be a list")
    found = []
    for index, entry in enumerate(rows, start=1):
        where = f"{origin}: {key}[{index}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: must be an object")
        found.append((entry, where))
    return found


def add_document(catalogs: Catalogs, document: Any, origin: str) -> None:
    """Add one catalog file's entries, checking each, to the catalog it names."""
    if not isinstance(document, dict):
        raise CatalogError(f"{origin}: a catalog file must hold a JSON object")
    kind = document.get("catalog")
    if kind not in KINDS:
        raise CatalogError(f"{origin}: 'catalog' must be one of {', '.join(KINDS)}")
    catalogs.versions.setdefault(kind, []).append(f"{origin}@{document.get('version', 'unversioned')}")
    if kind == "interception_cas":
        for entry, where in _entries(document, "certificates", origin):
            cert = CertificateEntry(
                id=_text(entry, "id", where) or "",
                name=_text(entry, "name", where) or "",
                country=_text(entry, "country", where, required=False),
                subject=str(entry.get("subject", "")),
                sha256_der=_hex_digest(entry, "sha256_der", where),
                sha256_spki=_hex_digest(entry, "sha256_spki", where),
                sources=_sources(entry, where),
                der=_checked_der(entry, where) if "certificate_pem" in entry else None,
            )
            if cert.sha256_der is None and cert.sha256_spki is None:
                raise CatalogError(f"{where}: needs 'sha256_der' or 'sha256_spki'")
            catalogs.interception_certificates.append(cert)
        for entry, where in _entries(document, "names", origin):
            catalogs.interception_names.append(_name_rule(entry, where, "interception_ca"))
    elif kind == "local_interceptors":
        for entry, where in _entries(document, "names", origin):
            catalogs.local_interceptors.append(_name_rule(entry, where, "local"))
    elif kind == "national_cas":
        for entry, where in _entries(document, "certificates", origin):
            catalogs.national_roots.append(_national_certificate(entry, where))
        for entry, where in _entries(document, "names", origin):
            catalogs.national_names.append(_name_rule(entry, where, "national_ca"))
    else:
        for entry, where in _entries(document, "http", origin):
            field_name = _text(entry, "field", where) or ""
            if field_name not in _HTTP_FIELDS and not field_name.startswith("header:"):
                raise CatalogError(f"{where}: 'field' must be body, title or header:<name>")
            match = entry.get("match", "contains")
            if match not in _HTTP_MATCHES:
                raise CatalogError(f"{where}: 'match' must be one of {', '.join(_HTTP_MATCHES)}")
            catalogs.http_blockpages.append(
                HttpFingerprint(
                    id=_text(entry, "id", where) or "",
                    name=_text(entry, "name", where) or "",
                    country=_text(entry, "country", where, required=False),
                    field=field_name.lower(),
                    match=match,
                    pattern=_text(entry, "pattern", where) or "",
                    sources=_sources(entry, where),
                )
            )
        for entry, where in _entries(document, "dns", origin):
            try:
                network = ipaddress.ip_network(_text(entry, "address", where) or "", strict=False)
            except ValueError as exc:
                raise CatalogError(f"{where}: 'address' must be an IP address or network ({exc})") from None
            catalogs.dns_blockpages.append(
                DnsFingerprint(
                    id=_text(entry, "id", where) or "",
                    name=_text(entry, "name", where) or "",
                    country=_text(entry, "country", where, required=False),
                    network=network,
                    sources=_sources(entry, where),
                )
            )
