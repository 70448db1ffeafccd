"""A page compared with the helper's tolerates what honest pages vary per visitor (issue 19, 7 and 12).

Each page is served for real over a socket pair and read by the probe's own HTTP reader (the probe's
side scrubbed of its address, as in a run), and the helper's side is what `probe helper serve`
answers for it. The rules are OONI web_connectivity's (status, then any of body length, uncommon
header names, title words), after normalising addresses, times, tokens and numbers; a difference is
blocking only with a blockpage's traits, and then unconfirmed.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from typing import Any

import pytest

from probe.analyze.http import normalize_page_text
from probe.analyze.verdict import AnalysisContext, judge
from probe.helper.measure import MAX_HEADER_NAMES, http_answer
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx.clock import Clock
from probe.netx.http import http_get_body
from probe.netx.own_addresses import OwnAddresses
from tests.conftest import PkiFixture

AT = dt.datetime.now(dt.UTC)
HOST = "site.example"
SITE = "198.51.100.7"
PROBE_ADDRESS = "192.0.2.10"  # the volunteer's: scrubbed from the probe's side
HELPER_SEES = "203.0.113.90"  # where the site sees the helper come from
SITE_TITLE = "Site Example News"
ARTICLE = " ".join(["<p>Stories of the day, written and edited by our newsroom, with photographs.</p>"] * 40)


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


def _fetch(
    body: str, headers: list[str] | None = None, status: int = 200, own: OwnAddresses | None = None
) -> tuple[dict[str, Any], bytes]:
    """Serve one response over a socket pair and read it with the probe's HTTP reader."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} X", "Server: nginx", "Date: Sun, 29 Nov 2026 12:00:00 GMT",
            "Content-Type: text/html; charset=utf-8", f"Content-Length: {len(data)}", "Connection: close",
            *(headers or [])]  # fmt: skip
    ours, theirs = socket.socketpair()

    def serve() -> None:
        with theirs:
            theirs.recv(65536)
            theirs.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + data)

    server = threading.Thread(target=serve)
    server.start()
    try:
        return http_get_body(ours, HOST, "/", 5, Clock(), own=own)
    finally:
        ours.close()
        server.join()


def _probe_side(body: str, headers: list[str] | None = None, status: int = 200) -> dict[str, Any]:
    own = OwnAddresses()
    own.add(PROBE_ADDRESS)
    record, _ = _fetch(body.replace("{visitor}", PROBE_ADDRESS), headers, status, own)
    return {**record, "address": SITE, "url": f"http://{HOST}/", "redirect_index": 0}


def _helper_side(body: str, headers: list[str] | None = None, status: int = 200, old: bool = False) -> dict:
    page, raw = _fetch(body.replace("{visitor}", HELPER_SEES), headers, status)
    answer = http_answer(page, raw)
    if old:  # a helper from before the comparison's fields
        answer = {k: answer[k] for k in ("status", "title", "body_length", "body_sha256", "location", "failure")}
    return answer


def _observations(ours: dict, helper_http: dict | None) -> dict:
    lookup = {"resolver": "udp://192.0.2.53:53", "transport": "udp", "hostname": HOST, "addresses": [SITE],
              "failure": None, "queries": []}  # fmt: skip
    obs: dict[str, Any] = {
        "dns": {"system": lookup, "control": {**lookup, "resolver": "control"}},
        "tcp_connect": [{"address": SITE, "port": 80, "failure": None, "t0": 0, "t": 0.1, "purpose": "target"}],
        "tls_handshakes": [],
        "http_requests": [ours],
        "addresses_from": "system",
    }
    if helper_http is not None:
        response = {"version": 1, "url": f"http://{HOST}/", "dns": {"addresses": [SITE], "failure": None},
                    "tcp": [{"address": SITE, "failure": None}], "tls": None, "http": helper_http}  # fmt: skip
        obs["helpers"] = [{"helper": "https://helper.example/", "status": 200, "failure": None, "response": response}]
    return obs


def _page(title: str, text: str = ARTICLE) -> str:
    return f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>{text}</body></html>"


TOKEN_A, TOKEN_B = "4bf92f3577b34da6a3ce929d0e0e4736", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEy"
PER_VISITOR = {
    # A "what is my address" page: the title and the text print the visitor's address.
    "address": (_page("Your IP address is {visitor}"), _page("Your IP address is {visitor}")),
    "time": (_page("Departures, updated 12:04:31", "<p>Sun, 29 Nov 2026 12:04:31 GMT</p>" + ARTICLE),
             _page("Departures, updated 9:58:02", "<p>Mon, 30 Nov 2026 09:58:02 GMT</p>" + ARTICLE)),
    # A login form: its CSRF token, and the request id in the title.
    "csrf_token": (_page(f"Sign in · request {TOKEN_A}", f'<input type="hidden" name="csrf" value="{TOKEN_B}==">'),
                   _page(f"Sign in · request {TOKEN_B}", f'<input type="hidden" name="csrf" value="{TOKEN_A}">')),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PER_VISITOR))
