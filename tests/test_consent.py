"""Informed consent before the first measurement (issue 20): the text is shown at a terminal and a
yes is kept; `--yes` and `consent = true` consent for unattended runs; without a terminal and
without consent the run stops with exit 2 before measuring; a changed text asks again.

Every run here stays on loopback: an IP-literal target on a closed port, no control resolver, a
silent resolver on 127.0.0.1 (never the default list or the public control resolvers).
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probe.cli import consent

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A working directory with a one-target list on loopback; the state under `state/`."""
    port = _closed_port()
    (tmp_path / "targets.txt").write_text(f"127.0.0.1:{port}\n", encoding="utf-8")
    (tmp_path / "port").write_text(str(port), encoding="ascii")
    return tmp_path


def _args(place: Path, *extra: str) -> list[str]:
    port = (place / "port").read_text(encoding="ascii")
    return ["run", "--targets", "targets.txt", "--out", "results", "--control-resolver", "none",
            "--resolver", f"127.0.0.1:{port}", "--no-injection-check", "--os-store", "none", "--timeout", "1",
            "--no-forensics", *extra]  # fmt: skip


def _env(place: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(place / "home"),
            "STATE_DIRECTORY": str(place / "state"), "XDG_CONFIG_HOME": str(place / "config"),
            "TERM": "dumb", "COLUMNS": "120"}  # fmt: skip


def _run(place: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`probe run` with no terminal: stdin is /dev/null, as under cron."""
    return subprocess.run([sys.executable, "-m", "probe", *_args(place, *extra)], cwd=place,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env=_env(place))  # fmt: skip


def _measured(place: Path) -> list[Path]:
    return sorted((place / "results").rglob("*.jsonl"))


def _agreement(place: Path) -> dict:
    return json.loads((place / "state" / "consent.json").read_text(encoding="utf-8"))


def _at_a_terminal(place: Path, answer: bytes | None, *extra: str) -> tuple[int, str]:
    """`probe run` on a pseudo-terminal (stdin, stdout and stderr): when it asks, type `answer`.
    The exit code and everything the terminal showed."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "probe", *_args(place, *extra)], cwd=place,
                               stdin=slave, stdout=slave, stderr=slave, env=_env(place), close_fds=True)  # fmt: skip
    os.close(slave)
    seen, answered = b"", False
    guard = time.monotonic() + 120  # only so that a broken probe cannot hang the suite
    try:
        while time.monotonic() < guard:
            if answer is not None and not answered and consent.QUESTION.encode() in seen:
                os.write(master, answer + b"\n")
                answered = True
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal closed: the run is over
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    return code, seen.decode("utf-8", "replace").replace("\r\n", "\n")


def test_without_a_terminal_and_without_consent_the_run_is_refused_and_measures_nothing(place: Path) -> None:
    result = _run(place)
    assert result.returncode == 2, result.stderr
    assert "probe: not measuring: no consent" in result.stderr and "no terminal" in result.stderr
    assert "--yes" in result.stderr and "consent = true" in result.stderr  # how to consent
    assert consent.TEXT in result.stderr  # what consenting means, for the operator who reads cron's mail
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (place / "results").exists()  # no lock, no results file: nothing was measured
    assert not (place / "state" / "consent.json").exists()


def test_yes_records_consent_and_the_next_run_needs_no_flag(place: Path) -> None:
    first = _run(place, "--yes")
    assert first.returncode in (0, 1, 3), first.stderr  # measured (3: this host has no route at all)
    assert len(_measured(place)) == 1
    assert "consent" not in first.stderr  # said on the command line: kept without a word
    kept = _agreement(place)
    assert (kept["version"], kept["text_sha256"], kept["given"]) == (consent.VERSION, consent.digest(), "--yes")
    second = _run(place)
    assert second.returncode == first.returncode, second.stderr
    assert len(_measured(place)) == 2 and "consent" not in second.stderr


def test_consent_true_in_the_configuration_file_consents(place: Path) -> None:
    config = place / "config.toml"
    config.write_text("timeout = 1\nconsent = true\n", encoding="utf-8")
    result = _run(place, "--config", str(config), "--quiet")
    assert result.returncode in (0, 1, 3), result.stderr
    assert len(_measured(place)) == 1 and _agreement(place)["given"] == "configuration"
    assert "consent" not in result.stderr  # --quiet: errors only


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('consent = "yes"\n', ":1: consent: expected true or false (a TOML boolean, without quotes), got 'yes'"),
        ("timeout = 1\nconsent = 1\n", ":2: consent: expected true or false"),
        ("yes = true\n", ":1: yes: unknown key (did you mean 'consent'?"),
    ],
)
def test_a_consent_that_is_not_a_toml_boolean_is_refused_by_file_and_line(place: Path, text: str, message: str) -> None:
    config = place / "config.toml"
    config.write_text(text, encoding="utf-8")
    result = _run(place, "--config", str(config))
    assert result.returncode == 2 and f"probe: {config}{message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (place / "results").exists() and not (place / "state" / "consent.json").exists()


