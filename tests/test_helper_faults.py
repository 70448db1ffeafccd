"""One greedy or malformed client cannot shut the others out of the helper.

The helper runs for real on loopback: in a subprocess (`probe helper serve`), or in this process
where a test must make a name's lookup hang (the lookup is replaced; nothing else is). A greedy
client comes from 127.0.0.2 and the others from 127.0.0.1 (and more of 127/8): the helper counts
them as different clients, as it would different addresses on the Internet. No request reaches
any address but loopback: the honest client asks about a private address, which is refused (403)
once the helper has given it a measuring slot.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pytest

from probe.helper.measure import HelperConfig
from probe.helper.server import HelperServer, content_length, json_depth
from probe.loaders.roots import load_roots
from probe.vocabulary.observations import DnsLookup
from tests.conftest import PkiFixture
from tests.test_helper import _serve

GREEDY = "127.0.0.2"
HONEST = "127.0.0.1"
PRIVATE = "https://10.1.2.3/"  # refused with 403 once measured: proof that a slot was given


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].strip("/"))


def _context(test_pki: PkiFixture) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(test_pki.roots_pem))


def _ask(
    port: int, test_pki: PkiFixture, source: str, method: str = "POST", path: str = "/v1/measure",
    url: str = PRIVATE, timeout: float = 10,
) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """One request from `source`, on its own connection; its status and JSON answer."""
    connection = http.client.HTTPSConnection(
        HONEST, port, timeout=timeout, source_address=(source, 0), context=_context(test_pki)
    )
    try:
        body = json.dumps({"url": url}) if method == "POST" else None
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def _idle_tls(port: int, test_pki: PkiFixture, source: str) -> ssl.SSLSocket | None:
    """A connection that finished its handshake and sends nothing; None if the helper closed it."""
    raw = socket.create_connection((HONEST, port), timeout=10, source_address=(source, 0))
    try:
        tls = _context(test_pki).wrap_socket(raw, server_hostname=HONEST)
        tls.settimeout(0.5)
        try:
            if tls.recv(1) == b"":
                tls.close()
                return None
        except TimeoutError:
            return tls  # still open, held by this client
        tls.close()
        return None
    except (OSError, ssl.SSLError):
        raw.close()
        return None


# 1. One client cannot hold every connection.


@pytest.mark.timeout(60)
def test_one_client_cannot_hold_every_connection(test_pki: PkiFixture) -> None:
    """Four idle TLS connections from one client under `--connections 4` leave room for another:
    by default a client holds at most a quarter of the connections."""
    served = _serve(test_pki, "--connections", "4", "--request-deadline", "60")
    port = _port(next(served))
    held: list[ssl.SSLSocket] = []
    try:
        for _ in range(4):
            if (sock := _idle_tls(port, test_pki, GREEDY)) is not None:
                held.append(sock)
        assert _ask(port, test_pki, HONEST, "GET", "/v1/health") == (200, {"ok": True, "version": 1})
        assert len(held) == 1  # the greedy client's share of four
    finally:
        for sock in held:
            sock.close()
        served.close()


# 2. The accept loop never waits on a client.


@pytest.mark.timeout(90)
def test_refused_connections_do_not_hold_up_an_honest_client(test_pki: PkiFixture) -> None:
    """Thirty connections from thirty clients, each refused (the helper full), do not queue an
    honest client behind them: it is answered while they are still open, within its own request's
    timeout (before, each refusal held the accept loop for a second: thirty seconds)."""
    served = _serve(test_pki, "--connections", "4", "--connections-per-client", "1", "--request-deadline", "60")
    port = _port(next(served))
    holders = [_idle_tls(port, test_pki, f"127.0.0.{n}") for n in (2, 3, 4, 5)]  # the helper is full
    refused: list[socket.socket] = []
    try:
        assert all(sock is not None for sock in holders)
        deadline = time.monotonic() + 10  # the honest request's own timeout, not a measure of speed
        for n in range(6, 36):  # each a client of its own, within its share: refused by the bound alone
            refused.append(socket.create_connection((HONEST, port), timeout=10, source_address=(f"127.0.0.{n}", 0)))
        for sock in refused:  # each closed by the helper (so none takes a holder's place below)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                assert sock.recv(1) == b""
            except TimeoutError:
                raise AssertionError("the honest client's time ran out behind the refused connections") from None
            except ConnectionResetError:
                pass
        for sock in holders:
            sock.close()  # type: ignore[union-attr]
        answer: tuple[int, dict[str, Any]] | None = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = _ask(
                    port, test_pki, HONEST, "GET", "/v1/health", timeout=max(0.1, deadline - time.monotonic())
                )
            except (ConnectionError, ssl.SSLError):
                time.sleep(0.05)  # a holder's connection not yet let go of: still full
            except TimeoutError:
                break
        assert answer == (200, {"ok": True, "version": 1})
        assert all(sock.fileno() != -1 for sock in refused)  # still open on this side
    finally:
        for sock in refused:
            sock.close()
        served.close()


# 3. Every malformed request gets a JSON answer.


def _raw(port: int, test_pki: PkiFixture, request: bytes, closes: bool = False) -> tuple[str, dict[str, str], bytes]:
    """Send `request` as it is; the status line, headers and body. If it `closes`, the helper must
    have closed the connection after its answer."""
    with socket.create_connection((HONEST, port), timeout=10) as raw, _context(test_pki).wrap_socket(
        raw, server_hostname=HONEST
    ) as tls:  # fmt: skip
        tls.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                raise AssertionError(f"closed without an answer (got {data!r})")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = tls.recv(65536)
            if not chunk:
                break
            body += chunk
        if closes:
            try:
                left = tls.recv(1)
            except TimeoutError:
                raise AssertionError("the helper answered and kept the connection open") from None
            except OSError:
                left = b""  # closed with a reset is closed too
            assert left == b"", "the helper answered and went on reading"
        return status, headers, body


def _post(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"POST /v1/measure HTTP/1.1\r\nHost: helper\r\n{head}\r\n".encode() + body


def _post_sized(body: bytes) -> bytes:
    return _post(body, f"Content-Length: {len(body)}")


@pytest.fixture(scope="module")
def logged_helper(test_pki: PkiFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    log = tmp_path_factory.mktemp("helper") / "helper.log"
    served = _serve(test_pki, "--request-deadline", "5", log=log)
    port = _port(next(served))
    try:
        yield port, log
    finally:
        served.close()


@pytest.mark.parametrize(
    ("request_bytes", "status", "closes"),
    [
        pytest.param(_post(b"{}", "Content-Length: abc"), 400, True, id="length-abc"),
        pytest.param(_post(b"{}", "Content-Length: -5"), 400, True, id="length-negative"),
        pytest.param(_post(b"{}", "Content-Length: 2.0"), 400, True, id="length-fraction"),
        pytest.param(_post(b"{}", "Content-Length: 99999999999999999999999999999999"), 413, True, id="length-huge"),
        pytest.param(_post(b"", "Content-Length: 5000"), 413, True, id="length-over-limit"),  # no body read
        pytest.param(_post(b"{}", "Content-Length: 2", "Content-Length: 3"), 400, True, id="length-conflicting"),
        pytest.param(_post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 400, True, id="chunked"),
        pytest.param(_post(b""), 400, True, id="no-length"),
        pytest.param(_post(b"", "Content-Length: 0"), 400, True, id="length-zero"),
        pytest.param(_post_sized(b"[" * 2000 + b"]" * 2000), 400, False, id="nested-arrays"),  # 2,000 deep
        pytest.param(_post_sized(b'{"a":' * 600 + b"1" + b"}" * 600), 400, False, id="nested-objects"),
        pytest.param(_post_sized(b'{"url": ' + b"[" * 17 + b"]" * 17 + b"}"), 400, False, id="nested-17"),
        pytest.param(_post_sized(b"not json"), 400, False, id="not-json"),
        pytest.param(_post_sized(b'"https://x.example/"'), 400, False, id="not-an-object"),
        pytest.param(_post_sized(b"\xff\xfe{}"), 400, False, id="not-utf8"),
        pytest.param(_post_sized(b'{"url": 5}'), 400, False, id="url-not-a-string"),
        pytest.param(b"GARBAGE\r\n\r\n", 400, True, id="garbage-line"),
        pytest.param(b"GET /v1/health\r\n\r\n", 400, True, id="http-0.9"),
        pytest.param(b"GET /v1/health HTTP/2.0\r\nHost: x\r\n\r\n", 505, True, id="http-2.0"),
        pytest.param(
            b"PUT /v1/measure HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 501, True, id="unknown-method"
        ),
        pytest.param(
            b"GET /v1/health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % n for n in range(101)) + b"\r\n",
            431,
            True,
            id="too-many-headers",
        ),
    ],
)
@pytest.mark.timeout(30)
def test_a_malformed_request_gets_a_json_error(
    logged_helper: tuple[int, Path], test_pki: PkiFixture, request_bytes: bytes, status: int, closes: bool
) -> None:
    port, log = logged_helper
    status_line, headers, body = _raw(port, test_pki, request_bytes, closes)
    assert status_line.split(" ")[:2] == ["HTTP/1.1", str(status)]
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    if closes:  # what is left of the request cannot be read as the next one: the connection ends
        assert headers.get("connection") == "close"


def test_malformed_requests_leave_nothing_in_the_log(logged_helper: tuple[int, Path], test_pki: PkiFixture) -> None:
    port, log = logged_helper
    _raw(port, test_pki, _post(b"{}", "Content-Length: abc"))
    _raw(port, test_pki, _post_sized(b"[" * 2000 + b"]" * 2000))
    assert _raw(port, test_pki, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")[0].startswith("HTTP/1.1 200")
    text = log.read_text()
    assert "Traceback" not in text and "failed" not in text, text


def test_the_nesting_is_counted_outside_strings() -> None:
    assert json_depth('{"url": "[[[[{{{{"}') == 1
    assert json_depth('{"a": "\\"[[[", "b": [[1]]}') == 3
    assert json_depth("[" * 2000 + "]" * 2000) == 2000
    from email.message import Message

    headers = Message()
    headers["Content-Length"] = " 12 "
    assert content_length(headers) == 12


# 4. A lookup that hangs does not hold a slot; one client cannot take every slot.


class _HangingLookups:
    """getaddrinfo for names under hang.test never answers until `release` (a black-holed NS)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hanging = threading.Semaphore(0)
        self.running = 0
        self._lock = threading.Lock()

    def __call__(self, hostname: str, port: int, clock: Any) -> DnsLookup:
        if hostname.endswith(".broken.test"):
            raise RuntimeError("a bug\nTraceback (most recent call last): ...")
        assert hostname.endswith(".hang.test"), hostname
        with self._lock:
            self.running += 1
        self.hanging.release()
        self.release.wait(60)
        with self._lock:
            self.running -= 1
        return DnsLookup("system", "system", hostname, (), "dns_nxdomain_error", ())

    def wait_for(self, count: int) -> None:
        for _ in range(count):
            assert self.hanging.acquire(timeout=10), "the lookups were not asked"


