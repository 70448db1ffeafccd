"""The helper's HTTPS JSON API: `POST /v1/measure` and `GET /v1/health`."""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
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

    def handle_one_request(self) -> None:
        """A whole-request deadline, not one per read: a client dripping a byte at a time (slowloris)
        is cut when the request's time is up, whatever it sends. Measuring does not count."""
        self._deadline = threading.Timer(self.server.config.request_deadline, _cut, [self.connection])
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

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
            body = self.rfile.read(length)
            self._deadline.cancel()  # the request is in: what follows is the helper's own time
            try:
                request = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise Refused(400, "the body is not JSON") from None
            if not isinstance(request, dict):
                raise Refused(400, "the body must be a JSON object")
            if not self.server.slots.acquire(timeout=config.timeout):
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
    request_queue_size = 256

    def __init__(self, listen: tuple[str, int], config: HelperConfig, cert: str, key: str) -> None:
        super().__init__(listen, _Handler)
        self.config = config
        self.limiter = RateLimiter(config.rate_per_minute, config.burst)
        self.slots = threading.BoundedSemaphore(config.max_concurrent)
        self.connections = threading.BoundedSemaphore(config.max_connections)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        # The handshake happens in the handler's thread, on first read, not in accept().
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, address = super().get_request()
        sock.settimeout(self.config.request_deadline)
        return sock, address

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        """A bounded number of connections at once, not a thread for every one: past the bound, a
        new connection is closed at once (the probe records the helper as failed and goes on)."""
        if not self.connections.acquire(timeout=1.0):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        """Never the client's address, not even in an error: only what went wrong."""
        import sys
        import traceback

        print(f"helper: a request failed: {traceback.format_exc(limit=1).strip().splitlines()[-1]}", file=sys.stderr)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
