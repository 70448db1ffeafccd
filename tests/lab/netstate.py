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
import subprocess
from pathlib import Path

from tests import pki
from tests.lab.chainworld import ChainWorld, probe_command
from tests.lab.lab import LabError

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


class NetStateLab(ChainWorld):
    def __init__(self, name: str) -> None:
        super().__init__(name, ("ca", "cb", "isp", "world"))
        self.client_a, self.client_b, self.isp, self.world = self.namespaces
        self.endpoints = self.directory / "reference-endpoints.json"
        self.chains = {self.client_a: "NETSTATE_A", self.client_b: "NETSTATE_B"}

    def _pki(self) -> None:
        pki.make_leaf(self._public_ca(), [*DOMESTIC_NAMES, *FOREIGN_NAMES]).write(self.directory, "sites")
        self.endpoints.write_text(json.dumps(endpoints_catalog(), indent=1), encoding="utf-8")

    def _network(self) -> None:
        self._namespaces({n: RESOLVER if n == self.world else ISP_RESOLVER for n in self.namespaces})
        steps = [
            *self._links(
                [
                    (self.client_a, "a0", f"{CLIENT_A}/26", self.isp, "ia", f"{ISP_A}/26"),
                    (self.client_b, "b0", f"{CLIENT_B}/26", self.isp, "ib", f"{ISP_B}/26"),
                    (self.isp, "iw", f"{ISP_WORLD}/30", self.world, "wi", f"{WORLD_ISP}/30"),
                ]
            ),
            (self.isp, f"ip addr add {ISP_RESOLVER}/32 dev lo"),
        ]
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
        self._steps(steps)

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

    def _services(self) -> None:
        d = self.directory
        listens = " ".join(f"listen {a}:443 ssl;" for a in (EGOV, BANK, NEWS, ANYCAST_A, ANYCAST_B, ANYCAST_C))
        page = '"<html><head><title>$host</title></head><body>The real $host.</body></html>"'
        self._nginx(self.world, f"  server {{ {listens} server_name _;\n"
                    f"    ssl_certificate {d}/sites.pem; ssl_certificate_key {d}/sites.key;\n"
                    f"    location / {{ return 200 {page}; }} }}\n")  # fmt: skip
        every = {**DOMESTIC_NAMES, **FOREIGN_NAMES}
        self._dnsmasq(self.world, "dnsmasq-public", RESOLVER, *(f"--address=/{n}/{a}" for n, a in every.items()))
        # The ISP's resolver answers the country's names itself and asks abroad for the rest.
        self._dnsmasq(self.isp, "dnsmasq-isp", ISP_RESOLVER, f"--server={RESOLVER}",
                      *(f"--address=/{n}/{a}" for n, a in DOMESTIC_NAMES.items()))  # fmt: skip
        self._wait(self.world, "tcp", f"{EGOV}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        self._wait(self.isp, "udp", f"{ISP_RESOLVER}:53")

    def probe(self, client: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The real `probe` in a client namespace."""
        return self._probe(client, probe_command(*args), timeout)

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