@pytest.fixture
def in_process(test_pki: PkiFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    lookups = _HangingLookups()
    monkeypatch.setattr("probe.helper.measure.lookup_system", lookups)
    cert, key = test_pki.leaf_files(test_pki.public_intermediate, [HONEST], "helper-in-process")
    servers: list[HelperServer] = []

    def start(**limits: Any) -> int:
        config = HelperConfig(roots=load_roots(test_pki.roots_pem), **limits)
        server = HelperServer((HONEST, 0), config, str(cert), str(key))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    start.lookups = lookups  # type: ignore[attr-defined]
    start.servers = servers  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        lookups.release.set()
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.mark.timeout(60)
def test_a_lookup_that_hangs_is_cut_and_its_slot_freed(in_process: Any, test_pki: PkiFixture) -> None:
    """Both slots taken by names whose lookup never ends: each is answered at the lookup's bound
    (the DNS step timed out), the slots are freed for others while the lookups still hang, and the
    client that asked is charged for them until they end."""
    port = in_process(timeout=1, max_concurrent=2, max_concurrent_per_client=2)
    lookups = in_process.lookups
    with ThreadPoolExecutor(2) as pool:
        asked = [pool.submit(_ask, port, test_pki, GREEDY, url=f"https://{n}.hang.test/") for n in "ab"]
        answers = [future.result() for future in asked]
    for status, answer in answers:
        assert status == 200
        assert answer["dns"] == {"addresses": [], "failure": "generic_timeout_error"}
        assert answer["tcp"] == [] and answer["http"] is None
    assert lookups.running == 2 and not lookups.release.is_set()  # still hanging in their workers
    assert _ask(port, test_pki, HONEST)[0] == 403  # another client is measured
    assert _ask(port, test_pki, GREEDY)[0] == 429  # the asker's hung lookups still count against it
    lookups.release.set()
    (server,) = in_process.servers
    for _ in range(200):  # the lookups end at once now; their slots come back with them
        if server.client_slots.held(GREEDY) == 0:
            break
        time.sleep(0.05)
    assert _ask(port, test_pki, GREEDY)[0] == 403


@pytest.mark.timeout(60)
def test_one_client_cannot_take_every_measuring_slot(in_process: Any, test_pki: PkiFixture) -> None:
    """Four slots, a client asks four names whose lookups hang (bounded at 20 s): two are measured,
    two refused at once (429), and another client is measured while the two still hang."""
    port = in_process(timeout=20, max_concurrent=4, max_concurrent_per_client=2)
    lookups = in_process.lookups
    with ThreadPoolExecutor(4) as pool:
        asked = [pool.submit(_ask, port, test_pki, GREEDY, url=f"https://{n}.hang.test/", timeout=30) for n in "abcd"]
        lookups.wait_for(2)
        answered = as_completed(asked, timeout=10)  # the refusals, at once; the others hang
        refused = [next(answered).result() for _ in range(2)]
        assert [status for status, _ in refused] == [429, 429]
        assert "measurements at once" in refused[0][1]["error"]
        assert _ask(port, test_pki, HONEST)[0] == 403  # within its 10 s: the slots it needs are free
        assert lookups.running == 2 and not lookups.release.is_set()  # the greedy ones still hang
        lookups.release.set()
        assert sorted(future.result()[0] for future in asked) == [200, 200, 429, 429]


@pytest.mark.timeout(30)
def test_a_bug_is_answered_and_logged_in_one_line(
    in_process: Any, test_pki: PkiFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    port = in_process(timeout=5)
    assert _ask(port, test_pki, HONEST, url="https://x.broken.test/") == (500, {"error": "internal error"})
    assert _ask(port, test_pki, HONEST, "GET", "/v1/health")[0] == 200  # and it goes on
    logged = capsys.readouterr().err
    assert logged == "helper: a request failed: RuntimeError: a bug\n"
    assert HONEST not in logged


# The IPv6 listener: the /64 limits are only worth something if the helper serves IPv6.


@pytest.mark.timeout(30)
def test_the_helper_serves_ipv6(test_pki: PkiFixture) -> None:
    import requests

    served = _serve(test_pki, host="::1")
    url = next(served)
    try:
        reply = requests.get(url + "v1/health", verify=str(test_pki.roots_pem), timeout=10)
        assert reply.json() == {"ok": True, "version": 1}
    finally:
        served.close()
