"""Completing an incomplete chain as browsers do: fetch the issuer named by the AIA extension.

Many small sites send their leaf without the intermediate; browsers fetch the certificate from the
leaf's "CA Issuers" URL (RFC 5280, 4.2.2.1). The probe does the same, over the same network, so
that analysis can tell a site's incomplete chain from a forged one. Bounded in count (a few
fetches per chain), size and time; each URL is fetched once per run. What is fetched is only an
observation: analysis accepts it only if it chains by signature to a reference root.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from urllib.parse import urlsplit

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from probe.netx.clock import Clock
from probe.netx.connect import Stream, open_tcp
from probe.netx.dnsloop import lookup_system
from probe.netx.http import get_body
from probe.netx.own_addresses import OwnAddresses
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import AiaFetch

MAX_FETCHES_PER_CHAIN = 3
MAX_CERTIFICATE_BYTES = 64 << 10


# What reading a hostile certificate can raise (a duplicated extension only when extensions are read).
UNREADABLE: tuple[type[Exception], ...] = (
    ValueError, TypeError, x509.InvalidVersion, x509.DuplicateExtension, x509.UnsupportedGeneralNameType,
)  # fmt: skip
UNREADABLE_OR_ABSENT: tuple[type[Exception], ...] = (x509.ExtensionNotFound, *UNREADABLE)


def ca_issuers_urls(der: bytes) -> list[str]:
    """The CA Issuers URLs of a certificate's AIA extension; none when it cannot be read."""
    try:
        cert = x509.load_der_x509_certificate(der)
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except UNREADABLE_OR_ABSENT:
        return []
    return [
        d.access_location.value
        for d in access
        if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def _self_issued(der: bytes) -> bool:
    try:
        cert = x509.load_der_x509_certificate(der)
        return bool(cert.issuer == cert.subject)
    except UNREADABLE:
        return True  # nothing more to follow


def certificates_in(body: bytes) -> list[bytes]:
    """DER certificates in a fetched body: DER, PEM, or a PKCS#7 bundle (`.p7c`), as CAs publish."""
    loaders = (
        lambda b: [x509.load_der_x509_certificate(b)],
        x509.load_pem_x509_certificates,
        pkcs7.load_der_pkcs7_certificates,
        pkcs7.load_pem_pkcs7_certificates,
    )
    for load in loaders:
        try:
            found = load(body)
        except Exception:  # noqa: BLE001 - whatever a hostile body makes cryptography raise (UnsupportedAlgorithm...)
            continue
        if found:
            return [cert.public_bytes(serialization.Encoding.DER) for cert in found]
    return []


class IssuerFetcher:
    """Fetches CA Issuers URLs, each once per run (shared by every target, on the run's loop)."""

    def __init__(self, timeout: float, own: OwnAddresses | None = None) -> None:
        self.timeout = timeout
        self.own = own
        self._cache: dict[str, asyncio.Future[AiaFetch]] = {}

    async def fetch(self, url: str, clock: Clock) -> AiaFetch:
        cached = self._cache.get(url)
        if cached is not None:  # fetched, or being fetched for another target
            try:
                return msgspec.structs.replace(await asyncio.shield(cached), cached=True)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not cached.cancelled() or (task is not None and task.cancelling()):
                    raise  # this target itself is cancelled (the run's deadline, an interruption)
                # the target that was fetching it was cancelled: this one fetches it itself
        fetching: asyncio.Future[AiaFetch] = asyncio.get_running_loop().create_future()
        self._cache[url] = fetching
        try:
            record = await self._fetch(url, clock)
        except Exception as exc:  # a bug: every target waiting for this URL records it as an error
            del self._cache[url]
            fetching.set_exception(exc)
            fetching.exception()  # retrieved here: no "never retrieved" warning when nobody else waits
            raise
        except BaseException:  # cancelled: the next asker fetches again
            del self._cache[url]
            fetching.cancel()
            raise
        fetching.set_result(record)
        return record

    async def _fetch(self, url: str, clock: Clock) -> AiaFetch:
        t0 = clock.now()

        def fetched(failure: str | None, address: str | None = None, status: int | None = None,
                    certificates: tuple[str, ...] = ()) -> AiaFetch:  # fmt: skip
            return AiaFetch(url, address, status, failure, certificates, False, t0, clock.now())

        parts = urlsplit(url)
        try:
            port = parts.port or 80
        except ValueError:
            port = 0
        if parts.scheme.lower() != "http" or not parts.hostname or not port:
            return fetched(Failure.UNSUPPORTED_URL)
        lookup = await lookup_system(parts.hostname, port, clock)
        address = next((a for a in lookup.addresses if _may_fetch_from(a)), None)
        if address is None:
            return fetched(lookup.failure or Failure.UNSUPPORTED_URL)
        sock, tcp = await open_tcp(address, port, self.timeout, clock, self.own)
        if sock is None:
            return fetched(tcp.failure, address)
        stream = Stream(sock)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            response, body = await get_body(stream, parts.hostname, path, self.timeout, clock, MAX_CERTIFICATE_BYTES)
        finally:
            stream.close()
        if response.status != 200:
            return fetched(response.failure or Failure.HTTP_STATUS, address, response.status)
        found = tuple(base64.b64encode(der).decode("ascii") for der in certificates_in(body))
        return fetched(None if found else Failure.NO_CERTIFICATE, address, response.status, found)


def _may_fetch_from(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast)


async def complete_chain(chain_b64: list[str], fetcher: IssuerFetcher, clock: Clock) -> list[AiaFetch]:
    """Follow CA Issuers URLs up from the last presented certificate; every fetch is recorded."""
    fetches: list[AiaFetch] = []
    if not chain_b64:
        return fetches
    try:
        current = base64.b64decode(chain_b64[-1])
    except ValueError:
        return fetches
    while len(fetches) < MAX_FETCHES_PER_CHAIN and not _self_issued(current):
        urls = ca_issuers_urls(current)
        if not urls:
            break
        fetched = await fetcher.fetch(urls[0], clock)
        fetches.append(fetched)
        if not fetched.certificates:
            break
        current = base64.b64decode(fetched.certificates[0])
    return fetches
