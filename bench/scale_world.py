"""The world bench_scale.py measures in: two network namespaces, documentation addresses only, no
route out.

- the client namespace: the probe (and nmap, openssl), its resolver dnsmasq;
- the world namespace: nginx on one address (SITE) with a `server` block and a certificate (a lab CA)
  per name, each returning a short body; dnsmasq on RESOLVER answering every name from an
  `--addn-hosts` file (the client's resolver and the probe's `udp://` control resolver alike);
  nothing listens on SITE's UDP/53, so the probe's injection question there gets ICMP port
  unreachable, as from any Linux server; BLACKHOLE drops every packet.
Every command in the client namespace runs under `run_counted.py`, a parent that runs only that
command and counts the CPU and memory of all its processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pki  # noqa: E402

CLIENT, WORLD = "192.0.2.10", "192.0.2.1"
SITE, BLACKHOLE, RESOLVER = "203.0.113.10", "203.0.113.12", "203.0.113.53"
HELPER, HELPER_NAME = "203.0.113.20", "helper.lab"
PROBES_NET = "198.51.100"  # one address per probe asking the helper, on a bridge in the world
COUNTED = Path(__file__).resolve().with_name("run_counted.py")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


def probe_command(tree: Path) -> list[str]:
    """The `probe` command line from the source tree `tree`, whatever its package layout."""
    if (tree / "probe" / "__main__.py").exists():
        return [sys.executable, "-m", "probe"]
    return [sys.executable, "-c", "import sys; from probe.cli import main; sys.exit(main())"]


@dataclass
class Counted:
    """One command's run, all of its processes counted (run_counted.py)."""

    wall: float  # seconds, from the command's start to the last of its processes' end
    cpu: float  # user + system seconds of every process of the run
    max_rss_mb: float  # the largest single process's peak resident set
    peak_pss_mb: float  # the run's processes together, sampled every 0.2 s (shared pages split)
    returncode: int
    stray: int  # processes still alive 30 s after the command ended (not counted)
    stdout: str
    stderr: str


