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
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import pki  # noqa: E402

CLIENT, WORLD = "192.0.2.10", "192.0.2.1"
SITE, BLACKHOLE, RESOLVER = "203.0.113.10", "203.0.113.12", "203.0.113.53"
HELPER, HELPER_NAME = "203.0.113.20", "helper.lab"
PROBES_NET = "198.51.100"  # one address per probe asking the helper, on a bridge in the world


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=120)


class World:
    def __init__(self, names: list[str], directory: Path, helper_probes: int = 0) -> None:
        self.names, self.directory = names, directory
        self.client, self.world = f"bench{os.getpid()}-c", f"bench{os.getpid()}-w"
        self.probes = [f"bench{os.getpid()}-p{n}" for n in range(helper_probes)]
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
            "--bind-interfaces",
            f"--listen-address={RESOLVER}",
            "--user=root",
            "--pid-file=",
            f"--address=/bench/{SITE}",
            f"--address=/blackholed/{BLACKHOLE}",
            f"--address=/{HELPER_NAME}/{HELPER}",
            "--cache-size=10000",
        )
        time.sleep(1.5)
        return self

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

    def serve_helper(self) -> None:
        d = self.directory
        self._spawn(
            self.world, sys.executable, "-m", "probe.cli", "helper", "serve", "--listen", f"{HELPER}:443",
            "--tls-cert", str(d / "helper.pem"), "--tls-key", str(d / "helper.key"), "--roots", str(d / "roots.pem"),
            "--allow-documentation-addresses", "--timeout", "5",
        )  # fmt: skip
        for _ in range(100):  # bounded: ten seconds for the helper to listen
            if f"{HELPER}:443" in sh("ip", "netns", "exec", self.world, "ss", "-ltn").stdout:
                return
            time.sleep(0.1)
        raise RuntimeError("the helper did not start")

    def _spawn(self, ns: str, *args: str) -> None:
        self.processes.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(self.directory)}

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
            env=self.environment(),
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu, int(after.ru_maxrss / 1024), result

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)
        for ns in (self.client, self.world, *self.probes):
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
        "--yes",  # unattended: consent given
    ]


