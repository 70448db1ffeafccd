"""How long `probe report` takes over a fleet's logs: a synthetic fleet built from real lab records.

    python3 bench/bench_report.py [--records 1000000 10000000] [--engine duckdb|spark] [--memory-limit 1GB]

The records in bench/data/lab-records.jsonl come from one run in the censorship lab (every kind of
verdict, with full observations: ~9 KB a record). They are cloned with varied times (30 days),
networks (the 19 Kazakh ASes of OONI's 2024 report), targets, probes and places (each target keeps
one behaviour per network, with 5% noise, as blocks last), and written as gzip'd JSON Lines, one
file per probe, as nodes upload them, once per size under --fleets (reused by later runs: 10M
records are about 10 GB; check `df -h /tmp`). The report is then built (JSON output) in a process
of its own per size, and its time and peak RSS printed; docs/performance.md keeps the figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

SAMPLE = Path(__file__).resolve().parent / "data" / "lab-records.jsonl"
NETWORKS = [
    "AS8200",
    "AS9123",
    "AS9198",
    "AS15736",
    "AS21299",
    "AS29355",
    "AS29555",
    "AS35104",
    "AS39824",
    "AS41124",
    "AS41798",
    "AS43370",
    "AS43994",
    "AS44477",
    "AS48502",
    "AS48503",
    "AS48716",
    "AS50482",
    "AS206026",
]
PLACES = ["Astana", "Almaty", "Shymkent", "Karaganda", None]


def _templates() -> list[str]:
    """Each sample record as JSON text with placeholders for what varies."""
    found = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.update({"measurement_id": "@ID@", "measurement_start_time": "@TIME@", "probe_id": "@PROBE@"})
        record["target"]["host"] = "@HOST@"
        record["network"].update({"asn": "@ASN@", "region": "@PLACE@"})
        found.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return found


def _write_probe(job: tuple[Path, int, int, int, int]) -> int:
    """One probe's file: its records, gzip'd JSON Lines as nodes upload them (a worker process)."""
    path, probe, per_probe, seed, start = job
    rng = random.Random(seed * 1_000_003 + probe)
    templates = _templates()
    pick = random.Random(seed)
    targets = [f"site{n}.example" for n in range(500)]
    behaviours = {(n, t): pick.choice(templates) for n in NETWORKS for t in targets}
    probe_id = f"{rng.getrandbits(128):032x}"
    network, place = rng.choice(NETWORKS), rng.choice(PLACES)
    place_json = json.dumps(place)
    partial = path.with_suffix(".part")
    with gzip.open(partial, "wb", compresslevel=1) as out:
        lines = []
        for n in range(per_probe):
            moment = time.gmtime(start + n * (30 * 86400 / per_probe) + rng.random() * 60)
            target = rng.choice(targets)
            # Censorship is stable per network and target (a block lasts), with some noise.
            behaviour = behaviours[(network, target)] if rng.random() > 0.05 else rng.choice(templates)
            lines.append(
                behaviour.replace('"@ID@"', f'"{rng.getrandbits(128):032x}"')
                .replace('"@TIME@"', time.strftime('"%Y-%m-%dT%H:%M:%S.000000Z"', moment))
                .replace('"@PROBE@"', f'"{probe_id}"')
                .replace('"@HOST@"', f'"{target}"')
                .replace('"@ASN@"', f'"{network}"')
                .replace('"@PLACE@"', place_json)
            )
            if len(lines) >= 2000:
                out.write(("\n".join(lines) + "\n").encode("utf-8"))
                lines = []
        if lines:
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
    partial.rename(path)
    return per_probe


def build_fleet(directory: Path, records: int, probes: int, seed: int = 7, workers: int = 2) -> int:
    """The fleet in `directory`, built once: a folder that holds it already (same size) is reused."""
    marker = directory / "FLEET"
    wanted = f"{records} records, {probes} probes, seed {seed}"
    if marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return (records // probes) * probes
    start = 1_606_780_800 - 3 * 86400  # from 28 November 2020, 30 days
    jobs = [(directory / f"probe-{p:04d}.jsonl.gz", p, records // probes, seed, start) for p in range(probes)]
    with multiprocessing.Pool(workers) as pool:  # in workers: the report's peak RSS is its own
        written = sum(pool.imap_unordered(_write_probe, jobs))
    marker.write_text(wanted, encoding="utf-8")
    return written


def measure(directory: Path, engine: str, threads: int, memory_limit: str, master: str) -> None:
    """Build the report over a fleet in this process (a fresh one per size) and print time and peak RSS."""
    from probe.report.build import build_report, write_report
    from probe.report.load import Filters

    options = {} if engine == "before" else {"engine": engine, "memory_limit": memory_limit, "spark_master": master}
    con = duckdb.connect(config={"threads": threads})
    started = time.perf_counter()
    report = build_report(con, [directory], Filters(), **options)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as out:
        write_report(report, con, "json", Path(out) / "report.json")
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Spark's JVM
    jvm = f", the JVM's {children:.0f} MB" if children > 1 else ""
    print(
        f"report ({engine}): {report.measurements:,} measurements, {len(report.episodes):,} episodes in "
        f"{elapsed:.1f} s ({report.measurements / elapsed:,.0f} records/s, {threads} threads); "
        f"peak RSS {peak:.0f} MB{jvm}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--fleets", type=Path, default=Path("/tmp/kz-fleets"), help="where fleets are built, once")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (two cores, as the target)")
    parser.add_argument("--engine", choices=("duckdb", "spark", "before"), default="duckdb",
                        help="before: the code given by --code, called as it was (no engine options)")  # fmt: skip
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's memory limit")
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--code", type=Path, help="import probe from this folder (to measure older code)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        sys.path.insert(0, str(args.code or Path(__file__).resolve().parents[1]))
        measure(args.measure, args.engine, args.threads, args.memory_limit, args.spark_master)
        return
    for records in args.records:
        directory = args.fleets / f"fleet-{records}"
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        count = build_fleet(directory, records, args.probes)
        built = time.perf_counter() - started
        size = sum(p.stat().st_size for p in directory.glob("*.gz"))
        print(f"fleet: {count:,} records in {args.probes} files, {size / 1e6:,.0f} MB gzip'd, ready in {built:.0f} s",
              flush=True)  # fmt: skip
        command = [sys.executable, __file__, "--measure", str(directory), "--engine", args.engine]
        command += ["--threads", str(args.threads), "--memory-limit", args.memory_limit]
        command += ["--spark-master", args.spark_master]
        if args.code:
            command += ["--code", str(args.code)]
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
