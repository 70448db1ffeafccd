"""The run keeps going, and keeps every record, when the probe itself fails on one target."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from probe import run as run_module
from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.observe.measure import MeasureConfig
from probe.targets import parse_target
from tests.conftest import PkiFixture, read_results


def test_a_failure_on_one_target_costs_no_record(
    monkeypatch: pytest.MonkeyPatch, test_pki: PkiFixture, tmp_path: Path
) -> None:
    targets = [parse_target(host, "NEWS", n) for n, host in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"], 1)]

    def observe(target: Any, config: Any, started: datetime) -> dict[str, Any]:
        if target.host == "192.0.2.3":
            raise RuntimeError("a bug while measuring")
        return {"dns": None, "tcp_connect": [], "tls_handshakes": [], "http_requests": [],
                "addresses_from": "literal", "helpers": []}  # fmt: skip

    def judge_or_fail(target: dict[str, Any], *args: Any) -> Any:
        if target["host"] == "192.0.2.2":
            raise ValueError("a bug while judging")
        return judge(target, *args)

    monkeypatch.setattr(run_module, "start_measurement", observe)  # a finished measurement, no pending part
    monkeypatch.setattr(run_module, "judge", judge_or_fail)
    roots = load_roots(test_pki.roots_pem)
    config = MeasureConfig(timeout=1, roots=roots, resolver=None, control_resolver=None, control_sni=None)
    context = AnalysisContext(roots=roots, catalogs=load_catalogs(), documentation_is_public=True)
    network = {"resolver": "system", "system_resolver_addresses": [], "control_resolver": None, "helpers": [],
               "asn": None, "country": None}  # fmt: skip
    reference = {"roots": roots.describe(), "catalogs": {}, "control_sni": None, "documentation_addresses_public": True}
    summary = run_module.execute(targets, config, context, network, reference, tmp_path, 2, io.StringIO())
    records = {r["target"]["host"]: r for r in read_results(tmp_path)}
    assert summary.measured == 3 and set(records) == {"192.0.2.1", "192.0.2.2", "192.0.2.3"}
    assert records["192.0.2.1"]["blocking"] == "none" and "error" not in records["192.0.2.1"]
    assert records["192.0.2.2"]["blocking"] == "inconclusive"
    assert "a bug while judging" in records["192.0.2.2"]["error"]
    assert records["192.0.2.2"]["observations"]["addresses_from"] == "literal"  # kept, to re-judge later
    assert records["192.0.2.3"]["observations"] is None and "a bug while measuring" in records["192.0.2.3"]["error"]
