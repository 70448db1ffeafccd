"""Certificate analysis: pure functions over a recorded chain (base64 DER, leaf first).

Validation uses `cryptography.x509.verification` against the reference roots (Mozilla's, from
certifi, unless `--roots` names others), never the OS store: volunteers are told to add the
national certificate to it. The same chain, time and catalogs always give the same result, so
old records can be re-judged when a catalog grows.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InternalError, InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


@dataclass(frozen=True)
class ReferenceRoots:
    """Trusted roots: what a chain is validated against. Made by `probe.loaders.roots`."""

    source: str  # as recorded in every record
    sha256: str
    certificates: tuple[x509.Certificate, ...]
    path: str  # the PEM file, for TLS connections that verify (DoT, DoH, helpers); never recorded

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "count": len(self.certificates)}

    @functools.cached_property
    def store(self) -> Store:
        """Built once: a Store of Mozilla's roots costs more than a verification."""
        return Store(list(self.certificates))

    def validates(self, chain_b64: list[str], host: str, at: datetime) -> bool:
        """Whether a recorded chain (base64 DER, leaf first) is valid for `host` at `at`. Asked while
        measuring, for every target: its leaf (never seen again) is parsed for the verifier alone,
        not described; the intermediates come from the run's cache."""
        if not chain_b64:
            return False
        try:
            leaf = x509.load_der_x509_certificate(base64.b64decode(chain_b64[0]))
            chain = [leaf, *decode_chain(chain_b64[1:])]
        except CERTIFICATE_ERRORS:
            return False
        return verify_chain(chain, host, at, self)[0]


# What a hostile certificate can make cryptography raise while parsing or reading it (its Rust
# core maps malformed DER to ValueError, OpenSSL's errors to InternalError; the others are its own
# classes, none a ValueError): a chain that raises one of these is "unusable", never an exception
# that costs a record. Extensions are parsed lazily, on first access (`DuplicateExtension`,
# `UnsupportedGeneralNameType`): `_decode` reads them at once, so that they fail there.
CERTIFICATE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # malformed DER, names or extension values (UnicodeDecodeError is one)
    TypeError,
    UnsupportedAlgorithm,
    InternalError,
    InvalidSignature,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def decode_chain(chain_b64: list[str]) -> list[x509.Certificate]:
    return [_decode(item) for item in chain_b64]


# A record names the same certificates several times (the target, the control SNI, the helper's
# view) and a run meets the same intermediates for thousands of targets: each is parsed and
# described once. A certificate is immutable; a failed parse is not cached (it raises again).
CACHED_CERTIFICATES = 1024


@functools.lru_cache(maxsize=CACHED_CERTIFICATES)
def _decode(item: str) -> x509.Certificate:
    """A certificate whose lazily parsed parts (extensions, names) have been read once, so that what
    they raise is raised here, under the callers' handlers, never at a later first use (parsed
    extensions are kept by the certificate)."""
    cert = x509.load_der_x509_certificate(base64.b64decode(item))
    _ = cert.extensions, cert.subject, cert.issuer
    return cert


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _der_element(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at `offset`."""
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first & 0x80:
        count = first & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    if start + length > len(data):
        raise ValueError("truncated DER")
    return tag, start, start + length


def spki_der(cert: x509.Certificate) -> bytes:
    """The SubjectPublicKeyInfo exactly as encoded in the certificate.

    Read from the TBSCertificate's DER rather than from a parsed key, so that a key type this
    cryptography build cannot load (GOST, say) still has a fingerprint.
    """
    return _spki_of_tbs(cert.tbs_certificate_bytes)


def raw_fingerprints(der: bytes) -> tuple[str, str | None]:
    """SHA-256 of a certificate's DER and of its SubjectPublicKeyInfo, read from the bytes alone,
    before any parser sees them: a forger cannot hide a catalogued key behind one malformed field."""
    spki = None
    try:
        _, content, _ = _der_element(der, 0)  # Certificate SEQUENCE
        _, _, tbs_end = _der_element(der, content)  # its first element: TBSCertificate
        spki = hashlib.sha256(_spki_of_tbs(der[content:tbs_end])).hexdigest()
    except (ValueError, IndexError):
        pass
    return hashlib.sha256(der).hexdigest(), spki


def _spki_of_tbs(tbs: bytes) -> bytes:
    _, offset, end = _der_element(tbs, 0)  # TBSCertificate SEQUENCE
    if tbs[offset] == 0xA0:  # [0] version
        offset = _der_element(tbs, offset)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        offset = _der_element(tbs, offset)[2]
    tag, _, spki_end = _der_element(tbs, offset)
    if tag != 0x30 or spki_end > end:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return tbs[offset:spki_end]


def spki_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(spki_der(cert)).hexdigest()


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    """Subject, issuer, validity, fingerprints and names of a certificate (a fresh dict each time)."""
    described = _described(cert)
    return {**described, "dns_names": list(described["dns_names"])}


@functools.lru_cache(maxsize=CACHED_CERTIFICATES)
def _described(cert: x509.Certificate) -> dict[str, Any]:
    der = der_of(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_der": hashlib.sha256(der).hexdigest(),
        "sha1_der": hashlib.sha1(der).hexdigest(),  # noqa: S324 - a fingerprint, as catalogs cite it
        "sha256_spki": spki_sha256(cert),
        "dns_names": san_dns_names(cert),
    }


def san_dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def _san_ips(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def name_covers(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or one wildcard as the whole leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:]
    return False


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(name_covers(name, host) for name in san_dns_names(cert))
    return str(address) in _san_ips(cert)


def name_attributes(name: x509.Name) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for attribute in name:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("latin-1")
        found.setdefault(attribute.rfc4514_attribute_name.upper(), []).append(value)
    return found


def _subject_for(host: str) -> x509.DNSName | x509.IPAddress:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def verify_chain(
    chain: list[x509.Certificate], host: str, at: datetime, roots: ReferenceRoots, max_depth: int | None = None
) -> tuple[bool, str | None]:
    """Validate the presented chain for `host` at time `at`; return (valid, reason).

    `chain[1:]` are untrusted intermediates, in any order (extra ones are ignored)."""
    if not chain:
        return False, "no certificate presented"
    try:
        builder = PolicyBuilder().store(roots.store).time(at)
        if max_depth is not None:
            builder = builder.max_chain_depth(max_depth)
        verifier = builder.build_server_verifier(_subject_for(host))
        verifier.verify(chain[0], chain[1:])
    except VerificationError as exc:
        return False, str(exc)[:300]
    except CERTIFICATE_ERRORS as exc:
        return False, f"unusable certificate: {exc}"[:300]
    return True, None
