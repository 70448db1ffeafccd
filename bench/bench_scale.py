"""The probe at scale, beside the tools people would use instead: one command, one table.

    sudo python3 bench/bench_scale.py [--names 1000] [--concurrency 100] [--blackholed 400]

Builds a small world in two network namespaces (documentation addresses only, no route out): one
nginx serving N names, each with its own certificate (a lab CA), dnsmasq answering for them, then
measures on the same names, in the same run:
- `probe run` (concurrency 100, zero added latency): targets/s, CPU ms per target, peak RSS;
- `nmap --script ssl-cert -p 443` over the same names (if nmap is installed): targets/s;
- `openssl s_time -new` against the same server: CPU ms per full handshake;
- `probe run` over B blackholed names (every packet dropped), `--timeout 2`: wall time over the
  ideal, ceil(B / concurrency) x one target's bound.
docs/performance.md holds the latest table. Needs root (namespaces), nginx and dnsmasq.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pki  # noqa: E402

CLIENT, WORLD = "192.0.2.10", "192.0.2.1"
SITE, BLACKHOLE, RESOLVER = "203.0.113.10", "203.0.113.12", "203.0.113.53"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


class World:
    def __init__(self, names: list[str], directory: Path) -> None:
        self.names, self.directory = names, directory
        self.client, self.world = f"bench{os.getpid()}-c", f"bench{os.getpid()}-w"
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> World:
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
        for ns in (self.client, self.world):
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
            (self.world, f"iptables -A INPUT -d {BLACKHOLE} -j DROP"),
        ):
            sh("ip", "netns", "exec", ns, *command.split())
        self._spawn(self.world, "nginx", "-c", str(d / "nginx.conf"))
        self._spawn(
            self.world,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            f"--listen-address={RESOLVER}",
            "--user=root",
            "--pid-file=",
            f"--address=/bench/{SITE}",
            f"--address=/blackholed/{BLACKHOLE}",
            "--cache-size=10000",
        )
        time.sleep(1.5)
        return self

    def _spawn(self, ns: str, *args: str) -> None:
        self.processes.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def run(self, *args: str, timeout: float = 1800) -> tuple[float, float, int, subprocess.CompletedProcess[str]]:
        """(wall seconds, CPU seconds, peak RSS MB) of a command in the client namespace."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        result = subprocess.run(
            ["ip", "netns", "exec", self.client, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.directory,
            env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(self.directory)},
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, int(after.ru_maxrss / 1024), result

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)
        for ns in (self.client, self.world):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def probe_args(world: World, targets: Path, concurrency: int, timeout: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "probe.cli",
        "run",
        "--targets",
        str(targets),
        "--out",
        str(world.directory / f"results-{targets.stem}"),
        "--roots",
        str(world.directory / "roots.pem"),
        "--control-resolver",
        f"udp://{RESOLVER}",
        "--os-store",
        "none",
        "--lab",
        "--quiet",
        "--json",
        "--timeout",
        str(timeout),
        "--concurrency",
        str(concurrency),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--blackholed", type=int, default=400)
    parser.add_argument("--profile", type=Path, help="also sample the probe with py-spy (collapsed stacks to FILE)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    names = [f"site{n}.bench" for n in range(args.names)]
    rows: list[tuple[str, str]] = []
    with World(names, directory) as world:
        targets = directory / "names.txt"
        targets.write_text("\n".join(names) + "\n", encoding="utf-8")
        command = probe_args(world, targets, args.concurrency, 5)
        if args.profile is not None:  # sampling costs a little: timed below without it
            world.run(
                "py-spy",
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--threads",
                "--nonblocking",
                "-o",
                str(args.profile.resolve()),
                "--",
                *command,
            )
        wall, cpu, rss, result = world.run(*command)
        assert result.returncode in (0, 1), result.stderr[-2000:]
        rate = args.names / wall
        rows += [
            ("probe: targets/s", f"{rate:.0f}"),
            ("probe: CPU ms per target", f"{1000 * cpu / args.names:.1f}"),
            ("probe: peak RSS", f"{rss} MB"),
        ]
        if shutil.which("nmap"):
            wall_n, _, _, result = world.run(
                "nmap", "-Pn", "-n", "--script", "ssl-cert", "-p", "443", "-iL", str(targets), "-oN", "/dev/null", "-T4"
            )
            rows += [
                ("nmap ssl-cert: targets/s", f"{args.names / wall_n:.0f}"),
                ("probe over nmap", f"{rate / (args.names / wall_n):.1f} x"),
            ]
        else:
            rows.append(("nmap ssl-cert", "not installed (apt-get install nmap)"))
        _, cpu_s, _, result = world.run("openssl", "s_time", "-connect", f"{SITE}:443", "-new", "-time", "5")
        found = [line for line in result.stdout.splitlines() if "connections in" in line and "real seconds" in line]
        if found:
            count = int(found[0].split()[0])
            rows += [
                ("openssl s_time: CPU ms per handshake", f"{1000 * cpu_s / count:.2f}"),
                ("probe CPU per target over openssl's", f"{(cpu / args.names) / (cpu_s / count):.1f} x"),
            ]
        blackholed = directory / "blackholed.txt"
        blackholed.write_text("".join(f"b{n}.blackholed\n" for n in range(args.blackholed)), encoding="utf-8")
        wall_b, _, _, result = world.run(*probe_args(world, blackholed, args.concurrency, 2))
        ideal = math.ceil(args.blackholed / args.concurrency) * 2
        rows += [("blackholed: wall s / ideal s", f"{wall_b:.1f} / {ideal} = {wall_b / ideal:.2f}")]
    shutil.rmtree(directory, ignore_errors=True)
    width = max(len(label) for label, _ in rows)
    print(f"{args.names} names, concurrency {args.concurrency}, {os.cpu_count()} cores")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
