"""The shipped systemd unit, run as it runs (docs/examples/kz-probe.service; issue 20).

systemd cannot run here (no init in a test's sandbox), so its restrictions are emulated from the unit
file itself: the unit is parsed, and its own ExecStart (with only /opt/kz-probe replaced by the test's
venv, made as docs/operating.md says) runs
- as an unprivileged user (`User=`; `nobody`), with the capabilities of AmbientCapabilities= and
  CapabilityBoundingSet= and no new privileges (`setpriv`), at its Nice=;
- with the environment systemd gives a service: its PATH, USER, HOME (a read-only directory:
  ProtectHome=yes), STATE_DIRECTORY and CACHE_DIRECTORY (StateDirectory=, CacheDirectory=, under a
  temporary directory standing in for /var/lib and /var/cache, owned by that user), Environment=;
- in WorkingDirectory=, in a mount namespace of its own where /etc/kz-probe/config.toml (the path
  the unit names) is the test's (an overlay on /etc), /home, /root and /run/user are empty and
  inaccessible (ProtectHome=yes), /tmp and /var/tmp are its own (PrivateTmp=yes), and everything but
  the state and cache directories, /dev, /proc and /sys is read-only (ProtectSystem=strict);
- in a network namespace with no route out of the lab: a world next door (a resolver, a site over
  TLS and HTTP, an object store for --upload, all on documentation addresses), or nothing at all.
A [Service] setting the emulation does not know fails the test: emulate it before shipping it.
`systemd-analyze verify` checks the unit's syntax in tests/test_operations.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from probe.cli import commands
from tests.conftest import PkiFixture
from tests.systemd_unit import SYSTEMD_PATH, Sandbox, Unit, service
from tests.wheelenv import Installed

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "docs" / "examples" / "kz-probe.service"
CLIENT, WORLD, RESOLVER, STORE_PORT = "192.0.2.10", "192.0.2.20", "192.0.2.53", 9000
SITE = "site.lab"

pytestmark = pytest.mark.timeout(900)  # the first test to ask for the venv builds it (a minute or two)


# --- the lab: a world next door on documentation addresses, and a namespace with nothing ------------

WORLD_SERVER = r"""
import http.server, ssl, sys, threading
import boto3, dns.message, dns.query
from moto.server import ThreadedMotoServer

world, port, cert, key, resolver, site = sys.argv[1:7]
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html><head><title>A site</title></head><body>Nothing to see.</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
class Tls(http.server.ThreadingHTTPServer):
    def get_request(self):
        sock, address = self.socket.accept()
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address
for server in (http.server.ThreadingHTTPServer((world, 80), Page), Tls((world, 443), Page)):
    threading.Thread(target=server.serve_forever, daemon=True).start()
ThreadedMotoServer(ip_address=world, port=int(port), verbose=False).start()
boto3.client("s3", endpoint_url=f"http://{world}:{port}", region_name="us-east-1", aws_access_key_id="lab",
             aws_secret_access_key="lab").create_bucket(Bucket="monitoring")
for _ in range(100):
    try:
        dns.query.udp(dns.message.make_query(site, "A"), resolver, timeout=0.1)
        break
    except Exception:
        pass
print("ready", flush=True)
threading.Event().wait()
"""

STORED = r"""
import json, sys, boto3
store = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="lab",
                     aws_secret_access_key="lab")
print(json.dumps([o["Key"] for o in store.list_objects_v2(Bucket="monitoring").get("Contents", [])]))
"""


@dataclass(frozen=True)
class Lab:
    client: str  # a veth to the world: 192.0.2.0/24 only
    offline: str  # nothing at all: no interface up, no route
    world: str
    roots: Path  # the lab's reference roots

    def stored(self) -> list[str]:
        """The keys in the world's object store."""
        command = ["ip", "netns", "exec", self.world, sys.executable, "-c", STORED, f"http://{WORLD}:{STORE_PORT}"]
        return list(json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout))


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts, another user)"
    tools = ("ip", "unshare", "setpriv", "nice", "dnsmasq", "awk")
    absent = [tool for tool in tools if shutil.which(tool, path=f"{SYSTEMD_PATH}:{os.environ.get('PATH', '')}") is None]
    if absent:
        return f"needs {', '.join(absent)}"
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode != 0:
        return "needs mount namespaces (unshare --mount)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture(scope="module")
