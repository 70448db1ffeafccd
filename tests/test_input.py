"""Input is checked: the configuration file's and the command line's values, and redirects'
`Location`s read as browsers read them (issue 20)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from probe.cli.main import main

# `probe config show` reads the options and the file exactly as `probe run` does, and never measures:
# a value the old code let through must not start a run on this machine's network.
SHOW = ("config", "show")


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, tuple[str, str]]:
    assert main(["config", "show", *args]) == 0, capsys.readouterr().err
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        key, rest = line.split(None, 1)
        value, _, source = rest.rpartition("  (")
        rows[key] = (value.strip(), source.rstrip(")"))
    return rows


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Exit code 2 and a message, never a traceback; the message is returned."""
    with pytest.raises(SystemExit) as stopped:
        code = main(list(args))
        raise SystemExit(code)
    error = capsys.readouterr().err
    assert stopped.value.code == 2, error
    assert "Traceback" not in error
    return error


# --- booleans: TOML booleans, never strings --------------------------------------------------------


def test_a_boolean_switch_can_be_turned_off_in_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, "forensics = false\n")
    assert _show(capsys, "--config", str(config))["forensics"] == ("False", f"{config}:1")


@pytest.mark.parametrize("text", ['forensics = "false"\n', 'forensics = "no"\n', "forensics = 0\n", 'lab = "true"\n'])
def test_a_boolean_written_as_text_is_refused_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    config = _config(tmp_path, text)
    error = _refused(capsys, *SHOW, "--config", str(config))
    key = text.split()[0]
    assert error.startswith(f"probe: {config}:1: {key}: expected true or false (a TOML boolean"), error


# --- numbers: finite, above 0, within bounds ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeout = nan\n", ":1: timeout: must be a finite number"),
        ("timeout = inf\n", ":1: timeout: must be a finite number"),
        ("dns_window = -inf\n", ":1: dns_window: must be a finite number"),
        ("target_deadline = 1e12\n", ":1: target_deadline: must be at most 86400"),
        ("concurrency = 100000\n", ":1: concurrency: must be at most 1024"),
    ],
)
def test_numbers_in_the_file_are_finite_and_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = _config(tmp_path, text)
    error = _refused(capsys, *SHOW, "--config", str(config))
    assert error.startswith(f"probe: {config}{message}"), error


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--timeout", "nan", "must be a finite number"),
        ("--timeout", "inf", "must be a finite number"),
        ("--timeout", "1e10", "must be at most 86400"),
        ("--dns-window", "-1", "must be greater than 0"),
        ("--concurrency", "2.5", "not a whole number"),
        ("--concurrency", "0", "must be greater than 0"),
    ],
)
def test_numbers_on_the_command_line_are_finite_and_bounded(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    error = _refused(capsys, *SHOW, option, value)
    assert f"argument {option}: {message}" in error, error


def test_a_number_from_the_file_is_read_as_the_command_line_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "timeout = 4\n")
    assert _show(capsys, "--config", str(config))["timeout"] == ("4.0", f"{config}:1")


# --- durations, AS numbers, countries, resolvers -------------------------------------------------------


def test_a_deadline_needs_its_unit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _refused(capsys, *SHOW, "--deadline", "5")
    assert "argument --deadline: not a duration: '5' (a number and its unit: 90s, 50m or 2h)" in error
    assert "must be a finite duration" in _refused(capsys, *SHOW, "--deadline", "nanm")
    config = _config(tmp_path, "deadline = 300\n")
    error = _refused(capsys, *SHOW, "--config", str(config))
    assert error.startswith(f'probe: {config}:1: deadline: expected a duration in quotes, with its unit ("90s"')
    assert _show(capsys, "--deadline", "90s")["deadline"] == ("90.0", "command line")
    assert _show(capsys, "--deadline", "2H")["deadline"] == ("7200.0", "command line")


