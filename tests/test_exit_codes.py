"""A run that failed says so, to cron and to the volunteer (issue 20): a dead uplink is "no
internet" from evidence, the exit codes and the summary agree with one documented table, usage
errors are 2, a crash is not "blocking found", and the state lives where a service can write it.

The network tests run the probe in namespaces of their own (prefix x20), with lab addresses only:
a dead uplink is a default route through a veth peer that forwards nothing and drops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.cli.main import main
from tests.conftest import read_results

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "operating.md"
UNIT = ROOT / "docs" / "examples" / "kz-probe.service"
DEAD_TARGETS = "https://site-a.example/\nsite-b.example\n203.0.113.10\nhttp://203.0.113.11/\n"
# Every resolver, control and helper a lab address that nothing answers; small timeouts.
LAB_ARGS = ["--resolver", "203.0.113.1", "--control-resolver", "udp://203.0.113.53", "--control-sni",
            "control.example", "--helper", "https://203.0.113.80/", "--lab", "--os-store", "none", "--timeout", "1",
            "--dns-window", "0.2", "--target-deadline", "3", "--concurrency", "4", "--no-forensics",
            "--yes"]  # fmt: skip

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None,
    reason="needs root, ip netns and unshare",
)


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


@contextlib.contextmanager
def namespace(role: str, dead_uplink: bool = False) -> Iterator[str]:
    """A network namespace `x20<role><pid>` with loopback up and its own resolv.conf. With
    `dead_uplink`, a default route through a veth peer (a second namespace) that forwards nothing and
    drops every packet: a modem whose line is down. Torn down whatever happens."""
    name, peer = f"x20{role}{os.getpid()}", f"x20{role}p{os.getpid()}"
    made = [name, peer] if dead_uplink else [name]
    try:
        for each in made:
            _ip("netns", "add", each)
            conf = Path("/etc/netns") / each
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "resolv.conf").write_text("nameserver 203.0.113.1\n", encoding="utf-8")
            _ip("-n", each, "link", "set", "lo", "up")
        if dead_uplink:
            _ip("link", "add", "x20up", "netns", name, "type", "veth", "peer", "name", "x20dn", "netns", peer)
            _ip("-n", name, "addr", "add", "198.51.100.2/30", "dev", "x20up")
            _ip("-n", peer, "addr", "add", "198.51.100.1/30", "dev", "x20dn")
            _ip("-n", name, "link", "set", "x20up", "up")
            _ip("-n", peer, "link", "set", "x20dn", "up")
            _ip("-n", name, "route", "add", "default", "via", "198.51.100.1")
            if shutil.which("iptables"):  # a peer that does not forward drops already; this drops the rest
                for chain in ("INPUT", "FORWARD"):
                    subprocess.run(["ip", "netns", "exec", peer, "iptables", "-A", chain, "-j", "DROP"],
                                   check=True, capture_output=True, timeout=30)  # fmt: skip
        yield name
    finally:
        for each in made:
            _ip("netns", "del", each, check=False)
            shutil.rmtree(Path("/etc/netns") / each, ignore_errors=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path / "home"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def _probe(ns: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "probe", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env or _env(tmp_path))  # fmt: skip


# --- 1. a dead uplink is no internet, from evidence ----------------------------------------------------


@needs_namespaces
def test_a_dead_uplink_is_no_internet_said_recorded_and_a_failure(tmp_path: Path) -> None:
    """A default route and nothing answering: the routing table says online, the evidence says no
    internet. Before: every site judged alone, two "blocked", exit 1 (and 0 with hostnames only)."""
    (tmp_path / "targets.txt").write_text(DEAD_TARGETS, encoding="utf-8")
    with namespace("d", dead_uplink=True) as ns:
        plain = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "plain", *LAB_ARGS)
        machine = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "json", *LAB_ARGS,
                         "--json", "--quiet")  # fmt: skip
    assert plain.returncode == 3, plain.stdout + plain.stderr
    assert "No internet" in plain.stdout and "nothing is claimed about any site" in plain.stdout
    assert "Measured 0 of 4 targets" in plain.stdout and "4 sites not measured" in plain.stdout
    assert "sites blocked" not in plain.stdout
    records = read_results(tmp_path / "plain")
    assert [r["blocking"] for r in records] == ["offline"] * 4
    assert {r["offline"] for r in records} == {"no_internet"}
    assert all(r["observations"] is not None for r in records)  # the evidence is kept
    assert all(r["anomalies"] == ["network.offline"] and r["confidence"] == "unconfirmed" for r in records)

    assert machine.returncode == 3, machine.stderr
    summary = json.loads(machine.stdout)
    assert summary["exit_code"] == 3 and summary["exit_reason"] == "offline" and summary["offline"] == "no_internet"
    assert (summary["targets"], summary["measured"], summary["not_measured"]) == (4, 0, 4)
    assert summary["verdicts"] == {"offline": 4} and summary["findings"] == []
    assert "No internet" in machine.stderr  # --quiet prints errors only: this is one (cron mails it)


def _record(observations: dict | None, **fields: object) -> dict:
    return {"observations": observations, "blocking": "inconclusive", **fields}


def _lookup(failure: str | None, rcode: str | None = None) -> dict:
    return {"failure": failure, "queries": [{"failure": failure, "rcode": rcode, "replies": []}]}


def _timeout() -> dict:
    return {"dns": {"control": _lookup("generic_timeout_error")}, "tcp_connect": [], "tls_handshakes": [],
            "helpers": [{"failure": "generic_timeout_error", "status": None}]}  # fmt: skip


@pytest.mark.parametrize(
    ("case", "records", "verdict"),
    [
        ("every control failed, nothing answered", [_timeout(), _timeout()], True),
        (
            "one control resolver answered NXDOMAIN",
            [_timeout(), {"dns": {"control": _lookup("dns_nxdomain_error", "NXDOMAIN")}}],
            False,
        ),  # fmt: skip
        ("a connection was made", [_timeout(), {**_timeout(), "tcp_connect": [{"failure": None}]}], False),
        (
            "a helper answered, even an error",
            [_timeout(), {**_timeout(), "helpers": [{"failure": "x", "status": 401}]}],
            False,
        ),  # fmt: skip
        (
            "no control was asked at all",
            [{"dns": None, "tcp_connect": [{"failure": "generic_timeout_error", "purpose": "target"}]}],
            False,
        ),  # fmt: skip
    ],
)
def test_no_internet_needs_every_control_failed_and_no_answer(
    tmp_path: Path, case: str, records: list[dict], verdict: bool
) -> None:
    from probe.results.offline import no_internet

    path = tmp_path / "run.jsonl"
    lines = [_record(o) for o in records] + [_record(None, not_measured="deadline"), _record(None, error="a bug")]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    assert no_internet(path) is verdict, case


def test_probe_analyze_keeps_a_no_internet_record_offline(test_pki: object) -> None:
    from probe.analyze.catalog import Catalogs
    from probe.loaders.roots import load_roots
    from probe.results.rejudge import rejudge_record

    record = {"target": {"host": "site-a.example"}, "observations": _timeout(), "blocking": "offline",
              "offline": "no_internet", "measurement_start_time": "2026-11-29T06:10:00.000000Z",
              "reference": {}}  # fmt: skip
    again = rejudge_record(record, load_roots(test_pki.roots_pem), Catalogs(), None, "now")  # type: ignore[attr-defined]
    assert again["blocking"] == "offline" and again["offline"] == "no_internet"


# --- 2. the summary's counts agree -------------------------------------------------------------------


@needs_namespaces
def test_with_no_route_nothing_is_counted_as_measured(tmp_path: Path) -> None:
    """Before: "Measured 3 of 3 targets" above "3 sites not measured", and `measured: 3`."""
    (tmp_path / "targets.txt").write_text("https://site-a.example/\n203.0.113.10\nsite-b.example\n", encoding="utf-8")
    with namespace("r") as ns:
        plain = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "plain", *LAB_ARGS)
        machine = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "json", *LAB_ARGS, "--json")
    assert plain.returncode == 3 and "Measured 0 of 3 targets" in plain.stdout, plain.stdout + plain.stderr
    assert "No network" in plain.stdout and "3 sites not measured" in plain.stdout
    summary = json.loads(machine.stdout)
    assert (summary["measured"], summary["not_measured"], summary["offline"]) == (0, 3, "no_route")
    assert {r["offline"] for r in read_results(tmp_path / "plain")} == {"no_route"}


# --- 3. exit codes: usage errors are 2, a failed upload and a crash are failures -------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["upload", "{tmp}"], "expected --to s3://BUCKET/PREFIX"),
        (["upload", "{tmp}", "--to", "http://x"], "expected --to s3://BUCKET/PREFIX"),
        (["upload", "{tmp}/nowhere", "--to", "s3://b/p"], "nowhere: no such file or folder"),
        (["upload", "--to", "s3:///p", "{tmp}"], "no bucket"),
    ],
)
def test_upload_usage_errors_exit_2_and_promise_no_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "2026").mkdir()
    (tmp_path / "2026" / "20261129T061000Z-1a2b3c4d.jsonl").write_text("{}\n", encoding="utf-8")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    error = capsys.readouterr().err
    assert message in error and "resume" not in error and "Traceback" not in error


@pytest.mark.parametrize(
    "args",
    [
        ["show", "{tmp}/nowhere.jsonl"],
        ["report", "{tmp}/nowhere"],
        ["analyze", "{tmp}/nowhere"],
        ["config", "show", "--config", "{tmp}/nowhere.toml"],
        ["run", "--targets", "{tmp}/nowhere.txt"],
        ["run", "--config", "{tmp}/nowhere.toml"],
        ["helper", "serve", "--listen", "127.0.0.1:0", "--tls-cert", "{tmp}/x.pem", "--tls-key", "{tmp}/y.pem"],
    ],
)
def test_every_commands_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    error = capsys.readouterr().err
    assert error.startswith("probe: ") and ("nowhere" in error or "x.pem" in error)
    assert "Traceback" not in error


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["bogus"], ["run", "--timeout", "soon"], ["upload", "--colour"]):
        with pytest.raises(SystemExit) as ended:
            main(args)
        assert ended.value.code == 2
    capsys.readouterr()


@needs_namespaces
def test_upload_without_a_destination_is_refused_before_measuring(tmp_path: Path) -> None:
    """Before: every target measured first, then `got None`, and the run's own exit code."""
    (tmp_path / "targets.txt").write_text("203.0.113.10\n", encoding="utf-8")
    with namespace("u") as ns:
        result = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "results", *LAB_ARGS, "--upload")
    assert result.returncode == 2, result.stderr
    assert "--upload: expected --to s3://BUCKET/PREFIX" in result.stderr and "got nothing" in result.stderr
    assert not (tmp_path / "results").exists()  # nothing was measured