@pytest.mark.parametrize("old_helper", [False, True], ids=["helper", "old_helper"])
def test_two_honest_visits_of_a_per_visitor_page_are_the_same(
    ctx: AnalysisContext, case: str, old_helper: bool
) -> None:
    ours, theirs = PER_VISITOR[case]
    obs = _observations(_probe_side(ours), _helper_side(theirs, old=old_helper))
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("none", [])


def test_a_tiny_per_visitor_page_is_the_same_by_its_normalised_title(ctx: AnalysisContext) -> None:
    """An IPv6 visitor (39 characters) against `[scrubbed]` on a page of a hundred bytes."""
    page = "<html><head><title>Hello {visitor}</title></head><body>You are {visitor}.</body></html>"
    ours = _probe_side(page)
    theirs = _helper_side(page.replace("{visitor}", "2001:db8:85a3:1234:5678:8a2e:370:7334"))
    j = judge({"host": HOST}, _observations(ours, theirs), AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("none", [])


BLOCKPAGES = {
    "english": "<html><head><title>Access denied</title></head><body>Access to this resource is restricted "
    "by the decision of the authorities.</body></html>",
    "russian": "<html><head><title>Внимание</title></head><body>Доступ к запрашиваемому ресурсу "
    "заблокирован по решению суда.</body></html>",
    "kazakh": "<html><head><title>Назар аударыңыз</title></head><body>Бұл ресурсқа кіру шектелген.</body></html>",
}


@pytest.mark.parametrize("language", sorted(BLOCKPAGES))
@pytest.mark.parametrize("old_helper", [False, True], ids=["helper", "old_helper"])
def test_a_short_page_with_blocking_words_and_none_of_the_site_is_http_unconfirmed(
    ctx: AnalysisContext, language: str, old_helper: bool
) -> None:
    obs = _observations(_probe_side(BLOCKPAGES[language]), _helper_side(_page(SITE_TITLE), old=old_helper))
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert (j.blocking, j.confidence, j.blockpage) == ("http", "unconfirmed", None)
    assert j.anomalies[-2:] == ["http.diff", "http.blockpage_traits"]  # after OONI's vague words, if any


def test_the_lab_isps_altered_page_is_http_unconfirmed(ctx: AnalysisContext) -> None:
    """Two small nginx pages, whose headers are all common: "Notice / This page is not available."."""
    altered = "<html><head><title>Notice</title></head><body>This page is not available.</body></html>"
    real = "<html><head><title>http-altered.lab</title></head><body>The real http-altered.lab.</body></html>"
    j = judge({"host": HOST}, _observations(_probe_side(altered), _helper_side(real)), AT, False, ctx)
    assert (j.blocking, j.confidence, j.anomalies) == ("http", "unconfirmed", ["http.diff", "http.blockpage_traits"])


@pytest.mark.parametrize(
    "ours",
    [
        _page("Site Example News: new design", ARTICLE[: len(ARTICLE) // 3]),  # another page, no blocking words
        _page(f"Members only, restricted - {SITE_TITLE}", "<p>Sign in to read.</p>"),  # blocking word, the site's title
    ],
    ids=["no_blocking_words", "the_sites_own_title"],
)
def test_a_different_page_without_a_blockpages_traits_is_a_hint_not_http(ctx: AnalysisContext, ours: str) -> None:
    j = judge({"host": HOST}, _observations(_probe_side(ours), _helper_side(_page(SITE_TITLE))), AT, False, ctx)
    assert (j.blocking, j.anomalies) == ("none", ["http.diff"])


def test_a_shared_uncommon_header_is_the_same_site(ctx: AnalysisContext) -> None:
    """OONI's header rule: another title and length, but a header name only the site sends."""
    ours = _probe_side(_page("Breaking: the site changed", "<p>Short.</p>"), ["X-Site-Build: 41"])
    theirs = _helper_side(_page(SITE_TITLE), ["X-Site-Build: 42"])
    assert judge({"host": HOST}, _observations(ours, theirs), AT, False, ctx).anomalies == []
    old = _helper_side(_page(SITE_TITLE), ["X-Site-Build: 42"], old=True)  # no header names: a difference
    assert judge({"host": HOST}, _observations(ours, old), AT, False, ctx).anomalies == ["http.diff"]


def test_a_fingerprinted_blockpage_stays_http_confirmed(ctx: AnalysisContext) -> None:
    row = next(r for r in ctx.catalogs.fingerprints.http if r.scope == "nat" and r.location == "body"
               and r.pattern_type == "contains")  # fmt: skip
    ours = _probe_side(f"<html><body>{row.pattern}</body></html>")
    j = judge({"host": HOST}, _observations(ours, _helper_side(_page(SITE_TITLE))), AT, False, ctx)
    assert (j.blocking, j.confidence, j.anomalies, j.basis) == ("http", "confirmed", ["http.blockpage"],
                                                                ["blockpage_fingerprint"])  # fmt: skip
    assert j.blockpage is not None and j.blockpage["id"] == row.name


def test_vague_words_with_a_blockpages_traits_and_no_helper_are_http_unconfirmed(ctx: AnalysisContext) -> None:
    vague = "<html><head><title>Доступ ограничен</title></head><body>Доступ ограничен</body></html>"  # cp.f_gen_ru_3
    j = judge({"host": HOST}, _observations(_probe_side(vague), None), AT, False, ctx)
    assert (j.blocking, j.confidence) == ("http", "unconfirmed")
    assert j.anomalies == ["http.blockpage_vague", "http.blockpage_traits"]
    # Vague words without blocking words (OONI's `<title>Dominio-No-Disponible</title>`) stay a hint.
    spanish = _probe_side("<html><head><title>Dominio-No-Disponible</title></head><body>No disponible.</body></html>")
    assert judge({"host": HOST}, _observations(spanish, None), AT, False, ctx).anomalies == ["http.blockpage_vague"]
    # The helper fetched the same page: the site's own words.
    same = judge({"host": HOST}, _observations(_probe_side(vague), _helper_side(vague)), AT, False, ctx)
    assert (same.blocking, same.anomalies) == ("none", ["http.blockpage_vague"])


def test_the_helpers_answer_is_bounded_metadata() -> None:
    names = [f"X-Header-{n:04d}-{'y' * 80}: secret value {n}" for n in range(500)]
    page, body = _fetch(_page("Hello {visitor}").replace("{visitor}", HELPER_SEES), names)
    answer = http_answer(page, body)
    assert set(answer) == {"status", "title", "body_length", "body_sha256", "location", "failure", "header_names",
                           "body_length_normalized"}  # fmt: skip
    assert len(answer["header_names"]) == MAX_HEADER_NAMES and answer["header_names"][0] == "connection"
    assert all(len(name) <= 64 and name == name.lower() for name in answer["header_names"])
    text = json.dumps(answer)
    assert "secret" not in text and "Hello" in text and len(text) < 4096
    assert answer["body_length_normalized"] < answer["body_length"]
    failed = http_answer({**page, "status": None, "headers": []}, b"")
    assert (failed["header_names"], failed["body_length_normalized"]) == ([], None)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("from 203.0.113.90.", "from [scrubbed]."),
        ("ip 2001:db8::1 here", "ip fe80::1:2 here"),
        ("at 2026-11-29T12:04:31+00:00 (Sun, 29 Nov 2026 12:04:31 GMT)",
         "at 2026-11-30T09:58:02Z (Mon, 30 Nov 2026 9:58:02 GMT)"),
        ("29 ноября 2026, 12:04", "1 декабря 2026, 9:58"),
        ("csrf=4bf92f3577b34da6a3ce929d0e0e4736;", "csrf=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEy==;"),
        ("visitors: 1,234,567", "visitors: 89"),
        ("Hello   World\n", "hello world"),
    ],
)  # fmt: skip
def test_what_honest_visits_vary_is_normalised(one: str, other: str) -> None:
    assert normalize_page_text(one) == normalize_page_text(other)


def test_what_tells_pages_apart_is_kept() -> None:
    assert normalize_page_text("Access denied") != normalize_page_text("Site Example News")
    assert normalize_page_text("a::before 12:34:56 deadbeef") == "a::before {t} deadbeef"  # not addresses, short hex


def test_normalising_is_linear_on_a_hostile_page() -> None:
    """Every pattern is bounded: a megabyte of near-matches is normalised at once."""
    for hostile in ("1:" * 500_000, "1." * 500_000, "a-" * 500_000, "=" * 1_000_000, "1 jan " * 150_000):
        assert normalize_page_text(hostile)
