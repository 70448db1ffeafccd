"""A captive portal is named as such (issue 20): a hotel's or an airport's Wi-Fi before logging in
answers every name with the portal's address and redirects every plain-HTTP request to its login
page, while every control fails. The run says so, marks its records offline (`captive_portal`),
names the portal (never this machine's address) and exits 3; a dead uplink is still no internet,
and one blocked site is a finding, not a portal.

The network tests run the probe in namespaces of their own (prefix k20), lab addresses only: the
client's default route goes to a peer namespace that holds the portal (192.0.2.80, a tiny HTTP
server redirecting to http://portal.example/login) and its resolver (dnsmasq at 192.0.2.53), and
forwards nothing: no route to anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.results.offline import captive_portal
from tests.conftest import read_results

ROOT = Path(__file__).resolve().parents[1]
PORTAL, RESOLVER = "192.0.2.80", "192.0.2.53"
TARGETS = "http://site-a.example/\nhttp://site-b.example/\nhttps://site-c.example/\nsite-d.example\n203.0.113.10\n"
# Every resolver, control and helper a lab address; only the portal's two answer. Small timeouts.
LAB_ARGS = ["--resolver", RESOLVER, "--control-resolver", "udp://203.0.113.53", "--control-sni",
            "control.example", "--helper", "https://203.0.113.80/", "--lab", "--os-store", "none", "--timeout", "1",
            "--dns-window", "0.2", "--target-deadline", "3", "--concurrency", "5", "--no-forensics",
            "--yes"]  # fmt: skip

needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("dnsmasq") is None,
    reason="needs root, ip netns and dnsmasq",
)

# The portal: every path but /login redirects to the login page (a 200 there).
PORTAL_SERVER = """
import http.server, sys
class Portal(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/login"):
            body = b"<html><title>Log in</title>Welcome: log in to use the Wi-Fi</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
        else:
            body = b""
            self.send_response(302)
            self.send_header("Location", "http://portal.example/login")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], 80), Portal)
print("ready", flush=True)
server.serve_forever()
"""

WAIT_DNS = """
import sys, time, dns.message, dns.query
for _ in range(50):
    try:
        dns.query.udp(dns.message.make_query("portal.example", "A"), sys.argv[1], timeout=0.2)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(1)
"""


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


def _wait_ready(process: subprocess.Popen[str], label: str) -> None:
    """Wait (10 s at most) for a server's "ready" line."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=10) or process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{label} did not start (exit code {process.poll()})")