class World:
    def __init__(self, names: list[str], blackholed: list[str], directory: Path, tree: Path, helper_probes: int = 0):
        self.names, self.blackholed, self.directory, self.tree = names, blackholed, directory, tree
        self.client, self.world = f"bench{os.getpid()}-c", f"bench{os.getpid()}-w"
        self.probes = [f"bench{os.getpid()}-p{n}" for n in range(helper_probes)]
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> World:
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self) -> None:
        d = self.directory
        root = pki.make_root(pki.name(CN="Bench Root CA", O="Bench"))
        issuing = pki.make_intermediate(root, pki.name(CN="Bench Issuing CA", O="Bench"))
        pki.write_pem(d / "roots.pem", [root.cert])
        servers = []
        for name in self.names:
            pki.make_leaf(issuing, [name]).write(d, name)
            servers.append(
                f"server {{ listen {SITE}:443 ssl; server_name {name}; ssl_certificate {d}/{name}.pem; "
                f"ssl_certificate_key {d}/{name}.key; location / {{ return 200 'ok'; }} }}"
            )
        pki.make_leaf(issuing, ["default.bench"]).write(d, "default")
        pki.make_leaf(issuing, [HELPER_NAME]).write(d, "helper")
        servers.append(
            f"server {{ listen {SITE}:443 ssl default_server; ssl_certificate {d}/default.pem; "
            f"ssl_certificate_key {d}/default.key; return 200 'ok'; }}"
        )
        (d / "nginx.conf").write_text(
            f"daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/nginx.log warn;\n"
            f"events {{ worker_connections 4096; }}\nhttp {{ access_log off; client_body_temp_path {d}/t; "
            f"proxy_temp_path {d}/t; fastcgi_temp_path {d}/t; uwsgi_temp_path {d}/t; scgi_temp_path {d}/t;\n"
            f"server_names_hash_bucket_size 128; server_names_hash_max_size 65536;\n" + "\n".join(servers) + "\n}\n",
            encoding="utf-8",
        )
        hosts = [f"{SITE} {name}" for name in self.names] + [f"{BLACKHOLE} {name}" for name in self.blackholed]
        (d / "hosts").write_text("\n".join([*hosts, f"{HELPER} {HELPER_NAME}"]) + "\n", encoding="ascii")
        for ns in (self.client, self.world, *self.probes):
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)
            Path(f"/etc/netns/{ns}/resolv.conf").write_text(f"nameserver {RESOLVER}\n", encoding="ascii")
        sh("ip", "link", "add", "bc0", "netns", self.client, "type", "veth", "peer", "name", "bw0", "netns", self.world)
        for ns, command in (
            (self.client, f"ip addr add {CLIENT}/24 dev bc0"),
            (self.client, "ip link set bc0 up"),
            (self.client, f"ip route add 203.0.113.0/24 via {WORLD}"),
            (self.world, f"ip addr add {WORLD}/24 dev bw0"),
            (self.world, "ip link set bw0 up"),
            (self.world, f"ip addr add {SITE}/32 dev lo"),
            (self.world, f"ip addr add {RESOLVER}/32 dev lo"),
            (self.world, f"ip addr add {BLACKHOLE}/32 dev lo"),
            (self.world, f"ip addr add {HELPER}/32 dev lo"),
            (self.world, f"iptables -A INPUT -d {BLACKHOLE} -j DROP"),
        ):
            sh("ip", "netns", "exec", ns, *command.split())
        if self.probes:
            self._probes_bridge()
        self._spawn(self.world, "nginx", "-c", str(d / "nginx.conf"))
        self._spawn(
            self.world,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            f"--addn-hosts={d / 'hosts'}",
            "--bind-interfaces",
            f"--listen-address={RESOLVER}",
            "--user=root",
            "--pid-file=",
            "--cache-size=10000",
        )
        self._wait_listening({f"{SITE}:443": "-ltn", f"{RESOLVER}:53": "-lun"})

    def _wait_listening(self, wanted: dict[str, str]) -> None:
        """Bounded: two minutes for nginx (ten thousand certificates to load) and dnsmasq."""
        for _ in range(1200):
            if all(
                address in sh("ip", "netns", "exec", self.world, "ss", flags).stdout
                for address, flags in wanted.items()
            ):
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args} exited {process.returncode} (its log is in {self.directory})")
            time.sleep(0.1)
        raise RuntimeError(f"the world's servers did not listen on {', '.join(wanted)}")

    def _probes_bridge(self) -> None:
        """Probes in namespaces of their own, each with its own address, joined by a bridge in the
        world: the helper sees (and rate-limits) each as a client apart."""
        world = ("ip", "netns", "exec", self.world)
        sh(*world, "ip", "link", "add", "hbr", "type", "bridge")
        sh(*world, "ip", "addr", "add", f"{PROBES_NET}.1/24", "dev", "hbr")
        sh(*world, "ip", "link", "set", "hbr", "up")
        for n, ns in enumerate(self.probes):
            sh("ip", "link", "add", "p0", "netns", ns, "type", "veth", "peer", "name", f"bh{n}", "netns", self.world)
            sh(*world, "ip", "link", "set", f"bh{n}", "master", "hbr", "up")
            inside = ("ip", "netns", "exec", ns)
            sh(*inside, "ip", "addr", "add", f"{PROBES_NET}.{10 + n}/24", "dev", "p0")
            sh(*inside, "ip", "link", "set", "p0", "up")
            sh(*inside, "ip", "route", "add", "203.0.113.0/24", "via", f"{PROBES_NET}.1")

    def udp_receive_drops(self) -> dict[str, int]:
        """UDP datagrams each side's kernel dropped so far for a full socket buffer (`RcvbufErrors`):
        the probe's (`client`) would be its own slowness, the world's the resolver's overload."""
        found = {}
        for side, ns in (("client", self.client), ("world", self.world)):
            rows = [line.split() for line in sh("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").stdout.splitlines()]
            names, values = [row for row in rows if row[0] == "Udp:"][:2]
            found[side] = int(dict(zip(names[1:], values[1:], strict=True))["RcvbufErrors"])
        return found

    def serve_helper(self) -> None:
        d = self.directory
        self._spawn(
            self.world, *probe_command(self.tree), "helper", "serve", "--listen", f"{HELPER}:443",
            "--tls-cert", str(d / "helper.pem"), "--tls-key", str(d / "helper.key"), "--roots", str(d / "roots.pem"),
            "--allow-documentation-addresses", "--timeout", "5",
        )  # fmt: skip
        self._wait_listening({f"{HELPER}:443": "-ltn"})

    def _spawn(self, ns: str, *args: str) -> None:
        log = self.directory / f"{Path(args[0]).name}-{len(self.processes)}.log"  # its output, to read if it exits
        with log.open("wb") as output:
            self.processes.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, *args],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.directory,  # not the checkout: `python3 -c`/`-m` put the cwd first on sys.path
                    env=self.environment(),
                )
            )

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.tree), "HOME": str(self.directory)}

    def run(self, *args: str, ns: str | None = None, timeout: float = 3600) -> Counted:
        """A command in the client namespace (or `ns`), under a parent that runs only it."""
        report = self.directory / f"counted-{time.monotonic_ns()}.json"
        result = subprocess.run(
            ["ip", "netns", "exec", ns or self.client, sys.executable, str(COUNTED), str(report), "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            env=self.environment(),
        )
        if not report.exists():
            raise RuntimeError(f"run_counted.py wrote no report for {args[:3]}: {result.stderr[-2000:]}")
        counted = json.loads(report.read_text(encoding="utf-8"))
        return Counted(**counted, stdout=result.stdout, stderr=result.stderr)

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for ns in (self.client, self.world, *self.probes):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
