"""The certificates an episode's evidence cites, read from the record's own chain (base64 DER, leaf
first, exactly as the network presented it) with `cryptography`: subject, issuer, serial, validity
and SHA-256, so that an analyst can cite more than a fingerprint.

Only the episodes' first measurements are read again, from the file each came from (DuckDB keeps
only small columns); a chain that cannot be parsed is named by its SHA-256 and said unreadable."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
from cryptography import x509

from probe.report.events import Episode
from probe.results.files import open_text

CHAIN_KINDS = ("tls_mitm", "local_interception")
_TARGET_PURPOSES = (None, "target", "target_retry")


def describe(der: bytes) -> dict[str, Any]:
    """One certificate in words: what it names, who signed it, when it is valid."""
    described: dict[str, Any] = {"sha256": hashlib.sha256(der).hexdigest()}
    try:
        cert = x509.load_der_x509_certificate(der)
        described.update(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            not_before=cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M:%SZ"),
            not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%SZ"),
        )
    except ValueError:
        described["unreadable"] = True
    return described


def chain_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The chain of the target's first handshake that presented one."""
    observations = record.get("observations")
    handshakes = observations.get("tls_handshakes") if isinstance(observations, dict) else None
    for handshake in handshakes if isinstance(handshakes, list) else []:
        if not isinstance(handshake, dict) or handshake.get("purpose") not in _TARGET_PURPOSES:
            continue
        certificates = handshake.get("peer_certificates")
        if isinstance(certificates, list) and certificates:
            chain = []
            for encoded in certificates:
                try:
                    chain.append(describe(base64.b64decode(str(encoded), validate=True)))
                except (binascii.Error, ValueError):
                    chain.append({"unreadable": True})
            return chain
    return []


def _read(path: Path, wanted: set[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        with open_text(path, errors="replace") as handle:
            for line in handle:
                if not any(measurement_id in line for measurement_id in wanted):
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("measurement_id") in wanted:
                    found[record["measurement_id"]] = chain_of(record)
                    if len(found) == len(wanted):
                        break
    except (OSError, EOFError, ValueError):
        pass  # a file unreadable now was named when it was loaded; its chains stay unread
    return found


def add_chains(con: duckdb.DuckDBPyConnection, episodes: list[Episode]) -> None:
    """Put each interception episode's chain (`certificates`) into its evidence."""
    wanted = {e.first_measurement: e for e in episodes if e.blocking in CHAIN_KINDS and e.first_measurement}
    if not wanted:
        return
    try:
        rows = con.execute(
            "SELECT measurement_id, file FROM m WHERE measurement_id IN (SELECT unnest(?))", [list(wanted)]
        ).fetchall()
    except duckdb.Error:
        return  # an engine that keeps no file names: the evidence keeps its fingerprints
    by_file: dict[str, set[str]] = {}
    for measurement_id, file in rows:
        by_file.setdefault(file, set()).add(measurement_id)
    for file, ids in by_file.items():
        for measurement_id, chain in _read(Path(file), ids).items():
            if chain:
                wanted[measurement_id].evidence["certificates"] = chain