def lab(test_pki: PkiFixture) -> Iterator[Lab]:
    missing = _missing()
    if missing:
        pytest.skip(f"the unit's run under its restrictions {missing}")
    tag = f"u20-svc-{os.getpid()}"
    client, world, offline = f"{tag}-c", f"{tag}-w", f"{tag}-o"
    processes: list[subprocess.Popen[str]] = []
    try:
        for namespace in (client, world, offline):
            _ip("netns", "add", namespace)
            (Path("/etc/netns") / namespace).mkdir(parents=True)
            (Path("/etc/netns") / namespace / "resolv.conf").write_text(f"nameserver {RESOLVER}\n", encoding="ascii")
        inner, outer = f"u20c{os.getpid() % 100000}", f"u20w{os.getpid() % 100000}"
        _ip("link", "add", inner, "netns", client, "type", "veth", "peer", "name", outer, "netns", world)
        for namespace, device, addresses in ((client, inner, (CLIENT,)), (world, outer, (WORLD, RESOLVER))):
            for address in addresses:
                _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", namespace, "link", "set", device, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        cert, key = test_pki.leaf_files(test_pki.public_intermediate, [SITE], "service-site")
        in_world = ["ip", "netns", "exec", world]
        processes.append(subprocess.Popen(
            [*in_world, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--bind-interfaces", f"--listen-address={RESOLVER}", "--port=53", "--user=root", "--pid-file=",
             f"--address=/{SITE}/{WORLD}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        ))  # fmt: skip
        server = subprocess.Popen(
            [*in_world, sys.executable, "-c", WORLD_SERVER, WORLD, str(STORE_PORT), str(cert), str(key), RESOLVER,
             SITE],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        processes.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the world did not start"
        yield Lab(client, offline, world, test_pki.roots_pem)
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for namespace in (client, world, offline):
            _ip("netns", "delete", namespace, check=False)
            shutil.rmtree(Path("/etc/netns") / namespace, ignore_errors=True)


CONFIG = """\
# The operator's file, at the path the unit names: only lab addresses.
control_resolver = "udp://{resolver}"
control_sni = "none"
roots = "{roots}"
timeout = 5
lab = true
[upload]
to = "s3://monitoring/kz"
endpoint = "http://{world}:{port}"
"""


@pytest.fixture
def sandbox(installed: Installed, lab: Lab) -> Iterator[Sandbox]:
    """A stand-in for /var/lib, /var/cache and /etc/kz-probe as the operating guide sets them up."""
    if not installed.shared:
        pytest.skip("no python3 that the service's user can run (outside /root and /home) to make its venv from")
    base = Path(tempfile.mkdtemp(prefix="kz-probe-service-"))
    try:
        base.chmod(0o755)
        svc = service(Unit.parse(UNIT), installed.venv, base)
        roots = base / "lab-roots.pem"
        shutil.copy(lab.roots, roots)
        roots.chmod(0o644)
        svc.home.mkdir(mode=0o555)
        for directory in (svc.state, svc.cache):  # made by systemd, owned by the service's user
            directory.mkdir(parents=True)
            os.chown(directory, svc.user.pw_uid, svc.user.pw_gid)
        (svc.state / "targets.txt").write_text(f"{SITE}\n", encoding="utf-8")  # the operator's own list
        etc = base / "etc"
        keep = (installed.venv.parent, base)
        for n in range(len(keep)):
            (etc / "upper" / ".kz-keep" / str(n)).mkdir(parents=True)
        (etc / "work").mkdir()
        settings = etc / "upper" / "kz-probe"
        settings.mkdir()
        files = {
            "config.toml": CONFIG.format(resolver=RESOLVER, roots=roots, world=WORLD, port=STORE_PORT),
            "aws-credentials": "[default]\naws_access_key_id = lab\naws_secret_access_key = lab\n",
        }
        for name, text in files.items():  # install -m 640 -g kzprobe
            (settings / name).write_text(text, encoding="utf-8")
            os.chown(settings / name, 0, svc.user.pw_gid)
            (settings / name).chmod(0o640)
        yield Sandbox(svc, etc, keep)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _summary(result: subprocess.CompletedProcess[str]) -> dict:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.strip(), f"exit {result.returncode}, no summary on stdout\n{result.stderr[-4000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["exit_code"] == result.returncode, result.stderr
    return summary


def _records(path: Path) -> list[dict]:
    import zstandard

    text = zstandard.ZstdDecompressor().stream_reader(path.read_bytes()).read().decode("utf-8")
    return [json.loads(line) for line in text.splitlines()]


# --- the tests ---------------------------------------------------------------------------------------


def test_only_0_and_1_are_a_success_of_the_service() -> None:
    """Findings are results; offline, a lost upload, no state or a crash mark the unit failed."""
    success = Unit.parse(UNIT).success()
    assert success == {commands.EXIT_OK, commands.EXIT_BLOCKING}
    codes = {value for name, value in vars(commands).items() if name.startswith("EXIT_")}
    failures = codes - {commands.EXIT_OK, commands.EXIT_BLOCKING}
    assert failures >= {2, 3, 4, 5, 6, 7, 8, 70} and not failures & success


@pytest.mark.wheel
def test_the_sandbox_holds_the_units_restrictions(sandbox: Sandbox, lab: Lab) -> None:
    """The emulation is not vacuous: as the service's user, only the state and cache directories and
    a private /tmp can be written, the homes cannot be read, and CAP_NET_RAW is held."""
    svc = sandbox.service
    script = (
        'id -u; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; pwd; '
        "cat /etc/kz-probe/config.toml >/dev/null && echo config; "
        'for place in "$HOME" /etc "$1" /usr "$STATE_DIRECTORY" "$CACHE_DIRECTORY" /tmp /var/tmp; do '
        'touch "$place/.kz-written" 2>/dev/null && echo "writable $place"; done; '
        "ls /home >/dev/null 2>&1 || echo private"
    )
    result = sandbox.run(lab.client, ["/bin/sh", "-c", script, "sh", str(sandbox.keep[0])])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [str(svc.user.pw_uid), "CapEff:\t0000000000002000"], lines  # CAP_NET_RAW (13) alone
    assert lines[2:] == ["NoNewPrivs:\t1", str(svc.workdir), "config", f"writable {svc.state}", f"writable {svc.cache}",
                         "writable /tmp", "writable /var/tmp", "private"]  # fmt: skip
    assert not (Path("/tmp") / ".kz-written").exists()  # the service's /tmp was its own


@pytest.mark.wheel
def test_the_shipped_unit_measures_uploads_and_keeps_one_id_and_offline_fails_it(sandbox: Sandbox, lab: Lab) -> None:
    """The unit's own command line, under its restrictions: a run that measured exits 0 (nothing is
    blocked in this lab), a success for the unit, with its results and its state where the unit says
    and its file in the object store; a second run keeps the installation id; a run with no network
    exits 3, a failure of the unit; and nothing is written in HOME."""
    svc = sandbox.service
    keys, identity = [], None
    for attempt in (1, 2):
        result = sandbox.run(lab.client)
        summary = _summary(result)
        assert result.returncode == commands.EXIT_OK and result.returncode in svc.success, result.stderr
        assert (summary["exit_reason"], summary["measured"], summary["offline"]) == ("completed", 1, None)
        results = svc.workdir / summary["results_file"]  # relative to WorkingDirectory=
        assert results.is_file() and results.resolve().is_relative_to(svc.state / "results"), results
        assert results.name.endswith(".jsonl.zst") and results.stat().st_uid == svc.user.pw_uid
        kept = (svc.state / "installation-id").read_text(encoding="ascii").strip()
        identity = identity or kept
        assert kept == identity, f"run {attempt} made a new installation id"
        (record,) = _records(results)
        assert (record["probe_id"], record["target"]["host"], record["blocking"]) == (identity, SITE, "none")
        assert record["observations"]["forensics"]["capture"] == {"status": "done"}  # AmbientCapabilities=
        (key,) = summary["upload"]["sent"]
        assert key.startswith(f"kz/{identity}/") and key.endswith(results.name)
        keys.append(key)
    assert sorted(lab.stored()) == sorted(keys)

    result = sandbox.run(lab.offline)
    summary = _summary(result)
    assert result.returncode == commands.EXIT_OFFLINE and result.returncode not in svc.success
    assert (summary["exit_reason"], summary["offline"], summary["measured"]) == ("offline", "no_route", 0)
    assert "probe: " in result.stderr  # said for the journal, though the run is --quiet
    assert (svc.state / "installation-id").read_text(encoding="ascii").strip() == identity

    assert list(svc.home.iterdir()) == []
    expected = {"targets.txt", "installation-id", "consent.json", "uploads.json", "results"}
    assert {p.name for p in svc.state.iterdir()} <= expected
