"""What the helper measures for a probe: the destination checked, then DNS, TCP, TLS and HTTP,
answered as metadata only (see the package's docstring for the threat model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.analyze import certs
from probe.analyze.bogons import is_bogon
from probe.analyze.http import normalize_page_text
from probe.netx.clock import Clock
from probe.netx.connect import close_quietly, tcp_connect, tls_handshake
from probe.netx.dns import lookup_system, system_lookup
from probe.netx.http import http_get_body
from probe.vocabulary.errors import ProbeError
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import DnsLookup
from probe.vocabulary.targets import is_ip_literal, parse_target

API_VERSION = 1
MAX_ADDRESSES = 3
MAX_HEADER_NAMES = 48  # the answer stays small whatever a site sends
MAX_HEADER_NAME_CHARS = 64


class Refused(ProbeError):
    """A request the helper will not carry out; the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class HelperConfig:
    timeout: float
    roots: certs.ReferenceRoots
    token: str | None = None
    allow_documentation: bool = False
    ports: frozenset[int] = frozenset({80, 443})
    # One probe's run at the default concurrency asks about 8 targets at once, a few a second:
    # the default serves it, and throttles anyone who asks far more.
    rate_per_minute: float = 600.0
    burst: int = 120
    max_concurrent: int = 16  # measurements at once; a request waits up to `timeout` for its turn
    # Measurements one client (an address, an IPv6 /64) may have at once; past it, 429 at once. A
    # probe asks on at most four connections, so four at most (helperclient.HELPER_CONNECTIONS).
    max_concurrent_per_client: int = 4
    # Open at once; past it a new connection is closed at once. A probe keeps at most four
    # (helperclient.HELPER_CONNECTIONS): fifty probes at once fit, with room.
    max_connections: int = 256
    max_connections_per_client: int = 16  # one client's share: a few probes behind one NAT address
    request_deadline: float = 10.0  # a whole request (headers and body) must arrive within this
    # The bulk endpoint (GET /v1/bulk, helper/bulk.py): throughput flows a probe compares by SNI.
    bulk_bytes: int = 256 << 10  # bytes of each download
    bulk_deadline: float = 30.0  # seconds for a whole download; a reader that stalls is cut then
    max_bulk: int = 8  # downloads at once; past it, 503 at once
    max_bulk_per_client: int = 3  # one client's share (a probe downloads one flow at a time)


def check_destination(address: str, config: HelperConfig) -> None:
    if is_bogon(address, documentation_is_public=config.allow_documentation):
        raise Refused(403, f"destination {address} is not a public address")


def _fingerprints(chain_b64: list[str], host: str, at: datetime, roots: certs.ReferenceRoots) -> dict[str, Any]:
    try:
        chain = certs.decode_chain(chain_b64)
    except certs.CERTIFICATE_ERRORS as exc:
        return {"chain_sha256": [], "leaf_spki_sha256": None, "leaf_issuer": None, "valid": False,
                "validation_error": f"unparseable certificate: {exc}"[:200]}  # fmt: skip
    described = [certs.describe_certificate(cert) for cert in chain]
    valid, reason = certs.verify_chain(chain, host, at, roots)
    return {
        "chain_sha256": [c["sha256_der"] for c in described],
        "leaf_spki_sha256": described[0]["sha256_spki"] if described else None,
        "leaf_issuer": described[0]["issuer"] if described else None,
        "valid": valid,
        "validation_error": reason,
    }


