"""The probe at scale, beside the tools people would use instead: one command, one table.

    sudo python3 bench/bench_scale.py [--sizes 1000,10000] [--concurrency 100] [--blackholed 100,400]

For each size N, builds the world of bench/scale_world.py (one nginx with a certificate per name,
dnsmasq answering every name from a hosts file, documentation addresses only, no route out) and
measures there, in the same run:
- `probe run` over the N healthy names (concurrency 100, zero added latency, packet forensics on as
  root): targets/s, CPU ms per target with every process of the run counted (start-up included),
  peak memory; and how many records got a verdict other than `none`, with their anomalies: on
  healthy sites every such verdict is a failure of the probe (a FAIL line, exit code 1); and the
  UDP datagrams each side's kernel dropped for a full socket buffer (the probe's, the resolver's);
- `openssl s_time -new` against the same server: CPU ms per full handshake, the probe's over it;
- `nmap --script ssl-cert -p 443` over the same names (the first 1,000: it takes a minute a
  thousand), if nmap is installed: targets/s, the probe's over it;
- `probe run` over B blackholed names (every packet dropped), `--timeout 2`: wall time over the
  ideal, ceil(B / concurrency) x 2 s for the connects' timeouts; with packet forensics on, the
  ideal also counts the TTL sweep that locates the first finding: it starts when the first connects
  have timed out and needs two waits of silence (its first tries, then their retries), so a run
  cannot end before 2 s + 2 x STEP_WAIT; the same names with `--no-forensics` are measured against
  the connects' ideal alone;
- P probes at once asking one helper (at the first size only).
docs/performance.md holds the latest table. Needs root (namespaces), nginx and dnsmasq.
"""

from __future__ import annotations

import argparse
import compileall
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale_world import HELPER_NAME, RESOLVER, ROOT, SITE, World, probe_command  # noqa: E402
from probe.forensics.locate import STEP_WAIT  # noqa: E402

NMAP_NAMES = 1000
HOLE_TIMEOUT = 2  # --timeout for the blackholed names: the connects' ideal is this, wave after wave
NMAP_LABEL = f"nmap ssl-cert: targets/s (first {NMAP_NAMES:,} names)"


