"""Running it for real: the configuration file, the run lock, uploads to an object store, and the
service files the operating guide gives (issue 12)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from probe.run.lock import Locked, RunLock

ROOT = Path(__file__).resolve().parents[1]


# --- configuration ---------------------------------------------------------------------------------


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, tuple[str, str]]:
    assert main(["config", "show", *args]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        key, value, source = re.match(r"^(\S+)\s+(.*?)\s+\((.*)\)$", line).groups()  # type: ignore[union-attr]
        rows[key] = (value, source)
    return rows


def test_the_command_line_wins_over_the_file_which_wins_over_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'timeout = 4\nregion = "Astana"\nhelper = ["https://helper.example.org/"]\nhelper_token = "s3cret"\n'
        'deadline = "50m"\nlab = true\n[upload]\nto = "s3://monitoring/kz"\n',
        encoding="utf-8",
    )
    rows = _show(capsys, "--config", str(config), "--timeout", "7", "--concurrency", "3")
    assert rows["timeout"] == ("7.0", "command line")
    assert rows["concurrency"] == ("3", "command line")
    assert rows["region"] == ("Astana", f"{config}:2")
    assert rows["helper"] == ("https://helper.example.org/", f"{config}:3")
    assert rows["helper_token"] == ("(set, not shown)", f"{config}:4")
    assert rows["deadline"] == ("3000.0", f"{config}:5")  # 50 minutes, as the command line reads it
    assert rows["lab"] == ("True", f"{config}:6")
    assert rows["dns_window"] == ("1.0", "default")
    assert rows["upload.to"][0] == "s3://monitoring/kz"
    assert "s3cret" not in str(rows)


def test_the_default_file_is_in_the_users_config_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "kz-probe").mkdir()
    (tmp_path / "kz-probe" / "config.toml").write_text('region = "Shymkent"\n', encoding="utf-8")
    assert _show(capsys)["region"] == ("Shymkent", f"{tmp_path / 'kz-probe' / 'config.toml'}:1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timeout = 4\n\ncolour = 'red'\n", ":3: colour: unknown key"),
        ("timeout = 'soon'\n", ":1: timeout: expected a number"),
        ("concurrency = 2.5\n", ":1: concurrency: expected a whole number"),
        ("concurrency = -1\n", ":1: concurrency: must be greater than 0"),
        ("lab = 'yes'\n", ":1: lab: expected true or false"),
        ("helper = [1, 2]\n", ":1: helper: expected a list of strings"),
        ("compress = 'rar'\n", ":1: compress: expected one of none, gzip, zstd"),
        ("deadline = 'tomorrow'\n", ":1: deadline: not a duration"),
        ("timeout = \n", ":1: not valid TOML"),
        ("[upload]\nbucket = 'x'\n", ":2: upload.bucket: unknown key"),
    ],
)
def test_every_kind_of_configuration_error_names_the_file_the_line_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"probe: {config}") and message in error, error
    assert "Traceback" not in error


def test_a_missing_configuration_file_given_by_name_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(tmp_path / "nowhere.toml")]) == 2
    assert "nowhere.toml: no such file" in capsys.readouterr().err


# --- the run lock ------------------------------------------------------------------------------------


def _holder(lock: Path) -> subprocess.Popen[str]:
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom probe.run.lock import RunLock\n"
        "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_two_runs_never_overlap(tmp_path: Path) -> None:
    lock = tmp_path / "results" / ".probe.run.lock"
    holder = _holder(lock)
    try:
        (tmp_path / "targets.txt").write_text("127.0.0.1:9\n", encoding="utf-8")
        second = subprocess.run(
            [sys.executable, "-m", "probe", "run", "--targets", "targets.txt", "--out", "results",
             "--control-resolver", "none", "--resolver", "127.0.0.1:9", "--no-injection-check", "--yes"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )  # fmt: skip
        assert second.returncode == 6, second.stderr
        assert "another probe run holds" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert not list((tmp_path / "results").rglob("*.jsonl"))  # the second run did not start
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_stale(tmp_path: Path) -> None:
    lock = tmp_path / ".probe.run.lock"
    holder = _holder(lock)
    with pytest.raises(Locked):
        RunLock(lock).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunLock(lock) as taken:
        assert taken.previous == f"pid {holder.pid} since " + taken.previous.split(" since ")[1]
        assert f"pid {os.getpid()}" in lock.read_text(encoding="utf-8")
    assert lock.read_text(encoding="utf-8") == ""  # released cleanly: the next run finds no stale lock
    with RunLock(lock) as again:
        assert again.previous is None


# --- uploads -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FailingProxy:
    """A TCP relay in front of the object store that can cut the line after some bytes, and then
    refuse every connection: a server that fails midway. Counts the bytes it forwarded."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.cut_after: int | None = None
        self.forwarded = 0
        self.down = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        try:
            while data := source.recv(65536):
                if upward:
                    with self._lock:
                        self.forwarded += len(data)
                        if self.cut_after is not None and self.forwarded > self.cut_after:
                            self.down = True
                    if self.down:
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def object_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("XDG_STATE_HOME", str(tmp_path / "data"))):  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="monitoring")
    try:
        yield port
    finally:
        server.stop()


def _results(directory: Path) -> list[Path]:
    files = []
    for n, size in enumerate((2000, 3000, 12 << 20)):  # two small run files and one large (two parts)
        path = directory / "2026" / "11" / "29" / f"20261129T0{n}0000Z-run{n:05d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size // 2).hex().encode()[:size])
        files.append(path)
    return files


