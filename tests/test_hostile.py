"""Hostile peers and bad input: every case ends classified, bounded, with no record lost (issue 14).

Servers here are real sockets on 127.0.0.1 that misbehave on purpose; the fuzzers (Hypothesis,
with a fixed budget) feed every parser the probe exposes to the network or to files. A hang is
caught by the test's timeout mark, never by a wall-clock assertion. docs/reliability.md lists each
case and its test.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gc
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.analyze.chain import analyze_chain
from probe.cli.settings import ConfigError, load_settings, options_of
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx.clock import Clock
from probe.netx.connect import tcp_connect, tls_handshake
from probe.netx.dns import _reply_fields
from probe.netx.http import MAX_BODY_BYTES, find_title, http_get
from probe.vocabulary.observations import DnsAnswer, DnsLookup
from probe.vocabulary.targets import TargetError, parse_lines
from tests import pki
from tests.conftest import PkiFixture

# A fixed budget, and the same examples on every run: CI stays deterministic; run locally with
# `derandomize=False` (and more examples) to explore further.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@contextlib.contextmanager
def hostile_server(behaviour: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that treats each connection with `behaviour`."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=_guarded, args=(behaviour, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _guarded(behaviour: Callable[[socket.socket], None], conn: socket.socket) -> None:
    with contextlib.suppress(OSError), conn:
        conn.settimeout(10)
        behaviour(conn)


def _silent(conn: socket.socket) -> None:
    conn.recv(65536)
    threading.Event().wait(8)


def _drip(conn: socket.socket) -> None:
    conn.recv(65536)
    for _ in range(8):  # the start of a TLS record, a byte a second: each read is quick, the whole is not
        conn.sendall(b"\x16")
        threading.Event().wait(1)


def _garbage(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"\x16\x03\x03\x00\x10" + b"\xff" * 16 + b"this is no ServerHello" * 10)


def _endless_body(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
    block = b"<title>" * 9000
    for _ in range(1000):  # as much as the client keeps reading: it stops at its bound
        conn.sendall(block)


@pytest.mark.timeout(10)
@pytest.mark.filterwarnings("error::ResourceWarning")  # a leaked socket fails the test...
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # ...even when found in __del__
@pytest.mark.parametrize(("behaviour", "failure"), [(_silent, "generic_timeout_error"),
                                                    (_drip, "generic_timeout_error"),
                                                    (_garbage, "ssl_failed_handshake")])  # fmt: skip
def test_a_server_that_never_speaks_drips_or_talks_garbage_is_classified(
    behaviour: Callable[[socket.socket], None], failure: str
) -> None:
    with warnings.catch_warnings():  # what earlier tests left is theirs, not this test's
        warnings.simplefilter("ignore")
        gc.collect()
    with hostile_server(behaviour) as port:
        sock, tcp = tcp_connect("127.0.0.1", port, 2, Clock())
        assert sock is not None and tcp["failure"] is None
        tls, handshake = tls_handshake(sock, "127.0.0.1", port, "hostile.example", 2, Clock())
        assert tls is None and handshake["failure"] == failure
        del sock
        gc.collect()  # a descriptor the probe forgot to close would be reported here


@pytest.mark.timeout(15)
def test_an_endless_body_and_a_dripping_page_are_bounded() -> None:
    with hostile_server(_endless_body) as port:
        sock, _ = tcp_connect("127.0.0.1", port, 2, Clock())
        assert sock is not None
        page = http_get(sock, "hostile.example", "/", 5, Clock())
        assert page["status"] == 200 and page["body_truncated"] is True
        assert page["body_length"] == MAX_BODY_BYTES and page["title"] is None  # `<title` with no end
    with hostile_server(_drip) as port:
        sock, _ = tcp_connect("127.0.0.1", port, 2, Clock())
        assert sock is not None
        page = http_get(sock, "hostile.example", "/", 2, Clock())  # the whole exchange's deadline
        assert (page["status"], page["failure"]) == (None, "generic_timeout_error")


def _server_response(data: bytes) -> dict:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(data)
        right.shutdown(socket.SHUT_WR)
        return http_get(left, "fuzz.example", "/", 2, Clock())


@FUZZ
@given(st.binary(max_size=3000) | st.builds(lambda head, body: b"HTTP/1.1 " + head + b"\r\n\r\n" + body,
                                            st.binary(max_size=400), st.binary(max_size=2000)))  # fmt: skip
def test_any_http_response_is_recorded_never_raised(data: bytes) -> None:
    page = _server_response(data)
    assert page["status"] is None or isinstance(page["status"], int)
    assert page["status"] is not None or page["failure"] is not None


@FUZZ
@given(st.binary(max_size=5000))
def test_the_title_finder_takes_anything(body: bytes) -> None:
    title = find_title(body)
    assert title is None or (isinstance(title, str) and len(title) <= 200)


@pytest.mark.timeout(10)
def test_the_title_finder_is_linear_on_a_hostile_page() -> None:
    """A megabyte of `<title` with no end: a lazy regular expression takes seconds here."""
    assert find_title(b"<title" * 200_000) is None
    assert find_title(b"<title>" * 150_000) is None


@FUZZ
@given(st.lists(st.text(max_size=80), max_size=8))
def test_any_targets_file_gives_targets_or_a_placed_error(lines: list[str]) -> None:
    try:
        targets = parse_lines(lines, "targets.txt")
    except TargetError as exc:
        assert str(exc).startswith("targets.txt:")
    else:
        assert all(t.port > 0 and t.scheme in ("http", "https") for t in targets)


@FUZZ
@given(st.binary(max_size=600))
def test_any_dns_reply_is_classified(wire: bytes) -> None:
    fields = _reply_fields(wire)
    assert fields.failure is None or isinstance(fields.failure, str)
    assert isinstance(fields.answers, tuple) and all(isinstance(a, DnsAnswer) for a in fields.answers)


def test_a_dns_reply_with_a_compression_loop_or_thousands_of_records_is_classified() -> None:
    header = bytes.fromhex("abcd81800001000100000000")
    loop = header + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # the question's name points at itself
    assert _reply_fields(loop).failure == "dns_bogus_reply"
    many = bytes.fromhex("abcd8180000107d000000000") + b"\x04site\x07example\x00\x00\x01\x00\x01"
    many += b"".join(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([10, 0, i // 250, i % 250])
                     for i in range(2000))  # fmt: skip
    fields = _reply_fields(many)
    assert fields.failure is None and len(fields.answers) == 2000
    assert _reply_fields(many[:300]).failure == "dns_bogus_reply"  # truncated mid-record


@pytest.fixture(scope="module")
def chain_context(test_pki: PkiFixture) -> tuple:
    leaf = pki.make_leaf(test_pki.public_intermediate, ["site.example"])
    return leaf, load_roots(test_pki.roots_pem), load_catalogs()


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_elements(data: bytes) -> list[tuple[int, bytes]]:
    """The consecutive DER elements of `data`: (tag, contents); ValueError or IndexError if malformed."""
    found, offset = [], 0
    while offset < len(data):
        tag, first, start = data[offset], data[offset + 1], offset + 2
        length = first
        if first & 0x80:
            length, start = int.from_bytes(data[start : start + (first & 0x7F)], "big"), start + (first & 0x7F)
        if start + length > len(data):
            raise ValueError("truncated DER")
        found.append((tag, data[start : start + length]))
        offset = start + length
    return found


def _der(elements: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([tag]) + _der_length(len(contents)) + contents for tag, contents in elements)


def _edit_tbs(certificate: bytes, edit: Callable[[list[tuple[int, bytes]]], None]) -> bytes:
    """The certificate with its TBSCertificate's elements edited in place, every length re-encoded
    (the signature no longer matches: the parser must cope all the same)."""
    ((tag, contents),) = _der_elements(certificate)
    (tbs_tag, tbs), *signature = _der_elements(contents)
    fields = _der_elements(tbs)
    edit(fields)
    return _der([(tag, _der([(tbs_tag, _der(fields)), *signature]))])


def duplicate_extension(certificate: bytes, which: int) -> bytes:
    """One of the certificate's extensions twice (RFC 5280 forbids it; cryptography raises
    `DuplicateExtension`, and only when the extensions are first read)."""

    def edit(fields: list[tuple[int, bytes]]) -> None:
        index = next(i for i, (tag, _) in enumerate(fields) if tag == 0xA3)  # [3] extensions
        ((sequence, contents),) = _der_elements(fields[index][1])
        extensions = _der_elements(contents)
        extensions.insert(which % len(extensions), extensions[which % len(extensions)])
        fields[index] = (0xA3, _der([(sequence, _der(extensions))]))

    return _edit_tbs(certificate, edit)


def with_version(certificate: bytes, version: int) -> bytes:
    """The [0] version field set to `version` (X.509 knows 0, 1 and 2: v1, v2 and v3)."""

    def edit(fields: list[tuple[int, bytes]]) -> None:
        assert fields[0][0] == 0xA0  # an explicit version: every certificate the test PKI makes has one
        fields[0] = (0xA0, _der([(0x02, bytes([version]))]))

    return _edit_tbs(certificate, edit)


def _unparseable(der: bytes) -> bool:
    """Whether cryptography refuses the certificate, its lazily read parts included."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = cert.extensions, cert.subject, cert.issuer
    except Exception:  # noqa: BLE001 - whatever it raises, the certificate cannot be read
        return True
    return False