def test_an_as_number_and_a_country_are_checked_and_written_one_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "argument --asn: not an AS number: '9198abc'" in _refused(capsys, *SHOW, "--asn", "9198abc")
    assert "argument --asn: not an AS number: 'AS0'" in _refused(capsys, *SHOW, "--asn", "AS0")
    assert "not an AS number: '4294967295'" in _refused(capsys, *SHOW, "--asn", "4294967295")
    error = _refused(capsys, *SHOW, "--country", "Kazakhstan")
    assert "argument --country: not an ISO 3166 two-letter country code: 'Kazakhstan' (Kazakhstan is KZ)" in error
    assert "not an ISO 3166 two-letter country code: 'XX'" in _refused(capsys, *SHOW, "--country", "XX")
    rows = _show(capsys, "--asn", "9198", "--country", "kz")
    assert (rows["asn"][0], rows["country"][0]) == ("AS9198", "KZ")
    config = _config(tmp_path, 'asn = 9198\ncountry = "Kazakhstan"\n')
    error = _refused(capsys, *SHOW, "--config", str(config))
    country = "country: not an ISO 3166 two-letter country code: 'Kazakhstan' (Kazakhstan is KZ)"
    assert error == f"probe: {config}:2: {country}\n"  # the AS number, 9198, was good
    config = _config(tmp_path, 'asn = "as9198"\ncountry = "KZ"\n')
    rows = _show(capsys, "--config", str(config))
    assert (rows["asn"], rows["country"]) == (("AS9198", f"{config}:1"), ("KZ", f"{config}:2"))


def test_a_bad_resolver_in_the_file_is_named_by_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, 'region = "Astana"\ncontrol_resolver = "quic://192.0.2.1"\n')
    error = _refused(capsys, *SHOW, "--config", str(config))
    assert error.startswith(f"probe: {config}:2: control_resolver: unknown resolver transport 'quic'"), error
    config = _config(tmp_path, 'resolver = "192.0.2.1:port"\n')
    error = _refused(capsys, *SHOW, "--config", str(config))
    assert error.startswith(f"probe: {config}:1: resolver: resolver 'udp://192.0.2.1:port': expected an IP"), error
    config = _config(tmp_path, 'control_resolver = "none"\n')
    assert _show(capsys, "--config", str(config))["control_resolver"] == ("none", f"{config}:1")


# --- the file's problems, all at once; and `probe config show` on a bad file ---------------------------


def test_every_problem_in_the_file_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, 'concurency = 3\ntimeout = nan\nforensics = "off"\n')
    lines = _refused(capsys, "run", "--config", str(config)).splitlines()
    assert lines == [
        f"probe: {config}:1: concurency: unknown key (did you mean 'concurrency'? `probe config show` lists every key)",
        f"probe: {config}:2: timeout: must be a finite number, got nan",
        f"probe: {config}:3: forensics: expected true or false (a TOML boolean, without quotes), got 'off'",
    ]


