"""Uploads that must not lose or duplicate anything (issue 20): an upload id the store forgot, a
file a running run is still writing, and a ledger under a read-only home. The object store is
moto's server on 127.0.0.1, as in tests/test_operations.py."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from tests.test_exit_codes import _env, _read_only_home, needs_namespaces
from tests.test_operations import ROOT, FailingProxy, _free_port, _results


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("XDG_DATA_HOME", str(tmp_path / "data"))):  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "HTTPS_PROXY", "HTTP_PROXY", "STATE_DIRECTORY", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    _client(port).create_bucket(Bucket="monitoring")
    try:
        yield port
    finally:
        server.stop()


def _client(port: int) -> object:
    import boto3

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")


def _keys(port: int, prefix: str) -> list[str]:
    listed = _client(port).list_objects_v2(Bucket="monitoring", Prefix=f"{prefix}/")  # type: ignore[attr-defined]
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))


def test_an_upload_the_store_forgot_starts_again(
    store: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lifecycle rule aborts an unfinished multipart upload; the ledger still holds its id. Before:
    every later try failed on NoSuchUpload, and the file was never sent."""
    to = f"s3://monitoring/{tmp_path.name}"
    files = _results(tmp_path / "results")
    proxy = FailingProxy(store)
    proxy.cut_after = 9 << 20  # the two small files and the large file's first part
    assert main(["upload", str(tmp_path / "results"), "--to", to, "--endpoint", f"http://127.0.0.1:{proxy.port}"]) == 7
    proxy.close()
    ledger = json.loads((tmp_path / "data" / "kz-probe" / "uploads.json").read_text(encoding="utf-8"))
    ((key, progress),) = ledger["in_progress"].items()
    assert progress["parts"]  # a part was sent under that id
    _client(store).abort_multipart_upload(Bucket="monitoring", Key=key, UploadId=progress["upload_id"])  # type: ignore[attr-defined]
    capsys.readouterr()

    assert main(["upload", str(tmp_path / "results"), "--to", to, "--endpoint", f"http://127.0.0.1:{store}"]) == 0
    assert "1 files sent, 2 already there" in capsys.readouterr().out
    body = _client(store).get_object(Bucket="monitoring", Key=key)["Body"].read()  # type: ignore[attr-defined]
    assert body == files[2].read_bytes()
    ledger = json.loads((tmp_path / "data" / "kz-probe" / "uploads.json").read_text(encoding="utf-8"))
    assert ledger["in_progress"] == {} and key in ledger["sent"]


def _lock_holder(lock: Path) -> tuple[subprocess.Popen[str], str]:
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom probe.run.lock import RunLock\n"
        "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    since = re.search(r"since (\S+)", lock.read_text(encoding="utf-8"))
    assert since is not None
    return holder, re.sub(r"[-:]", "", since[1])  # 2026-12-03T13:57:40Z -> 20261203T135740Z


def test_a_file_a_running_run_is_writing_waits_and_goes_once(
    store: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the running run's `.jsonl` was sent half-written, and its `.jsonl.gz` again when the
    run had compressed it: two objects for one run, one of them cut short."""
    results, to = tmp_path / "results", f"s3://monitoring/{tmp_path.name}"
    holder, started = _lock_holder(results / ".probe.run.lock")
    try:
        day = results / started[:4] / started[4:6] / started[6:8]
        day.mkdir(parents=True, exist_ok=True)
        earlier = day / "20000101T000000Z-aaaaaaaa.jsonl"  # a finished run, not compressed
        earlier.write_text('{"run": "earlier"}\n', encoding="utf-8")
        packed = day / "20000101T060000Z-bbbbbbbb.jsonl.gz"  # a finished run, compressed
        packed.write_bytes(gzip.compress(b'{"run": "packed"}\n'))
        running = day / f"{started}-cccccccc.jsonl"  # the running run's file, half written
        running.write_text('{"run": "running"}\n{"half', encoding="utf-8")
        endpoint = f"http://127.0.0.1:{store}"
        assert main(["upload", str(results), "--to", to, "--endpoint", endpoint]) == 0
        out, err = capsys.readouterr()
        assert "2 files sent, 0 already there, 1 still being written" in out
        assert f"{running}: not sent, a run is still writing it (pid {holder.pid} since" in err
        assert _keys(store, tmp_path.name) == sorted([earlier.name, packed.name])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # The run ends: it compresses its file (the plain one is removed), then the next upload sends it once.
    running.write_text('{"run": "running"}\n{"run": "running", "n": 2}\n', encoding="utf-8")
    (day / f"{running.name}.gz").write_bytes(gzip.compress(running.read_bytes()))
    running.unlink()
    assert main(["upload", str(results), "--to", to, "--endpoint", endpoint]) == 0
    assert "1 files sent, 2 already there" in capsys.readouterr().out
    assert _keys(store, tmp_path.name) == sorted([earlier.name, packed.name, f"{running.name}.gz"])


@needs_namespaces
def test_under_a_read_only_home_the_ledger_and_id_live_in_the_state_directory(store: int, tmp_path: Path) -> None:
    """As the shipped unit runs it (ProtectHome=yes). Before: a 113-line traceback (read-only file
    system) and exit 1, which the unit counted as success; and a new installation id each time."""
    _results(tmp_path / "results")
    (tmp_path / "results" / "2026" / "11" / "29" / "20261129T020000Z-run00002.jsonl").unlink()  # small files only
    state = tmp_path / "state"
    state.mkdir()
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}  # fmt: skip
    upload = [sys.executable, "-m", "probe", "upload", "results", "--to", f"s3://monitoring/{tmp_path.name}",
              "--endpoint",
              f"http://127.0.0.1:{store}"]  # fmt: skip

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_read_only_home(tmp_path), *upload], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=_env(tmp_path, XDG_DATA_HOME="", **aws, **env))  # fmt: skip

    first, second = run(STATE_DIRECTORY=str(state)), run(STATE_DIRECTORY=str(state))
    assert first.returncode == 0 and "2 files sent, 0 already there" in first.stdout, first.stderr
    assert second.returncode == 0 and "0 files sent, 2 already there" in second.stdout, second.stderr
    installation = (state / "installation-id").read_text(encoding="ascii").strip()
    sent = json.loads((state / "uploads.json").read_text(encoding="utf-8"))["sent"]
    assert len(sent) == 2 and all(key.startswith(f"{tmp_path.name}/{installation}/") for key in sent)
    assert not list((tmp_path / "home").iterdir())

    nowhere = run()  # no STATE_DIRECTORY, no XDG variable: only the read-only home
    assert nowhere.returncode == 8, nowhere.stderr
    assert f"cannot write the probe's state in {tmp_path / 'home'}" in nowhere.stderr
    assert "STATE_DIRECTORY" in nowhere.stderr and "Traceback" not in nowhere.stderr