@FUZZ
@given(st.data())
def test_certificate_analysis_on_mutated_der_never_raises(chain_context: tuple, data: st.DataObject) -> None:
    """Byte flips, a duplicated extension, an invalid version, or all of them, on any certificate of
    the chain: analysed, never an exception; a leaf that cannot be parsed is never valid."""
    leaf, roots, catalogs = chain_context
    chain = [pki.der(c) for c in leaf.chain]
    which = data.draw(st.integers(0, len(chain) - 1))
    if data.draw(st.booleans()):
        chain[which] = duplicate_extension(chain[which], data.draw(st.integers(0, 15)))
    if data.draw(st.booleans()):
        chain[which] = with_version(chain[which], data.draw(st.sampled_from([1, 3, 4, 0x7F, 0xFF])))
    mutated = bytearray(chain[which])
    for _ in range(data.draw(st.integers(0, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    chain[which] = bytes(mutated)
    encoded = [base64.b64encode(c).decode() for c in chain]
    result = analyze_chain(encoded, "site.example", dt.datetime.now(dt.UTC), roots, catalogs)
    assert isinstance(result["valid"], bool)
    assert result["valid"] or result["failure_cause"] is not None
    if _unparseable(chain[0]):
        assert result["valid"] is False and result["failure_cause"] == "unusable"


def test_the_certificate_mutators_make_what_they_say(chain_context: tuple) -> None:
    leaf, _, _ = chain_context
    der = pki.der(leaf.cert)
    assert x509.load_der_x509_certificate(duplicate_extension(der, 0)).serial_number == leaf.cert.serial_number
    with pytest.raises(x509.DuplicateExtension):  # only once the extensions are read
        _ = x509.load_der_x509_certificate(duplicate_extension(der, 0)).extensions
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(with_version(der, 3))
    assert x509.load_der_x509_certificate(with_version(der, 2)) == leaf.cert  # the same bytes back


def test_a_leaf_with_a_duplicated_extension_still_names_the_catalogued_root(chain_context: tuple) -> None:
    """The duplicate raises only when the extensions are read, after the chain was decoded: caught
    all the same, the chain is unusable, and the real Qaznet root still names the interceptor."""
    leaf, roots, catalogs = chain_context
    qaznet = next(Path(__file__).parent.joinpath("data", "kz-interception-roots").glob("00309c73*.pem"))
    real_root = pki.der(x509.load_pem_x509_certificate(qaznet.read_bytes()))
    for forged in (duplicate_extension(pki.der(leaf.cert), which) for which in range(3)):
        encoded = [base64.b64encode(forged).decode(), base64.b64encode(real_root).decode()]
        result = analyze_chain(encoded, "site.example", dt.datetime.now(dt.UTC), roots, catalogs)
        assert result["valid"] is False and result["failure_cause"] == "unusable"
        assert (result["interceptor"]["catalog_id"], result["interceptor"]["matched_by"]) == (
            "kz-qaznet-2019",
            "sha256_der",
        )
        assert result["interceptor"]["matched_certificate"] == 1


def test_a_malformed_leaf_cannot_hide_a_catalogued_root(chain_context: tuple) -> None:
    """A certificate this parser rejects used to stop the analysis before the catalog's fingerprint
    match: the raw bytes are matched first now."""
    _, roots, catalogs = chain_context
    qaznet = next(Path(__file__).parent.joinpath("data", "kz-interception-roots").glob("00309c73*.pem"))
    real_root = pki.der(x509.load_pem_x509_certificate(qaznet.read_bytes()))
    chain = [base64.b64encode(b"\x30\x82\x01\x00" + b"\x00" * 256).decode(), base64.b64encode(real_root).decode()]
    result = analyze_chain(chain, "site.example", dt.datetime.now(dt.UTC), roots, catalogs)
    assert result["failure_cause"] == "unusable"
    assert (result["interceptor"]["catalog_id"], result["interceptor"]["matched_by"]) == (
        "kz-qaznet-2019",
        "sha256_der",
    )


@FUZZ
@given(st.text(max_size=300))
def test_any_configuration_text_is_settings_or_a_placed_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    from probe.cli.main import _subcommand, build_parser

    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(path, options_of(_subcommand(build_parser(), "run")), required=True)
    except ConfigError as exc:
        assert str(exc).startswith(str(path))


def test_a_long_chain_and_a_leaf_with_ten_thousand_names_are_analysed(test_pki: PkiFixture) -> None:
    roots, catalogs = load_roots(test_pki.roots_pem), load_catalogs()
    names = [f"n{i}.site.example" for i in range(10_000)]
    wide = pki.make_leaf(test_pki.public_intermediate, ["site.example", *names])
    chain = [base64.b64encode(pki.der(c)).decode() for c in wide.chain]
    result = analyze_chain(chain, "site.example", dt.datetime.now(dt.UTC), roots, catalogs)
    assert result["valid"] is True and len(result["certificates"][0]["dns_names"]) == 10_001
    padded = chain + [chain[-1]] * 98  # a hundred certificates: the extra ones are ignored
    result = analyze_chain(padded, "site.example", dt.datetime.now(dt.UTC), roots, catalogs)
    assert result["valid"] is True and len(result["certificates"]) == 100


def test_without_reply_ttls_the_replies_are_still_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a platform has no `recvmsg` (Windows), a reply's IP TTL is unknown, and nothing else changes."""
    from probe.netx import udpwire

    monkeypatch.setattr(udpwire, "reply_ttl_available", lambda: False)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        data, source = server.recvfrom(4096)
        server.sendto(data[:2] + b"\x81\x80" + data[4:], source)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    question = udpwire.Question(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", 0x1234,
                                "127.0.0.1", port)  # fmt: skip
    udpwire.exchange([question], 2, 0.2, Clock().now).result()
    server.close()
    assert question.failure is None and len(question.replies) == 1
    assert question.replies[0].ip_ttl is None


def test_a_flood_of_replies_is_capped_and_counted() -> None:
    from probe.netx import udpwire

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def flood() -> None:
        data, source = server.recvfrom(4096)
        for _ in range(200):
            server.sendto(data[:2] + b"\x81\x80" + data[4:], source)

    threading.Thread(target=flood, daemon=True).start()
    question = udpwire.Question(b"\x43\x21\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", 0x4321,
                                "127.0.0.1", port)  # fmt: skip
    udpwire.exchange([question], 3, 0.5, Clock().now).result()
    server.close()
    assert len(question.replies) == udpwire.MAX_REPLIES and question.dropped > 0


def test_a_helper_url_in_the_clear_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli.main import main

    (tmp_path / "targets.txt").write_text("127.0.0.1:9\n", encoding="utf-8")
    code = main(["run", "--targets", str(tmp_path / "targets.txt"), "--out", str(tmp_path / "out"),
                 "--control-resolver", "none", "--helper", "http://helper.example/", "--yes"])  # fmt: skip
    assert code == 2 and "reached over https:// only" in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_a_getaddrinfo_that_never_returns_is_recorded_as_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from probe.observe import dnsflight
    from probe.observe.config import MeasureConfig, Visit

    async def stuck(*args: object) -> DnsLookup:
        await asyncio.sleep(15)
        raise AssertionError("never asked for")

    monkeypatch.setattr(dnsflight, "lookup_system", stuck)
    roots = type("Roots", (), {"path": "", "validates": lambda *a: False})()
    config = MeasureConfig(timeout=1, roots=roots, resolver=None, control_resolver=None, control_sni=None)  # type: ignore[arg-type]

    async def system() -> DnsLookup:
        return await dnsflight.DnsInFlight("stuck.example", 443, Visit.begin(config, dt.datetime.now(dt.UTC))).system()

    system_lookup = asyncio.run(system())
    assert (system_lookup.addresses, system_lookup.failure) == ((), "generic_timeout_error")


@pytest.mark.timeout(30)
def test_udp_exchanges_work_past_descriptor_1024() -> None:
    """select() fails once a descriptor number passes 1024; the probe uses selectors (epoll/poll)."""
    import resource

    from probe.netx import udpwire

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200 if hard == resource.RLIM_INFINITY else min(hard, 1200)
    if wanted <= 1030:
        pytest.skip(f"this machine allows only {hard} open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    filler = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1040)]
    try:
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))

        def answer() -> None:
            data, source = server.recvfrom(4096)
            server.sendto(data[:2] + b"\x81\x80" + data[4:], source)

        threading.Thread(target=answer, daemon=True).start()
        question = udpwire.Question(b"\x55\x55\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", 0x5555,
                                    "127.0.0.1", server.getsockname()[1])  # fmt: skip
        udpwire.exchange([question], 3, 0.2, Clock().now).result()
        server.close()
        assert question.failure is None and len(question.replies) == 1
    finally:
        for sock in filler:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_records_are_written_where_signals_cannot_be_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import signal

    from probe.results.writer import ResultsWriter, encode_record

    monkeypatch.delattr(signal, "pthread_sigmask")  # as on Windows
    writer = ResultsWriter(tmp_path, "f" * 32, dt.datetime.now(dt.UTC))
    writer.write_line(encode_record({"schema_version": 2, "n": 1}))
    writer.close()
    assert json.loads(writer.path.read_text(encoding="utf-8")) == {"schema_version": 2, "n": 1}


def test_a_page_is_hashed_only_after_the_probes_address_is_scrubbed() -> None:
    """With the blockpage's template in hand, a hash of the page as sent would give the address away."""
    import hashlib

    from probe.netx.own_addresses import OwnAddresses

    own = OwnAddresses()
    own.add("203.0.113.5")
    body = b"<html><title>Blocked</title>Your address: 203.0.113.5</html>"
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        right.shutdown(socket.SHUT_WR)
        page = http_get(left, "blocked.example", "/", 2, Clock(), own=own)
    scrubbed = body.replace(b"203.0.113.5", b"[scrubbed]")
    assert page["body_sha256"] == hashlib.sha256(scrubbed).hexdigest()
    assert "203.0.113.5" not in page["body_prefix"] and page["body_length"] == len(scrubbed)


@pytest.mark.timeout(30)
def test_a_control_resolver_that_stalls_is_recorded_as_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """DoT and DoH time out per operation: a throttled path could stall them step by step, so the
    whole control lookup has one bound."""
    import asyncio

    from probe.netx.dns import parse_resolver
    from probe.observe import dnsflight
    from probe.observe.config import MeasureConfig, Visit

    async def throttled(*args: object, **kwargs: object) -> DnsLookup:
        await asyncio.sleep(20)
        raise AssertionError("never asked for")

    async def nothing(*args: object) -> DnsLookup:
        return DnsLookup("system", "system", "slow.example", (), None, ())

    monkeypatch.setattr(dnsflight, "lookup_with_resolver", throttled)
    monkeypatch.setattr(dnsflight, "lookup_system", nothing)
    roots = type("Roots", (), {"path": "", "validates": lambda *a: False})()
    control_resolver = parse_resolver("https://198.51.100.53/dns-query")  # never reached: the lookup is replaced
    config = MeasureConfig(
        timeout=1, roots=roots, resolver=None, dns_window=0.5, injection_check=False,  # type: ignore[arg-type]
        control_resolver=control_resolver, control_sni=None,
    )  # fmt: skip

    async def control_lookup() -> DnsLookup | None:
        return await dnsflight.DnsInFlight("slow.example", 443, Visit.begin(config, dt.datetime.now(dt.UTC))).control()

    control = asyncio.run(control_lookup())
    assert control is not None and (control.addresses, control.failure) == ((), "generic_timeout_error")


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=20,
    )
)
def test_any_catalog_document_is_added_or_refused_with_its_place(document: object) -> None:
    from probe.analyze.catalog import CatalogError, Catalogs, add_document

    for kind in ("interception_cas", "local_interceptors", "blockpages"):
        shaped = {"catalog": kind, "certificates": document, "names": document, "http": document, "dns": document}
        for candidate in (document, shaped):
            try:
                add_document(Catalogs(), candidate, "extra.json")
            except CatalogError as exc:
                assert str(exc).startswith("extra.json")


