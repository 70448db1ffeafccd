"""Reading trust stores from disk: the reference roots and the machine's own store."""

from __future__ import annotations

import hashlib
import re
import ssl
import warnings
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from probe.analyze.certs import ReferenceRoots
from probe.vocabulary.errors import InputError


class RootsError(InputError):
    """A reference roots file that cannot be used."""


def load_roots(path: Path | None = None) -> ReferenceRoots:
    """Mozilla's roots from certifi, or the PEM bundle given with `--roots`."""
    if path is None:
        file = Path(certifi.where())
        source = f"certifi {certifi.__version__}"
    else:
        file, source = path, path.name  # a record names the file, never where it lives (a home directory)
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
    return ReferenceRoots(source, hashlib.sha256(data).hexdigest(), certificates, str(file))


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
    return ReferenceRoots(path.name, hashlib.sha256(data).hexdigest(), tuple(certificates), str(path))
