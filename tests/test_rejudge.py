"""`probe analyze` on hostile files and on records judged with other reference roots; redirect hops
named in old records as a browser reads their Location."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from probe.cli.main import main

BENCH_RECORDS = Path(__file__).resolve().parents[1] / "bench" / "data" / "lab-records.jsonl"


def test_a_hostile_record_costs_only_its_line_and_no_cut_copy_is_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = BENCH_RECORDS.read_text(encoding="utf-8").splitlines()[:3]
    hostile = json.loads(lines[0])
    hostile["observations"] = "not an object"
    also = json.loads(lines[1])
    also["observations"]["helpers"] = ["a string"]
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join([json.dumps(hostile), json.dumps(also), lines[2]]) + "\n", encoding="utf-8")
    assert main(["analyze", str(log)]) == 0
    err = capsys.readouterr().err
    assert "run.jsonl:1: skipped" in err and "run.jsonl:2: skipped" in err
    (rejudged,) = tmp_path.glob("run.analyzed-*.jsonl")
    assert len(rejudged.read_text(encoding="utf-8").splitlines()) == 1
    assert not list(tmp_path.glob(".*partial"))


def test_records_judged_with_other_roots_are_said_to_be(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bench records were judged with the lab's roots: re-judged with Mozilla's, verdicts move
    for that reason alone, and the analyst is told so."""
    for n in range(3):
        shutil.copy(BENCH_RECORDS, tmp_path / f"lab-{n}.jsonl")
    assert main(["analyze", str(tmp_path)]) == 0
    said = capsys.readouterr()
    assert "judged with other reference roots" not in said.out  # warnings go to stderr
    assert said.err.count("judged with other reference roots") == 1  # once, with the count
    assert "3 of 3 files (" in said.err and "--roots" in said.err
    # A re-judged copy names the roots it was judged with: analysed again, nothing to warn about.
    rejudged = sorted(tmp_path.glob("lab-0.analyzed-*.jsonl"))[0]
    assert main(["analyze", str(rejudged)]) == 0
    said = capsys.readouterr()
    assert "other reference roots" not in said.err and "unchanged: " in said.out


def test_a_hop_that_never_answered_is_named_as_a_browser_reads_its_location() -> None:
    """`https://site.example\\@evil.example/`: browsers go to site.example (a backslash is a slash)."""
    from probe.analyze.redirects import _hop_url
    from probe.vocabulary.observations_codec import decode

    obs = decode({"dns": None, "tcp_connect": [], "tls_handshakes": [],
                  "http_requests": [{"redirect_index": 0, "url": "http://start.example/",
                                     "location": "https://site.example\\@evil.example/"}]})  # fmt: skip
    assert _hop_url(obs, 1) == "https://site.example/@evil.example/"
