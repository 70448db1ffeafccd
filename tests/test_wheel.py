"""What `pip install .` gives a volunteer works outside the checkout.

The other tests import the package from the checkout, where every file is at hand. Here the wheel is
built from the checkout's sources, installed with its declared dependencies (from the package
registry) into a fresh venv in a temporary directory, and each command is run from another
temporary directory with no PYTHONPATH: a data file the wheel leaves out, or an import that no
declared dependency satisfies, fails here. The venv is built once a session (about a minute with
pip's cache; tests/wheelenv.py, the `installed` fixture in conftest.py, shared with
tests/test_service.py); without the registry these tests are skipped, and the skip says so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from probe.helper.measure import API_VERSION
from probe.loaders.targets import load_targets
from tests.conftest import PkiFixture
from tests.wheelenv import Installed

ROOT = Path(__file__).resolve().parents[1]
LAB_RECORDS = ROOT / "bench" / "data" / "lab-records.jsonl"
LANGUAGES = sorted(p.stem for p in (ROOT / "probe" / "report" / "templates").glob("*.json"))
FORMATS = ("html", "md", "csv", "json", "parquet")  # parquet is written by DuckDB, a declared dependency
EXIT_OFFLINE = 3  # docs/operating.md, "Exit codes"

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(900)]


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_the_shipped_list_is_the_projects_list() -> None:
    """probe/data/targets.txt is what a volunteer measures by default: the project's own list."""
    packaged = ROOT / "probe" / "data" / "targets.txt"
    assert packaged.read_bytes() == (ROOT / "targets.txt").read_bytes(), "copy targets.txt to probe/data/"
    assert len(load_targets(packaged)) > 0


def test_the_wheel_carries_every_data_file(installed: Installed) -> None:
    wanted = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "probe").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    with zipfile.ZipFile(installed.wheel) as wheel:
        carried = set(wheel.namelist())
    assert wanted - carried == set(), "add these to [tool.setuptools.package-data] in pyproject.toml"
    assert {"probe/report/templates/en.json", "probe/data/targets.txt"} <= carried


def test_every_module_imports_with_the_declared_dependencies(installed: Installed) -> None:
    script = (
        "import importlib, pkgutil, probe\n"
        "print(probe.__file__)\n"
        "for module in pkgutil.walk_packages(probe.__path__, 'probe.'):\n"
        "    try:\n"
        "        importlib.import_module(module.name)\n"
        "    except Exception as exc:\n"
        "        print(f'FAILED {module.name}: {type(exc).__name__}: {exc}')\n"
        "    else:\n"
        "        print(f'imported {module.name}')\n"
    )
    result = subprocess.run(
        [str(installed.python), "-c", script], cwd=installed.work, env=installed.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    lines = _ok(result).splitlines()
    assert Path(lines[0]).resolve().is_relative_to(installed.venv.resolve()), f"imported from {lines[0]}"
    assert [line for line in lines if line.startswith("FAILED")] == []
    expected = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in (ROOT / "probe").rglob("*.py")}
    expected = {name.removesuffix(".__init__") for name in expected} - {"probe"}
    assert {line.split()[1] for line in lines[1:]} == expected


def test_help_shows_the_default_targets(installed: Installed) -> None:
    assert "run" in _ok(installed.probe("--help"))
    text = _ok(installed.probe("run", "--help"))
    assert "./targets.txt if there is one" in " ".join(text.split())
    assert "probe/data/targets.txt" in text
    assert "--listen" in _ok(installed.probe("helper", "serve", "--help"))


def test_config_show_and_probe_targets_name_the_shipped_list(installed: Installed) -> None:
    shipped = installed.package / "data" / "targets.txt"
    count = len(load_targets(ROOT / "targets.txt"))
    line = next(line for line in _ok(installed.probe("config", "show")).splitlines() if line.startswith("targets "))
    assert str(shipped) in line and line.endswith("(default)"), line
    assert f"{shipped} ({count} targets)" in _ok(installed.probe("targets"))
    bad = installed.work / "mine.txt"
    bad.write_text("good.example\nexample..com\n# fine\nbad_host name extra\nalso.good\n", encoding="utf-8")
    result = installed.probe("targets", "mine.txt")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line.split(":")[:2] for line in result.stderr.splitlines()] == [["probe", " mine.txt"]] * 2
    assert "mine.txt:2: " in result.stderr and "mine.txt:4: " in result.stderr
    bad.unlink()