@dataclass
class Verdicts:
    """What a run over healthy names recorded: every verdict but `none` is the probe's failure."""

    records: int = 0
    not_none: Counter[str] = field(default_factory=Counter)  # verdict -> records
    their_anomalies: Counter[str] = field(default_factory=Counter)  # over the records not `none`
    any_anomaly: int = 0  # records with at least one anomaly, `none` or not
    all_anomalies: Counter[str] = field(default_factory=Counter)
    sample: dict | None = None  # the first record not `none`
    reply_after: list[float] = field(default_factory=list)  # s from a UDP DNS question to its first reply read

    def read_replies(self, record: dict) -> None:
        """The resolver here answers within a millisecond: later is the probe's own delay."""
        for lookup in ((record.get("observations") or {}).get("dns") or {}).values():
            if isinstance(lookup, dict) and lookup.get("transport") == "udp":
                for query in lookup.get("queries") or []:
                    read = [reply["t"] for reply in query.get("replies") or [] if reply.get("t") is not None]
                    if read and query.get("t0") is not None:
                        self.reply_after.append(min(read) - query["t0"])

    def reply_delays(self) -> str:
        delays = sorted(self.reply_after)
        if not delays:
            return "-"
        median, p99 = delays[len(delays) // 2], delays[int(0.99 * (len(delays) - 1))]
        return f"{median:.2f} / {p99:.2f} / {delays[-1]:.2f} s ({len(delays)} replies)"

    @classmethod
    def read(cls, results: Path) -> Verdicts:
        found = cls()
        for path in sorted(results.rglob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                found.records += 1
                found.read_replies(record)
                anomalies = record.get("anomalies") or []
                found.any_anomaly += bool(anomalies)
                found.all_anomalies.update(anomalies)
                if record.get("blocking") != "none":
                    found.not_none[str(record.get("blocking"))] += 1
                    found.their_anomalies.update(anomalies)
                    found.sample = found.sample or record
        return found

    def failures(self, expected: int) -> int:
        return sum(self.not_none.values()) + max(0, expected - self.records)

    def describe(self, expected: int) -> str:
        verdicts = ", ".join(f"{v} {n}" for v, n in self.not_none.most_common())
        missing = f"; {expected - self.records} records missing" if self.records < expected else ""
        return f"{sum(self.not_none.values())} of {expected}" + (f" ({verdicts})" if verdicts else "") + missing


def top(counter: Counter[str], n: int = 5) -> str:
    return ", ".join(f"{key} {count}" for key, count in counter.most_common(n)) or "-"


def probe_args(world: World, targets: Path, out: str, concurrency: int, timeout: float) -> list[str]:
    return [
        *probe_command(world.tree), "run", "--targets", str(targets), "--out", str(world.directory / out),
        "--roots", str(world.directory / "roots.pem"), "--control-resolver", f"udp://{RESOLVER}",
        "--os-store", "none", "--lab", "--quiet", "--json", "--timeout", str(timeout),
        "--concurrency", str(concurrency), "--yes",  # unattended: consent given
    ]  # fmt: skip


STARTED = time.monotonic()


def blackholed_label(count: int, forensics_off: bool) -> str:
    return f"blackholed, {count} names{', --no-forensics' if forensics_off else ''}: wall s / ideal s"


def log(message: str) -> None:
    """What the bench is doing, on stderr (the table goes to stdout)."""
    print(f"[{time.monotonic() - STARTED:6.0f} s] {message}", file=sys.stderr, flush=True)


def write_names(path: Path, names: list[str]) -> Path:
    path.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return path


def helper_under_load(world: World, names: list[str], per_probe: int) -> tuple[int, int, Counter[str], float, Verdicts]:
    """Every probe at once, each asking the helper about its own names: (asked, answered, why the
    rest were not, wall seconds, the records' verdicts)."""
    world.serve_helper()
    started = time.perf_counter()
    running = []
    for n, ns in enumerate(world.probes):
        chosen = [names[(n * per_probe + k) % len(names)] for k in range(per_probe)]
        targets = write_names(world.directory / f"helper-{n}.txt", chosen)
        # The helper's answers under load, not its bulk endpoint: no throughput flows.
        asked = ["--helper", f"https://{HELPER_NAME}/", "--throughput", "off"]
        command = probe_args(world, targets, f"results-helper/{n}", 8, 5) + asked
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
    for path in (world.directory / "results-helper").rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for question in (json.loads(line)["observations"] or {}).get("helpers") or []:
                asked += 1
                if question["status"] == 200:
                    answered += 1
                else:
                    refused[str(question["failure"])] += 1
    return asked, answered, refused, wall, Verdicts.read(world.directory / "results-helper")


class Table:
    """Rows of values, one column per size, and a goal column that says whether it was met."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.rows: dict[str, dict[int, str]] = {}
        self.goals: dict[str, tuple[str, Callable[[float], bool], dict[int, float]]] = {}

    def add(self, size: int, label: str, text: str, value: float | None = None) -> None:
        self.rows.setdefault(label, {})[size] = text
        if value is not None and label in self.goals:
            self.goals[label][2][size] = value

    def goal(self, label: str, text: str, met: Callable[[float], bool]) -> None:
        self.goals[label] = (text, met, {})

    def print(self, header: str) -> None:
        print(header)
        print("| measure | " + " | ".join(f"{size:,} names" for size in self.sizes) + " | goal |")
        print("|---|" + "---|" * (len(self.sizes) + 1))
        for label, values in self.rows.items():
            goal = ""
            if label in self.goals:
                text, met, measured = self.goals[label]
                passed = [size for size, value in measured.items() if met(value)]
                verdict = "met at " + ", ".join(f"{size:,}" for size in passed)
                if len(passed) == len(measured):
                    verdict = "met"
                elif not passed:
                    verdict = "not met"
                goal = f"{text}: {verdict}" if measured else text
            print(f"| {label} | " + " | ".join(values.get(size, "") for size in self.sizes) + f" | {goal} |")


def measure(size: int, args: argparse.Namespace, table: Table, first: bool) -> list[str]:
    """Everything at one size, in a world of its own; returns the FAIL lines."""
    directory = Path(tempfile.mkdtemp(prefix=f"bench-scale-{size}-"))
    names = [f"site{n}.bench" for n in range(size)]
    blackholed = [f"b{n}.blackholed" for n in range(max(args.blackholed, default=0))]
    helper_probes = args.helper_probes if first else 0
    failures: list[str] = []
    log(f"{size:,} names: building the world in {directory}")
    with World(names, blackholed, directory, args.probe_tree, helper_probes) as world:
        log("probe run over the healthy names")
        targets = write_names(directory / "names.txt", names)
        forensics = ["--no-forensics"] if args.no_forensics else []
        if args.profile is not None:  # sampling costs a little: timed below without it
            profile = args.profile.resolve().with_suffix(f".{size}{args.profile.suffix}")
            spy = ["py-spy", "record", "--format", "raw", "--rate", "200", "--threads", "--subprocesses",
                   "-o", str(profile)]  # fmt: skip
            world.run(*spy, "--", *probe_args(world, targets, "results-profile", args.concurrency, 5), *forensics)
        drops_before = world.udp_receive_drops()
        run = world.run(*probe_args(world, targets, "results-names", args.concurrency, 5), *forensics)
        drops = {side: count - drops_before[side] for side, count in world.udp_receive_drops().items()}
        if run.returncode not in (0, 1):
            failures.append(f"FAIL: probe run over {size:,} names exited {run.returncode}: {run.stderr[-1500:]}")
        verdicts = Verdicts.read(directory / "results-names")
        rate, cpu_ms = size / run.wall, 1000 * run.cpu / size
        table.add(size, "probe: targets/s", f"{rate:.0f} ({run.wall:.1f} s)", rate)
        table.add(size, "probe: CPU ms per target, all processes", f"{cpu_ms:.2f}")
        at_10k = size >= 10_000  # the memory goal is set at 10,000 names
        table.add(
            size, "probe: peak RSS, largest process", f"{run.max_rss_mb:.0f} MiB", run.max_rss_mb if at_10k else None
        )
        pss = run.peak_pss_mb
        table.add(size, "probe: peak PSS, all processes together", f"{pss:.0f} MiB", pss if at_10k else None)
        if run.stray:
            table.add(size, "probe: processes left 30 s after the run", str(run.stray))
        table.add(size, "healthy: verdicts other than none", verdicts.describe(size), verdicts.failures(size))
        table.add(size, "healthy: their anomalies (top 5)", top(verdicts.their_anomalies))
        table.add(size, "healthy: records with any anomaly", str(verdicts.any_anomaly), verdicts.any_anomaly)
        table.add(size, "healthy: anomalies of all records (top 5)", top(verdicts.all_anomalies))
        table.add(size, "healthy: UDP DNS reply read after, median / p99 / max", verdicts.reply_delays())
        table.add(size, "healthy: UDP datagrams dropped for a full buffer, probe / resolver side",
                  f"{drops['client']} / {drops['world']}")  # fmt: skip
        if verdicts.failures(size):
            sample = directory.parent / f"bench-scale-{size}-not-none.json"
            sample.write_text(json.dumps(verdicts.sample, indent=1), encoding="utf-8")
            failures.append(f"FAIL: {verdicts.describe(size)} healthy names at {size:,} were not none (one: {sample})")
        if not args.probe_only and not args.no_compare:
            log("openssl s_time")
            openssl = world.run("openssl", "s_time", "-connect", f"{SITE}:443", "-new", "-time", "5")
            found = [line for line in openssl.stdout.splitlines() if "connections in" in line and "seconds" in line]
            if found:
                handshake_ms = 1000 * openssl.cpu / int(found[0].split()[0])
                table.add(size, "openssl s_time -new: CPU ms per full handshake", f"{handshake_ms:.2f}")
                ratio = cpu_ms / handshake_ms
                table.add(size, "probe CPU per target over openssl's", f"{ratio:.1f} x", ratio)
            else:
                table.add(size, "openssl s_time -new: CPU ms per full handshake", "failed: " + openssl.stderr[-200:])
            if shutil.which("nmap"):
                log("nmap --script ssl-cert")
                sample = write_names(directory / "nmap-names.txt", names[:NMAP_NAMES])
                nmap = world.run("nmap", "-Pn", "-n", "--script", "ssl-cert", "-p", "443", "-iL", str(sample), "-T4")
                certs = nmap.stdout.count("ssl-cert: Subject")
                nmap_rate = min(size, NMAP_NAMES) / nmap.wall
                table.add(size, NMAP_LABEL, f"{nmap_rate:.0f} ({certs} certs)")
                table.add(size, "probe over nmap", f"{rate / nmap_rate:.1f} x", rate / nmap_rate)
            else:
                table.add(size, NMAP_LABEL, "not installed (apt-get install nmap)")
        for count in args.blackholed:
            listed = write_names(directory / f"blackholed-{count}.txt", blackholed[:count])
            connects = math.ceil(count / args.concurrency) * HOLE_TIMEOUT  # the connects' timeouts, wave after wave
            for off in [True] if args.no_forensics else [False, True]:
                log(f"probe run over {count} blackholed names{', no forensics' if off else ''}")
                out = f"results-blackholed-{count}{'-off' if off else ''}"
                hole = world.run(
                    *probe_args(world, listed, out, args.concurrency, HOLE_TIMEOUT),
                    *(["--no-forensics"] if off else []),
                )
                ideal = connects if off else max(connects, HOLE_TIMEOUT + 2 * STEP_WAIT)  # the sweep's two silences
                label = blackholed_label(count, off)
                shown = f"{hole.wall:.1f} / {ideal:g} = {hole.wall / ideal:.2f}"
                if ideal != connects:
                    shown += f" ({hole.wall / connects:.2f} over the connects' {connects} s)"
                table.add(size, label, shown, hole.wall / ideal)
        if helper_probes:
            per_probe = 20
            log(f"{helper_probes} probes asking one helper")
            asked, answered, refused, wall_h, helped = helper_under_load(world, names, per_probe)
            why = ", ".join(f"{failure}: {count}" for failure, count in refused.most_common()) or "none refused"
            label = f"helper: {helper_probes} probes at once x {per_probe} targets"
            table.add(size, label, f"{answered} of {asked} answered in {wall_h:.1f} s ({why})")
            expected = helper_probes * per_probe
            table.add(
                size, "helper: verdicts other than none", f"{helped.describe(expected)}; {top(helped.their_anomalies)}"
            )
            if helped.failures(expected):
                failures.append(f"FAIL: {helped.describe(expected)} healthy names asked of the helper were not none")
        if args.keep is not None:
            for results in directory.glob("results-*"):
                shutil.copytree(results, args.keep / str(size) / results.name, dirs_exist_ok=True)
    shutil.rmtree(directory, ignore_errors=True)
    return failures


def numbers(text: str) -> list[int]:
    """`1000,10000`: whole numbers of at least 1 (`0` alone: none)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if values == [0]:
        return []
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"every number must be at least 1: {text!r}")
    return values


def positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number of at least 1: {text!r}")
    return int(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=numbers, default=[1000, 10000], help="numbers of names, one world each")
    parser.add_argument("--names", type=positive, help="one size alone (the same as --sizes N)")
    parser.add_argument("--concurrency", type=positive, default=100)
    parser.add_argument("--blackholed", type=numbers, default=[100, 400], help="numbers of blackholed names (0: none)")
    parser.add_argument("--no-forensics", action="store_true", help="run the probe with --no-forensics")
    parser.add_argument("--probe-only", action="store_true", help="no nmap, openssl, blackholed names or helper")
    parser.add_argument("--no-compare", action="store_true", help="no nmap or openssl (the other tools' runs)")
    parser.add_argument("--keep", type=Path, help="copy every run's results files here, a folder per size")
    parser.add_argument("--helper-probes", type=int, default=50, help="probes asking one helper at once")
    parser.add_argument("--profile", type=Path, help="also sample the probe with py-spy (collapsed stacks to FILE)")
    parser.add_argument("--probe-tree", type=Path, default=ROOT, help="the source tree whose probe is run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it builds network namespaces (and packet forensics need raw sockets)")
    missing = [tool for tool in ("nginx", "dnsmasq", "openssl") if shutil.which(tool) is None]
    if missing:
        parser.error(f"not installed: {', '.join(missing)}")
    # Bytecode compiled first, as pip does when it installs the wheel: a volunteer's probe never
    # compiles its source at start (a checkout run with PYTHONDONTWRITEBYTECODE would, every run).
    compileall.compile_dir(str(args.probe_tree / "probe"), quiet=1)
    sizes = [args.names] if args.names is not None else args.sizes
    if not sizes:
        parser.error("--sizes: at least one size")
    if args.probe_only:
        args.blackholed, args.helper_probes = [], 0
    table = Table(sizes)
    table.goal("probe: targets/s", ">= 300", lambda v: v >= 300)
    table.goal("probe over nmap", "> 15 x", lambda v: v > 15)
    table.goal("probe CPU per target over openssl's", "<= 6 x", lambda v: v <= 6)
    for label in ("probe: peak RSS, largest process", "probe: peak PSS, all processes together"):
        table.goal(label, "< 150 MiB at 10,000", lambda v: v < 150)
    for count in args.blackholed:
        for off in (False, True):
            table.goal(blackholed_label(count, off), "<= 1.2", lambda v: v <= 1.2)
    table.goal("healthy: verdicts other than none", "0", lambda v: v == 0)
    failures: list[str] = []
    forensics = "off (--no-forensics)" if args.no_forensics else "on"
    try:
        for n, size in enumerate(sizes):
            failures += measure(size, args, table, first=n == 0)
    finally:  # what was measured is shown even if a later size failed
        header = f"concurrency {args.concurrency}, {os.cpu_count()} cores, zero added latency, packet forensics"
        marked = " (but the rows marked --no-forensics)" if args.blackholed and not args.no_forensics else ""
        table.print(f"{header} {forensics}{marked}")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
