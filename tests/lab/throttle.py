"""Throttling by name, as Russia's TSPU boxes did to Twitter in 2021: the lab for `throttled`.

    client 192.0.2.10 ── 192.0.2.1 isp 198.51.100.1 ── 198.51.100.2 world
        world (on its loopback): the sites 203.0.113.10 (nginx: throttled.lab, frozen.lab, clean.lab,
        control.lab), the resolver 203.0.113.53 (dnsmasq), the helper 203.0.113.90 (`probe helper
        serve`, whose bulk endpoint answers any name)

The ISP is the censor, with iptables alone (the kernel has no netem):
- a connection whose ClientHello carries THROTTLED_NAME is marked (`-m string --algo bm` +
  `CONNMARK --set-mark 1`), and the marked connection's packets toward the client are dropped above
  THROTTLE_RATE (`hashlimit`, per connection, after a burst of BURST bytes): a policer, as the TSPU's;
- a connection whose ClientHello carries FROZEN_NAME is marked 2, and its packets toward the client
  are dropped once the connection has brought FREEZE_BYTES (`connbytes`): a freeze at a byte offset.

Documentation addresses only, no route out of the lab, a resolv.conf for every namespace, and
everything torn down by `down()` (also when building fails halfway).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import pki
from tests.lab.lab import REPO, LabError, _run, tear_down

CLIENT, ISP_CLIENT_SIDE, ISP_WORLD_SIDE, WORLD = "192.0.2.10", "192.0.2.1", "198.51.100.1", "198.51.100.2"
SITES, RESOLVER, HELPER = "203.0.113.10", "203.0.113.53", "203.0.113.90"
THROTTLED_NAME, FROZEN_NAME, CLEAN_NAME, CONTROL_NAME, HELPER_NAME = (
    "throttled.lab", "frozen.lab", "clean.lab", "control.lab", "helper.lab",
)  # fmt: skip
NAMES = {THROTTLED_NAME: SITES, FROZEN_NAME: SITES, CLEAN_NAME: SITES, CONTROL_NAME: SITES, HELPER_NAME: HELPER}
THROTTLE_RATE = "32kb/s"  # bytes: 256 kbit/s, the order of the 130-150 kbit/s Twitter got in 2021
BURST = "32kb"  # iptables' smallest burst in bytes
FREEZE_BYTES = 20000  # the TSPU froze flows after 16-20 KB
BIG_PAGE = "/big.html"  # a page long enough to outlast the burst: the site's own download shows the policer
BIG_PAGE_BYTES = 80 << 10
HELPER_URL = f"https://{HELPER}/"


class ThrottleLab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.client, self.isp, self.world = (f"{name}-{role}" for role in ("client", "isp", "world"))
        self.namespaces = (self.client, self.isp, self.world)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.roots_pem = self.directory / "roots.pem"

    def _ns(self, namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", namespace, *args, check=check)

    def up(self) -> ThrottleLab:
        try:
            self._pki()
            self._network()
            self._censor()
            self._services()
        except BaseException:
            self.down()
            raise
        return self

    def _pki(self) -> None:
        d = self.directory
        root = pki.make_root(pki.name(CN="Lab Public Root CA", O="Lab Trust Services", C="US"))
        issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA", O="Lab Trust Services"))
        pki.write_pem(self.roots_pem, [root.cert])
        pki.make_leaf(issuing, [n for n, a in NAMES.items() if a == SITES]).write(d, "sites")
        pki.make_leaf(issuing, [HELPER_NAME, HELPER]).write(d, "helper")
        www = d / "www"
        for name in (THROTTLED_NAME, FROZEN_NAME, CLEAN_NAME, CONTROL_NAME):
            (www / name).mkdir(parents=True)
            (www / name / "index.html").write_text(
                f"<html><head><title>{name}</title></head><body>The real {name}.</body></html>\n", encoding="utf-8"
            )
            filler = "x" * (BIG_PAGE_BYTES - 80)
            (www / name / BIG_PAGE.lstrip("/")).write_text(
                f"<html><head><title>{name}</title></head><body>{filler}</body></html>\n", encoding="utf-8"
            )

    def _network(self) -> None:
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
            self._ns(namespace, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions timeout:2 attempts:1\n", encoding="ascii")
        _run("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "i0", "netns", self.isp)
        _run("ip", "link", "add", "i1", "netns", self.isp, "type", "veth", "peer", "name", "w0", "netns", self.world)
        steps = [
            (self.client, f"ip addr add {CLIENT}/24 dev c0"),
            (self.isp, f"ip addr add {ISP_CLIENT_SIDE}/24 dev i0"),
            (self.isp, f"ip addr add {ISP_WORLD_SIDE}/30 dev i1"),
            (self.world, f"ip addr add {WORLD}/30 dev w0"),
            (self.client, "ip link set c0 up"),
            (self.isp, "ip link set i0 up"),
            (self.isp, "ip link set i1 up"),
            (self.world, "ip link set w0 up"),
            (self.isp, "sysctl -qw net.ipv4.ip_forward=1"),
            # Only the lab's own networks are routed; no namespace has a default route.
            (self.client, f"ip route add 198.51.100.0/24 via {ISP_CLIENT_SIDE}"),
            (self.client, f"ip route add 203.0.113.0/24 via {ISP_CLIENT_SIDE}"),
            (self.isp, f"ip route add 203.0.113.0/24 via {WORLD}"),
            (self.world, f"ip route add 192.0.2.0/24 via {ISP_WORLD_SIDE}"),
        ]
        for address in (SITES, RESOLVER, HELPER):
            steps.append((self.world, f"ip addr add {address}/32 dev lo"))
        for namespace, command in steps:
            self._ns(namespace, *command.split())

    def _censor(self) -> None:
        isp = self.isp
        self._ns(isp, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1", check=False)  # connbytes counts
        for name, mark in ((THROTTLED_NAME, "1"), (FROZEN_NAME, "2")):
            self._ns(isp, "iptables", "-A", "FORWARD", "-i", "i0", "-p", "tcp", "--dport", "443", "-m", "string",
                     "--string", name, "--algo", "bm", "-j", "CONNMARK", "--set-mark", mark)  # fmt: skip
        self._ns(isp, "iptables", "-A", "FORWARD", "-o", "i0", "-m", "connmark", "--mark", "1", "-m", "hashlimit",
                 "--hashlimit-above", THROTTLE_RATE, "--hashlimit-burst", BURST, "--hashlimit-mode",
                 "srcip,srcport,dstip,dstport", "--hashlimit-name", "kzthrottle", "-j", "DROP")  # fmt: skip
        self._ns(isp, "iptables", "-A", "FORWARD", "-o", "i0", "-m", "connmark", "--mark", "2", "-m", "connbytes",
                 "--connbytes", f"{FREEZE_BYTES}:", "--connbytes-dir", "reply", "--connbytes-mode", "bytes",
                 "-j", "DROP")  # fmt: skip

    def _spawn(self, namespace: str, label: str, *args: str) -> None:
        log = (self.directory / f"{label}.log").open("wb")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
               "HOME": str(self.directory), "XDG_CACHE_HOME": str(self.directory / "cache"),
               "XDG_CONFIG_HOME": str(self.directory / "config")}  # fmt: skip
        self.processes.append(
            subprocess.Popen(
                ["ip", "netns", "exec", namespace, *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        )

    def _services(self) -> None:
        d = self.directory
        temp = d / "nginx-tmp"
        temp.mkdir()
        (d / "nginx.conf").write_text(
            f"user root; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{ access_log off; client_body_temp_path {temp}/b; "
            f"proxy_temp_path {temp}/p; fastcgi_temp_path {temp}/f; uwsgi_temp_path {temp}/u; "
            f"scgi_temp_path {temp}/s;\n"
            f"  server {{ listen {SITES}:443 ssl; server_name _;\n"
            f"    ssl_certificate {d}/sites.pem; ssl_certificate_key {d}/sites.key;\n"
            f"    root {d}/www/$host; }}\n}}\n",
            encoding="utf-8",
        )
        self._spawn(self.world, "nginx", "nginx", "-c", str(d / "nginx.conf"))
        answers = [f"--address=/{name}/{address}" for name, address in NAMES.items()]
        self._spawn(self.world, "dnsmasq", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", "--bind-interfaces", f"--listen-address={RESOLVER}", "--user=root", "--pid-file=",
                    *answers)  # fmt: skip
        self._spawn(self.world, "helper", sys.executable, "-m", "probe", "helper", "serve", "--listen",
                    f"{HELPER}:443", "--tls-cert", str(d / "helper.pem"), "--tls-key", str(d / "helper.key"),
                    "--roots", str(self.roots_pem), "--allow-documentation-addresses", "--timeout", "3")  # fmt: skip
        self._wait(self.world, "tcp", f"{SITES}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        self._wait(self.world, "tcp", f"{HELPER}:443")

    def _wait(self, namespace: str, proto: str, needle: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listening = self._ns(namespace, "ss", "-ltnH" if proto == "tcp" else "-lunH", check=False).stdout
            if needle in listening:
                return
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-500:] for p in self.directory.glob("*.log")}
        raise LabError(f"nothing listens on {needle} in {namespace} after 30 s: {json.dumps(logs)}")

    def probe(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """The real `probe` in the client namespace."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
               "HOME": str(self.directory), "XDG_CACHE_HOME": str(self.directory / "cache")}  # fmt: skip
        return subprocess.run(["ip", "netns", "exec", self.client, sys.executable, "-m", "probe", *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=self.directory)  # fmt: skip

    def run(self, out: str, targets: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
        """`probe run` over `targets` with the lab's roots, resolver and control name."""
        listed = self.directory / f"{out}.txt"
        listed.write_text("\n".join(targets) + "\n", encoding="utf-8")
        return self.probe(
            "run", "--targets", str(listed), "--out", str(self.directory / out), "--roots", str(self.roots_pem),
            "--control-resolver", f"udp://{RESOLVER}", "--control-sni", CONTROL_NAME, "--lab", "--os-store", "none",
            "--timeout", "3", "--no-forensics", "--quiet", "--yes", *extra,
        )  # fmt: skip

    def down(self) -> None:
        tear_down(self.processes, self.namespaces)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
