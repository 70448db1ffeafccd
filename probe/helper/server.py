"""The helper's HTTPS JSON API: `POST /v1/measure` and `GET /v1/health`.

One greedy or malformed client must not shut the others out (docs/helper.md, threat model): every
client (an address, an IPv6 /64) has its share of connections and of measuring slots, the accept
loop never waits on a client, and every malformed request gets a JSON answer, never a dropped
connection or a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import ssl
import sys
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.helper.bulk import BULK_PATH, BulkSlots, serve_bulk
from probe.helper.measure import API_VERSION, HelperConfig, Refused, measure_for_probe
from probe.helper.ratelimit import Lease, PerClient, RateLimiter

API_PATH = "/v1/measure"
MAX_REQUEST_BYTES = 4096
MAX_JSON_DEPTH = 16  # a request is one flat object; deeper is not a probe's


class _Handler(BaseHTTPRequestHandler):
    server: HelperServer
    protocol_version = "HTTP/1.1"
    server_version = f"{SOFTWARE_NAME}-helper/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - never log client addresses
        return

    def _reply(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if close:  # what is left of the request cannot be told from the next one
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """What http.server finds wrong itself (a malformed request line or header, too many
        headers, an unknown method) is answered like the helper's own refusals: JSON, then closed."""
        if self.request_version == "HTTP/0.9":  # set before a request line is understood
            self.request_version = "HTTP/1.0"  # so that a status line and headers are sent
        reason = message or self.responses.get(code, ("error", ""))[0]
        self._reply(code, {"error": reason}, close=True)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # no headers, no status line: nothing a probe sends
            self.send_error(400, "HTTP/1.0 or HTTP/1.1 is required")
            return False
        return True

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
        elif self.path == BULK_PATH:
            # A fixed amount of bytes, whatever the SNI (helper/bulk.py): throughput compared by name.
            try:
                self._admit()
                serve_bulk(self, self.server.config, self.server.bulk, self._deadline)
            except Refused as refusal:
                self._reply(refusal.status, {"error": str(refusal)})
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
        self._body_read = False
        try:
            if self.path != API_PATH:
                raise Refused(404, "not found")
            self._admit()
            request = self._read_request()
            if request is None:
                return  # cut at the deadline, or gone: no one to answer
            answer = self._measure(request)
        except Refused as refusal:
            self._reply(refusal.status, {"error": str(refusal)}, close=not self._body_read)
            return
        except OSError:
            raise  # the connection failed: nothing to answer on (handle_error stays quiet)
        except Exception as exc:  # noqa: BLE001 - a bug: one line in the log, a JSON answer
            _log_failure(exc)
            self._reply(500, {"error": "internal error"}, close=True)
            return
        self._reply(200, answer)

    def _read_request(self) -> dict[str, Any] | None:
        length = content_length(self.headers)
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        self._body_read = True
        self._deadline.cancel()  # the request is in: what follows is the helper's own time
        return parse_request_body(body)

    def _measure(self, request: dict[str, Any]) -> dict[str, Any]:
        server, config = self.server, self.server.config
        # The client's share first, at once: one client's requests never wait for its own slots
        # while holding a connection, and never take every slot.
        give_back = server.client_slots.take(self.client_address[0])
        if give_back is None:
            raise Refused(429, f"at most {config.max_concurrent_per_client} measurements at once from one client")
        lease = Lease(give_back)
        try:
            if not server.slots.acquire(timeout=config.timeout):
                raise Refused(503, "busy; try again later")
            try:
                answer = measure_for_probe(request, config, lease.hold)
            finally:
                server.slots.release()
        finally:
            lease.release()  # the client's slot stays taken while a lookup it asked for still runs
        # Told back to the asking probe only, so that it can scrub its own address from its records.
        answer["client_address"] = self.client_address[0]
        return answer


def content_length(headers: Message) -> int:
    """The body's length, refused unless it is one plain number of bytes within the bound."""
    if headers.get("Transfer-Encoding") is not None:
        raise Refused(400, "a body with a Content-Length is required (no Transfer-Encoding)")
    values = {value.strip() for value in headers.get_all("Content-Length") or []}
    if not values:
        raise Refused(400, "a small JSON body with a Content-Length is required")
    if len(values) > 1:
        raise Refused(400, "conflicting Content-Length headers")
    (text,) = values
    if not (text.isascii() and text.isdigit()):
        raise Refused(400, "Content-Length must be a number of bytes")
    if len(text) > 9 or int(text) > MAX_REQUEST_BYTES:
        raise Refused(413, f"the request's body is larger than {MAX_REQUEST_BYTES} bytes")
    if int(text) == 0:
        raise Refused(400, "a small JSON body is required")
    return int(text)


def parse_request_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise Refused(400, f"the body's JSON nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(request, dict):
        raise Refused(400, "the body must be a JSON object")
    return request


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (strings skipped), counted before parsing: the
    parser recurses, so a body nested thousands deep must not reach it. Linear in the text."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class HelperServer(HTTPServer):
    request_queue_size = 256

    def __init__(self, listen: tuple[str, int], config: HelperConfig, cert: str, key: str) -> None:
        if ":" in listen[0]:
            self.address_family = socket.AF_INET6
        super().__init__(listen, _Handler)
        self.config = config
        self.limiter = RateLimiter(config.rate_per_minute, config.burst)
        self.slots = threading.BoundedSemaphore(config.max_concurrent)
        self.client_slots = PerClient(config.max_concurrent_per_client)
        self.connections = threading.BoundedSemaphore(config.max_connections)
        self.client_connections = PerClient(config.max_connections_per_client)
        self.bulk = BulkSlots(config)
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
        """A bounded number of connections at once, and a bounded share of them for each client,
        not a thread for every one. Nothing here waits on a client: past either bound, the new
        connection is closed at once (the probe records the helper as failed and goes on)."""
        give_back = self.client_connections.take(client_address[0])
        if give_back is None:
            self._refuse(request)
            return
        if not self.connections.acquire(blocking=False):
            give_back()
            self._refuse(request)
            return
        try:
            threading.Thread(target=self._serve, args=(request, client_address, give_back), daemon=True).start()
        except RuntimeError:  # no thread to be had: refused like any connection past the bound
            self.connections.release()
            give_back()
            self._refuse(request)

    def _serve(self, request, client_address, give_back):  # type: ignore[no-untyped-def]
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - as socketserver does, without the traceback
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.connections.release()
            give_back()

    def _refuse(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request.setblocking(False)  # closing never waits, whatever the client left unsent
        self.shutdown_request(request)

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        """Never the client's address, not even in an error: only what went wrong. A connection
        that failed (reset, cut at the deadline, not TLS) is the client's business: not logged."""
        failure = sys.exc_info()[1]
        if failure is None or isinstance(failure, OSError):
            return
        _log_failure(failure)


def _log_failure(failure: BaseException) -> None:
    what = f"{type(failure).__name__}: {failure}".splitlines()[0][:200]
    print(f"helper: a request failed: {what}", file=sys.stderr, flush=True)


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
