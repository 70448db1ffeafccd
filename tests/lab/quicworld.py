"""A lab for QUIC (HTTP/3) blocking (issue 22): client, ISP, world, each a network namespace.

    client 192.0.2.10 -- 192.0.2.1 isp 198.51.100.1 -- 198.51.100.2 world (203.0.113.0/24 on lo)

In the world: nginx serves every name over TCP (the lab's public CA), with `Alt-Svc: h3=":443"`
for the sites that serve HTTP/3, and an aioquic HTTP/3 server (tests/quicserver.py) on UDP/443 of
two addresses: OPEN_ADDRESS (`open.quic.lab` and `named.quic.lab`) and DROPPED_ADDRESS
(`dropped.quic.lab`); `plain.quic.lab` has no h3 at all. dnsmasq answers for the lab's names.

The ISP's two censors:
- iptables drops every UDP/443 datagram to DROPPED_ADDRESS (TCP passes);
- a QUIC DPI (tests/lab/quicdpi.py, behind a nat REDIRECT of UDP/443 to OPEN_ADDRESS) reads each
  flow's ClientHello and drops the flows naming `named.quic.lab`; other names pass.
Documentation addresses only, no route out, a resolv.conf per namespace, all removed by `down()`.
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
OPEN_ADDRESS, DROPPED_ADDRESS, PLAIN_ADDRESS, RESOLVER = "203.0.113.21", "203.0.113.22", "203.0.113.24", "203.0.113.53"
OPEN_NAME, SNI_BLOCKED_NAME, UDP_DROPPED_NAME, NO_H3_NAME = (
    "open.quic.lab", "named.quic.lab", "dropped.quic.lab", "plain.quic.lab",
)  # fmt: skip
CONTROL_NAME = "control.quic.lab"
NAMES = {OPEN_NAME: OPEN_ADDRESS, SNI_BLOCKED_NAME: OPEN_ADDRESS, UDP_DROPPED_NAME: DROPPED_ADDRESS,
         NO_H3_NAME: PLAIN_ADDRESS}  # fmt: skip
H3_NAMES = (OPEN_NAME, SNI_BLOCKED_NAME, UDP_DROPPED_NAME)
TARGETS = (OPEN_NAME, SNI_BLOCKED_NAME, UDP_DROPPED_NAME, NO_H3_NAME)
ALT_SVC = 'h3=":443"; ma=86400'
DPI_PORT = 4443


class QuicWorld:
    def __init__(self, name: str) -> None:
        self.name = name
        self.client, self.isp, self.world = (f"{name}-{role}" for role in ("client", "isp", "world"))
        self.namespaces = (self.client, self.isp, self.world)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.roots_pem = self.directory / "roots.pem"

    def _ns(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", namespace, *args)

    def up(self) -> QuicWorld:
        try:
            tear_down([], self.namespaces)  # a lab of the same name left by a crash
            self._pki()
            self._network()
            self._censor()
            self._services()
        except BaseException:
            self.down()
            raise
        return self

    def _pki(self) -> None:
        root = pki.make_root(pki.name(CN="Lab Public Root CA", O="Lab Trust Services", C="US"))
        issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA", O="Lab Trust Services"))
        pki.write_pem(self.roots_pem, [root.cert])
        pki.make_leaf(issuing, list(NAMES)).write(self.directory, "sites")

    def _network(self) -> None:
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
            self._ns(namespace, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions timeout:2 attempts:1\n", encoding="ascii")
        _run("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "r0", "netns", self.isp)
        _run("ip", "link", "add", "r1", "netns", self.isp, "type", "veth", "peer", "name", "w0", "netns", self.world)
        steps = [
            (self.client, f"ip addr add {CLIENT}/24 dev c0"),
            (self.isp, f"ip addr add {ISP_CLIENT_SIDE}/24 dev r0"),
            (self.isp, f"ip addr add {ISP_WORLD_SIDE}/30 dev r1"),
            (self.world, f"ip addr add {WORLD}/30 dev w0"),
            (self.client, "ip link set c0 up"),
            (self.isp, "ip link set r0 up"),
            (self.isp, "ip link set r1 up"),
            (self.world, "ip link set w0 up"),
            (self.isp, "sysctl -qw net.ipv4.ip_forward=1"),
            # Only the lab's own networks are routed; no namespace has a default route.
            (self.client, f"ip route add 198.51.100.0/24 via {ISP_CLIENT_SIDE}"),
            (self.client, f"ip route add 203.0.113.0/24 via {ISP_CLIENT_SIDE}"),
            (self.isp, f"ip route add 203.0.113.0/24 via {WORLD}"),
            (self.world, f"ip route add 192.0.2.0/24 via {ISP_WORLD_SIDE}"),
        ]
        steps += [
            (self.world, f"ip addr add {a}/32 dev lo") for a in (OPEN_ADDRESS, DROPPED_ADDRESS, PLAIN_ADDRESS, RESOLVER)
        ]
        for namespace, command in steps:
            self._ns(namespace, *command.split())

    def _censor(self) -> None:
        self._ns(self.isp, "iptables", "-A", "FORWARD", "-p", "udp", "-d", DROPPED_ADDRESS, "--dport", "443", "-j",
                 "DROP")  # fmt: skip
        self._ns(self.isp, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "r0", "-p", "udp", "-d", OPEN_ADDRESS,
                 "--dport", "443", "-j", "REDIRECT", "--to-ports", str(DPI_PORT))  # fmt: skip

    def _spawn(self, namespace: str, label: str, *args: str) -> None:
        log = (self.directory / f"{label}.log").open("wb")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
               "HOME": str(self.directory)}  # fmt: skip
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
        page = '"<html><head><title>$host</title></head><body>The real $host.</body></html>"'
        servers = ""
        for name, address in NAMES.items():
            alt_svc = f"add_header Alt-Svc '{ALT_SVC}' always; " if name in H3_NAMES else ""
            servers += (f"  server {{ listen {address}:443 ssl; server_name {name}; ssl_certificate {d}/sites.pem; "
                        f"ssl_certificate_key {d}/sites.key; {alt_svc}\n"
                        f"    location / {{ return 200 {page}; }} }}\n")  # fmt: skip
        (d / "nginx.conf").write_text(
            f"user root; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{ access_log off; client_body_temp_path {temp}/b; "
            f"proxy_temp_path {temp}/p; fastcgi_temp_path {temp}/f; uwsgi_temp_path {temp}/u; "
            f"scgi_temp_path {temp}/s;\n{servers}}}\n",
            encoding="utf-8",
        )
        self._spawn(self.world, "nginx", "nginx", "-c", str(d / "nginx.conf"))
        answers = [f"--address=/{name}/{address}" for name, address in NAMES.items()]
        self._spawn(self.world, "dnsmasq", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", "--bind-interfaces", f"--listen-address={RESOLVER}", "--user=root", "--pid-file=",
                    *answers)  # fmt: skip
        for address in (OPEN_ADDRESS, DROPPED_ADDRESS):
            self._spawn(self.world, f"h3-{address}", sys.executable, "-m", "tests.quicserver", address, "443",
                        str(d / "sites.pem"), str(d / "sites.key"))  # fmt: skip
        self._spawn(self.isp, "quicdpi", sys.executable, "-m", "tests.lab.quicdpi", str(DPI_PORT), OPEN_ADDRESS,
                    SNI_BLOCKED_NAME)  # fmt: skip
        self._wait(self.world, "tcp", f"{OPEN_ADDRESS}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        for address in (OPEN_ADDRESS, DROPPED_ADDRESS):
            self._wait(self.world, "udp", f"{address}:443")
        self._wait(self.isp, "udp", f":{DPI_PORT}")

    def _wait(self, namespace: str, proto: str, needle: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listening = _run("ip", "netns", "exec", namespace, "ss", "-ltnH" if proto == "tcp" else "-lunH",
                             check=False).stdout  # fmt: skip
            if needle in listening:
                return
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-500:] for p in self.directory.glob("*.log")}
        raise LabError(f"nothing listens on {proto} {needle} in {namespace} after 30 s: {json.dumps(logs)}")

    def probe(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The real `probe` in the client namespace."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
               "HOME": str(self.directory), "XDG_CACHE_HOME": str(self.directory / "cache"),
               "XDG_STATE_HOME": str(self.directory / "state")}  # fmt: skip
        return subprocess.run(["ip", "netns", "exec", self.client, sys.executable, "-m", "probe", *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=self.directory)  # fmt: skip

    def down(self) -> None:
        tear_down(self.processes, self.namespaces)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
