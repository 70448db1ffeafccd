"""Shared fixtures: test PKI, TLS servers and resolvers on 127.0.0.1, and record checks."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509

from probe.results.record import load_schema
from tests import pki
from tests.wheelenv import Installed, installed_wheel

# The probe keeps its installation id and the volunteer's consent in a state directory: the tests'
# own, never the home of whoever runs them (a consent recorded there would hide a missing --yes).
os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="kz-probe-test-state-"))

# The real Kazakhstan interception roots, copied into the project with their provenance (README there).
KZ_ROOTS = Path(__file__).resolve().parent / "data" / "kz-interception-roots"
QAZNET_DER_SHA256 = "00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2"


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """scapy and friends write caches under XDG dirs; keep them out of the user's home."""
    base = tmp_path_factory.mktemp("xdg")
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    """The wheel, installed in a fresh venv outside the checkout (tests/wheelenv.py): built once a
    session for tests/test_wheel.py and tests/test_service.py."""
    with installed_wheel() as venv:
        yield venv


def qaznet_root() -> x509.Certificate:
    """The real Qaznet Trust Network root (tests/data/kz-interception-roots)."""
    path = KZ_ROOTS / f"{QAZNET_DER_SHA256}.pem"
    return x509.load_pem_x509_certificate(path.read_bytes())


@dataclass
class PkiFixture:
    directory: Path
    public_root: pki.Authority
    public_intermediate: pki.Authority
    roots_pem: Path

    def leaf_files(self, issuer: pki.Authority, names: list[str], stem: str, **options: object) -> tuple[Path, Path]:
        return pki.make_leaf(issuer, names, **options).write(self.directory, stem)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFixture:
    directory = tmp_path_factory.mktemp("pki")
    root = pki.make_root(pki.name(CN="Probe Test Public Root CA", O="Probe Test Trust Services", C="US"))
    intermediate = pki.make_intermediate(
        root, pki.name(CN="Probe Test Public Issuing CA 1", O="Probe Test Trust Services")
    )
    roots_pem = pki.write_pem(directory / "reference-roots.pem", [root.cert])
    return PkiFixture(directory, root, intermediate, roots_pem)


_SCHEMA_VALIDATOR: jsonschema.Draft202012Validator | None = None


def validate_record(record: dict) -> None:
    global _SCHEMA_VALIDATOR
    if _SCHEMA_VALIDATOR is None:
        schema = load_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        _SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(schema)
    _SCHEMA_VALIDATOR.validate(record)


def read_results(out_dir: Path) -> list[dict]:
    """Every record of the one results file in `out_dir`, each validated against the schema."""
    files = sorted(out_dir.rglob("*.jsonl"))  # results/YYYY/MM/DD/<time>-<run id>.jsonl
    assert len(files) == 1, f"expected one results file, found {files}"
    text = files[0].read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), "the results file ends in half a line"
    records = [json.loads(line) for line in text.splitlines()]
    for record in records:
        validate_record(record)
    return records


def by_host(records: list[dict]) -> dict[str, dict]:
    return {record["target"]["host"]: record for record in records}


@pytest.fixture
def results_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "results"
    yield directory
