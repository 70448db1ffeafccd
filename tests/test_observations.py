"""Typed observations: every record the repository holds decodes, and encodes back to the very JSON
it was; older or hand-made records keep every value they had and gain only documented defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.results.record import load_schema
from probe.vocabulary.observations import Observations, TtlSweep
from probe.vocabulary.observations_codec import ObservationsError, decode, encode
from probe.vocabulary.purposes import Purpose

ROOT = Path(__file__).resolve().parents[1]
# Records a run wrote: the bench's lab run, and lab runs' records kept in tests/data.
RECORD_FILES = sorted([*ROOT.glob("bench/data/*.jsonl"), *ROOT.glob("tests/data/**/*.jsonl")])


def _records() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in RECORD_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            record = json.loads(line)
            if isinstance(record.get("observations"), dict):
                found.append((f"{path.relative_to(ROOT)}:{number}", record))
    return found


RECORDS = _records()


def test_there_are_records_to_check() -> None:
    assert len(RECORDS) >= 30


@pytest.mark.parametrize("where,record", RECORDS, ids=[where for where, _ in RECORDS])
def test_a_written_record_encodes_back_to_the_same_json(where: str, record: dict[str, Any]) -> None:
    schema = load_schema()
    observations = record["observations"]
    jsonschema.validate(observations, {**schema["properties"]["observations"], "$defs": schema["$defs"]})
    typed = decode(observations)
    assert isinstance(typed, Observations)
    assert encode(typed) == observations, where
    assert decode(encode(typed)) == typed


def _kept(old: Any, new: Any) -> bool:
    """Every key `old` has is in `new` with the same value (new may have more: defaults)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and _kept(v, new[k]) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(old) == len(new) and all(map(_kept, old, new))
    return bool(old == new)


def test_an_old_record_keeps_its_values_and_gains_the_rules_defaults() -> None:
    """Keys older records lack take what the rules always read for them."""
    old = {
        "dns": None,
        "tcp_connect": [{"address": "192.0.2.1", "port": 443, "failure": None, "t0": 0.0, "t": 0.1}],
        "tls_handshakes": [{"address": "192.0.2.1", "port": 443, "server_name": "site.example", "failure": None,
                            "peer_certificates": [], "t0": 0.1, "t": 0.2}],
        "http_requests": [{"redirect_index": 0, "status": 302, "location": "https://www.site.example/"}],
    }  # fmt: skip
    typed = decode(old)
    assert typed.tcp_connect[0].purpose == Purpose.TARGET  # `.get("purpose", "target")`, made explicit
    assert typed.tls_handshakes[0].purpose == Purpose.TARGET
    assert (typed.tls_handshakes[0].alert, typed.tls_handshakes[0].os_store_valid) == (None, None)
    assert typed.helpers == () and typed.addresses_from is None
    assert typed.http_requests[0].headers == () and typed.http_requests[0].body_truncated is False
    again = encode(typed)
    assert _kept(old, again)
    assert again["tcp_connect"][0]["purpose"] == "target" and again["helpers"] == []
    assert decode(again) == typed


def test_what_a_newer_probe_adds_is_kept() -> None:
    where, record = RECORDS[0]
    newer = json.loads(json.dumps(record["observations"]))
    newer["tls_handshakes"][0]["ech"] = {"offered": True}
    newer["future_stage"] = [1, 2]
    assert encode(decode(newer)) == newer, where


def test_forensics_steps_are_typed_and_kept() -> None:
    side = {"outcome": "timeout", "failure": None, "leaf_sha256": None, "routers": [], "unreachable_from": [],
            "packets": [{"flags": "R", "ip_ttl": 61, "ip_id": 0, "payload": 0, "t": 0.5}]}  # fmt: skip
    observations = {
        "dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": [], "addresses_from": "literal",
        "helpers": [],
        "forensics": {"capture": {"status": "done"}, "locate": {
            "status": "done", "address": "203.0.113.10", "port": 443, "mode": "client_hello",
            "server_name": "site.example", "control_sni": "example.org", "stopped": "answered", "t": 3.0,
            "finding": "tls", "steps": [{"ttl": 1, "target": side, "control": side, "retry": {"target": side}}]}},
    }  # fmt: skip
    typed = decode(observations)
    assert typed.forensics is not None and isinstance(typed.forensics.locate, TtlSweep)
    (step,) = typed.forensics.locate.steps
    assert len(step.tries("target")) == 2 and len(step.tries("control")) == 1
    assert encode(typed) == observations
    skipped = {**observations, "forensics": {"capture": {"status": "skipped", "reason": "no CAP_NET_RAW"},
                                             "locate": None}}  # fmt: skip
    assert encode(decode(skipped)) == skipped


def test_a_helpers_answer_is_kept_whole_and_read_through_views() -> None:
    answer = {"version": 1, "url": "https://site.example/", "dns": "not an object", "tcp": [{"address": "x",
              "failure": None}], "tls": None, "http": {"status": 200, "title": 7, "body_length": "12",
              "failure": None, "header_names": ["X-Site"]}, "software": {"name": "kz-probe"}}  # fmt: skip
    observations = {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": [],
                    "addresses_from": None, "helpers": [{"helper": "https://helper.example/", "status": 200,
                    "failure": None, "response": answer, "t0": 0.0, "t": 1.0}]}  # fmt: skip
    view = decode(observations).helper_view()
    assert view is not None and view.dns is None and view.tls is None  # not objects: no view, as the rules read
    assert view.http is not None and (view.http.title, view.http.body_length) == (None, None)
    assert view.http.header_names == ("X-Site",)
    assert encode(decode(observations)) == observations


@pytest.mark.parametrize(
    "bad",
    [
        "not an object",
        {"tcp_connect": []},  # no dns
        {"dns": None, "helpers": ["a string"]},
        {"dns": None, "tcp_connect": [{"address": "192.0.2.1", "purpose": "sideways"}]},
        {"dns": None, "helpers": [{"helper": "h", "response": ["a list"]}]},
    ],
)
def test_malformed_observations_are_a_clear_error(bad: Any) -> None:
    with pytest.raises(ObservationsError):
        decode(bad)
