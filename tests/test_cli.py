"""The command line: bad input is a clear message and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _probe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probe", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_bad_target_line_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("good.example\nexample..com\n", encoding="utf-8")
    result = _probe("run", "--control-resolver", "udp://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("probe: targets.txt:2: not a valid host name")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()  # the run did not start


def test_bad_control_resolver_and_roots(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("good.example\n", encoding="utf-8")
    result = _probe("run", "--control-resolver", "quic://192.0.2.1", cwd=tmp_path)
    assert result.returncode == 2 and "unknown resolver transport 'quic'" in result.stderr
    (tmp_path / "roots.pem").write_text("not a certificate\n", encoding="utf-8")
    result = _probe("run", "--roots", "roots.pem", cwd=tmp_path)
    assert result.returncode == 2 and "roots.pem: not a PEM bundle" in result.stderr


def test_bad_catalog_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("good.example\n", encoding="utf-8")
    (tmp_path / "extra.json").write_text(
        '{"catalog": "interception_cas", "certificates": [{"id": "x", "name": "X", "sources": ["s"]}]}',
        encoding="utf-8",
    )
    result = _probe("run", "--catalog", "extra.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "extra.json: certificates[1]: needs 'sha256_der' or 'sha256_spki'" in result.stderr


def test_show_rejects_a_file_that_is_not_records(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"schema_version": 1}\nnot json\n', encoding="utf-8")
    result = _probe("show", "r.jsonl", cwd=tmp_path)
    assert result.returncode == 2 and "r.jsonl:2: not a JSON record" in result.stderr


def test_unwritable_results_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("good.example\n", encoding="utf-8")
    (tmp_path / "results").write_text("a file where the directory should be\n", encoding="utf-8")
    result = _probe("run", "--control-resolver", "udp://127.0.0.1:9", "--no-injection-check", "--yes", cwd=tmp_path)
    assert result.returncode == 5
    assert result.stderr.startswith("probe: cannot write results in results:")
    assert "Traceback" not in result.stderr


def test_bad_nat64_prefix_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "targets.txt").write_text("good.example\n", encoding="utf-8")
    for prefix, message in (("not-a-prefix", "not an IPv6 prefix"), ("2001:db8:64::/64", "only /96 prefixes")):
        result = _probe("run", "--control-resolver", "udp://192.0.2.1", "--nat64-prefix", prefix, cwd=tmp_path)
        assert result.returncode == 2 and f"--nat64-prefix: {message}" in result.stderr, result.stderr
        assert not (tmp_path / "results").exists()


def test_a_target_with_a_password_or_port_0_stops_the_run(tmp_path: Path) -> None:
    # The last line is refused by any version: a parser that let the first through stops before measuring.
    for first, message in (
        ("https://user:pw@good.example/", "a user name or password before '@' in a target: give the host alone"),
        ("https://good.example:0/", "bad port '0' (1-65535)"),
    ):
        (tmp_path / "targets.txt").write_text(f"{first}\nexample..com\n", encoding="utf-8")
        result = _probe("run", "--control-resolver", "udp://127.0.0.1:9", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr == f"probe: targets.txt:1: {message}\n", result.stderr
        assert not (tmp_path / "results").exists()  # the run did not start


def test_help_shows_the_defaults() -> None:
    run = _probe("run", "--help", cwd=ROOT).stdout
    flat = " ".join(run.split("options:", 1)[1].split())  # the options, not the usage line
    for option, default in (("--out DIR", "results"), ("--timeout SECONDS", "10.0"), ("--concurrency N", "8")):
        section = flat[flat.index(option) :]
        assert f"(default: {default})" in section[: section.index(" --", len(option))], option
    assert "--targets" in flat and "default:" in flat[flat.index("--targets") :][:300]
    assert "--deadline DURATION bound the whole run: a number and its unit, s, m or h (90s, 50m, 2h" in flat
    serve = " ".join(_probe("helper", "serve", "--help", cwd=ROOT).stdout.split("options:", 1)[1].split())
    assert "--rate N requests a minute per client (default: 600.0)" in serve
    assert "--burst N requests a client may make at once (default: 120)" in serve


def test_bad_option_values_are_named_not_tracebacks(tmp_path: Path) -> None:
    for args, message in (
        (("--timeout", "nan"), "argument --timeout: must be a finite number: 'nan'"),
        (("--deadline", "5"), "argument --deadline: not a duration: '5' (a number and its unit"),
        (("--asn", "Kazakhtelecom"), "argument --asn: not an AS number: 'Kazakhtelecom'"),
        (("--country", "Kazakhstan"), "argument --country: not an ISO 3166 two-letter country code"),
        (("--control-resolver", "quic://192.0.2.1"), "argument --control-resolver: unknown resolver transport"),
    ):
        result = _probe("config", "show", *args, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
