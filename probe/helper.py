"""`probe helper serve`: the control vantage, an HTTPS JSON API on a server outside the censored network.

For a target a probe asks about, the helper resolves it, connects, handshakes with its SNI, fetches
its page, and answers with metadata only (addresses, failures, certificate fingerprints, HTTP status,
title and body length; never a page body). docs/helper.md holds its threat model. It must never
become an open proxy or a scanner of private networks:
- destinations are checked after resolution and only the checked addresses are connected to (no
  DNS rebinding); loopback, private, link-local, reserved and other special addresses are refused,
  the documentation ranges too unless `--allow-documentation-addresses` (the lab) is given;
- only the ports in `--ports` (80 and 443 by default); no redirects are followed;
- every step has a time bound, requests are small, concurrent work is capped, each client address
  has a rate limit, and an optional bearer token closes the door to everyone else;
- client addresses are used for the rate limit only, in memory, and never logged.
"""

from __future__ import annotations

import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from probe import SOFTWARE_NAME, __version__, certs
from probe.bogons import is_bogon
from probe.clock import Clock
from probe.connect import close_quietly, tcp_connect, tls_handshake
from probe.dnsquery import lookup_system
from probe.httpget import http_get
from probe.targets import is_ip_literal, parse_target

API_PATH = "/v1/measure"
API_VERSION = 1
MAX_REQUEST_BYTES = 4096
MAX_ADDRESSES = 3


class Refused(Exception):
    """A request the helper will not carry out; the message says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class RateLimiter:
    """A token bucket per client address: `rate` requests a minute, bursts of `burst`."""

    rate_per_minute: float
    burst: int
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_minute / 60.0)
            if len(self._buckets) > 100_000:  # bounded memory: forget the idle
                self._buckets.clear()
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return False
            self._buckets[client] = (tokens - 1.0, now)
            return True


@dataclass(frozen=True)
class HelperConfig:
    timeout: float
    roots: certs.ReferenceRoots
    token: str | None = None
    allow_documentation: bool = False
    ports: frozenset[int] = frozenset({80, 443})
    rate_per_minute: float = 60.0
    burst: int = 30
    max_concurrent: int = 16


def check_destination(address: str, config: HelperConfig) -> None:
    if is_bogon(address, documentation_is_public=config.allow_documentation):
        raise Refused(403, f"destination {address} is not a public address")


def _fingerprints(chain_b64: list[str], host: str, at: datetime, roots: certs.ReferenceRoots) -> dict[str, Any]:
    try:
        chain = certs.decode_chain(chain_b64)
    except (ValueError, TypeError) as exc:
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


def measure_for_probe(request: dict[str, Any], config: HelperConfig) -> dict[str, Any]:
    """Carry out one checked request and return metadata only."""
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
        lookup = lookup_system(target.host, target.port, clock)
        answer["dns"] = {"addresses": lookup["addresses"], "failure": lookup["failure"]}
        addresses = lookup["addresses"]
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
            page = http_get(sock, target.host, target.path, config.timeout, clock)
        finally:
            close_quietly(sock)
        answer["http"] = {k: page[k] for k in ("status", "title", "body_length", "body_sha256", "location", "failure")}
        break
    return answer


class _Handler(BaseHTTPRequestHandler):
    server: HelperServer
    protocol_version = "HTTP/1.1"
    server_version = f"{SOFTWARE_NAME}-helper/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log client addresses
        return

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/v1/health":
            self._reply(200, {"ok": True, "version": API_VERSION})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        config = self.server.config
        try:
            if self.path != API_PATH:
                raise Refused(404, "not found")
            if config.token is not None:
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode()):
                    raise Refused(401, "a bearer token is required")
            if not self.server.limiter.allow(self.client_address[0]):
                raise Refused(429, "too many requests; slow down")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_REQUEST_BYTES:
                raise Refused(413 if length > MAX_REQUEST_BYTES else 400, "a small JSON body is required")
            try:
                request = json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Refused(400, "the body is not JSON") from None
            if not isinstance(request, dict):
                raise Refused(400, "the body must be a JSON object")
            if not self.server.slots.acquire(timeout=1.0):
                raise Refused(503, "busy; try again later")
            try:
                answer = measure_for_probe(request, config)
            finally:
                self.server.slots.release()
            # Told back to the asking probe only, so that it can scrub its own address from its records.
            answer["client_address"] = self.client_address[0]
        except Refused as refusal:
            self._reply(refusal.status, {"error": str(refusal)})
            return
        self._reply(200, answer)


class HelperServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, listen: tuple[str, int], config: HelperConfig, cert: str, key: str) -> None:
        super().__init__(listen, _Handler)
        self.config = config
        self.limiter = RateLimiter(config.rate_per_minute, config.burst)
        self.slots = threading.BoundedSemaphore(config.max_concurrent)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        # The handshake happens in the handler's thread, on first read, not in accept().
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, address = super().get_request()
        sock.settimeout(30)  # a slow client cannot hold a thread for ever
        return sock, address
