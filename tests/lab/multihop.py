"""A path of several routers, for packet forensics: client, ISP edge, ISP core (the censor),
transit, world. Each router is a namespace that forwards for real: it decrements the IP TTL and
sends ICMP "time exceeded" when it reaches zero. Documentation addresses only, no route out of
the lab, a resolv.conf for every namespace, and everything torn down by `down()`.

    client 192.0.2.10 -- 192.0.2.1 edge 198.51.100.1 -- 198.51.100.2 core 198.51.100.5 --
        198.51.100.6 transit 198.51.100.9 -- 198.51.100.10 world (203.0.113.0/24 on its loopback)

The core router holds the censors: an SNI filter in its forwarding path (iptables string match,
REJECT with a TCP reset), a reset answering every SYN to one address, and a transparent TLS
interceptor (mitmproxy, nat REDIRECT) that forges
certificates for one name under an "Information Security Certification Authority" root. In the
world: nginx (the real sites), dnsmasq, and a server that resets every connection itself after
the ClientHello (a real server's reset, which must not be marked as injected).

Two routers lose some of their ICMP "time exceeded" messages, as rate-limited routers do, and
deterministically (iptables' `limit` match with a burst and no refill in the lab's lifetime drops
the first N messages quoting one name's ClientHello, whatever the timing): the core the first
CORE_LOST about filtered.lab (the first try at TTL 2: every retransmission within its wait, so the
sweep's second try is answered), the edge the first EDGE_LOST about intercepted.lab (both tries at
TTL 1: only the next TTL tells the hop apart). The censor's hop found must not move.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys

from tests import pki
from tests.lab.chainworld import ChainWorld, probe_command

CLIENT = "192.0.2.10"
EDGE_CLIENT_SIDE, EDGE_CORE_SIDE = "192.0.2.1", "198.51.100.1"
CORE_EDGE_SIDE, CORE_TRANSIT_SIDE = "198.51.100.2", "198.51.100.5"
TRANSIT_CORE_SIDE, TRANSIT_WORLD_SIDE = "198.51.100.6", "198.51.100.9"
WORLD = "198.51.100.10"
SITES_ADDRESS, INTERCEPTED_ADDRESS, RESETTING_ADDRESS, SYN_RESET_ADDRESS, RESOLVER = (
    "203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13", "203.0.113.53",
)  # fmt: skip
FILTERED_NAME, INTERCEPTED_NAME, RESETTING_NAME, SYN_RESET_NAME, CLEAN_NAME, CONTROL_NAME = (
    "filtered.lab", "intercepted.lab", "resetting.lab", "syn-reset.lab", "clean.lab", "control.lab",
)  # fmt: skip
NAMES = {
    FILTERED_NAME: SITES_ADDRESS,
    CLEAN_NAME: SITES_ADDRESS,
    CONTROL_NAME: SITES_ADDRESS,
    INTERCEPTED_NAME: INTERCEPTED_ADDRESS,
    RESETTING_NAME: RESETTING_ADDRESS,
    SYN_RESET_NAME: SYN_RESET_ADDRESS,
}
PROXY_PORT = 8443
# ICMP messages lost (see above). A try waits a second: the ClientHello is sent and retransmitted
# at about 0, 0.2, 0.4 and 0.85 s, and once more about 1.7 s later from the closed socket.
CORE_LOST, EDGE_LOST = 4, 32
# The path's AS numbers, for the record's router AS (ip2asn format).
AS_TABLE = (
    "192.0.2.0\t192.0.2.255\t64500\tKZ\tLab Home Broadband\n"
    "198.51.100.0\t198.51.100.7\t64501\tKZ\tLab National Telecom\n"
    "198.51.100.8\t198.51.100.15\t64502\tDE\tLab Transit\n"
    "203.0.113.0\t203.0.113.255\t64503\tUS\tLab Hosting\n"
)


class MultiHopLab(ChainWorld):
    def __init__(self, name: str) -> None:
        super().__init__(name, ("client", "edge", "core", "transit", "world"))
        self.client, self.edge, self.core, self.transit, self.world = self.namespaces
        self.asn_table = self.directory / "ip2asn.tsv"

    def _pki(self) -> None:
        d = self.directory
        pki.make_leaf(
            self._public_ca(), [n for n, a in NAMES.items() if a in (SITES_ADDRESS, INTERCEPTED_ADDRESS)]
        ).write(d, "sites")
        authority = pki.make_root(
            pki.name(C="KZ", O="ISCA", CN="Information Security Certification Authority CA"), rsa_key=True
        )
        (d / "mitm").mkdir()
        (d / "mitm" / "mitmproxy-ca.pem").write_bytes(pki.key_pem(authority.key) + pki.der_pem(authority.cert))
        self.asn_table.write_text(AS_TABLE, encoding="utf-8")

    def _network(self) -> None:
        self._namespaces(dict.fromkeys(self.namespaces, RESOLVER))
        steps = self._links([
            (self.client, "c0", f"{CLIENT}/24", self.edge, "e0", f"{EDGE_CLIENT_SIDE}/24"),
            (self.edge, "e1", f"{EDGE_CORE_SIDE}/30", self.core, "k0", f"{CORE_EDGE_SIDE}/30"),
            (self.core, "k1", f"{CORE_TRANSIT_SIDE}/30", self.transit, "t0", f"{TRANSIT_CORE_SIDE}/30"),
            (self.transit, "t1", f"{TRANSIT_WORLD_SIDE}/30", self.world, "w0", f"{WORLD}/30"),
        ])  # fmt: skip
        for address in (SITES_ADDRESS, INTERCEPTED_ADDRESS, RESETTING_ADDRESS, SYN_RESET_ADDRESS, RESOLVER):
            steps.append((self.world, f"ip addr add {address}/32 dev lo"))
        for router in (self.edge, self.core, self.transit):
            steps += [
                (router, "sysctl -qw net.ipv4.ip_forward=1"),
                # Every expired packet answered: the kernel's default limits ICMP to one a second.
                (router, "sysctl -qw net.ipv4.icmp_ratelimit=0"),
            ]
        # Only the lab's own networks are routed; no namespace has a default route.
        steps += [
            (self.client, f"ip route add 198.51.100.0/24 via {EDGE_CLIENT_SIDE}"),
            (self.client, f"ip route add 203.0.113.0/24 via {EDGE_CLIENT_SIDE}"),
            (self.edge, f"ip route add 198.51.100.4/30 via {CORE_EDGE_SIDE}"),
            (self.edge, f"ip route add 198.51.100.8/30 via {CORE_EDGE_SIDE}"),
            (self.edge, f"ip route add 203.0.113.0/24 via {CORE_EDGE_SIDE}"),
            (self.core, f"ip route add 192.0.2.0/24 via {EDGE_CORE_SIDE}"),
            (self.core, f"ip route add 198.51.100.8/30 via {TRANSIT_CORE_SIDE}"),
            (self.core, f"ip route add 203.0.113.0/24 via {TRANSIT_CORE_SIDE}"),
            (self.transit, f"ip route add 192.0.2.0/24 via {CORE_TRANSIT_SIDE}"),
            (self.transit, f"ip route add 198.51.100.0/30 via {CORE_TRANSIT_SIDE}"),
            (self.transit, f"ip route add 203.0.113.0/24 via {WORLD}"),
            (self.world, f"ip route add 192.0.2.0/24 via {TRANSIT_WORLD_SIDE}"),
            (self.world, f"ip route add 198.51.100.0/24 via {TRANSIT_WORLD_SIDE}"),
        ]
        self._steps(steps)

    def _censor(self) -> None:
        self._ns(self.core, "iptables", "-A", "FORWARD", "-p", "tcp", "-d", SYN_RESET_ADDRESS, "--syn", "-j",
                 "REJECT", "--reject-with", "tcp-reset")  # fmt: skip
        self._ns(self.core, "iptables", "-A", "FORWARD", "-p", "tcp", "-d", SITES_ADDRESS, "--dport", "443",
                 "-m", "string", "--string", FILTERED_NAME, "--algo", "bm", "-j", "REJECT", "--reject-with",
                 "tcp-reset")  # fmt: skip
        self._ns(self.core, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "k0", "-p", "tcp", "-d",
                 INTERCEPTED_ADDRESS, "--dport", "443", "-j", "REDIRECT", "--to-ports", str(PROXY_PORT))  # fmt: skip
        for router, name, lost in ((self.core, FILTERED_NAME, CORE_LOST), (self.edge, INTERCEPTED_NAME, EDGE_LOST)):
            # A router's ICMP error quotes the packet it dropped, the ClientHello's name included.
            self._ns(router, "iptables", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "time-exceeded", "-m",
                     "string", "--string", name, "--algo", "bm", "-m", "limit", "--limit", "1/day",
                     "--limit-burst", str(lost), "-j", "DROP")  # fmt: skip

    def _services(self) -> None:
        d = self.directory
        page = '"<html><head><title>$host</title></head><body>The real $host.</body></html>"'
        self._nginx(self.world, f"  server {{ listen {SITES_ADDRESS}:443 ssl; listen {INTERCEPTED_ADDRESS}:443 ssl; "
                    f"server_name _;\n    ssl_certificate {d}/sites.pem; ssl_certificate_key {d}/sites.key;\n"
                    f"    location / {{ return 200 {page}; }} }}\n")  # fmt: skip
        self._dnsmasq(
            self.world, "dnsmasq", RESOLVER, *(f"--address=/{name}/{address}" for name, address in NAMES.items())
        )
        self._spawn(self.world, "resetting", sys.executable, "-m", "tests.lab.multihop", "reset-server",
                    RESETTING_ADDRESS)  # fmt: skip
        self._spawn(self.core, "mitm", "mitmdump", "--mode", "transparent", "--listen-port", str(PROXY_PORT),
                    "--set", "ssl_insecure=true", "--set", "block_global=false", "-q", "--set",
                    f"confdir={d / 'mitm'}", "--allow-hosts", f"^{INTERCEPTED_NAME.replace('.', '[.]')}$")  # fmt: skip
        self._wait(self.world, "tcp", f"{SITES_ADDRESS}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        self._wait(self.world, "tcp", f"{RESETTING_ADDRESS}:443")
        self._wait(self.core, "tcp", f":{PROXY_PORT}")

    def probe(self, *args: str, drop_raw: bool = False, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """The real `probe` in the client namespace; `drop_raw` takes CAP_NET_RAW away first (capsh)."""
        command = probe_command(*args)
        if drop_raw:
            command = ["capsh", "--drop=cap_net_raw", "--", "-c", shlex.join(command)]
        return self._probe(self.client, command, timeout)


def reset_server(address: str) -> None:
    """Accept, read the ClientHello, then abort the connection (SO_LINGER 0): the server's own RST."""
    listener = socket.create_server((address, 443))
    listener.settimeout(3600)
    while True:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(4096)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["reset-server"]:
        reset_server(sys.argv[2])
