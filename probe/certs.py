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
import re
import ssl
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import certifi
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from probe.catalog import Catalogs, NameRule


class RootsError(ValueError):
    """A reference roots file that cannot be used."""


@dataclass(frozen=True)
class ReferenceRoots:
    source: str
    sha256: str
    certificates: tuple[x509.Certificate, ...]

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "count": len(self.certificates)}

    @functools.cached_property
    def store(self) -> Store:
        """Built once: a Store of Mozilla's roots costs more than a verification."""
        return Store(list(self.certificates))

    @property
    def path(self) -> str:
        return certifi.where() if self.source.startswith("certifi") else self.source


def load_roots(path: Path | None = None) -> ReferenceRoots:
    """Mozilla's roots from certifi, or the PEM bundle given with `--roots`."""
    if path is None:
        file = Path(certifi.where())
        source = f"certifi {certifi.__version__}"
    else:
        file, source = path, str(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise RootsError(f"{file}: cannot read reference roots: {exc.strerror or exc}") from None
    try:
        with warnings.catch_warnings():  # a bundle's odd serial numbers are the bundle's business
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certificates = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise RootsError(f"{file}: not a PEM bundle of certificates ({exc})") from None
    if not certificates:
        raise RootsError(f"{file}: no certificates in the file")
    return ReferenceRoots(source, hashlib.sha256(data).hexdigest(), certificates)


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def load_os_store(path: Path | None = None) -> ReferenceRoots | None:
    """The machine's own trust store: a second opinion, never the verdict's reference.

    An antivirus or corporate gateway installs its root here, and so may a volunteer told to
    install a national certificate; a chain trusted here but not under the reference roots was
    made by something the machine's owner trusts. None when there is no readable store.
    """
    if path is None:
        defaults = ssl.get_default_verify_paths()
        candidates = [defaults.cafile, defaults.openssl_cafile]
        path = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
        if path is None:
            return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    certificates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for block in _PEM_BLOCK.findall(data):  # one bad entry must not cost the others
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    if not certificates:
        return None
    return ReferenceRoots(str(path), hashlib.sha256(data).hexdigest(), tuple(certificates))


def decode_chain(chain_b64: list[str]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(base64.b64decode(item)) for item in chain_b64]


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
    tbs = cert.tbs_certificate_bytes
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
    chain: list[x509.Certificate], host: str, at: datetime, roots: ReferenceRoots
) -> tuple[bool, str | None]:
    """Validate the presented chain for `host` at time `at`; return (valid, reason)."""
    if not chain:
        return False, "no certificate presented"
    try:
        verifier = PolicyBuilder().store(roots.store).time(at).build_server_verifier(_subject_for(host))
        verifier.verify(chain[0], chain[1:])
    except VerificationError as exc:
        return False, str(exc)[:300]
    except (ValueError, UnsupportedAlgorithm) as exc:
        return False, f"unusable certificate: {exc}"[:300]
    return True, None


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


def _supporting_evidence(leaf: x509.Certificate, host: str) -> list[str]:
    evidence = []
    if not hostname_matches(leaf, host):
        evidence.append("tls.hostname_mismatch")
    extension_classes = {type(ext.value) for ext in leaf.extensions}
    if x509.PrecertificateSignedCertificateTimestamps not in extension_classes:
        evidence.append("tls.no_scts")
    try:
        public_key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError):  # a key type this build cannot load
        public_key = None
    if isinstance(public_key, rsa.RSAPublicKey) and public_key.public_numbers().e == 3:
        evidence.append("tls.rsa_exponent_3")
    usual = {
        x509.AuthorityInformationAccess,
        x509.CRLDistributionPoints,
        x509.CertificatePolicies,
        x509.PrecertificateSignedCertificateTimestamps,
    }
    if not extension_classes & usual:
        evidence.append("tls.extensions_stripped")
    return evidence


def analyze_chain(
    chain_b64: list[str], host: str, at: datetime, roots: ReferenceRoots, catalogs: Catalogs
) -> dict[str, Any]:
    """Judge one presented chain: validity, catalog matches and supporting evidence."""
    result: dict[str, Any] = {
        "valid": False,
        "validation_error": None,
        "hostname_matches": None,
        "interceptor": None,
        "evidence": [],
        "certificates": [],
    }
    try:
        chain = decode_chain(chain_b64)
    except (ValueError, TypeError) as exc:
        result["validation_error"] = f"unparseable certificate: {exc}"[:300]
        return result
    if not chain:
        result["validation_error"] = "no certificate presented"
        return result
    result["certificates"] = [describe_certificate(cert) for cert in chain]
    result["hostname_matches"] = hostname_matches(chain[0], host)
    valid, reason = verify_chain(chain, host, at, roots)
    result["valid"], result["validation_error"] = valid, reason
    leaf_issuer = chain[0].issuer.rfc4514_string()
    top_issuer = chain[-1].issuer.rfc4514_string()

    # Strong: a presented certificate whose DER or key is in the interception catalog.
    by_der = {entry.sha256_der: entry for entry in catalogs.interception_certificates if entry.sha256_der}
    by_spki = {entry.sha256_spki: entry for entry in catalogs.interception_certificates if entry.sha256_spki}
    for index, described in enumerate(result["certificates"]):
        entry, how = by_der.get(described["sha256_der"]), "sha256_der"
        if entry is None:
            entry, how = by_spki.get(described["sha256_spki"]), "sha256_spki"
        if entry is not None:
            result["interceptor"] = {
                "catalog": "interception_cas",
                "catalog_id": entry.id,
                "name": entry.name,
                "country": entry.country,
                "issuer": leaf_issuer,
                "chain_top_issuer": top_issuer,
                "matched_by": how,
                "matched_certificate": index,
            }
            break
    if valid and result["interceptor"] is None:
        return result

    result["evidence"] = _supporting_evidence(chain[0], host)
    if result["interceptor"] is not None:
        return result
    # Weaker: names. A national CA's name with an unknown key is still named, as a name match.
    for catalog_name, rules in (
        ("interception_cas", catalogs.interception_names),
        ("local_interceptors", catalogs.local_interceptors),
    ):
        found = _match_names(chain, rules)
        if found is not None:
            rule, index, which = found
            result["interceptor"] = {
                "catalog": catalog_name,
                "catalog_id": rule.id,
                "name": rule.name,
                "country": rule.country,
                "issuer": leaf_issuer,
                "chain_top_issuer": top_issuer,
                "matched_by": f"{which}_name",
                "matched_certificate": index,
            }
            return result
    result["interceptor"] = {
        "catalog": None,
        "catalog_id": None,
        "name": None,
        "country": None,
        "issuer": leaf_issuer,
        "chain_top_issuer": top_issuer,
        "matched_by": None,
        "matched_certificate": None,
    }
    return result
