"""The helper's bulk endpoint (`GET /v1/bulk`): a fixed amount of bytes, whatever name the TLS
ClientHello carried (or none), so that a probe can compare the throughput of flows that differ only
in their SNI (docs/helper.md, docs/verdicts.md "throttled").

Bounded like the helper's other answers: the rate limit and the token first, then at most
`max_bulk` downloads at once and `max_bulk_per_client` for one client (past either, 429 or 503 at
once, never a wait), and each download whole within `bulk_deadline` seconds (a reader that stops
reading is cut, so a slow or stalled flow holds its slot no longer). The body is the same random
block repeated: nothing of the helper's, and nothing a middlebox could compress away.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, Protocol

from probe.helper.measure import HelperConfig, Refused
from probe.helper.ratelimit import PerClient

BULK_PATH = "/v1/bulk"
CHUNK = 16 << 10
_BLOCK = os.urandom(CHUNK)


class BulkSlots:
    """Downloads at once: for the whole helper and for each client."""

    def __init__(self, config: HelperConfig) -> None:
        self.all = threading.BoundedSemaphore(config.max_bulk)
        self.per_client = PerClient(config.max_bulk_per_client)


class _Handler(Protocol):
    """What of the server's request handler the bulk answer uses."""

    connection: socket.socket
    client_address: Any
    close_connection: bool

    def send_response(self, code: int, message: str | None = None) -> None: ...
    def send_header(self, keyword: str, value: str) -> None: ...
    def end_headers(self) -> None: ...
    @property
    def wfile(self) -> Any: ...


def serve_bulk(handler: _Handler, config: HelperConfig, slots: BulkSlots, request_deadline: threading.Timer) -> None:
    """Send `config.bulk_bytes` to an admitted client, within `config.bulk_deadline` seconds.
    Raises Refused (429, 503) past the limits; a connection that fails meanwhile raises OSError."""
    give_back = slots.per_client.take(handler.client_address[0])
    if give_back is None:
        raise Refused(429, f"at most {config.max_bulk_per_client} downloads at once from one client")
    try:
        if not slots.all.acquire(blocking=False):
            raise Refused(503, "busy; try again later")
        try:
            request_deadline.cancel()  # the request is in: the download has its own bound
            cut = threading.Timer(config.bulk_deadline, _cut, [handler.connection])
            cut.daemon = True
            cut.start()
            try:
                _send(handler, config.bulk_bytes)
            finally:
                cut.cancel()
        finally:
            slots.all.release()
    finally:
        give_back()


def _send(handler: _Handler, size: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(size))
    handler.send_header("Cache-Control", "no-store")
    handler.send_header("Connection", "close")
    handler.close_connection = True
    handler.end_headers()
    left = size
    while left > 0:
        piece = _BLOCK[: min(CHUNK, left)]
        handler.wfile.write(piece)
        left -= len(piece)
    handler.wfile.flush()


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
