"""Nothing leaked: the volunteer's public address behind a home router, where the probe is
installed (a home directory names its owner), and the local paths of the shipped bench records.

Addresses here are only text in records: nothing is sent to any of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from probe.results.privacy import scrubbed_line

ROOT = Path(__file__).resolve().parents[1]
BENCH_RECORDS = ROOT / "bench" / "data" / "lab-records.jsonl"

VOLUNTEER = "95.56.1.2"  # behind NAT: never learned, so never in `own_addresses`
VOLUNTEER_V6 = "2a02:1234:5678::5"
BLOCKPAGE_SERVER = "95.59.26.10"  # the DNS answer the probe connected to: the record's own evidence
CONTROL = "1.1.1.1"
HELPER = "5.6.7.8"
HOME = "/home/alice"


def _bench_record(host: str) -> dict[str, Any]:
    for line in BENCH_RECORDS.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["target"]["host"] == host:
            return record
    raise AssertionError(f"no record of {host} in {BENCH_RECORDS}")


def _blockpage_behind_nat() -> dict[str, Any]:
    """The lab's blockpage record, moved to public addresses, with a page that prints the visitor
    (in the title, the body, a header, a redirect) beside the addresses the record holds itself."""
    text = json.dumps(_bench_record("http-blocked.lab"))
    text = text.replace("203.0.113.31", BLOCKPAGE_SERVER).replace("203.0.113.53", CONTROL)
    record = json.loads(text)
    record["network"]["helpers"] = [f"https://{HELPER}/"]
    page = record["observations"]["http_requests"][0]
    body = (
        f"<html><head><title>Blocked - your IP {VOLUNTEER}</title></head><body>Your address: {VOLUNTEER} "
        f"(::ffff:{VOLUNTEER}, {VOLUNTEER_V6}, host ip-{VOLUNTEER.replace('.', '-')}.dyn.example). "
        f"Served by {BLOCKPAGE_SERVER}; resolver {CONTROL}; helper {HELPER}; bogon 10.10.34.35; lab 203.0.113.9"
        "</body></html>"
    )
    page.update(
        title=f"Blocked - your IP {VOLUNTEER}",
        body_prefix=body,
        body_length=len(body.encode()),
        body_sha256=hashlib.sha256(body.encode()).hexdigest(),
        headers=[["Server", "nginx"], ["X-Client-IP", VOLUNTEER], ["X-Real-IP", f"[{VOLUNTEER_V6}]:51234"]],
        location=f"http://{BLOCKPAGE_SERVER}/blocked?ip={VOLUNTEER}",
    )
    record["observations"]["helpers"] = [
        {"helper": f"https://{HELPER}/", "response": {"http": {"title": f"Seen from {HELPER}", "location": None}}}
    ]
    record["analysis"]["redirect_hop"] = {"index": 1, "url": f"http://{BLOCKPAGE_SERVER}/blocked?ip={VOLUNTEER}"}
    return record


def test_the_volunteers_address_behind_nat_is_scrubbed_from_page_text() -> None:
    """No helper, no public source address: the probe never learned its address, yet the page that
    prints it reaches no record; what the record itself holds stays, so the page is still evidence."""
    record = _blockpage_behind_nat()
    line = scrubbed_line(record, frozenset())  # behind NAT: nothing learned
    for form in (VOLUNTEER, VOLUNTEER.replace(".", "-"), VOLUNTEER_V6):
        assert form not in line.decode(), form
    written = json.loads(line)
    page = written["observations"]["http_requests"][0]
    assert page["title"] == "Blocked - your IP [scrubbed]"
    assert page["headers"] == [["Server", "nginx"], ["X-Client-IP", "[scrubbed]"], ["X-Real-IP", "[[scrubbed]]:51234"]]
    assert page["location"] == f"http://{BLOCKPAGE_SERVER}/blocked?ip=[scrubbed]"
    assert written["analysis"]["redirect_hop"]["url"] == page["location"]
    assert "::ffff:[scrubbed]" in page["body_prefix"] and "host ip-[scrubbed].dyn.example" in page["body_prefix"]
    # Kept: the address connected to (a DNS answer), the control's and the helper's, a bogon, the lab's.
    for kept in (f"Served by {BLOCKPAGE_SERVER};", f"resolver {CONTROL};", f"helper {HELPER};", "10.10.34.35",
                 "203.0.113.9"):  # fmt: skip
        assert kept in page["body_prefix"], kept
    assert written["observations"]["helpers"][0]["response"]["http"]["title"] == f"Seen from {HELPER}"
    # The hash of the page as it was would give the address back to anyone with its template.
    assert page["body_sha256"] == hashlib.sha256(page["body_prefix"].encode()).hexdigest()
    assert page["body_length"] == len(page["body_prefix"].encode())
    assert record["observations"]["http_requests"][0]["title"].endswith(VOLUNTEER)  # the caller's record untouched


def test_a_catalogued_blockpage_server_stays_in_the_page_that_names_it() -> None:
    """OONI's fingerprints name some blockpage servers by address (`Location: http://82.209.230.23`):
    a documented constant that re-judging matches against, even where the redirect was not followed."""
    record = _blockpage_behind_nat()
    record["observations"]["http_requests"][0]["headers"].append(["Location", "http://82.209.230.23/?u=95.56.1.2"])
    headers = json.loads(scrubbed_line(record, frozenset()))["observations"]["http_requests"][0]["headers"]
    assert headers[-1] == ["Location", "http://82.209.230.23/?u=[scrubbed]"]


def test_a_page_cut_at_its_prefix_loses_its_hash_with_the_address() -> None:
    record = _blockpage_behind_nat()
    page = record["observations"]["http_requests"][0]
    page["body_length"] = 500_000  # the prefix is not the whole body: its hash cannot be redone
    written = json.loads(scrubbed_line(record, frozenset()))["observations"]["http_requests"][0]
    assert written["body_sha256"] is None and written["body_length"] == 500_000


def test_page_text_without_a_foreign_address_is_left_as_it_is() -> None:
    """The common case costs a search of the page text: the record itself is written."""
    from probe.results.privacy import scrub_page_text

    for host in ("http-blocked.lab", "news.lab", "dns-bogon.lab"):
        record = _bench_record(host)
        assert scrub_page_text(record) is record
    record = _blockpage_behind_nat()
    page = record["observations"]["http_requests"][0]
    page.update(title=f"Served by {BLOCKPAGE_SERVER}", body_prefix="version 1.2.3, 12:30:45, a::before, std::vector",
                headers=[], location=None)  # fmt: skip
    record["analysis"]["redirect_hop"] = None
    assert scrub_page_text(record) is record


def test_only_page_text_is_scrubbed_never_the_measurement() -> None:
    """An address in the measurement's own fields is evidence wherever it came from; an OID in a
    certificate's validation error looks like an address and is not page text."""
    record = _blockpage_behind_nat()
    record["analysis"]["tls"] = {"validation_error": "invalid extension: 2.5.29.35: missing"}
    record["observations"]["http_requests"][0]["body_prefix"] += " 2.5.29.35 and 62.1.2.3"
    written = json.loads(scrubbed_line(record, frozenset()))
    assert written["analysis"]["tls"] == record["analysis"]["tls"]
    assert written["observations"]["tcp_connect"] == record["observations"]["tcp_connect"]
    assert written["observations"]["dns"] == record["observations"]["dns"]
    assert written["observations"]["http_requests"][0]["body_prefix"].endswith(" 2.5.29.35 and [scrubbed]")


