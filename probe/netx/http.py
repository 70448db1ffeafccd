"""A bounded HTTP/1.1 GET over a socket the probe already connected (plain or TLS).

Bounded in body size and wall-clock time, so that a hostile or trickling server cannot hold the
probe. The body itself is not stored: its length, hash, title and a short prefix are.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import socket
import time
from dataclasses import dataclass
from typing import Any

from probe.netx import classify as errors
from probe.netx.clock import Clock
from probe.netx.connect import Stream
from probe.netx.own_addresses import OwnAddresses
from probe.vocabulary.failures import Failure
from probe.vocabulary.observations import HttpExchange, HttpRequestLine

MAX_BODY_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 << 10
BODY_PREFIX_CHARS = 16384  # enough for blockpages, re-matched when the catalog grows
USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
TITLE_WINDOW = 64 << 10  # a page's title is in its head: never look further


def find_title(body: bytes) -> str | None:
    """The page's <title>, found in linear time within the first TITLE_WINDOW bytes.

    A regular expression with a lazy `.*?` takes seconds on a hostile body full of `<title`; a
    plain search for the tags cannot."""
    head = body[:TITLE_WINDOW]
    lower = head.lower()
    start = lower.find(b"<title")
    if start < 0:
        return None
    opening = lower.find(b">", start)
    end = lower.find(b"</title", opening + 1) if opening >= 0 else -1
    if end < 0:
        return None
    text = head[opening + 1 : end].decode("utf-8", errors="replace")
    return " ".join(html.unescape(text).split())[:200] or None


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    rest = body
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def http_get(
    sock: socket.socket,
    host: str,
    path: str,
    timeout: float,
    clock: Clock,
    max_body: int = MAX_BODY_BYTES,
    own: OwnAddresses | None = None,
) -> dict[str, Any]:
    """Send one GET and read the response within `timeout` seconds and `max_body` bytes.

    With `own`, the probe's addresses are removed from the body before it is hashed or kept: a hash
    of a page that echoes the visitor's address would let anyone with the page's template find it."""
    return http_get_body(sock, host, path, timeout, clock, max_body, own)[0]


def http_get_body(
    sock: socket.socket,
    host: str,
    path: str,
    timeout: float,
    clock: Clock,
    max_body: int = MAX_BODY_BYTES,
    own: OwnAddresses | None = None,
) -> tuple[dict[str, Any], bytes]:
    """`http_get`, also returning the body's bytes (for a certificate fetched from an AIA URL)."""
    record = _http_record(host, path, clock)
    request = _request(host, path)
    deadline = time.monotonic() + timeout
    data = bytearray()
    try:
        sock.settimeout(timeout)
        sock.sendall(request)
        while len(data) < max_body + MAX_HEADER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("HTTP deadline")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        else:
            record["body_truncated"] = True
    except Exception as exc:
        record["failure"] = errors.classify(exc)
    return _response(record, data, clock, max_body, own)


async def get_body(
    stream: Stream,
    host: str,
    path: str,
    timeout: float,
    clock: Clock,
    max_body: int = MAX_BODY_BYTES,
    own: OwnAddresses | None = None,
    *,
    address: str | None = None,
    url: str | None = None,
    redirect_index: int | None = None,
) -> tuple[HttpExchange, bytes]:
    """`http_get_body` on the event loop, over a connected `Stream` (plain or TLS): the exchange as
    observed (with where it went: `address`, `url`, `redirect_index`) and the body's bytes."""
    t0 = clock.now()
    data = bytearray()
    failure, truncated = None, False
    try:
        async with asyncio.timeout(timeout):
            await stream.send(_request(host, path))
            while len(data) < max_body + MAX_HEADER_BYTES:
                chunk = await stream.recv(65536)
                if not chunk:
                    break
                data += chunk
            else:
                truncated = True
    except Exception as exc:
        failure = errors.classify(exc)
    t = clock.now()
    read, body = _read(data, failure, max_body, own)
    exchange = HttpExchange(
        HttpRequestLine("GET", host, path), read.status, tuple((n, v) for n, v in read.headers), read.location,
        read.title, read.body_length, read.body_sha256, read.body_prefix, truncated, read.failure, t0, t,
        address, url, redirect_index, read.status_line,
    )  # fmt: skip
    return exchange, body


async def get(
    stream: Stream, host: str, path: str, timeout: float, clock: Clock, own: OwnAddresses | None = None,
    *, address: str | None = None, url: str | None = None, redirect_index: int | None = None,
) -> HttpExchange:  # fmt: skip
    """`http_get` on the event loop."""
    exchange, _ = await get_body(stream, host, path, timeout, clock, own=own, address=address, url=url,
                                 redirect_index=redirect_index)  # fmt: skip
    return exchange


def _http_record(host: str, path: str, clock: Clock) -> dict[str, Any]:
    return {
        "request": {"method": "GET", "host": host, "path": path},
        "status": None,
        "headers": [],
        "location": None,
        "title": None,
        "body_length": None,
        "body_sha256": None,
        "body_prefix": None,
        "body_truncated": False,
        "failure": None,
        "t0": clock.now(),
        "t": None,
    }


def _request(host: str, path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        "Accept: text/html,*/*;q=0.8\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("ascii", errors="strict")


@dataclass(frozen=True)
class _Response:
    """What a response's bytes say (whole, or up to a failure)."""

    failure: str | None
    status: int | None = None
    headers: tuple[list[str], ...] = ()
    location: str | None = None
    title: str | None = None
    body_length: int | None = None
    body_sha256: str | None = None
    body_prefix: str | None = None
    status_line: str | None = None  # a status line that is not HTTP's, as the server sent it


def _read(data: bytearray, failure: str | None, max_body: int, own: OwnAddresses | None) -> tuple[_Response, bytes]:
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not data:
        return _Response(failure or Failure.EOF_ERROR), b""
    if not sep or not head.startswith(b"HTTP/"):
        return _Response(failure or Failure.HTTP_INVALID_RESPONSE), b""
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split()
    code = parts[1] if len(parts) > 1 else ""
    if len(code) != 3 or not code.isascii() or not code.isdigit():  # RFC 9110: three digits, nothing else
        return _Response(failure or Failure.HTTP_INVALID_RESPONSE, status_line=lines[0][:120]), b""
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append([name.strip(), value.strip()])
    lowered = {name.lower(): value for name, value in headers}
    if "chunked" in lowered.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    body = body[:max_body]
    if own is not None:
        body = own.scrub_bytes(body)
    # A response that arrived whole before a reset is still a response; keep the failure as evidence.
    prefix = body[:BODY_PREFIX_CHARS].decode("utf-8", errors="replace")
    read = _Response(failure, int(code), tuple(headers), lowered.get("location"), find_title(body), len(body),
                     hashlib.sha256(body).hexdigest(), prefix)  # fmt: skip
    return read, body


def _response(
    record: dict[str, Any], data: bytearray, clock: Clock, max_body: int, own: OwnAddresses | None
) -> tuple[dict[str, Any], bytes]:
    """What a response says, in the helper's JSON (the blocking path)."""
    record["t"] = clock.now()
    read, body = _read(data, record["failure"], max_body, own)
    record["failure"] = read.failure
    if read.status_line is not None:
        record["status_line"] = read.status_line
    if read.status is not None:
        record.update({"status": read.status, "headers": [list(h) for h in read.headers], "location": read.location,
                       "title": read.title, "body_length": read.body_length, "body_sha256": read.body_sha256,
                       "body_prefix": read.body_prefix})  # fmt: skip
    return record, body
