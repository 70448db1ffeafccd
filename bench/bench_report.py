"""How long `probe report` takes over a fleet's logs: a synthetic fleet built from real lab records.

    python3 bench/bench_report.py [--records 1000000] [--probes 200] [--keep DIR]

The records in bench/data/lab-records.jsonl come from one run in the censorship lab (every kind of
verdict, with full observations: ~9 KB a record). They are cloned with varied times (30 days),
networks (the 19 Kazakh ASes of OONI's 2024 report), targets, probes and places (each target keeps
one behaviour per network, with 5% noise, as blocks last), and written as
zstd-compressed JSON Lines, one file per probe, as nodes would upload them. The report is then built
(JSON output) and timed; docs/performance.md keeps the latest figures.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.report import build_report, write_report  # noqa: E402
from probe.report.load import Filters  # noqa: E402

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


def build_fleet(directory: Path, records: int, probes: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    templates = _templates()
    targets = [f"site{n}.example" for n in range(500)]
    behaviours = {(n, t): rng.choice(templates) for n in NETWORKS for t in targets}
    per_probe = records // probes
    start = time.time() - 30 * 86400
    written = 0
    for probe in range(probes):
        probe_id = f"{rng.getrandbits(128):032x}"
        network, place = rng.choice(NETWORKS), rng.choice(PLACES)
        place_json = json.dumps(place)
        path = directory / f"probe-{probe:04d}.jsonl.zst"
        with zstandard.open(path, "wb", cctx=zstandard.ZstdCompressor(level=1)) as out:
            lines = []
            for n in range(per_probe):
                moment = time.gmtime(start + n * (30 * 86400 / per_probe) + rng.random() * 60)
                target = rng.choice(targets)
                # Censorship is stable per network and target (a block lasts), with some noise.
                behaviour = behaviours[(network, target)] if rng.random() > 0.05 else rng.choice(templates)
                line = (
                    behaviour.replace('"@ID@"', f'"{rng.getrandbits(128):032x}"')
                    .replace('"@TIME@"', time.strftime('"%Y-%m-%dT%H:%M:%S.000000Z"', moment))
                    .replace('"@PROBE@"', f'"{probe_id}"')
                    .replace('"@HOST@"', f'"{target}"')
                    .replace('"@ASN@"', f'"{network}"')
                    .replace('"@PLACE@"', place_json)
                )
                lines.append(line)
                if len(lines) >= 2000:
                    out.write(("\n".join(lines) + "\n").encode("utf-8"))
                    lines = []
            if lines:
                out.write(("\n".join(lines) + "\n").encode("utf-8"))
        written += per_probe
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="build the fleet here and keep it")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (two cores, as the target)")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="fleet-"))
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = build_fleet(directory, args.records, args.probes)
    built = time.perf_counter() - started
    size = sum(p.stat().st_size for p in directory.iterdir())
    print(f"fleet: {count:,} records in {args.probes} files, {size / 1e6:.0f} MB compressed, built in {built:.0f} s")
    con = duckdb.connect(config={"threads": args.threads})
    started = time.perf_counter()
    report = build_report(con, [directory], Filters())
    write_report(report, con, "json", directory / "report.json")
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"report: {report.measurements:,} measurements, {len(report.episodes):,} episodes in {elapsed:.1f} s "
        f"({report.measurements / elapsed:,.0f} records/s, {args.threads} threads); peak RSS {peak:.0f} MB"
    )
    print(
        f"target: 1,000,000 records in under 60 s -> {'met' if elapsed * 1e6 / count < 60 else 'not met'} "
        f"(extrapolated {elapsed * 1e6 / count:.0f} s)"
    )
    if args.keep is None:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


if __name__ == "__main__":
    main()
