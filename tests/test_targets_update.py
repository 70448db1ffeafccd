"""`probe targets --from FILE... --out FILE`: one list from the lists monitoring groups publish.

The inputs are shaped as the real ones: a Citizen Lab test list (`lists/kz.csv` in
citizenlab/test-lists), an OONI Run v2 link descriptor (ooni/spec backends/bk-005-ooni-run-v2.md)
and a plain list; the written list must read back with probe.vocabulary.targets as `probe run` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe.cli.main import main
from probe.loaders.targets import load_targets

KZ_CSV = (
    "url,category_code,category_description,date_added,source,notes\n"
    "https://www.azattyq.org/,NEWS,News Media,2017-04-12,citizenlab,\n"
    'http://vlast.kz/,POLR,Political Criticism,2019-01-01,,"blocked, then not"\n'
    "https://kaztag.kz/ru/,NEWS,News Media,2020-03-01,,\n"
)
DESCRIPTOR = {
    "name": "Kazakhstan news",
    "short_description": "Test the blocking of Kazakh news sites",
    "author": "analyst@example.org",
    "nettests": [
        {
            "test_name": "web_connectivity",
            "inputs": ["https://WWW.Azattyq.org", "https://rus.azattyq.org/a/32000000.html", "https://ҚАЗАҚ.example/"],
            "inputs_extra": [{"category_code": "HUMR"}, {"category_code": "NEWS"}, {}],
            "is_background_run_enabled": True,
        },
        {"test_name": "telegram"},
        {"test_name": "web_connectivity", "targets_name": "websites_list_prioritized", "inputs": []},
    ],
}
PLAIN = "# our own\nhttp://vlast.kz/ NEWS\nkaztag.kz:443\nexample.org MISC\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _sources(tmp_path: Path) -> list[str]:
    return [
        str(_write(tmp_path, "kz.csv", KZ_CSV)),
        str(_write(tmp_path, "kz-news.json", json.dumps(DESCRIPTOR, ensure_ascii=False))),
        str(_write(tmp_path, "ours.txt", PLAIN)),
    ]


EXPECTED = [
    ("https://www.azattyq.org/", "NEWS"),  # the CSV's category, not the descriptor's HUMR
    ("http://vlast.kz/", "POLR"),  # the CSV's, not the plain list's NEWS
    ("https://kaztag.kz/ru/", "NEWS"),
    ("https://rus.azattyq.org/a/32000000.html", "NEWS"),
    ("https://xn--80aau21bd.example/", None),
    ("https://kaztag.kz/", None),  # the host alone is another target than its /ru/ page
    ("https://example.org/", "MISC"),
]


@pytest.mark.parametrize("out_name", ["targets.csv", "targets.txt"])
def test_merge_round_trips(tmp_path: Path, out_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / out_name
    assert main(["targets", "--from", *_sources(tmp_path), "--out", str(out)]) == 0
    targets = load_targets(out)
    assert [(t.url, t.category) for t in targets] == EXPECTED
    printed = capsys.readouterr().out
    assert "kz.csv: 3 targets (Citizen Lab CSV)" in printed
    assert "kz-news.json: 3 targets (OONI Run v2)" in printed
    assert "ours.txt: 3 targets (plain list)" in printed
    assert f"{out}: 7 targets written; 2 duplicates dropped" in printed
    assert main(["targets", str(out)]) == 0  # and `probe targets FILE` accepts it as it is


def test_csv_keeps_the_citizen_lab_columns(tmp_path: Path) -> None:
    out = tmp_path / "targets.csv"
    assert main(["targets", "--from", *_sources(tmp_path), "--out", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "url,category_code,category_description,date_added,source,notes"
    assert lines[2] == 'http://vlast.kz/,POLR,Political Criticism,2019-01-01,,"blocked, then not"'
    assert lines[5] == "https://xn--80aau21bd.example/,,,,,"


def test_descriptor_wrapped_by_the_api(tmp_path: Path) -> None:
    wrapped = _write(tmp_path, "link.json", json.dumps({"archived": False, "descriptor": DESCRIPTOR}))
    out = tmp_path / "out.txt"
    assert main(["targets", "--from", str(wrapped), "--out", str(out)]) == 0
    assert [t.url for t in load_targets(out)][:2] == [
        "https://www.azattyq.org/",
        "https://rus.azattyq.org/a/32000000.html",
    ]


BAD_CASES = [
    ("kz.csv", KZ_CSV + "not-a-url,NEWS,News Media,,,\nhttps://ok.example/,NOPE,,,,\n", [
        "kz.csv:5: expected a URL in the first column, got 'not-a-url'",
        "kz.csv:6: unknown Citizen Lab category code 'NOPE'",
    ]),
    ("ours.txt", "good.example\nexample..com\nftp://files.example/\n", [
        "ours.txt:2: not a valid host name",
        "ours.txt:3: unsupported scheme 'ftp'",
    ]),
    ("link.json", json.dumps({"nettests": [{"test_name": "web_connectivity", "inputs": ["https://ok.example/", 7,
                                                                                          "https://u@x.example/"],
                                            "inputs_extra": [{"category_code": "WHAT"}, {}, {}]}]}), [
        "link.json: nettests[0].inputs[0]: unknown Citizen Lab category code 'WHAT'",
        "link.json: nettests[0].inputs[1]: expected a URL, got 7",
        "link.json: nettests[0].inputs[2]: a user name or password",
    ]),
    ("link.json", json.dumps({"nettests": [{"inputs": ["https://ok.example/"]}]}), [
        "link.json: nettests[0].test_name: expected a nettest with a test_name",
    ]),
    ("link.json", json.dumps({"name": "x", "nettests": {"test_name": "web_connectivity"}}), [
        "link.json: nettests: expected an OONI Run v2 descriptor's list of nettests",
    ]),
    ("link.json", json.dumps({"nettests": [{"test_name": "web_connectivity", "inputs": "https://ok.example/"}]}), [
        "link.json: nettests[0].inputs: expected lists of inputs and inputs_extra",
    ]),
    ("link.json", json.dumps({"nettests": [{"test_name": "dnscheck"}]}), [
        "link.json: nettests: no web_connectivity inputs",
    ]),
    ("link.json", '{"nettests": [\n{"test_name": "web_connectivity",\n}]}', ["link.json:3: not JSON"]),
    ("ours.txt", "# nothing but comments\n", ["ours.txt: no targets in the file"]),
    ("ours.txt", b"caf\xe9.example\n", ["ours.txt: not UTF-8 text"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "errors"), BAD_CASES)
def test_bad_input_is_refused_naming_the_place(
    tmp_path: Path, name: str, text: str | bytes, errors: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / name
    bad.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    out = tmp_path / "out.txt"
    out.write_text("previous.example\n", encoding="utf-8")
    assert main(["targets", "--from", str(bad), "--out", str(out)]) == 2
    said = capsys.readouterr()
    lines = said.err.splitlines()
    assert len(lines) == len(errors), said.err
    for line, error in zip(lines, errors, strict=True):
        assert line.startswith(f"probe: {tmp_path / error.split(':', 1)[0]}:{error.split(':', 1)[1]}"), line
    assert "Traceback" not in said.err
    assert f"bad entries: {len(errors)}; {out} not written" in said.out
    assert out.read_text(encoding="utf-8") == "previous.example\n"  # the old list is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.txt"])  # no partial file left


def test_skip_bad_writes_the_good_entries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "ours.txt", "good.example\nexample..com\nhttps://good.example/ NEWS\nother.example\n")
    out = tmp_path / "out.txt"
    assert main(["targets", "--from", str(bad), "--out", str(out), "--skip-bad"]) == 0
    assert [(t.url, t.category) for t in load_targets(out)] == [
        ("https://good.example/", None),
        ("https://other.example/", None),
    ]
    said = capsys.readouterr()
    assert f"probe: {bad}:2: not a valid host name" in said.err
    assert f"{out}: 2 targets written; 1 duplicates dropped, bad entries left out: 1" in said.out


def test_missing_file_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "ours.txt", PLAIN)
    out = tmp_path / "out.txt"
    assert main(["targets", "--from", str(good), str(tmp_path / "gone.csv"), "--out", str(out)]) == 2
    assert f"probe: {tmp_path / 'gone.csv'}: no such file" in capsys.readouterr().err
    assert not out.exists()
    assert main(["targets", "--from", str(good)]) == 2  # where to?
    assert "needs --out FILE" in capsys.readouterr().err
    assert main(["targets", "--out", str(out)]) == 2  # from what?
    assert "needs --out FILE" in capsys.readouterr().err
    assert main(["targets", "--from", str(good), "--out", str(out), str(good)]) == 2  # to check, or to read?
    assert "needs --out FILE" in capsys.readouterr().err
    assert not list(tmp_path.glob(".out.txt.*"))


def test_write_failure_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "ours.txt", PLAIN)
    out = tmp_path / "no-such-folder" / "out.txt"
    assert main(["targets", "--from", str(good), "--out", str(out)]) == 2
    assert f"probe: {out}: cannot write" in capsys.readouterr().err


def test_a_failed_write_leaves_the_old_list_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path, "ours.txt", PLAIN)
    out = _write(tmp_path, "targets.txt", "previous.example\n")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    assert main(["targets", "--from", str(good), "--out", str(out)]) == 2
    assert f"probe: {out}: cannot write: No space left on device" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "previous.example\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.txt", "targets.txt"]
