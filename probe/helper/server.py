"""The helper's HTTPS JSON API: `POST /v1/measure` and `GET /v1/health`."""

from __future__ import annotations

import hmac
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.helper.measure import API_VERSION, HelperConfig, Refused, measure_for_probe
from probe.helper.ratelimit import RateLimiter

API_PATH = "/v1/measure"
MAX_REQUEST_BYTES = 4096


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
        elif self.path == "/v1/address":
            # Where the asking probe comes from, told to it alone: it looks up its network's AS and
            # country in a local table, then drops the address. Token and rate limit apply.
            try:
                self._admit()
            except Refused as refusal:
                self._reply(refusal.status, {"error": str(refusal)})
                return
            self._reply(200, {"client_address": self.client_address[0]})
        else:
            self._reply(404, {"error": "not found"})

    def _admit(self) -> None:
        # The rate limit first: a token cannot be guessed at full speed.
        if not self.server.limiter.allow(self.client_address[0]):
            raise Refused(429, "too many requests; slow down")
        config = self.server.config
        if config.token is not None:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {config.token}".encode()):
                raise Refused(401, "a bearer token is required")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        config = self.server.config
        try:
            if self.path != API_PATH:
                raise Refused(404, "not found")
            self._admit()
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