def test_config_show_shows_the_settings_of_a_file_with_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The error says to check `probe config show`: it must work on that very file."""
    config = _config(tmp_path, 'colour = "red"\nregion = "Astana"\n')
    assert main(["config", "show", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "`probe config show` lists every key" in captured.err
    assert captured.err.startswith(f"probe: {config}:1: colour: unknown key")
    keys = {line.split()[0] for line in captured.out.splitlines() if line.strip()}
    assert {"targets", "timeout", "concurrency", "forensics", "control_resolver", "deadline"} <= keys
    # On the table's own stream too: a refused line must not read as a setting that took.
    assert "NOT VALID: 1 line(s) of the file were refused" in captured.out
    assert f"{config}:1: colour: unknown key" in captured.out.split("NOT VALID")[1]
    assert "Astana" in captured.out and f"({config}:2)" in captured.out  # the rest of the file still shows
    assert "Traceback" not in captured.err


# --- redirects: each Location read as a browser reads it ------------------------------------------------


def _follow(monkeypatch: pytest.MonkeyPatch, base: str, location: str) -> tuple[list[Any], dict[str, Any]]:
    """Follow one redirect from `base` to `location`: where the probe connected, and the observations."""
    import asyncio

    from probe.netx.connect import Stream
    from probe.observe import redirects
    from probe.observe.config import MeasureConfig, Visit
    from probe.vocabulary.observations import DnsLookup, HttpExchange, HttpRequestLine

    connections: list[Any] = []
    lookups: list[str] = []

    async def fake_get(stream: Any, host: str, path: str, *args: Any, **kwargs: Any) -> HttpExchange:
        where = kwargs["address"], kwargs["url"], kwargs["redirect_index"]
        return HttpExchange(HttpRequestLine("GET", host, path), 302, (("Location", location),), location, None, 0, None,
                            None, False, None, 0.0, 0.0, *where)  # fmt: skip

    async def fake_lookup(host: str, port: int, visit: Any) -> DnsLookup:
        lookups.append(host)
        return DnsLookup("system", "system", host, ("192.0.2.10",), None, ())

    async def fake_connect(address: str, port: int, use_tls: bool, sni: str | None, *args: Any) -> tuple[None, None]:
        connections.append((lookups[-1] if lookups else address, address, port, use_tls, sni))
        return None, None

    monkeypatch.setattr(redirects, "get", fake_get)
    monkeypatch.setattr(redirects, "_lookup_for_redirect", fake_lookup)
    monkeypatch.setattr(redirects, "connect_with_contrast", fake_connect)
    config = MeasureConfig(timeout=1, roots=None, resolver=None, control_resolver=None, control_sni=None)  # type: ignore[arg-type]
    from datetime import UTC, datetime

    visit = Visit.begin(config, datetime.now(UTC))
    observations = visit.draft
    host = base.split("/")[2]
    asyncio.run(redirects.fetch_with_redirects(Stream(socket.socket()), host, "/", "192.0.2.1", base, visit))
    return connections, observations


@pytest.mark.parametrize(
    ("location", "host", "port", "tls", "sni"),
    [
        ("https://example.com\\@evil.com/", "example.com", 443, True, "example.com"),  # `\` is `/`
        ("\\\\evil.com/x", "evil.com", 443, True, "evil.com"),  # `\\` is `//`: the base's scheme
        ("http:evil.example", "evil.example", 80, False, "evil.example"),  # another scheme: a host follows
        ("https://faß.de/", "xn--fa-hia.de", 443, True, "xn--fa-hia.de"),  # IDNA 2008, not fass.de
        ("https://user:pw@other.example:8443/p", "other.example", 8443, True, "other.example"),
        (" https://EXAMPLE.org/\t", "example.org", 443, True, "example.org"),
    ],
)
def test_a_location_is_read_as_browsers_read_it(
    monkeypatch: pytest.MonkeyPatch, location: str, host: str, port: int, tls: bool, sni: str | None
) -> None:
    connections, observations = _follow(monkeypatch, "https://a.example/start", location)
    assert [(c[0], c[2], c[3], c[4]) for c in connections] == [(host, port, tls, sni)]
    assert observations.redirect_error is None


def test_a_location_with_a_password_goes_where_a_browser_goes_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.vocabulary.targets import resolve_url

    hop = resolve_url("https://a.example/start", "https://user:pw@other.example:8443/p")
    assert hop is not None and hop.userinfo
    assert (hop.host, hop.port, hop.url) == ("other.example", 8443, "https://other.example:8443/p")
    assert "pw" not in hop.url


@pytest.mark.parametrize("location", ["https://example.com:0/", "http://[x", "https://exa mple.com/", "https://"])
def test_a_location_no_browser_follows_is_recorded(monkeypatch: pytest.MonkeyPatch, location: str) -> None:
    connections, observations = _follow(monkeypatch, "https://a.example/start", location)
    assert connections == []
    assert observations.redirect_error is not None and observations.redirect_error.location == location


@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("/x/../y", "https://a.example/y"),
        ("c/d", "https://a.example/dir/c/d"),
        ("?z", "https://a.example/dir/page?z"),
        ("#top", "https://a.example/dir/page?q=1"),
        ("https:next", "https://a.example/dir/next"),  # the same scheme and no slashes: a relative path
        ("https:/\\other.example", "https://other.example/"),
        ("//other.example:8080/%2e%2e/a", "https://other.example:8080/a"),
        ("http://0x7f.1/", "http://127.0.0.1/"),  # an IPv4 address as browsers accept it
        ("/wiki/Қазақстан", "https://a.example/wiki/%D2%9A%D0%B0%D0%B7%D0%B0%D2%9B%D1%81%D1%82%D0%B0%D0%BD"),
    ],
)
def test_relative_locations_resolve_as_in_the_url_standard(location: str, url: str) -> None:
    from probe.vocabulary.targets import resolve_url

    hop = resolve_url("https://a.example/dir/page?q=1", location)
    assert hop is not None and hop.url == url


def test_a_location_outside_http_is_not_followed() -> None:
    from probe.vocabulary.targets import resolve_url

    assert resolve_url("https://a.example/", "mailto:someone@example.org") is None
    assert resolve_url("https://a.example/", "ftp://files.example/") is None


def test_a_location_sent_as_utf8_bytes_is_read_as_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers are recorded as Latin-1; browsers read a Location's bytes as UTF-8."""
    raw = "https://faß.de/é".encode().decode("latin-1")
    connections, observations = _follow(monkeypatch, "https://a.example/", raw)
    assert [c[0] for c in connections] == ["xn--fa-hia.de"]