def helper_under_load(world: World, names: list[str], per_probe: int) -> tuple[int, int, Counter[str], float]:
    """Every probe at once, each asking the helper about its own names: (asked, answered, why the
    rest were not, wall seconds)."""
    world.serve_helper()
    started = time.perf_counter()
    running = []
    for n, ns in enumerate(world.probes):
        targets = world.directory / f"helper-{n}.txt"
        targets.write_text("".join(f"{names[(n * per_probe + k) % len(names)]}\n" for k in range(per_probe)))
        command = probe_args(world, targets, 8, 5) + ["--helper", f"https://{HELPER_NAME}/"]
        running.append(
            subprocess.Popen(
                ["ip", "netns", "exec", ns, *command],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=world.directory,
                env=world.environment(),
            )
        )
    for process in running:
        process.wait(timeout=600)
    wall = time.perf_counter() - started
    asked = answered = 0
    refused: Counter[str] = Counter()
    for n in range(len(world.probes)):
        for path in (world.directory / f"results-helper-{n}").rglob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                for question in (json.loads(line)["observations"] or {}).get("helpers") or []:
                    asked += 1
                    if question["status"] == 200:
                        answered += 1
                    else:
                        refused[str(question["failure"])] += 1
    return asked, answered, refused, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--blackholed", type=int, default=400)
    parser.add_argument("--no-forensics", action="store_true", help="run the probe with --no-forensics")
    parser.add_argument("--probe-only", action="store_true", help="time the probe alone (no nmap, openssl, helper)")
    parser.add_argument("--keep", type=Path, help="copy the probe's results files here (to look at its records)")
    parser.add_argument("--helper-probes", type=int, default=50, help="probes asking one helper at once")
    parser.add_argument("--profile", type=Path, help="also sample the probe with py-spy (collapsed stacks to FILE)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    names = [f"site{n}.bench" for n in range(args.names)]
    rows: list[tuple[str, str]] = []
    if args.probe_only:
        args.blackholed = args.helper_probes = 0
    with World(names, directory, args.helper_probes) as world:
        targets = directory / "names.txt"
        targets.write_text("\n".join(names) + "\n", encoding="utf-8")
        command = probe_args(world, targets, args.concurrency, 5) + (["--no-forensics"] if args.no_forensics else [])
        if args.profile is not None:  # sampling costs a little: timed below without it
            world.run(
                "py-spy",
                "record",
                "--format",
                "raw",
                "--rate",
                "200",
                "--threads",
                "--gil",
                "-o",
                str(args.profile.resolve()),
                "--",
                *command,
            )
        wall, cpu, rss, result = world.run(*command)
        assert result.returncode in (0, 1), result.stderr[-2000:]
        if args.keep is not None:
            shutil.copytree(directory / "results-names", args.keep, dirs_exist_ok=True)
        rate = args.names / wall
        rows += [
            ("probe: targets/s", f"{rate:.0f}"),
            ("probe: CPU ms per target", f"{1000 * cpu / args.names:.1f}"),
            ("probe: peak RSS", f"{rss} MB"),
        ]
        if not args.probe_only and shutil.which("nmap"):
            # nmap takes about a minute a thousand names: timed on the first thousand at most.
            sample = directory / "nmap-names.txt"
            sample.write_text("\n".join(names[:1000]) + "\n", encoding="utf-8")
            wall_n, _, _, result = world.run(
                "nmap", "-Pn", "-n", "--script", "ssl-cert", "-p", "443", "-iL", str(sample), "-oN", "/dev/null", "-T4"
            )
            nmap_rate = min(len(names), 1000) / wall_n
            rows += [
                ("nmap ssl-cert: targets/s", f"{nmap_rate:.0f}"),
                ("probe over nmap", f"{rate / nmap_rate:.1f} x"),
            ]
        elif not args.probe_only:
            rows.append(("nmap ssl-cert", "not installed (apt-get install nmap)"))
        found = []
        if not args.probe_only:
            _, cpu_s, _, result = world.run("openssl", "s_time", "-connect", f"{SITE}:443", "-new", "-time", "5")
            found = [line for line in result.stdout.splitlines() if "connections in" in line and "seconds" in line]
        if found:
            count = int(found[0].split()[0])
            rows += [
                ("openssl s_time: CPU ms per handshake", f"{1000 * cpu_s / count:.2f}"),
                ("probe CPU per target over openssl's", f"{(cpu / args.names) / (cpu_s / count):.1f} x"),
            ]
        if args.blackholed > 0:
            blackholed = directory / "blackholed.txt"
            blackholed.write_text("".join(f"b{n}.blackholed\n" for n in range(args.blackholed)), encoding="utf-8")
            wall_b, _, _, result = world.run(*probe_args(world, blackholed, args.concurrency, 2))
            ideal = math.ceil(args.blackholed / args.concurrency) * 2
            rows += [("blackholed: wall s / ideal s", f"{wall_b:.1f} / {ideal} = {wall_b / ideal:.2f}")]
        if args.helper_probes > 0:
            per_probe = 20
            asked, answered, refused, wall_h = helper_under_load(world, names, per_probe)
            why = ", ".join(f"{failure}: {count}" for failure, count in refused.most_common()) or "none refused"
            rows += [
                (
                    f"helper: {args.helper_probes} probes at once x {per_probe} targets",
                    f"{answered} of {asked} answered in {wall_h:.1f} s ({why})",
                )
            ]
    shutil.rmtree(directory, ignore_errors=True)
    width = max(len(label) for label, _ in rows)
    print(f"{args.names} names, concurrency {args.concurrency}, {os.cpu_count()} cores")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


if __name__ == "__main__":
    main()