def test_upload_resumes_after_the_server_fails_midway_with_no_duplicate_and_nothing_lost(
    object_store: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    files = _results(tmp_path / "results")
    proxy = FailingProxy(object_store)
    proxy.cut_after = 9 << 20  # the two small files and the first 8 MiB part get through
    endpoint = f"http://127.0.0.1:{proxy.port}"
    to = "s3://monitoring/kz"
    assert main(["upload", str(tmp_path / "results"), "--to", to, "--endpoint", endpoint]) == 7
    assert "run again to resume" in capsys.readouterr().err
    first_try = proxy.forwarded

    proxy.down, proxy.cut_after, proxy.forwarded = False, None, 0  # the server is back
    assert main(["upload", str(tmp_path / "results"), "--to", to, "--endpoint", endpoint]) == 0
    assert "1 files sent, 2 already there" in capsys.readouterr().out
    assert proxy.forwarded < 6 << 20  # only the missing part went again, not the whole 12 MiB
    assert first_try > 8 << 20

    store = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{object_store}")
    listed = store.list_objects_v2(Bucket="monitoring", Prefix="kz/")["Contents"]
    installation = (tmp_path / "data" / "kz-probe" / "installation-id").read_text().strip()
    assert sorted(o["Key"] for o in listed) == sorted(f"kz/{installation}/2026/11/29/{p.name}" for p in files)
    for path in files:
        body = store.get_object(Bucket="monitoring", Key=f"kz/{installation}/2026/11/29/{path.name}")["Body"].read()
        assert body == path.read_bytes()

    assert main(["upload", str(tmp_path / "results"), "--to", to, "--endpoint", endpoint]) == 0
    assert "0 files sent, 3 already there" in capsys.readouterr().out
    assert len(store.list_objects_v2(Bucket="monitoring", Prefix="kz/")["Contents"]) == 3
    proxy.close()


def test_upload_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["upload", str(tmp_path), "--to", "ftp://x"]) == 2  # a usage error (tests/test_exit_codes.py)
    assert "expected --to s3://BUCKET/PREFIX" in capsys.readouterr().err


# --- the service files in the operating guide ---------------------------------------------------------

EXAMPLES = ROOT / "docs" / "examples"


def test_the_operating_guide_shows_the_service_files_it_ships() -> None:
    guide = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    for name in ("kz-probe.service", "kz-probe.timer", "crontab"):
        text = (EXAMPLES / name).read_text(encoding="utf-8").strip()
        assert text in guide, f"docs/operating.md does not show docs/examples/{name} as it is"
    cron = (EXAMPLES / "crontab").read_text(encoding="utf-8")
    assert re.search(r"^(\S+\s+){6}.*probe run .*--quiet", cron, re.M)  # five times, a user, the command


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_units_verify(tmp_path: Path) -> None:
    for name in ("kz-probe.service", "kz-probe.timer"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    # The unit names the program in its venv (/opt/kz-probe/bin/probe), which verify wants to exist.
    program = tmp_path / "venv" / "bin" / "probe"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    unit = tmp_path / "kz-probe.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={program}", unit.read_text(encoding="utf-8"), flags=re.M),
                    encoding="utf-8")  # fmt: skip
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "kz-probe.timer"), str(tmp_path / "kz-probe.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "kz-probe" in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_a_run_uploads_its_file_when_asked(
    object_store: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`probe run --upload`: the run's own file reaches the store, named by installation and day.
    Everything stays on loopback: an IP-literal target on a closed port, no control, a silent resolver."""
    import boto3

    closed = _free_port()
    (tmp_path / "targets.txt").write_text(f"127.0.0.1:{closed}\n", encoding="utf-8")
    args = ["run", "--targets", str(tmp_path / "targets.txt"), "--out", str(tmp_path / "results"),
            "--control-resolver", "none", "--resolver", f"127.0.0.1:{closed}", "--no-injection-check",
            "--os-store", "none", "--timeout", "1", "--json", "--upload", "--upload-to", "s3://monitoring/runs",
            "--upload-endpoint", f"http://127.0.0.1:{object_store}", "--yes"]  # fmt: skip
    code = main(args)
    summary = json.loads(capsys.readouterr().out)
    assert code == summary["exit_code"] and summary["exit_reason"] in ("completed", "offline")  # the host's routes
    (key,) = summary["upload"]["sent"]
    store = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{object_store}")
    body = store.get_object(Bucket="monitoring", Key=key)["Body"].read()
    assert body == Path(summary["results_file"]).read_bytes()
    assert key.startswith("runs/") and key.endswith(Path(summary["results_file"]).name)


def test_a_maxmind_database_names_the_network(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    from probe.loaders.asn import MaxMindTable, load_asn_table

    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-ASN")
    fields = {"autonomous_system_number": 9198, "autonomous_system_organization": "JSC Kazakhtelecom",
              "country": {"iso_code": "KZ"}}  # fmt: skip
    writer.insert_network(IPSet(["198.51.100.0/24"]), fields)
    path = tmp_path / "asn.mmdb"
    writer.to_db_file(str(path))
    table = load_asn_table(path)
    assert isinstance(table, MaxMindTable)
    assert table.network("198.51.100.7") == (9198, "JSC Kazakhtelecom", "KZ")
    assert table.lookup("198.51.100.7") == 9198 and table.lookup("203.0.113.1") is None
    assert table.describe()["source"] == "asn.mmdb"
