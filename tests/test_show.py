"""`probe show` as a volunteer meets it: a file cut short by a killed run, a folder of runs, an
offline run of many targets, and anomaly codes explained in words."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from probe.cli.main import main
from probe.vocabulary.anomalies import ANOMALIES

ROOT = Path(__file__).resolve().parents[1]
BENCH_LINES = (ROOT / "bench" / "data" / "lab-records.jsonl").read_text(encoding="utf-8").splitlines()
# Records with something found (shown without --all), by host.
FOUND = {json.loads(line)["target"]["host"]: line for line in BENCH_LINES if json.loads(line)["blocking"] != "none"}


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["show", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_file_cut_short_shows_every_record_before_the_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed while writing leaves half a line: every whole record is still shown, then the place."""
    hosts = sorted(FOUND)[:3]
    cut = FOUND[hosts[-1]][:200]
    path = tmp_path / "x.jsonl"
    path.write_text("".join(FOUND[host] + "\n" for host in hosts) + cut, encoding="utf-8")
    code, out, err = _show(capsys, str(path))
    assert code == 2
    for host in hosts:
        assert f"\n  verdict:   {json.loads(FOUND[host])['blocking']}" in out and host in out, host
    assert out.count("  verdict:") == 3
    assert f"probe: {path}:4: not a whole record (cut short?)" in err
    assert "Traceback" not in err


def test_a_bad_line_in_the_middle_costs_no_record_after_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = sorted(FOUND)[:2]
    path = tmp_path / "x.jsonl"
    path.write_text(f'{FOUND[first]}\nnot json\n{{"no": 1}}\n{FOUND[second]}\n', encoding="utf-8")
    code, out, err = _show(capsys, str(path))
    assert code == 2 and first in out and second in out
    assert f"{path}:2: not a JSON record" in err and f"{path}:3: not a probe record" in err


def test_a_folder_is_every_results_file_in_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As report, analyze and upload take it: the run folders' files, plain or compressed."""
    hosts = sorted(FOUND)[:3]
    day = tmp_path / "results" / "2026" / "11" / "29"
    day.mkdir(parents=True)
    (day / "20261129T185125Z-a.jsonl").write_text(FOUND[hosts[0]] + "\n", encoding="utf-8")
    (day / "20261129T190000Z-b.jsonl.gz").write_bytes(gzip.compress((FOUND[hosts[1]] + "\n").encode()))
    (tmp_path / "results" / "notes.txt").write_text("not results\n", encoding="utf-8")
    other = tmp_path / "results" / "2026" / "11" / "30"
    other.mkdir(parents=True)
    (other / "20261130T080000Z-c.jsonl").write_text(FOUND[hosts[2]] + "\n", encoding="utf-8")
    code, out, err = _show(capsys, str(tmp_path / "results"))
    assert (code, err) == (0, "")
    for host in hosts:
        assert host in out, host
    assert "3 records in 3 files" in out
    (tmp_path / "empty").mkdir()
    code, out, err = _show(capsys, str(tmp_path / "empty"))
    assert code == 2 and "no results files" in err and "Traceback" not in err


def _offline_records(count: int) -> list[bytes]:
    """An offline run's records, made as a run makes them (judged and written by the recorder)."""
    from probe.analyze.verdict import AnalysisContext
    from probe.loaders.catalogs import load_catalogs
    from probe.loaders.roots import load_roots
    from probe.results.record import RunContext
    from probe.run.recorder import Item, record_line
    from probe.vocabulary.targets import parse_target

    analysis = AnalysisContext(roots=load_roots(), catalogs=load_catalogs())
    run = RunContext("1" * 32, {"resolver": "system"}, {})
    lines = []
    for number in range(1, count + 1):
        item = Item(parse_target(f"site{number}.example", None, number), datetime.now(UTC), None, None, True,
                    frozenset())  # fmt: skip
        lines.append(record_line(item, run, analysis)[0])
    return lines


def test_an_offline_run_is_one_line_not_a_block_per_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "offline.jsonl"
    path.write_bytes(b"".join(_offline_records(76)))
    code, out, err = _show(capsys, str(path))
    assert (code, err) == (0, "")
    assert "76 targets: offline (no network)\n" in out
    assert "site1.example" not in out and "verdict:" not in out
    assert out.endswith("76 records\n"), out  # no codes printed, so none to explain
    withdrawn = []  # offline by the run's evidence: observations kept, every control failed
    for line in _offline_records(40):
        record = json.loads(line)
        record.update(offline="no_internet", observations={"dns": None, "tcp_connect": [], "tls_handshakes": []})
        withdrawn.append(json.dumps(record) + "\n")
    path.write_text("".join(withdrawn), encoding="utf-8")
    code, out, err = _show(capsys, str(path))
    assert "40 targets: offline (no internet: nothing the probe asked answered)\n" in out and "verdict:" not in out
    small = tmp_path / "two.jsonl"
    small.write_bytes(b"".join(_offline_records(2)))
    code, out, _ = _show(capsys, str(small))
    assert "2 targets: offline (no network): site1.example, site2.example\n" in out


def test_anomaly_codes_are_explained_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("".join(line + "\n" for line in FOUND.values()), encoding="utf-8")
    code, out, _ = _show(capsys, str(path))
    printed = {code for host in FOUND for code in json.loads(FOUND[host])["anomalies"]}
    assert printed and "What the anomaly codes mean:" in out
    legend = out.split("What the anomaly codes mean:", 1)[1]
    flat = " ".join(legend.split())
    for anomaly in printed:
        assert f"{anomaly}: {' '.join(ANOMALIES[anomaly].split())}" in flat, anomaly
        assert legend.count(f"\n  {anomaly}: ") == 1, anomaly  # once, however many records carry it
    explained = {line.split(":")[0].strip() for line in legend.splitlines() if line.startswith("  ") and line[2] != " "}
    assert explained == printed  # only the codes printed
