"""Faults lose no record: a killed run, a value JSON cannot carry, a full disk, a recorder dying at
the worst moment, a recorder stopped and the run interrupted, a packet capture failing mid-run
(docs/reliability.md, "Faults lose no record")."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.verdict import AnalysisContext
from probe.cli.main import main
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.netx.deadline import Deadline
from probe.observe.measure import MeasureConfig, Measured
from probe.results.writer import ResultsWriter
from probe.run import execute as run_module
from probe.run import recorder as recorder_module
from probe.run.outbox import PIPE_SIZE, Outbox
from probe.vocabulary.observations import HelperAnswer, Observations
from probe.vocabulary.observations_codec import helper_response
from probe.vocabulary.targets import parse_target
from tests.conftest import PkiFixture, read_results
from tests.dnsmasq import free_udp_port

ROOT = Path(__file__).resolve().parents[1]
HUGE = b"100000000000000000000"  # 21 digits: beyond 64 bits


class Site:
    """HTTP on 127.0.0.1: `/huge...` answers `HTTP/1.1 100000000000000000000 OK`, `/slow...` after a
    second and a half, `/big...` with a 12 KB page, anything else a plain 200."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self.served: list[bytes] = []  # the paths answered, in order
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                path = request.split(b" ", 2)[1]
                status = HUGE + b" OK" if path.startswith(b"/huge") else b"200 OK"
                body = b"<html>" + b"k" * 12000 + b"</html>" if path.startswith(b"/big") else b"ok"
                if path.startswith(b"/slow"):
                    self._stop.wait(1.5)
                head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (status, len(body))
                connection.sendall(head + body)
                self.served.append(path)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    served = Site()
    try:
        yield served
    finally:
        served.close()


def _targets(path: Path, urls: list[str]) -> Path:
    path.write_text("".join(f"{url} NEWS\n" for url in urls), encoding="utf-8")
    return path


def _run_args(targets: Path, out: Path, *extra: str) -> list[str]:
    """Everything on loopback: IP-literal targets, a control resolver on a closed port (its route is
    loopback's: the run is online whatever this machine's routes), no injection probe."""
    return ["run", "--targets", str(targets), "--out", str(out),
            "--control-resolver", f"udp://127.0.0.1:{free_udp_port()}", "--resolver", f"127.0.0.1:{free_udp_port()}",
            "--no-injection-check", "--os-store", "none", "--timeout", "3", "--yes", *extra]  # fmt: skip


