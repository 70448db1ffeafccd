"""A country's network cut off from abroad, or kept on an allow-list: the lab of the network's state.

Two volunteers (client namespaces, two regions) behind one ISP, and one world holding a "domestic"
prefix and "foreign" addresses. The ISP forwards each client's traffic through a chain of its own,
and the chain's rules are the profile (`set_profile`), as an ISP ordered to cut a region would do:

    client-a 192.0.2.10 ── 192.0.2.1  isp  198.51.100.129 ── 198.51.100.130 world
    client-b 192.0.2.74 ── 192.0.2.65 isp  (the ISP resolver, dnsmasq, at 192.0.2.200)
        world, domestic prefix 198.51.100.0/25: egov.lab 198.51.100.10, bank.lab 198.51.100.11
        world, abroad: news.lab 203.0.113.10, anycast-a/b/c.lab 203.0.113.11-13, resolver 203.0.113.53

- `full`: the chain is empty: everything is forwarded;
- `cut_off`: only the domestic prefix is forwarded (iptables FORWARD, DROP the rest);
- `allow_list`: the domestic prefix, anycast-a.lab and the public resolver are forwarded, nothing else;
- `no_internet`: nothing is forwarded (the ISP's own resolver still answers from its configuration,
  as a home router answers from its cache).

Real servers: nginx serves every HTTPS name with a certificate of the lab's CA, dnsmasq is the ISP's
resolver (it answers the domestic names itself and forwards the rest abroad) and the public one.
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

CLIENT_A, ISP_A = "192.0.2.10", "192.0.2.1"
CLIENT_B, ISP_B = "192.0.2.74", "192.0.2.65"
ISP_RESOLVER = "192.0.2.200"
ISP_WORLD, WORLD_ISP = "198.51.100.129", "198.51.100.130"
DOMESTIC_PREFIX = "198.51.100.0/25"
EGOV, BANK = "198.51.100.10", "198.51.100.11"
NEWS, ANYCAST_A, ANYCAST_B, ANYCAST_C, RESOLVER = (
    "203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13", "203.0.113.53",
)  # fmt: skip
DOMESTIC_NAMES = {"egov.lab": EGOV, "bank.lab": BANK}
FOREIGN_NAMES = {"news.lab": NEWS, "anycast-a.lab": ANYCAST_A, "anycast-b.lab": ANYCAST_B, "anycast-c.lab": ANYCAST_C}
ALLOWED_ABROAD = (ANYCAST_A, RESOLVER)  # the allow-list's foreign addresses
PROFILES = ("full", "cut_off", "allow_list", "no_internet")


def endpoints_catalog() -> dict[str, object]:
    """The reference endpoints of the lab's country (KZ), given to the probe with --reference-endpoints."""
    lab = ["tests/lab/netstate.py: the lab's own servers"]
    return {
        "countries": {
            "KZ": {
                "domestic": [
                    {"name": "egov.lab", "kind": "https", "host": "egov.lab", "sources": lab},  # resolved by the ISP
                    {"name": "bank.lab", "kind": "https", "host": "bank.lab", "address": BANK, "sources": lab},
                    {"name": "the system resolver", "kind": "system_resolver", "query": "egov.lab", "sources": lab},
                ]
            }
        },
        "foreign": [
            {"name": name, "kind": "https", "host": name, "address": address, "sources": lab}
            for name, address in FOREIGN_NAMES.items()
            if name.startswith("anycast")
        ],
    }