@needs_namespaces
def test_a_failed_upload_is_a_failure_even_when_blocking_was_found(tmp_path: Path) -> None:
    """A finding (no control, a refused connection: `tcp`) and a store that refuses: exit 7, not 1,
    which the unit would count as success. Before: 1."""
    (tmp_path / "targets.txt").write_text("127.0.0.1:9\n", encoding="utf-8")
    args = ["run", "--targets", "targets.txt", "--out", "results", *LAB_ARGS, "--control-resolver", "none",
            "--json", "--upload", "--upload-to", "s3://monitoring/kz",
            "--upload-endpoint", "http://127.0.0.1:9"]  # fmt: skip
    args.remove("--helper")
    args.remove("https://203.0.113.80/")
    env = _env(tmp_path, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    with namespace("f", dead_uplink=True) as ns:
        result = _probe(ns, tmp_path, *args, env=env)
    summary = json.loads(result.stdout)
    assert summary["findings"] and summary["offline"] is None, summary
    assert result.returncode == 7 and summary["exit_code"] == 7, result.stderr
    assert "probe: upload failed" in result.stderr and "failure" in summary["upload"]


def test_the_exit_code_when_several_apply() -> None:
    from probe.cli.commands import EXIT_BLOCKING, EXIT_INTERRUPTED, EXIT_OFFLINE, EXIT_OK, EXIT_UPLOAD_FAILED
    from probe.cli.commands.run import exit_code
    from probe.run.execute import RunSummary

    def summary(**fields: object) -> RunSummary:
        made = RunSummary(results_path=Path("x.jsonl"), total=1)
        for name, value in fields.items():
            setattr(made, name, value)
        return made

    found = Counter({"tls_mitm": 1})
    assert exit_code(summary(), True) == EXIT_OK
    assert exit_code(summary(verdicts=found), True) == EXIT_BLOCKING
    assert exit_code(summary(verdicts=found), False) == EXIT_UPLOAD_FAILED
    assert exit_code(summary(), False) == EXIT_UPLOAD_FAILED
    assert exit_code(summary(offline="no_internet"), False) == EXIT_OFFLINE
    assert exit_code(summary(offline="no_route", interrupted=True), False) == EXIT_INTERRUPTED


def test_a_crash_is_not_blocking_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no command expected exits 70 with its traceback; before: Python's 1, which
    reads as "blocking found" and which the unit counts as success."""
    from probe.cli.commands import show

    def broken(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(show, "command_show", broken)
    assert main(["show", str(tmp_path / "x.jsonl")]) == 70
    error = capsys.readouterr().err
    assert "internal error" in error and "RuntimeError: a bug" in error


def test_one_table_holds_every_exit_code_and_the_unit_counts_only_results_as_success() -> None:
    import probe.cli.commands as commands

    codes = {value for name, value in vars(commands).items() if name.startswith("EXIT_")}
    section = GUIDE.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert table == codes
    unit = UNIT.read_text(encoding="utf-8")
    assert re.search(r"^SuccessExitStatus=1$", unit, re.M)  # 0 and 1 (findings); 3, 7, 8, 70 are failures
    assert re.search(r"^ExecStart=/\S+/bin/probe run ", unit, re.M) and "/usr/bin/env" not in unit
    assert re.search(r"^StateDirectory=kz-probe$", unit, re.M) and re.search(r"^CacheDirectory=kz-probe$", unit, re.M)


# --- 5. the state directory: where a service can write it ------------------------------------------------


def _read_only_home(tmp_path: Path) -> list[str]:
    """The command prefix that runs a command with HOME mounted read-only, as ProtectHome=yes and
    ProtectSystem=strict leave it (root cannot write there either)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"',
            str(home)]  # fmt: skip


