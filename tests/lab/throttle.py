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

import subprocess
import sys

from tests import pki
from tests.lab.chainworld import SimpleChain, probe_command

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


class ThrottleLab(SimpleChain):
    isp_interfaces = ("i0", "i1")
    world_addresses = (SITES, RESOLVER, HELPER)
    resolver = RESOLVER

    def _pki(self) -> None:
        d = self.directory
        issuing = self._public_ca()
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

    def _services(self) -> None:
        d = self.directory
        self._nginx(self.world, f"  server {{ listen {SITES}:443 ssl; server_name _;\n"
                    f"    ssl_certificate {d}/sites.pem; ssl_certificate_key {d}/sites.key;\n"
                    f"    root {d}/www/$host; }}\n")  # fmt: skip
        self._dnsmasq(
            self.world, "dnsmasq", RESOLVER, *(f"--address=/{name}/{address}" for name, address in NAMES.items())
        )
        self._spawn(self.world, "helper", sys.executable, "-m", "probe", "helper", "serve", "--listen",
                    f"{HELPER}:443", "--tls-cert", str(d / "helper.pem"), "--tls-key", str(d / "helper.key"),
                    "--roots", str(self.roots_pem), "--allow-documentation-addresses", "--timeout", "3")  # fmt: skip
        self._wait(self.world, "tcp", f"{SITES}:443")
        self._wait(self.world, "udp", f"{RESOLVER}:53")
        self._wait(self.world, "tcp", f"{HELPER}:443")

    def probe(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """The real `probe` in the client namespace."""
        return self._probe(self.client, probe_command(*args), timeout)

    def run(self, out: str, targets: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
        """`probe run` over `targets` with the lab's roots, resolver and control name."""
        listed = self.directory / f"{out}.txt"
        listed.write_text("\n".join(targets) + "\n", encoding="utf-8")
        return self.probe(
            "run", "--targets", str(listed), "--out", str(self.directory / out), "--roots", str(self.roots_pem),
            "--control-resolver", f"udp://{RESOLVER}", "--control-sni", CONTROL_NAME, "--lab", "--os-store", "none",
            "--timeout", "3", "--no-forensics", "--quiet", "--yes", *extra,
        )  # fmt: skip
