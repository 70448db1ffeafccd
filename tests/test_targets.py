"""Reading targets: every accepted form, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from probe.loaders.targets import load_targets
from probe.vocabulary.targets import TargetError


def _load(tmp_path: Path, text: str, name: str = "targets.txt") -> list:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_targets(path)


def test_every_plain_form(tmp_path: Path) -> None:
    targets = _load(
        tmp_path,
        "# a comment\n\nExample.COM NEWS\nhost.example:8443\nhttp://blocked.example/path?q=1 HUMR # why\n"
        "https://[2001:db8::1]:444/x\n203.0.113.7\n",
    )
    first, second, third, fourth, fifth = targets
    assert (first.host, first.port, first.scheme, first.category, first.input) == (
        "example.com",
        443,
        "https",
        "NEWS",
        "Example.COM",
    )
    assert (second.port, second.source_line) == (8443, 4)
    assert (third.scheme, third.port, third.path, third.url) == (
        "http",
        80,
        "/path?q=1",
        "http://blocked.example/path?q=1",
    )
    assert (fourth.host, fourth.port, fourth.is_ip_literal) == ("2001:db8::1", 444, True)
    assert fifth.is_ip_literal and fifth.port == 443


def test_citizen_lab_csv(tmp_path: Path) -> None:
    targets = _load(
        tmp_path,
        "url,category_code,category_description,date_added,source,notes\n"
        "https://www.azattyq.org/,NEWS,News Media,2017-04-12,citizenlab,\n"
        "http://vlast.kz/,POLR,Political Criticism,2019-01-01,,\n",
        "kz.csv",
    )
    assert [(t.host, t.scheme, t.category, t.source_line) for t in targets] == [
        ("www.azattyq.org", "https", "NEWS", 2),
        ("vlast.kz", "http", "POLR", 3),
    ]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("ok.example\nbad_label-.example\n", 2, "not a valid host name"),
        ("ok.example\n\nok.example:99999\n", 3, "bad port"),
        ("ftp://files.example/\n", 1, "unsupported scheme"),
        ("ok.example NOPE\n", 1, "unknown Citizen Lab category code 'NOPE'"),
        ("ok.example NEWS extra\n", 1, "at most one category code"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    with pytest.raises(TargetError) as error:
        _load(tmp_path, text)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'targets.txt'}:{line}: ")
    assert reason in message


def test_bad_csv_row_names_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"kz\.csv:3: expected a URL"):
        _load(tmp_path, "url,category_code\nhttps://a.example/,NEWS\nnot-a-url,NEWS\n", "kz.csv")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no targets in the file"):
        _load(tmp_path, "# nothing\n")
    with pytest.raises(TargetError, match="no such file"):
        load_targets(tmp_path / "absent.txt")


def test_shipped_targets_parse_and_carry_categories() -> None:
    targets = load_targets(Path(__file__).resolve().parents[1] / "targets.txt")
    hosts = {t.host for t in targets}
    # Names intercepted in 2019 and in 2023-24 (FACTS.md) are on the list.
    assert {"www.facebook.com", "vk.com", "twitter.com", "rutracker.org", "www.pinterest.com"} <= hosts
    assert all(t.category for t in targets)


def test_non_ascii_paths_are_encoded_as_browsers_do() -> None:
    from probe.vocabulary.targets import parse_target

    target = parse_target("https://kk.wikipedia.org/wiki/Қазақстан?q=әлем", None, 1)
    assert target.path == "/wiki/%D2%9A%D0%B0%D0%B7%D0%B0%D2%9B%D1%81%D1%82%D0%B0%D0%BD?q=%D3%99%D0%BB%D0%B5%D0%BC"
    assert parse_target("https://x.example/a%20b?x=1", None, 1).path == "/a%20b?x=1"  # already encoded: kept
    target.path.encode("ascii")  # what goes on the request line


# --- names and URLs read as browsers read them (issue 20) -------------------------------------------


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008 (UTS 46 non-transitional), as browsers: not fass.de
        ("FAß.DE", "xn--fa-hia.de"),
        ("https://faß.de/", "xn--fa-hia.de"),
        ("bücher.example:8443", "xn--bcher-kva.example"),
        ("ｅｘａｍｐｌｅ。com", "example.com"),  # full-width letters and dot, mapped
        ("xn--fa-hia.de", "xn--fa-hia.de"),
        ("https://ex%61mple.com/", "example.com"),  # a percent-encoded host is decoded first
        ("127.1", "127.0.0.1"),  # IPv4 as browsers accept it
        ("http://0x7f.0.0.1/", "127.0.0.1"),
        ("[2001:DB8::1]:444", "2001:db8::1"),
        ("under_score.example", "under_score.example"),
    ],
)
def test_names_are_read_as_browsers_read_them(text: str, host: str) -> None:
    from probe.vocabulary.targets import parse_target

    assert parse_target(text, None, 1).host == host


def test_a_backslash_is_a_slash_in_an_http_url() -> None:
    """Browsers (the WHATWG URL standard) end the authority at `\\`: this is example.com, not evil.com."""
    from probe.vocabulary.targets import parse_target

    target = parse_target("https://example.com\\@evil.com/", None, 1)
    assert (target.host, target.path, target.url) == ("example.com", "/@evil.com/", "https://example.com/@evil.com/")
    assert parse_target("https:\\\\example.com\\a\\b", None, 1).url == "https://example.com/a/b"


def test_paths_are_resolved_and_encoded_as_browsers_send_them() -> None:
    from probe.vocabulary.targets import parse_target

    assert parse_target("https://x.example/a/./b/../c?q='1' 2#frag", None, 1).path == "/a/c?q=%271%27%202"
    assert parse_target("https://x.example/%2e%2e/a/%2E/", None, 1).path == "/a/"
    assert parse_target("https://x.example?only=query", None, 1).path == "/?only=query"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("ok.example\nhttps://example.com:0/\n", 2, "bad port '0' (1-65535)"),
        ("example.com:0\n", 1, "bad port '0' (1-65535)"),
        ("ok.example\n\nhttps://user@example.com/\n", 3, "a user name or password before '@' in a target"),
        ("https://user:s3cret@example.com/\n", 1, "a user name or password before '@' in a target"),
        ("user@example.com\n", 1, "a user name or password before '@' in a target"),
        ("xn--zz.example\n", 1, "not a valid host name: 'xn--zz.example'"),
        ("https://example.123/\n", 1, "not a valid IPv4 address"),
        ("example.com:٤٤٣\n", 1, "bad port"),  # Arabic-Indic digits are no port
        ("[fe80::1%eth0]:443\n", 1, "not a valid host"),
        ("example.com..\n", 1, "not a valid host name"),
    ],
)
def test_what_no_browser_would_measure_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    with pytest.raises(TargetError) as error:
        _load(tmp_path, text)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'targets.txt'}:{line}: "), message
    assert reason in message
    assert "s3cret" not in message


def test_a_csv_row_with_port_0_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"kz\.csv:3: bad port '0'"):
        _load(tmp_path, "url,category_code\nhttps://a.example/,NEWS\nhttps://b.example:0/,NEWS\n", "kz.csv")
