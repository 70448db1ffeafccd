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

import subprocess
import sys

from tests import pki
from tests.lab.chainworld import SimpleChain, probe_command

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


class QuicWorld(SimpleChain):
    isp_interfaces = ("r0", "r1")
    world_addresses = (OPEN_ADDRESS, DROPPED_ADDRESS, PLAIN_ADDRESS, RESOLVER)
    resolver = RESOLVER

    def _pki(self) -> None:
        pki.make_leaf(self._public_ca(), list(NAMES)).write(self.directory, "sites")

    def _censor(self) -> None:
        self._ns(self.isp, "iptables", "-A", "FORWARD", "-p", "udp", "-d", DROPPED_ADDRESS, "--dport", "443", "-j",
                 "DROP")  # fmt: skip
        self._ns(self.isp, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "r0", "-p", "udp", "-d", OPEN_ADDRESS,
                 "--dport", "443", "-j", "REDIRECT", "--to-ports", str(DPI_PORT))  # fmt: skip

    def _services(self) -> None:
        d = self.directory
        page = '"<html><head><title>$host</title></head><body>The real $host.</body></html>"'
        servers = ""
        for name, address in NAMES.items():
            alt_svc = f"add_header Alt-Svc '{ALT_SVC}' always; " if name in H3_NAMES else ""
            servers += (f"  server {{ listen {address}:443 ssl; server_name {name}; ssl_certificate {d}/sites.pem; "
                        f"ssl_certificate_key {d}/sites.key; {alt_svc}\n"
                        f"    location / {{ return 200 {page}; }} }}\n")  # fmt: skip
        self._nginx(self.world, servers)
        self._dnsmasq(
            self.world, "dnsmasq", RESOLVER, *(f"--address=/{name}/{address}" for name, address in NAMES.items())
        )
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

    def probe(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The real `probe` in the client namespace."""
        return self._probe(self.client, probe_command(*args), timeout, XDG_STATE_HOME=str(self.directory / "state"))