def measure_for_probe(
    request: dict[str, Any], config: HelperConfig, hold: Callable[[], Callable[[], None]] | None = None
) -> dict[str, Any]:
    """Carry out one checked request and return metadata only. `hold`, if given, is called before
    the name's lookup, and what it returns when the lookup has really ended (see `bounded_lookup`)."""
    text = request.get("url") if isinstance(request.get("url"), str) else None
    if text is None:
        raise Refused(400, "expected a JSON object with 'url' (http:// or https://, or host[:port])")
    try:
        target = parse_target(text, None, 1)
    except ValueError as exc:
        raise Refused(400, f"bad url: {exc}") from None
    if target.port not in config.ports:
        raise Refused(403, f"port {target.port} is not allowed (allowed: {sorted(config.ports)})")
    clock = Clock()
    started = datetime.now(UTC)
    answer: dict[str, Any] = {
        "version": API_VERSION,
        "software": {"name": SOFTWARE_NAME, "version": __version__},
        "url": target.url,
        "dns": None,
        "tcp": [],
        "tls": None,
        "http": None,
    }
    if target.is_ip_literal:
        addresses = [target.host]
    else:
        lookup = bounded_lookup(target.host, target.port, config.timeout, clock, hold)
        answer["dns"] = {"addresses": list(lookup.addresses), "failure": lookup.failure}
        addresses = list(lookup.addresses)
    for address in addresses:  # every address is checked before any is used
        check_destination(address, config)
    deadline = time.monotonic() + 2 * config.timeout  # no new address after this: answer in time
    for address in addresses[:MAX_ADDRESSES]:
        if answer["tcp"] and time.monotonic() > deadline:
            break
        sock, tcp = tcp_connect(address, target.port, config.timeout, clock)
        answer["tcp"].append({"address": address, "failure": tcp["failure"]})
        if sock is None:
            continue
        if target.scheme == "https":
            sni = None if is_ip_literal(target.host) else target.host
            tls, handshake = tls_handshake(sock, address, target.port, sni, config.timeout, clock)
            answer["tls"] = {"address": address, "failure": handshake["failure"], "alert": handshake["alert"]}
            if tls is None:
                break
            answer["tls"].update(_fingerprints(handshake["peer_certificates"], target.host, started, config.roots))
            sock = tls
        try:
            page, body = http_get_body(sock, target.host, target.path, config.timeout, clock)
        finally:
            close_quietly(sock)
        answer["http"] = http_answer(page, body)
        break
    return answer


def http_answer(page: dict[str, Any], body: bytes) -> dict[str, Any]:
    """What a probe compares its page with, as metadata: the status, the title, the body's length
    (raw, and with what differs per visit normalised: addresses, times, tokens, numbers) and hash,
    the Location, and the response's header names (never their values, never the body)."""
    answer = {k: page[k] for k in ("status", "title", "body_length", "body_sha256", "location", "failure")}
    names = {str(name).lower()[:MAX_HEADER_NAME_CHARS] for name, _ in page["headers"] if name}
    answer["header_names"] = sorted(names)[:MAX_HEADER_NAMES]
    text = body.decode("utf-8", errors="replace")
    answer["body_length_normalized"] = len(normalize_page_text(text).encode()) if page["status"] is not None else None
    return answer


# getaddrinfo's workers: bounded, so that lookups that hang cannot make threads without end (a
# lookup that waits here for a worker waits within its own bound all the same).
_LOOKUPS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="helper-getaddrinfo")


def bounded_lookup(
    hostname: str, port: int, timeout: float, clock: Clock, hold: Callable[[], Callable[[], None]] | None = None
) -> DnsLookup:
    """The system resolver's answer within `timeout`. getaddrinfo has no bound of its own (a name
    under a nameserver that drops every packet holds it for as long as the resolver retries), so it
    runs in a worker; past `timeout` the lookup is answered as timed out and the measurement goes on
    (its slot freed), while the worker waits for getaddrinfo to give up. `hold()` is taken before
    and let go when the worker is done, so that whoever charges the asker for it knows."""
    release = hold() if hold is not None else None
    started = clock.now()
    future = _LOOKUPS.submit(lookup_system, hostname, port, clock)
    if release is not None:
        future.add_done_callback(lambda _done: release())
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()  # still waiting for a worker: never started (and let go of at once)
        return system_lookup(hostname, started, None, Failure.GENERIC_TIMEOUT, clock)