def test_config_show_names_where_consent_came_from(place: Path) -> None:
    config = place / "config.toml"
    config.write_text("consent = true\n", encoding="utf-8")
    shown = subprocess.run([sys.executable, "-m", "probe", "config", "show", "--config", str(config)], cwd=place,
                           capture_output=True, text=True, timeout=60, env=_env(place))  # fmt: skip
    assert re.search(rf"^consent\s+True\s+\({re.escape(str(config))}:1\)$", shown.stdout, re.M), shown.stdout


def test_at_a_terminal_the_text_is_shown_and_no_measures_nothing(place: Path) -> None:
    code, shown = _at_a_terminal(place, b"n")
    assert code == 2, shown
    for words in (
        "In Kazakhstan, visiting",
        "or measuring blocked sites may carry legal risk",
        "[scrubbed]",
        "The list holds sites that are blocked",
        "probe upload",
        consent.QUESTION.strip(),
        "This run: 1 sites from targets.txt; it writes the results in results/ and sends nothing.",
    ):
        assert words in shown, (words, shown)  # fmt: skip
    assert "you did not agree, so nothing was measured" in shown
    assert not (place / "results").exists() and not (place / "state" / "consent.json").exists()


def test_at_a_terminal_yes_records_consent_and_is_not_asked_again(place: Path) -> None:
    code, shown = _at_a_terminal(place, b"maybe\ny")  # an unclear answer is asked again
    assert code in (0, 1, 3), shown
    assert "Please type yes or no." in shown and len(_measured(place)) == 1
    kept = _agreement(place)
    assert (kept["version"], kept["text_sha256"], kept["given"]) == (consent.VERSION, consent.digest(), "terminal")
    again, shown = _at_a_terminal(place, None)
    assert again == code and consent.QUESTION not in shown and len(_measured(place)) == 2, shown


def test_consent_to_an_older_text_asks_again(place: Path) -> None:
    assert _run(place, "--yes", "--quiet").returncode in (0, 1, 3)
    path = place / "state" / "consent.json"
    older = {**_agreement(place), "version": consent.VERSION - 1}
    path.write_text(json.dumps(older), encoding="utf-8")
    refused = _run(place)
    assert refused.returncode == 2 and "The consent text has changed since it was agreed to" in refused.stderr
    assert len(_measured(place)) == 1  # the refused run measured nothing
    code, shown = _at_a_terminal(place, b"yes")
    assert f"The consent text has changed since you agreed to it (version {consent.VERSION - 1}" in shown
    assert consent.QUESTION in shown and code in (0, 1, 3) and len(_measured(place)) == 2
    assert _agreement(place)["version"] == consent.VERSION


def test_a_changed_text_asks_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any edit of the text changes its digest: consent to the old words is not consent to the new."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    no_terminal = io.StringIO()
    assert consent.obtain("--yes", "", stdin=no_terminal, out=io.StringIO())
    assert consent.obtain(None, "", stdin=no_terminal, out=io.StringIO())  # kept
    monkeypatch.setattr(consent, "TEXT", consent.TEXT.replace("legal risk", "a legal risk"))
    said = io.StringIO()
    assert not consent.obtain(None, "", stdin=no_terminal, out=said)
    assert "has changed" in said.getvalue() and "a legal risk" in said.getvalue()


def test_the_guides_show_the_text_and_the_service_files_consent() -> None:
    volunteers = (ROOT / "docs" / "volunteers.md").read_text(encoding="utf-8")
    assert consent.TEXT in volunteers, "docs/volunteers.md does not show the consent text as the probe does"
    operating = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    assert re.search(r"^\| `--yes` \|", operating, re.M) and "consent = true" in operating
    unit = (ROOT / "docs" / "examples" / "kz-probe.service").read_text(encoding="utf-8")
    assert re.search(r"^ExecStart=\S+/probe run .*--yes", unit, re.M)
    cron = (ROOT / "docs" / "examples" / "crontab").read_text(encoding="utf-8")
    assert re.search(r"^(\S+\s+){6}.*probe run .*--yes", cron, re.M)
    shown = subprocess.run([sys.executable, "-m", "probe", "run", "--help"], capture_output=True, text=True,
                           timeout=60, env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    help_text = " ".join(shown.stdout.split())
    assert "--yes consent without being asked, for unattended runs" in help_text
    assert "without a terminal and without consent the run stops before measuring (exit 2)" in help_text