def test_show_report_and_analyze_a_results_file(installed: Installed) -> None:
    records = installed.work / "lab-records.jsonl"
    shutil.copy(LAB_RECORDS, records)
    assert "verdict:" in _ok(installed.probe("show", records.name))
    assert len(LANGUAGES) >= 2
    for language in LANGUAGES:
        template = json.loads((ROOT / "probe" / "report" / "templates" / f"{language}.json").read_text("utf-8"))
        november = template["months"][10]  # the lab's records are of 29 November 2026
        for fmt in FORMATS:
            out = installed.work / f"report-{language}.{fmt}"
            _ok(installed.probe("report", records.name, "--format", fmt, "--language", language, "--out", out.name))
            if fmt == "parquet":
                assert any(out.rglob("*.parquet")), f"no parquet files in {out}"
            elif fmt == "json":
                sentences = json.loads(out.read_text("utf-8"))["sentences"]
                assert list(sentences) == [language] and sentences[language]
                assert all(november in sentence for sentence in sentences[language])
            elif fmt == "csv":
                assert out.read_text("utf-8").startswith("id,network,")  # one row per episode, its id first
            else:
                assert november in out.read_text("utf-8"), f"{fmt} in {language}"
    result = installed.probe("analyze", records.name)
    analyzed = _ok(result)
    # The bench records were judged with the lab's roots: the analyst is told (once, on stderr), then
    # shown the changes (on stdout).
    assert result.stderr.count("judged with other reference roots") == 1, result.stderr
    assert analyzed.splitlines()[-1].startswith(f"{records.name} -> ")
    assert len(list(installed.work.glob("lab-records.analyzed-*.jsonl"))) == 1


@pytest.fixture
def empty_namespace() -> Iterator[str]:
    """A network namespace with nothing in it: no interface up, no route."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and `ip netns` (iproute2) for a namespace with no route")
    name = f"w20-wheel-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 192.0.2.53\n", encoding="ascii")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=30)
        shutil.rmtree(etc, ignore_errors=True)


def test_run_offline_measures_the_shipped_list(installed: Installed, empty_namespace: str) -> None:
    assert not (installed.work / "targets.txt").exists()
    shipped = installed.package / "data" / "targets.txt"
    count = len(load_targets(ROOT / "targets.txt"))
    ip = shutil.which("ip") or "ip"
    offline = (ip, "netns", "exec", empty_namespace)
    result = installed.probe("run", "--out", "results", "--json", "--yes", prefix=offline)  # --yes: unattended
    assert result.returncode == EXIT_OFFLINE, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr
    assert f"measuring the list shipped with the probe ({count} targets, {shipped})" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["exit_reason"], summary["exit_code"], summary["targets"]) == ("offline", EXIT_OFFLINE, count)
    path = installed.work / summary["results_file"]
    records = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert len(records) == count
    assert {record["blocking"] for record in records} == {"offline"}


def test_the_installed_helper_serves_its_health_over_tls(installed: Installed, test_pki: PkiFixture) -> None:
    """`probe helper serve` from the venv (as docs/helper.md runs it) listens on loopback with a test
    certificate and answers `GET /v1/health` over TLS that verifies against the test root."""
    cert, key = test_pki.leaf_files(test_pki.public_intermediate, ["127.0.0.1"], "wheel-helper")
    with socket.socket() as probe_port:  # a free port on loopback, handed to the helper
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    log = installed.work / "helper.log"
    with log.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(
            [str(installed.venv / "bin" / "probe"), "helper", "serve", "--listen", f"127.0.0.1:{port}",
             "--tls-cert", str(cert), "--tls-key", str(key), "--roots", str(test_pki.roots_pem), "--timeout", "1"],
            cwd=installed.work, env=installed.env, stdout=output, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            for _ in range(200):  # until it listens: 20 s at most
                assert process.poll() is None, f"the helper exited {process.returncode}: {log.read_text()[-4000:]}"
                with socket.socket() as attempt:
                    attempt.settimeout(1)
                    if attempt.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.1)
            else:
                pytest.fail(f"the helper did not listen within 20 s: {log.read_text()[-4000:]}")
            answer = requests.get(f"https://127.0.0.1:{port}/v1/health", verify=str(test_pki.roots_pem), timeout=10)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "version": API_VERSION}
    assert "Traceback" not in log.read_text()