def _probe(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    return subprocess.Popen([sys.executable, "-m", "probe", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _lines(out: Path) -> list[bytes]:
    """Every line of every results file under `out`, each checked to be whole."""
    lines = []
    for path in sorted(out.rglob("*.jsonl")):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends in half a line"
        lines += data.splitlines()
    for line in lines:
        json.loads(line)  # a whole record, not two run together or one cut short
    return lines


# --- a killed run ------------------------------------------------------------------------------


def _process(pid: int) -> tuple[str, int, int] | None:
    """(state, parent, start time) of a process, or None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            process = _process(int(entry.name))
            if process is not None and process[1] == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the recorder process is forked on Linux only")
def test_a_killed_run_leaves_no_recorder_behind_and_the_next_run_starts(site: Site, tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a unit's last resort) takes the run mid-way: its recorder, which held
    the run's lock and its own inbox's other end, must not live on, or every later run exits
    "locked" until a reboot. It writes what the run had sent it, and ends."""
    out = tmp_path / "results"
    urls = [site.url("/ok1")] + [site.url(f"/slow{n}") for n in range(8)]
    run = _probe(tmp_path, *_run_args(_targets(tmp_path / "targets.txt", urls), out, "--concurrency", "1", "--quiet"))
    recorder: tuple[int, int] | None = None  # pid, start time
    try:
        bound = time.monotonic() + 60
        while time.monotonic() < bound and run.poll() is None:
            files = list(out.rglob("*.jsonl"))
            children = _children(run.pid)
            if files and files[0].read_bytes().count(b"\n") >= 1 and children:
                break
            time.sleep(0.1)
        assert run.poll() is None, "the run ended before it could be killed"
        (child,) = _children(run.pid)
        recorder = (child, _process(child)[2])  # type: ignore[index]
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        bound = time.monotonic() + 60
        while time.monotonic() < bound and _running(*recorder):
            time.sleep(0.1)
        assert not _running(*recorder), "the recorder outlived its run"
        second = _probe(tmp_path, *_run_args(_targets(tmp_path / "again.txt", [site.url("/ok2")]), out, "--quiet"))
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0 and "another probe run holds" not in err, err
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if recorder is not None and _running(*recorder):
            os.kill(recorder[0], signal.SIGKILL)  # the old recorder, found by its pid and start time
    records = [json.loads(line) for line in _lines(out)]
    counts = Counter(record["target"]["input"] for record in records)
    assert counts[site.url("/ok1")] == 1 and counts[site.url("/ok2")] == 1 and max(counts.values()) == 1


_ORPHAN = """
import subprocess, sys, time
from datetime import datetime
from pathlib import Path
from probe.run import recorder, recorder_process
from probe.results.record import RunContext
from probe.results.writer import ResultsWriter
recorder_process.ORPHANED_WAIT = 1
run = RunContext(run_id="0" * 32, network={}, reference={})
writer = ResultsWriter(Path(sys.argv[1]), run.run_id, datetime.now())
process = recorder.ProcessRecorder(run, None, writer, lambda item, verdict: None)
holder = subprocess.Popen(["sleep", "120"], pass_fds=[process._send.fileno()])
print(process._process.pid, holder.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the recorder process is forked on Linux only")
def test_a_recorder_whose_inbox_never_ends_dies_with_its_run_all_the_same(tmp_path: Path) -> None:
    """Should another process hold the inbox's other end (so that it never ends), the kernel's
    signal when the run dies (PR_SET_PDEATHSIG) still ends the recorder, ORPHANED_WAIT later."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True)
    holder = recorder = None
    try:
        assert run.stdout is not None
        child, holder = (int(pid) for pid in run.stdout.readline().split())
        recorder = (child, _process(child)[2])  # type: ignore[index]
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        bound = time.monotonic() + 60
        while time.monotonic() < bound and _running(*recorder):
            time.sleep(0.1)
        assert not _running(*recorder), "the recorder outlived its run"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if recorder is not None and _running(*recorder):
            os.kill(recorder[0], signal.SIGKILL)
        if holder is not None:
            os.kill(holder, signal.SIGKILL)


def _running(pid: int, started: int) -> bool:
    process = _process(pid)
    return process is not None and process[2] == started and process[0] != "Z"


# --- a recorder that stops reading -----------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="the recorder process is forked on Linux only")
def test_a_run_whose_recorder_is_stopped_still_hears_ctrl_c_and_loses_no_record(site: Site, tmp_path: Path) -> None:
    """The recorder stopped (SIGSTOP: as a disk that hangs would stop it) until every slot is taken
    and the run cannot hand another record over: Ctrl-C must still be heard (the run's loop awaits a
    slot, it never blocks on one; it blocked, and the run could not be stopped). The run ends,
    interrupted (exit 4), and every target it measured is in the file exactly once: the recorder, stuck,
    is killed and the run writes what it did not confirm."""
    out, prefix, concurrency = tmp_path / "results", b"/stopped", 4
    urls = [site.url(f"/stopped{n}") for n in range(400)]
    args = _run_args(_targets(tmp_path / "targets.txt", urls), out, "--concurrency", str(concurrency), "--quiet")
    run = _probe(tmp_path, *args, "--no-forensics")
    recorder: tuple[int, int] | None = None  # pid, start time
    try:
        bound = time.monotonic() + 60
        while time.monotonic() < bound and run.poll() is None and not _children(run.pid):
            time.sleep(0.01)
        (child,) = _children(run.pid)
        recorder = (child, _process(child)[2])  # type: ignore[index]
        os.kill(child, signal.SIGSTOP)

        def measured() -> int:
            return sum(path.startswith(prefix) for path in site.served)

        # The run waits for its recorder: targets were measured, and no more are (for two seconds).
        bound, seen, still_since = time.monotonic() + 120, -1, time.monotonic()
        while time.monotonic() < bound and run.poll() is None:
            if measured() != seen:
                seen, still_since = measured(), time.monotonic()
            elif seen > 0 and time.monotonic() - still_since > 2:
                break
            time.sleep(0.05)
        assert run.poll() is None and 0 < seen < len(urls), (seen, run.poll())
        run.send_signal(signal.SIGINT)
        try:
            _, err = run.communicate(timeout=120)  # a bound, not a speed goal: STALLED is 5 s
        except subprocess.TimeoutExpired:
            pytest.fail("Ctrl-C was not heard: the run blocked on its stopped recorder")
        assert run.returncode == 4, err
        assert "Traceback" not in err
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if recorder is not None and _running(*recorder):  # continued: it writes what it holds, and ends
            os.kill(recorder[0], signal.SIGCONT)
            bound = time.monotonic() + 60
            while time.monotonic() < bound and _running(*recorder):
                time.sleep(0.1)
            if _running(*recorder):
                os.kill(recorder[0], signal.SIGKILL)
    records = [json.loads(line) for line in _lines(out)]
    written = Counter(record["target"]["input"] for record in records)
    answered = {site.url(path.decode()) for path in site.served if path.startswith(prefix)}
    assert len(answered) > recorder_module.IN_FLIGHT  # every slot was taken: some records awaited one
    assert max(written.values()) == 1 and set(written) <= answered  # each once, and only what was measured
    # Every target measured is in the file, but for those still measuring when Ctrl-C came (abandoned).
    assert len(written) >= len(answered) - concurrency, (len(written), len(answered))


def test_frames_the_pipe_cannot_take_yet_wait_in_order_and_the_loop_never_waits() -> None:
    """Frames larger than the pipe holds, written from the loop while nothing reads: kept in order and
    written as the pipe drains (the loop meanwhile runs on); a target past the slots awaits one; the
    other end's `Connection.recv` reads every frame whole."""
    receive, send = multiprocessing.Pipe(duplex=False)
    outbox = Outbox(send, 4)
    messages = [(n, bytes([n]) * (PIPE_SIZE // 3 + n)) for n in range(8)]
    received: list[Any] = []

    def read() -> None:
        for _ in messages:
            received.append(receive.recv())
            outbox.freed()

    async def hand_over() -> None:
        loop = asyncio.get_running_loop()
        for message in messages[:4]:
            assert outbox.try_take()
            outbox.put(message, loop)  # more than the pipe takes: never blocks
        assert outbox._buffer and not outbox.try_take()  # the rest waits for the pipe, a fifth for a slot
        reader = threading.Thread(target=read)
        reader.start()
        for message in messages[4:]:
            assert await outbox.slot()
            outbox.put(message, loop)
        while outbox._buffer:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(reader.join)

    try:
        asyncio.run(hand_over())
        assert received == messages
    finally:
        send.close()
        receive.close()


# --- a value JSON cannot carry -------------------------------------------------------------------


def test_a_hostile_status_line_costs_only_its_own_observations(site: Site, tmp_path: Path) -> None:
    """`HTTP/1.1 100000000000000000000 OK`: an integer beyond 64 bits, which orjson refuses. It
    killed the recorder, then the run's fallback on the same record: 7 of 40 records were written.
    Now such a status line is no status (three digits or nothing): the response is invalid, the line
    is kept as sent, and every target is measured with its observations."""
    urls = [site.url(f"/huge{n}" if n in (4, 20) else f"/ok{n}") for n in range(40)]
    out = tmp_path / "results"
    run = _probe(tmp_path, *_run_args(_targets(tmp_path / "targets.txt", urls), out, "--json"))
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode in (0, 1), stderr  # 1: the two invalid responses are findings
    assert "Traceback" not in stderr
    assert json.loads(stdout)["measured"] == 40
    records = {record["target"]["input"]: record for record in read_results(out)}
    assert sorted(records) == sorted(urls) and len(read_results(out)) == 40  # each target once
    for url in urls:
        record = records[url]
        if "/huge" in url:
            (request,) = record["observations"]["http_requests"]
            assert (request["status"], request["failure"]) == (None, "http_invalid_response")
            assert request["status_line"] == "HTTP/1.1 100000000000000000000 OK"
            assert record["blocking"] != "none" and "error" not in record
        else:
            assert record["blocking"] == "none" and "error" not in record


def _context(test_pki: PkiFixture) -> tuple[MeasureConfig, AnalysisContext, dict[str, Any], dict[str, Any]]:
    roots = load_roots(test_pki.roots_pem)
    config = MeasureConfig(timeout=1, roots=roots, resolver=None, control_resolver=None, control_sni=None)
    context = AnalysisContext(roots=roots, catalogs=load_catalogs(), documentation_is_public=True)
    network = {"resolver": "system", "system_resolver_addresses": [], "control_resolver": None, "helpers": [],
               "asn": None, "country": None}  # fmt: skip
    reference = {"roots": roots.describe(), "catalogs": {}, "control_sni": None, "documentation_addresses_public": True}
    return config, context, network, reference


def _observed(target: Any, config: Any, started: datetime) -> Observations:
    helpers: tuple[HelperAnswer, ...] = ()
    stage_error = None
    if target.host == "192.0.2.5":  # a helper's answer with a huge integer
        helpers = (HelperAnswer("https://helper.test", 200, None, helper_response({"ip_ttl": 10**30}), 0.0, 0.1),)
    if target.host == "192.0.2.7":  # text no JSON can carry
        stage_error = "half a character: \udc80"
    return Observations(None, (), (), (), addresses_from="literal", helpers=helpers, stage_error=stage_error)


async def _measured(
    target: Any, config: Any, started: datetime, critical_done: Any = None, begun: Any = None
) -> Measured:
    """A finished measurement, nothing left to wait for."""
    return Measured(_observed(target, config, started), None, Deadline(1))


@pytest.mark.parametrize("recorder", ["process", "inline"])
def test_a_value_json_cannot_carry_costs_only_its_own_observations(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path, recorder: str
) -> None:
    """A helper's answer with an integer beyond 64 bits, a lone surrogate: in the recorder process
    and in the run's thread alike, one record says why it has no observations, the rest are whole."""
    hosts = [f"192.0.2.{n}" for n in range(1, 13)]
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(hosts, 1)]
    monkeypatch.setattr(run_module, "measure_target", _measured)
    if recorder == "inline":
        monkeypatch.setattr(recorder_module.sys, "platform", "darwin")
    else:  # earlier tests leave idle threads behind; a run forks before it starts any
        monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    config, context, network, reference = _context(test_pki)
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 3, io.StringIO())
    records = {record["target"]["host"]: record for record in read_results(tmp_path)}
    assert summary.measured == len(hosts) and sorted(records) == sorted(hosts)
    assert "observations.helpers[0].response.ip_ttl: an integer beyond 64 bits" in records["192.0.2.5"]["error"]
    assert "observations.stage_error: text that is not UTF-8" in records["192.0.2.7"]["error"]
    for host in ("192.0.2.5", "192.0.2.7"):
        assert records[host]["observations"] is None and records[host]["blocking"] == "inconclusive"
    assert all(records[h]["blocking"] == "none" for h in hosts if h not in ("192.0.2.5", "192.0.2.7"))


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs: a few records fill it. Unmounted after, whatever happens."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "kzprobe-test-full", str(where)], check=True)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_group_that_does_not_fit_keeps_as_many_whole_records_as_fit(small_disk: Path) -> None:
    """A full disk mid-group: the group is cut back, then its records are written one by one, as
    many as fit (each whole and synced), and the error says where the run stopped."""
    from datetime import UTC

    writer = ResultsWriter(small_disk, "0" * 32, datetime.now(UTC))
    lines = [json.dumps({"n": n, "pad": "x" * 9000}).encode() + b"\n" for n in range(20)]  # 180 KB
    written = writer.write_group(lines)
    assert 1 <= written < len(lines)
    assert writer.path.read_bytes() == b"".join(lines[:written])  # whole lines only, the ones counted
    assert writer.failure is not None and "every record before it is whole" in str(writer.failure)
    assert writer.write_group(lines[written:]) == 0  # nothing after it
    writer.close()


@pytest.mark.parametrize("recorder", ["process", "inline"])
def test_a_full_disk_stops_the_run_with_only_whole_records_in_the_file(
    site: Site,
    small_disk: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    recorder: str,
) -> None:
    """The disk fills up mid-line: the line is cut back, no later line is appended to half of it,
    and the run stops with exit code 5 and a message saying so (no traceback)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    if recorder == "process":  # the site's threads run in this process; the run forks before its own
        monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    else:
        monkeypatch.setattr(recorder_module.sys, "platform", "darwin")
    urls = [site.url(f"/big{n}") for n in range(30)]
    targets = _targets(tmp_path / "targets.txt", urls)
    code = main(_run_args(targets, small_disk, "--no-forensics", "--concurrency", "2", "--quiet"))
    err = capfd.readouterr().err
    assert code == 5, err
    assert "No space left on device; the run stopped: every record before it is whole" in err
    assert "Traceback" not in err
    lines = _lines(small_disk)
    assert 1 <= len(lines) < len(urls)
    assert len({json.loads(line)["target"]["input"] for line in lines}) == len(lines)


# --- a recorder dying between writing a record and confirming it ----------------------------------


@pytest.mark.parametrize("moment", ["after_the_line", "mid_line"])
def test_a_recorder_dying_before_it_confirms_a_record_makes_no_duplicate(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path, moment: str
) -> None:
    """The recorder killed right after writing a record (before its confirmation reached the run),
    or half way through writing it: the run takes over, and writes each record once, whole."""
    run_pid = os.getpid()
    hosts = [f"192.0.2.{n}" for n in range(10, 50)]
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(hosts, 1)]
    write_lines = ResultsWriter.write_lines

    def write_then_die(self: ResultsWriter, lines: list[bytes]) -> None:
        marked = [n for n, line in enumerate(lines) if b'"192.0.2.20"' in line]
        if os.getpid() != run_pid and marked:
            if moment == "mid_line":  # the lines before it whole, then half of it
                for line in lines[: marked[0]]:
                    os.write(self._fd, line)
                os.write(self._fd, lines[marked[0]][: len(lines[marked[0]]) // 2])
            else:
                write_lines(self, lines)
            os._exit(9)  # as if the kernel had killed the recorder there
        write_lines(self, lines)

    synced_by_the_run: list[int] = []
    sync = ResultsWriter.sync

    def counted_sync(self: ResultsWriter) -> None:
        if os.getpid() == run_pid:
            synced_by_the_run.append(self.path.read_bytes().count(b"\n"))
        sync(self)

    monkeypatch.setattr(run_module, "measure_target", _measured)
    monkeypatch.setattr(ResultsWriter, "write_lines", write_then_die)
    monkeypatch.setattr(ResultsWriter, "sync", counted_sync)
    monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    config, context, network, reference = _context(test_pki)
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 4, io.StringIO())
    records = read_results(tmp_path)  # whole lines only
    assert summary.measured == len(hosts)
    assert sorted(r["target"]["host"] for r in records) == sorted(hosts)  # each once: none lost, none twice
    assert len({r["measurement_id"] for r in records}) == len(records)
    if moment == "after_the_line":  # its whole group written, none confirmed: synced before it is counted
        assert synced_by_the_run and synced_by_the_run[0] >= 1


# --- the packet capture failing mid-run ----------------------------------------------------------


def test_a_capture_that_stops_mid_run_is_said_in_every_later_record_and_the_summary(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The capture's sockets closed under its thread: it stops, and every record completed after
    that says so (`observations.forensics.capture`: stopped, and why), as does the summary; the
    records completed before it still say `done`."""
    from probe.forensics.capability import raw_capability

    if raw_capability() is not None:
        pytest.skip(f"packet forensics needs CAP_NET_RAW: {raw_capability()}")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    out = tmp_path / "results"
    urls = [site.url(f"/ok{n}") for n in range(6)]
    measure = run_module.measure_target

    async def measure_or_break_the_capture(
        target: Any, config: Any, started: datetime, critical_done: Any, begun: Any = None
    ) -> Any:
        if target.input == urls[3]:  # the first three are recorded; then the capture fails
            bound = time.monotonic() + 60
            while time.monotonic() < bound and sum(p.read_bytes().count(b"\n") for p in out.rglob("*.jsonl")) < 3:
                await asyncio.sleep(0.05)
            for sock in config.capture._sockets:
                sock.close()
            config.capture._thread.join(30)
        return await measure(target, config, started, critical_done, begun)

    monkeypatch.setattr(run_module, "measure_target", measure_or_break_the_capture)
    code = main(_run_args(_targets(tmp_path / "targets.txt", urls), out, "--concurrency", "1", "--json"))
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    records = {record["target"]["input"]: record for record in read_results(out)}
    states = [records[url]["observations"]["forensics"]["capture"] for url in urls]
    assert [state["status"] for state in states] == ["done"] * 3 + ["stopped"] * 3
    assert all(state["reason"].startswith("the packet capture stopped mid-run: ") for state in states[3:])
    assert summary["capture_stopped"] == states[3]["reason"]
    told = run_module.format_summary(run_module.RunSummary(out, 6, capture_stopped=summary["capture_stopped"]))
    assert f"Packet forensics: {summary['capture_stopped']}; the records completed after it say so." in told


# --- a recorder that fell behind -----------------------------------------------------------------


def test_a_recorder_behind_writes_what_waits_with_one_sync_and_confirms_it_after(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Records waiting in the recorder's inbox are written as one group and synced once (a sync per
    record made the run's end wait for the disk a hundred times); each is confirmed, in order, only
    once the sync is done; and the group before a stop is still written."""
    from datetime import UTC

    from probe.run.recorder_process import write_groups
    from probe.vocabulary.anomalies import Blocking, Confidence

    writer = ResultsWriter(tmp_path, "0" * 32, datetime.now(UTC))
    inbox, send = multiprocessing.Pipe(duplex=False)
    receive, outbox = multiprocessing.Pipe(duplex=False)
    synced: list[tuple[int, bool]] = []  # the file's size at each sync, and whether a verdict was out yet
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_size, receive.poll()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    verdict = recorder_module.Verdict(Blocking.NONE, Confidence.UNCONFIRMED, None)
    lines = [json.dumps({"n": n}).encode() + b"\n" for n in range(12)]
    for key, line in enumerate(lines):
        send.send((key, recorder_module.Encoded(line, verdict)))
    send.send(None)
    write_groups(inbox, outbox, recorder_module._line_of(None, None), writer)  # type: ignore[arg-type]
    assert synced == [(sum(len(line) for line in lines), False)]  # one sync, after the lines, before any verdict
    assert writer.path.read_bytes() == b"".join(lines)
    confirmed = [receive.recv() for _ in lines]
    assert [key for key, _ in confirmed] == list(range(12))
    assert all(answer == verdict for _, answer in confirmed)
    assert not receive.poll(0.1)  # nothing more: the run said stop
    writer.close()


def test_a_recorder_that_judges_slowly_but_steadily_is_not_taken_for_stuck(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    """At a run's end a recorder that confirms nothing for STALLED seconds is killed and the run takes
    over: a group is closed after GROUP_SECONDS of judging, so that heavy records (0.15 s each, a
    group of 32 would take 4.8 s) still show progress, and nothing is taken over."""
    run_pid = os.getpid()
    real = recorder_module.record_line

    def slow(item: Any, run: Any, analysis: Any) -> Any:
        if os.getpid() != run_pid:
            time.sleep(0.15)
        return real(item, run, analysis)

    taken: list[str] = []
    submit, found = recorder_module.InlineRecorder.submit, recorder_module.InlineRecorder.found

    def counted_submit(self: Any, item: Any) -> None:
        taken.append(item.target.host)
        submit(self, item)

    def counted_found(self: Any, item: Any, record: Any) -> None:
        taken.append(item.target.host)
        found(self, item, record)

    monkeypatch.setattr(recorder_module, "record_line", slow)
    monkeypatch.setattr(recorder_module, "STALLED", 1.0)
    monkeypatch.setattr(recorder_module.InlineRecorder, "submit", counted_submit)
    monkeypatch.setattr(recorder_module.InlineRecorder, "found", counted_found)
    monkeypatch.setattr(run_module, "measure_target", _measured)
    monkeypatch.setattr(recorder_module.threading, "active_count", lambda: 1)
    hosts = [f"192.0.2.{n}" for n in range(10, 50)]
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(hosts, 1)]
    config, context, network, reference = _context(test_pki)
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 4, io.StringIO())
    assert summary.measured == len(hosts)
    assert sorted(r["target"]["host"] for r in read_results(tmp_path)) == sorted(hosts)
    assert taken == []  # never killed as stuck: nothing taken over
