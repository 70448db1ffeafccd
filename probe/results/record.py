"""The results format: one JSON object per target, one line each, in one file per run.

docs/results.md and probe/results/record.schema.json describe the format; `writer` writes it,
`reader` reads it back.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from probe import SOFTWARE_NAME, __version__
from probe.analyze.verdict import Judgement
from probe.vocabulary.targets import Target

SCHEMA_VERSION = 2  # 2: `confidence`, chain failure causes, AIA fetches, redirect hops


def utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def target_fields(target: Target) -> dict[str, Any]:
    return {
        "input": target.input,
        "host": target.host,
        "port": target.port,
        "scheme": target.scheme,
        "url": target.url,
        "category": target.category,
        "line": target.source_line,
    }


@dataclass(frozen=True)
class RunContext:
    """What every record of one run shares."""

    run_id: str
    network: dict[str, Any]
    reference: dict[str, Any]
    probe_id: str | None = None  # the random installation id (probe/identity.py), never an address


def build_record(
    run: RunContext,
    target: Target,
    started: datetime,
    observations: dict[str, Any] | None,
    judgement: Judgement,
    error: str | None = None,
    probe_lag: float | None = None,
    measurement_id: str | None = None,
) -> dict[str, Any]:
    """One target's record. `probe_lag`: how far behind the probe itself was while measuring it
    (seconds; a measured target only), so that an analyst can discount records made under load.
    `measurement_id`: the run's for the target (it finds the record again), or a new one."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "measurement_id": measurement_id or uuid.uuid4().hex,
        "run_id": run.run_id,
        "probe_id": run.probe_id,
        "measurement_start_time": utc_timestamp(started),
        "software": {"name": SOFTWARE_NAME, "version": __version__},
        "target": target_fields(target),
        "network": run.network,
        "reference": run.reference,
        "observations": observations,
        **judgement_fields(judgement),
    }
    if error is not None:
        record["error"] = error
    if probe_lag is not None:
        record["probe_lag"] = probe_lag
    return record


def judgement_fields(judgement: Judgement) -> dict[str, Any]:
    """What analysis derives: written by a run, and again by `probe analyze`."""
    return {
        "analysis": {
            "tls": judgement.tls,
            "redirect_hop": judgement.redirect_hop,
            "forensics": judgement.forensics,
            "national_ca": judgement.national_ca,
            "throttle": judgement.throttle,  # issue 22
        },
        "anomalies": judgement.anomalies,
        "blocking": judgement.blocking,
        "confidence": judgement.confidence,
        "confidence_basis": [str(proof) for proof in judgement.basis],
        "interceptor": judgement.interceptor,
        "blockpage": judgement.blockpage,
    }


def load_schema() -> dict[str, Any]:
    return json.loads((resources.files("probe.results") / "record.schema.json").read_text(encoding="utf-8"))