def test_probe_show_scrubs_records_written_before_the_page_text_was(tmp_path: Path) -> None:
    from probe.results.show import show

    record = _blockpage_behind_nat()
    record["blocking"] = "http"
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    text = show(path).text
    assert "http GET http-blocked.lab/: 200 Blocked - your IP [scrubbed]" in text and VOLUNTEER not in text


# --- Where the probe lives on disk: tracebacks ------------------------------------------------


def _stage_under_a_fake_home() -> Any:
    """`read_body`, as if the probe were installed in the volunteer's home directory."""
    filename = f"{HOME}/.local/lib/python3.11/site-packages/probe/observe/http.py"
    source = "\n" * 122 + (
        f"def read_body(*args, **kwargs):\n    raise ValueError('bad chunk size in {HOME}/.cache/kz-probe/page.bin')\n"
    )
    namespace: dict[str, Any] = {"__name__": "probe.netx.http"}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - a module at a path of the test's choosing
    return namespace["read_body"]


def _assert_no_local_path(error: str) -> None:
    assert HOME not in error and "alice" not in error and "site-packages" not in error, error
    assert "probe/netx/http.py:124 in read_body" in error, error
    assert error.strip().splitlines()[-1] == "ValueError: bad chunk size in ~/.cache/kz-probe/page.bin", error


