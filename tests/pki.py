"""Test certificate authorities and chains, built with cryptography's certificate builder.

Chains are shaped like the real web's (root, intermediate, leaf with SAN, EKU, AKI/SKI), so that
`cryptography.x509.verification` accepts the clean ones; forged ones copy what the 2019
forgeries did (FACTS.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


def name(**attributes: str) -> x509.Name:
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "C": NameOID.COUNTRY_NAME}
    return x509.Name([x509.NameAttribute(oids[key], value) for key, value in attributes.items()])


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    parents: list[x509.Certificate] = field(default_factory=list)  # intermediates above, then the root

    @property
    def chain_above(self) -> list[x509.Certificate]:
        """What a server sends after the leaf: this CA (unless a root) and its intermediates."""
        if self.cert.issuer == self.cert.subject:
            return []
        return [self.cert] + [p for p in self.parents if p.issuer != p.subject]


def _ski(key) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def make_root(subject: x509.Name, days: int = 3650, rsa_key: bool = False) -> Authority:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(_ski(key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def make_intermediate(parent: Authority, subject: x509.Name, path_length: int | None = 0) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(_ski(key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
        .sign(parent.key, hashes.SHA256())
    )
    return Authority(cert, key, [parent.cert, *parent.parents])


def reissue(authority: Authority, parent: Authority, valid_days: tuple[float, float]) -> Authority:
    """The same CA (same name, same key) in a new certificate with other dates, as CAs re-issue
    their intermediates."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(authority.cert.subject)
        .issuer_name(parent.cert.subject)
        .public_key(authority.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=valid_days[0]))
        .not_valid_after(NOW + dt.timedelta(days=valid_days[1]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(_ski(authority.key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)
        .sign(parent.key, hashes.SHA256())
    )
    return Authority(cert, authority.key, [parent.cert, *parent.parents])


@dataclass
class Leaf:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: list[x509.Certificate]  # leaf first, as the server sends it

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """The chain (leaf first) and the key, as PEM files a server loads."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path


def make_leaf(
    issuer: Authority,
    names: list[str],
    *,
    rsa_exponent: int | None = None,
    stripped: bool = False,
    extra_chain: list[x509.Certificate] | None = None,
    aia_url: str = "http://ca.example/issuer.crt",
    valid_days: tuple[float, float] = (-0.25, 90),
    leaf_only: bool = False,
) -> Leaf:
    """A server certificate for `names`; `rsa_exponent=3, stripped=True` is a 2019-style forgery.

    `valid_days`: notBefore and notAfter in days from now (`(-90, -1)` has expired); `leaf_only`:
    the server sends no intermediate, as many small sites do."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if rsa_exponent is not None:
        key = rsa.generate_private_key(public_exponent=rsa_exponent, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = []
    for text in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            alt_names.append(x509.DNSName(text))
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(CN=names[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=valid_days[0]))
        .not_valid_after(NOW + dt.timedelta(days=valid_days[1]))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    )
    if not stripped:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(aia_url),
                        )
                    ]
                ),
                critical=False,
            )
        )
    cert = builder.sign(issuer.key, hashes.SHA256())
    chain = [cert] if leaf_only else [cert, *issuer.chain_above, *(extra_chain or [])]
    return Leaf(cert, key, chain)


def write_pem(path: Path, certs: list[x509.Certificate]) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def hashlib_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki_sha256(cert: x509.Certificate) -> str:
    import hashlib

    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def raw_der_pem(der: bytes) -> bytes:
    """PEM of DER bytes no parser need accept (a forged certificate the lab serves as it is)."""
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def der_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