@contextlib.contextmanager
def lab(dns_rules: list[str] | None, portal: bool) -> Iterator[str]:
    """A client namespace whose default route goes to a peer namespace that forwards nothing. With
    `dns_rules`, dnsmasq answers at RESOLVER in the peer with them; with `portal`, the peer's HTTP
    server answers at PORTAL. Torn down whatever happens; yields the client's name."""
    client, peer = f"k20c{os.getpid()}", f"k20p{os.getpid()}"
    processes: list[subprocess.Popen[str]] = []
    try:
        for each in (client, peer):
            _ip("netns", "add", each)
            conf = Path("/etc/netns") / each
            conf.mkdir(parents=True, exist_ok=True)
            (conf / "resolv.conf").write_text(f"nameserver {RESOLVER}\n", encoding="utf-8")
            _ip("-n", each, "link", "set", "lo", "up")
        _ip("link", "add", "k20up", "netns", client, "type", "veth", "peer", "name", "k20dn", "netns", peer)
        _ip("-n", client, "addr", "add", "198.51.100.2/30", "dev", "k20up")
        _ip("-n", peer, "addr", "add", "198.51.100.1/30", "dev", "k20dn")
        _ip("-n", client, "link", "set", "k20up", "up")
        _ip("-n", peer, "link", "set", "k20dn", "up")
        _ip("-n", client, "route", "add", "default", "via", "198.51.100.1")
        subprocess.run(["ip", "netns", "exec", peer, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
        if dns_rules is not None:
            _ip("-n", peer, "addr", "add", f"{RESOLVER}/32", "dev", "lo")
            processes.append(subprocess.Popen(
                ["ip", "netns", "exec", peer, shutil.which("dnsmasq") or "dnsmasq", "--keep-in-foreground",
                 "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                 f"--listen-address={RESOLVER}", "--port=53", "--user=root", "--pid-file=", *dns_rules],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))  # fmt: skip
            waited = subprocess.run(["ip", "netns", "exec", client, sys.executable, "-c", WAIT_DNS, RESOLVER],
                                    capture_output=True, timeout=30)  # fmt: skip
            if waited.returncode != 0:
                raise RuntimeError("dnsmasq did not answer within 5 s")
        if portal:
            _ip("-n", peer, "addr", "add", f"{PORTAL}/32", "dev", "lo")
            server = subprocess.Popen(["ip", "netns", "exec", peer, sys.executable, "-c", PORTAL_SERVER, PORTAL],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
            processes.append(server)
            _wait_ready(server, "the portal's HTTP server")
        yield client
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for each in (client, peer):
            _ip("netns", "del", each, check=False)
            shutil.rmtree(Path("/etc/netns") / each, ignore_errors=True)


def _probe(ns: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path / "home"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "probe", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip


def _runs(ns: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """The run in plain words (results in `plain`), and with --json --quiet (results in `json`)."""
    (tmp_path / "targets.txt").write_text(TARGETS, encoding="utf-8")
    plain = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "plain", *LAB_ARGS)
    machine = _probe(ns, tmp_path, "run", "--targets", "targets.txt", "--out", "json", *LAB_ARGS, "--json", "--quiet")
    return plain, machine


@needs_namespaces
def test_a_captive_portal_is_named_recorded_offline_and_exits_3(tmp_path: Path) -> None:
    """Before: the portal's answers read as findings (a blockpage for every site), or as nothing
    at all, and the run exited 1 or 0; the volunteer was never told to log in."""
    with lab([f"--address=/#/{PORTAL}"], portal=True) as ns:
        plain, machine = _runs(ns, tmp_path)
    assert plain.returncode == 3, plain.stdout + plain.stderr
    assert "This network asks you to log in (a captive portal at portal.example): log in and run again" in plain.stdout
    assert "Measured 0 of 5 targets" in plain.stdout and "nothing is claimed about any site" in plain.stdout
    assert "No internet" not in plain.stdout and "198.51.100.2" not in plain.stdout + plain.stderr
    records = read_results(tmp_path / "plain")
    assert len(records) == 5 and {r["blocking"] for r in records} == {"offline"}
    assert {r["offline"] for r in records} == {"captive_portal"}
    assert all(r["observations"] is not None for r in records)  # the evidence is kept
    (results,) = (tmp_path / "plain").rglob("*.jsonl")
    shown = subprocess.run([sys.executable, "-m", "probe", "show", "--all", str(results)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert "offline (a captive portal: this network asked to log in)" in shown.stdout, shown.stdout + shown.stderr

    assert machine.returncode == 3, machine.stderr
    summary = json.loads(machine.stdout)
    assert (summary["exit_code"], summary["exit_reason"]) == (3, "offline")
    assert (summary["offline"], summary["portal"]) == ("captive_portal", "portal.example")
    assert (summary["measured"], summary["not_measured"], summary["verdicts"]) == (0, 5, {"offline": 5})
    assert "captive portal at portal.example" in machine.stderr  # --quiet prints errors only: this is one


@needs_namespaces
def test_a_dead_uplink_is_still_no_internet(tmp_path: Path) -> None:
    with lab(None, portal=False) as ns:
        plain, machine = _runs(ns, tmp_path)
    assert plain.returncode == 3 and "No internet" in plain.stdout, plain.stdout + plain.stderr
    assert "captive portal" not in plain.stdout
    assert {r["offline"] for r in read_results(tmp_path / "plain")} == {"no_internet"}
    summary = json.loads(machine.stdout)
    assert (summary["offline"], summary["portal"]) == ("no_internet", None)


@needs_namespaces
def test_one_blocked_site_is_a_finding_not_a_portal(tmp_path: Path) -> None:
    """One name answered with the blockpage's address (which redirects), the others with their own
    (unreachable) addresses, every control failing: not a portal, and not offline."""
    rules = [f"--address=/site-a.example/{PORTAL}", f"--address=/portal.example/{PORTAL}",
             "--address=/site-b.example/203.0.113.21", "--address=/site-c.example/203.0.113.22",
             "--address=/site-d.example/203.0.113.23", "--address=/control.example/203.0.113.24"]  # fmt: skip
    with lab(rules, portal=True) as ns:
        plain, machine = _runs(ns, tmp_path)
    assert plain.returncode in (0, 1), plain.stdout + plain.stderr
    assert "captive portal" not in plain.stdout and "No internet" not in plain.stdout
    records = read_results(tmp_path / "plain")
    assert len(records) == 5 and not any(r.get("offline") for r in records)
    summary = json.loads(machine.stdout)
    assert (summary["offline"], summary["portal"]) == (None, None)


# --- the rule, on records ------------------------------------------------------------------------------


def _lookup(*addresses: str, failure: str | None = None) -> dict:
    answers = [{"name": "x", "type": "A", "ttl": 0, "data": a} for a in addresses]
    return {"addresses": list(addresses), "failure": failure,
            "queries": [{"failure": failure, "rcode": None if failure else "NOERROR", "answers": answers,
                         "replies": []}]}  # fmt: skip


def _record(host: str | None, system: tuple[str, ...] = (), location: str | None = None, **controls: object) -> dict:
    dns = None
    if host:
        dns = {"system": _lookup(*system), "control": _lookup(failure="generic_timeout_error"), **controls}
    requests = [{"redirect_index": 0, "status": 302, "location": location, "address": PORTAL}] if location else []
    observations = {
        "dns": dns,
        "tcp_connect": [{"failure": None, "address": PORTAL, "purpose": "target"}],
        "tls_handshakes": [{"failure": "connection_refused", "purpose": "control_sni"}],
        "helpers": [{"failure": "generic_timeout_error", "status": None}],
        "http_requests": requests,
    }
    return {"target": {"host": host or "203.0.113.10"}, "observations": observations, "blocking": "inconclusive"}


def _portal(tmp_path: Path, records: list[dict]) -> str | None:
    path = tmp_path / "run.jsonl"
    lines = [*records, {"observations": None, "not_measured": "deadline"}, {"observations": None, "error": "a bug"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return captive_portal(path)


def test_every_name_answered_with_one_address_is_a_portal_named_by_its_address(tmp_path: Path) -> None:
    records = [_record(f"site-{n}.example", (PORTAL,)) for n in "abc"] + [_record(None)]
    assert _portal(tmp_path, records) == PORTAL


def test_the_login_host_is_named_when_the_redirects_point_at_it(tmp_path: Path) -> None:
    records = [_record(f"site-{n}.example", (PORTAL,), "http://portal.example/login") for n in "ab"]
    records += [_record("site-c.example", (PORTAL,)), _record("site-d.example", (PORTAL,))]
    assert _portal(tmp_path, records) == "portal.example"
    # the system resolver works, but every HTTP request is redirected to one login host
    records = [_record(f"site-{n}.example", (f"203.0.113.{i}",), "http://login.example/") for i, n in enumerate("abc")]
    assert _portal(tmp_path, records) == "login.example"


@pytest.mark.parametrize(
    ("case", "records"),
    [
        (
            "one blocked site",
            [
                _record("site-a.example", (PORTAL,)),
                _record("site-b.example", ("203.0.113.21",)),
                _record("site-c.example", ("203.0.113.22",)),
            ],
        ),  # fmt: skip
        (
            "a control resolver answered",
            [
                _record("site-a.example", (PORTAL,)),
                _record("site-b.example", (PORTAL,)),
                _record("site-c.example", (PORTAL,), control=_lookup("203.0.113.9")),
            ],
        ),  # fmt: skip
        (
            "redirects to the site's own https",
            [
                _record(f"site-{n}.example", (f"203.0.113.{i}",), f"https://www.site-{n}.example/")
                for i, n in enumerate("abc")
            ],
        ),  # fmt: skip
        ("the volunteer's own address, scrubbed", [_record(f"site-{n}.example", ("[scrubbed]",)) for n in "abc"]),
        (
            "a blocklist: the resolver answers an ordinary name",
            [_record(f"site-{n}.example", (PORTAL,), resolver_baseline=_lookup("203.0.113.50")) for n in "abc"],
        ),  # fmt: skip
        (
            "no control asked",
            [
                {
                    **_record(f"site-{n}.example", (PORTAL,)),
                    "observations": {"dns": {"system": _lookup(PORTAL)}, "tls_handshakes": [], "helpers": []},
                }
                for n in "abc"
            ],
        ),  # fmt: skip
    ],
)
def test_what_is_not_a_portal(tmp_path: Path, case: str, records: list[dict]) -> None:
    assert _portal(tmp_path, records) is None, case


def test_a_control_resolver_answering_only_the_portal_is_the_portal_speaking(tmp_path: Path) -> None:
    records = [_record(f"site-{n}.example", (PORTAL,), control=_lookup(PORTAL)) for n in "abc"]
    assert _portal(tmp_path, records) == PORTAL


def test_one_target_agreeing_with_a_control_that_answers_alike_is_no_portal(tmp_path: Path) -> None:
    """A run of one site whose address the (plain) control resolver confirms: one name pointing at
    one address shows nothing of a portal, which answers many names alike."""
    records = [_record("site-a.example", (PORTAL,), control=_lookup(PORTAL))]
    assert _portal(tmp_path, records) is None


def test_a_site_reached_with_a_valid_chain_is_no_portal(tmp_path: Path) -> None:
    """A portal cannot present a chain valid for a real site's name: one such record ends the search
    (an ordinary run's file is not read to its end)."""
    records = [_record(f"site-{n}.example", (PORTAL,)) for n in "abc"]
    records[0]["analysis"] = {"tls": {"valid": True}}
    assert _portal(tmp_path, records) is None