def test_a_bug_in_a_stage_is_recorded_with_module_relative_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.observe import measure
    from probe.observe.config import MeasureConfig
    from probe.vocabulary.targets import parse_target

    monkeypatch.setenv("HOME", HOME)
    monkeypatch.setattr(measure, "_observe_target", _stage_under_a_fake_home())
    config = MeasureConfig(timeout=1.0, roots=None, resolver=None, control_resolver=None, control_sni=None)  # type: ignore[arg-type]
    target = parse_target("192.0.2.1", None, 1)  # an address: no DNS, and nothing is sent anywhere
    measured = asyncio.run(measure.measure_target(target, config, datetime.now(UTC)))
    error = measured.observations.stage_error
    _assert_no_local_path(error)
    assert "probe/observe/measure.py" in error  # the stage that called it, by its module


def test_a_bug_in_measuring_or_judging_is_recorded_without_local_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    from probe.netx.own_addresses import OwnAddresses
    from probe.results.record import RunContext
    from probe.run import execute as run
    from probe.run import recorder
    from probe.run.recorder import Item, record_line
    from probe.vocabulary.observations import Observations
    from probe.vocabulary.targets import parse_target

    monkeypatch.setenv("HOME", HOME)
    broken = _stage_under_a_fake_home()
    target = parse_target("192.0.2.1", None, 1)
    monkeypatch.setattr(run, "measure_target", broken)
    begun = type("Begun", (), {"dns": None, "cancel": lambda self: None})()  # its questions: none, an address
    monkeypatch.setattr(run, "begin_target", lambda *args: begun)
    handed: list[Item] = []

    async def hand_over(self: object, item: Item) -> None:  # the run's loop hands each record over
        handed.append(item)

    recorder_stub = type("Recorder", (), {"handed": hand_over})()
    lag = type("Lag", (), {"lag_between": lambda self, start, end: 0.0})()
    runtime = type("Runtime", (), {"lag": lag})()
    config = type("Config", (), {"own_addresses": OwnAddresses()})()
    one = run._Run(config, None, None, recorder_stub, runtime, None)  # type: ignore[arg-type]
    slot = asyncio.Event()
    slot.set()  # its measuring slot, free
    asyncio.run(one.one(target, None, slot, lambda: None, lambda: None))  # type: ignore[arg-type]
    (item,) = handed
    assert item.observations is None and item.error is not None
    _assert_no_local_path(item.error)
    monkeypatch.setattr(recorder, "judge_observations", broken)
    item = Item(target, datetime.now(UTC), Observations(None, (), (), ()), None, False, frozenset())
    line, _ = record_line(item, RunContext("0" * 32, {}, {}), None)  # type: ignore[arg-type]
    _assert_no_local_path(json.loads(line)["error"])


# --- The shipped bench records -----------------------------------------------------------------

_LOCAL_PATH = re.compile(r"(?<![\w:/.])/(?:home|root|tmp|usr|etc|var|opt|Users|private)/|[A-Za-z]:\\")
_ADDRESS = re.compile(
    r"(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])|(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
)


def _strings(value: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [pair for name, item in value.items() for pair in _strings(item, name)]
    if isinstance(value, list):
        return [pair for item in value for pair in _strings(item, key)]
    return []


def test_the_bench_records_hold_no_local_path_and_no_real_address() -> None:
    """Shipped in the repository: trust files by name only, and only the lab's addresses (the
    documentation ranges, and the bogon its censor answers with)."""
    for number, line in enumerate(BENCH_RECORDS.read_text(encoding="utf-8").splitlines(), start=1):
        record = json.loads(line)
        for key, text in _strings(record):
            assert not _LOCAL_PATH.search(text), f"line {number}: {key}: {text[:120]}"
            if key == "validation_error":  # certificate extensions' OIDs (2.5.29.35) look like addresses
                continue
            for found in _ADDRESS.findall(text):
                try:
                    address = ipaddress.ip_address(found)
                except ValueError:
                    continue  # a time (18:51:27), not an address
                assert not address.is_global, f"line {number}: {key}: {found}"
        for source in (record["reference"]["roots"]["source"], (record["reference"]["os_store"] or {}).get("source")):
            assert source is None or "/" not in source, f"line {number}: {source}"