@FUZZ
@given(st.lists(st.binary(max_size=120).filter(lambda b: b"\n" not in b), max_size=6))
def test_any_results_file_is_read_with_bad_lines_counted(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    import duckdb

    from probe.report.load import Filters, ReportInputError, load

    directory = tmp_path_factory.mktemp("results")
    (directory / "fuzz.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    nonblank = [line for line in lines if line.strip()]
    try:
        problems = load(duckdb.connect(), [directory], Filters())
    except ReportInputError as exc:
        # Nothing readable: the analyst is told why in one line (each bad line counted, or the file
        # named as unreadable, or the files said to be empty), never a traceback.
        said = str(exc)
        assert said.startswith("no records could be read: "), said
        assert (
            f"{len(nonblank)} lines are not records" in said
            or "fuzz.jsonl" in said
            or (not nonblank and "empty" in said)
        ), said
        return
    # Random lines are no records: each is counted, or the file is named as unreadable.
    assert problems.skipped_lines == len(nonblank) or problems.unreadable_files


def test_the_watchdog_fires_what_is_due_and_nothing_disarmed() -> None:
    from probe.netx.watchdog import Watchdog

    watchdog, fired = Watchdog(), threading.Event()
    seen: list[str] = []
    kept = watchdog.arm(0.2, lambda: (seen.append("kept"), fired.set()))
    dropped = watchdog.arm(0.05, lambda: seen.append("dropped"))
    watchdog.disarm(dropped)
    assert fired.wait(5)
    watchdog.disarm(kept)  # after it fired: nothing to cancel, nothing kept
    assert seen == ["kept"] and not watchdog._pending and not watchdog._cancelled