@needs_namespaces
def test_under_a_read_only_home_the_id_lives_in_the_state_directory(tmp_path: Path) -> None:
    """Before: a new installation id made silently on every run (so reports count each run as
    another probe), and no word of it."""
    (tmp_path / "targets.txt").write_text("203.0.113.10\n", encoding="utf-8")
    state = tmp_path / "state"
    state.mkdir()
    env = _env(tmp_path, XDG_DATA_HOME="", STATE_DIRECTORY=str(state))
    ids = []
    with namespace("s") as ns:
        for out in ("first", "second"):
            command = ["ip", "netns", "exec", ns, *_read_only_home(tmp_path), sys.executable, "-m", "probe",
                       "run", "--targets", "targets.txt", "--out", out, *LAB_ARGS]  # fmt: skip
            result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
            assert result.returncode == 3, result.stderr  # offline (no route): the id is what is checked
            ids.append(read_results(tmp_path / out)[0]["probe_id"])
        assert ids[0] == ids[1] == (state / "installation-id").read_text(encoding="ascii").strip()
        assert not list((tmp_path / "home").iterdir())

        env = _env(tmp_path, XDG_DATA_HOME="")  # no writable place at all
        command = ["ip", "netns", "exec", ns, *_read_only_home(tmp_path), sys.executable, "-m", "probe",
                   "run", "--targets", "targets.txt", "--out", "third", *LAB_ARGS]  # fmt: skip
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 8, result.stderr
    assert "cannot keep the installation id" in result.stderr and "STATE_DIRECTORY" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "third").exists()  # refused before measuring


def test_the_state_directory_follows_systemd_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.publish.identity import state_directory

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    assert state_directory() == tmp_path / "home" / ".local" / "share" / "kz-probe"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert state_directory() == tmp_path / "data" / "kz-probe"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert state_directory() == tmp_path / "xdg-state" / "kz-probe"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'lib'}:{tmp_path / 'other'}")
    assert state_directory() == tmp_path / "lib"  # systemd's own, as it is