class NetStateLab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.client_a, self.client_b, self.isp, self.world = (f"{name}-{r}" for r in ("ca", "cb", "isp", "world"))
        self.namespaces = (self.client_a, self.client_b, self.isp, self.world)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.roots_pem = self.directory / "roots.pem"
        self.endpoints = self.directory / "reference-endpoints.json"
        self.chains = {self.client_a: "NETSTATE_A", self.client_b: "NETSTATE_B"}

    def _ns(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", namespace, *args)

    def up(self) -> NetStateLab:
        try:
            tear_down([], self.namespaces)  # a lab of the same name left by a crash
            self._pki()
            self._network()
            self._services()
        except BaseException:
            self.down()
            raise
        return self

    def _pki(self) -> None:
        root = pki.make_root(pki.name(CN="Lab Public Root CA", O="Lab Trust Services", C="US"))
        issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA", O="Lab Trust Services"))
        pki.write_pem(self.roots_pem, [root.cert])
        pki.make_leaf(issuing, [*DOMESTIC_NAMES, *FOREIGN_NAMES]).write(self.directory, "sites")
        self.endpoints.write_text(json.dumps(endpoints_catalog(), indent=1), encoding="utf-8")

    def _network(self) -> None:
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
            self._ns(namespace, "ip", "link", "set", "lo", "up")
            etc = Path("/etc/netns") / namespace
            etc.mkdir(parents=True, exist_ok=True)
            resolver = RESOLVER if namespace == self.world else ISP_RESOLVER
            (etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:2 attempts:1\n", encoding="ascii")
        for left, left_if, right, right_if in ((self.client_a, "a0", self.isp, "ia"), (self.client_b, "b0", self.isp,
                                               "ib"), (self.isp, "iw", self.world, "wi")):  # fmt: skip
            _run("ip", "link", "add", left_if, "netns", left, "type", "veth", "peer", "name", right_if, "netns", right)
        steps = [
            (self.client_a, f"ip addr add {CLIENT_A}/26 dev a0"),
            (self.client_b, f"ip addr add {CLIENT_B}/26 dev b0"),
            (self.isp, f"ip addr add {ISP_A}/26 dev ia"),
            (self.isp, f"ip addr add {ISP_B}/26 dev ib"),
            (self.isp, f"ip addr add {ISP_WORLD}/30 dev iw"),
            (self.isp, f"ip addr add {ISP_RESOLVER}/32 dev lo"),
            (self.world, f"ip addr add {WORLD_ISP}/30 dev wi"),
        ]
        for namespace, interface in ((self.client_a, "a0"), (self.client_b, "b0"), (self.isp, "ia"), (self.isp, "ib"),
                                     (self.isp, "iw"), (self.world, "wi")):  # fmt: skip
            steps.append((namespace, f"ip link set {interface} up"))
        for address in (EGOV, BANK, NEWS, ANYCAST_A, ANYCAST_B, ANYCAST_C, RESOLVER):
            steps.append((self.world, f"ip addr add {address}/32 dev lo"))
        steps.append((self.isp, "sysctl -qw net.ipv4.ip_forward=1"))
        # Only the lab's own networks are routed; no namespace has a default route.
        for client, gateway in ((self.client_a, ISP_A), (self.client_b, ISP_B)):
            for prefix in (f"{ISP_RESOLVER}/32", "198.51.100.0/24", "203.0.113.0/24"):
                steps.append((client, f"ip route add {prefix} via {gateway}"))
        steps += [
            (self.isp, f"ip route add {DOMESTIC_PREFIX} via {WORLD_ISP}"),
            (self.isp, f"ip route add 203.0.113.0/24 via {WORLD_ISP}"),
            (self.world, f"ip route add 192.0.2.0/24 via {ISP_WORLD}"),
        ]
        for client, interface in ((self.client_a, "ia"), (self.client_b, "ib")):
            chain = self.chains[client]
            steps += [(self.isp, f"iptables -N {chain}"), (self.isp, f"iptables -A FORWARD -i {interface} -j {chain}")]
        for namespace, command in steps:
            self._ns(namespace, *command.split())

    def set_profile(self, client: str, profile: str) -> None:
        """The ISP's rules for one client's traffic: `full`, `cut_off`, `allow_list` or `no_internet`."""
        if profile not in PROFILES:
            raise LabError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
        chain = self.chains[client]
        self._ns(self.isp, "iptables", "-F", chain)
        allowed = {"full": None, "cut_off": [DOMESTIC_PREFIX], "allow_list": [DOMESTIC_PREFIX, *ALLOWED_ABROAD],
                   "no_internet": []}[profile]  # fmt: skip
        if allowed is None:
            return
        for prefix in allowed:
            self._ns(self.isp, "iptables", "-A", chain, "-d", prefix, "-j", "RETURN")
        self._ns(self.isp, "iptables", "-A", chain, "-j", "DROP")

    def _spawn(self, namespace: str, label: str, *args: str) -> None:
        log = (self.directory / f"{label}.log").open("wb")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": str(self.directory)}
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
        listens = " ".join(f"listen {a}:443 ssl;" for a in (EGOV, BANK, NEWS, ANYCAST_A, ANYCAST_B, ANYCAST_C))
        page = '"<html><head><title>$host</title></head><body>The real $host.</body></html>"'
        (d / "nginx.conf").write_text(
            f"user root; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{ access_log off; client_body_temp_path {temp}/b; "
            f"proxy_temp_path {temp}/p; fastcgi_temp_path {temp}/f; uwsgi_temp_path {temp}/u; "
            f"scgi_temp_path {temp}/s;\n"
            f"  server {{ {listens} server_name _;\n"
            f"    ssl_certificate {d}/sites.pem; ssl_certificate_key {d}/sites.key;\n"
            f"    location / {{ return 200 {page}; }} }}\n}}\n",
            encoding="utf-8",
        )
        self._spawn(self.world, "nginx", "nginx", "-c", str(d / "nginx.conf"))
        every = {**DOMESTIC_NAMES, **FOREIGN_NAMES}
        common = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                  "--bind-interfaces", "--user=root", "--pid-file="]  # fmt: skip
        self._spawn(self.world, "dnsmasq-public", *common, f"--listen-address={RESOLVER}",
                    *(f"--address=/{n}/{a}" for n, a in every.items()))  # fmt: skip
        # The ISP's resolver answers the country's names itself and asks abroad for the rest.
        self._spawn(self.isp, "dnsmasq-isp", *common, f"--listen-address={ISP_RESOLVER}", f"--server={RESOLVER}",
                    *(f"--address=/{n}/{a}" for n, a in DOMESTIC_NAMES.items()))  # fmt: skip
        self._wait(self.world, "tcp", f"{EGOV}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        self._wait(self.isp, "udp", f"{ISP_RESOLVER}:53")

    def _wait(self, namespace: str, proto: str, needle: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listening = _run("ip", "netns", "exec", namespace, "ss", "-ltnH" if proto == "tcp" else "-lunH").stdout
            if needle in listening:
                return
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-500:] for p in self.directory.glob("*.log")}
        raise LabError(f"nothing listens on {needle} in {namespace} after 30 s: {json.dumps(logs)}")

    def probe(self, client: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The real `probe` in a client namespace."""
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
               "HOME": str(self.directory), "XDG_CACHE_HOME": str(self.directory / "cache")}  # fmt: skip
        return subprocess.run(["ip", "netns", "exec", client, sys.executable, "-m", "probe", *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=self.directory)  # fmt: skip

    def run(self, client: str, out: Path, targets: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
        """`probe run` over `targets` from `client`, given the lab's reference endpoints, resolver and roots."""
        listed = out.parent / f"{out.name}-targets.txt"
        listed.write_text("\n".join(targets) + "\n", encoding="utf-8")
        return self.probe(
            client, "run", "--targets", str(listed), "--out", str(out), "--roots", str(self.roots_pem),
            "--control-resolver", f"udp://{RESOLVER}", "--control-sni", "anycast-a.lab", "--lab", "--os-store", "none",
            "--timeout", "2", "--dns-window", "0.3", "--no-forensics", "--country", "KZ", "--asn", "AS64500",
            "--reference-endpoints", str(self.endpoints), "--json", "--yes", *extra,
        )  # fmt: skip

    def down(self) -> None:
        tear_down(self.processes, self.namespaces)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)
