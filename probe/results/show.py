"""`probe show FILE`: records printed for a person, certificates described in full."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probe.analyze.certs import CERTIFICATE_ERRORS, decode_chain, describe_certificate
from probe.results.forensics_text import forensics_lines
from probe.results.reader import read_records


def _certificates(handshake: dict[str, Any]) -> list[str]:
    lines = []
    try:
        chain = decode_chain(handshake.get("peer_certificates") or [])
    except CERTIFICATE_ERRORS as exc:
        return [f"      (unparseable chain: {exc})"]
    for index, cert in enumerate(chain):
        info = describe_certificate(cert)
        lines += [
            f"      [{index}] subject: {info['subject']}",
            f"          issuer:  {info['issuer']}",
            f"          valid:   {info['not_before']} -> {info['not_after']}",
            f"          SHA-256: {info['sha256_der']}",
            f"          SPKI:    {info['sha256_spki']}",
        ]
        if info["dns_names"]:
            lines.append(f"          names:   {', '.join(info['dns_names'][:8])}")
    return lines


def _how_sure(record: dict[str, Any]) -> str:
    """`confirmed by ...` in plain words, or `unconfirmed` (records before the basis: `confirmed`)."""
    confidence = record.get("confidence") or "unconfirmed"
    basis = record.get("confidence_basis") or []
    if confidence != "confirmed" or not basis:
        return confidence
    return "confirmed by " + "; ".join(PROOF_WORDS.get(proof, proof) for proof in basis)


# How `probe show` names each proof (docs/verdicts.md argues for each).
PROOF_WORDS = {
    "catalog_fingerprint": "a catalogued interception CA's key",
    "helper_public_chain": "the helper's valid chain from outside",
    "minted_certificate": "a certificate minted for a name that cannot exist",
    "control_covers_name": "the server's own public certificate for the name, shown to the control name",
    "control_sni_reached_server": "the control name reaching the same server",
    "injected_reset": "a reset that did not come from the server",
    "helper_reached": "the helper reaching the site from outside",
    "helper_same_failure": "the helper failing alike from outside",
    "helper_same_chain": "the helper seeing the same certificate",
    "publicly_signed": "a public CA's signatures on the site's own certificate",
    "control_resolver": "the control resolver",
    "valid_chain": "a valid certificate at the address",
    "dns_blockpage_fingerprint": "a blockpage address fingerprint",
    "blockpage_fingerprint": "a blockpage fingerprint",
    "local_interceptor_catalog": "a catalogued local interceptor",
    "os_store_forges_every_name": "this machine's own trust store",
}


def format_record(record: dict[str, Any]) -> str:
    target = record["target"]
    lines = [
        f"{target['input']}  [{target.get('category') or '-'}]",
        f"  verdict:   {record['blocking']} ({_how_sure(record)})",
        f"  anomalies: {', '.join(record['anomalies']) or '-'}",
        f"  measured:  {record['measurement_start_time']}  id {record['measurement_id']}",
    ]
    interceptor = record.get("interceptor")
    if interceptor:
        named = interceptor.get("name") or "not in any catalog"
        how = interceptor.get("matched_by") or "-"
        lines.append(f"  interceptor: {named} (id {interceptor.get('catalog_id') or '-'}, matched by {how})")
        lines.append(f"    issuer: {interceptor['issuer']}")
    national = (record.get("analysis") or {}).get("national_ca")
    if national:
        named = f"{national['name']} (id {national['id']})"
        lines.append(f"  national CA: {named}: the site's own choice, not interception")
    if record.get("blockpage"):
        lines.append(f"  blockpage: {record['blockpage']['name']} (id {record['blockpage']['id']})")
    lines += [f"  forensics: {line}" for line in forensics_lines((record.get("analysis") or {}).get("forensics"))]
    observations = record.get("observations") or {}
    located = (observations.get("forensics") or {}).get("locate") or {}
    if located.get("status") == "skipped":
        lines.append(f"  forensics: locating the censor was skipped: {located.get('reason')}")
    dns = observations.get("dns")
    if dns:
        for role in ("system", "control"):
            lookup = dns.get(role)
            if lookup:
                answer = ", ".join(lookup["addresses"]) or lookup["failure"]
                lines.append(f"  dns {role} ({lookup['resolver']}): {answer}")
    for tcp in observations.get("tcp_connect", []):
        lines.append(
            f"  tcp {tcp['address']}:{tcp['port']} ({tcp.get('purpose', 'target')}): {tcp['failure'] or 'connected'}"
        )
    for handshake in observations.get("tls_handshakes", []):
        outcome = handshake["failure"] or f"{handshake['tls_version']} {handshake['cipher_suite']}"
        lines.append(f"  tls sni={handshake['server_name']} ({handshake.get('purpose', 'target')}): {outcome}")
        lines += _certificates(handshake)
    for request in observations.get("http_requests", []):
        outcome = request["failure"] or f"{request['status']} {request.get('title') or ''}".strip()
        lines.append(f"  http GET {request['request']['host']}{request['request']['path']}: {outcome}")
    for asked in observations.get("helpers", []):
        view = asked.get("response")
        if view is None:
            lines.append(f"  helper {asked['helper']}: {asked['failure']}")
            continue
        tls, page = view.get("tls") or {}, view.get("http") or {}
        seen = [f"dns {', '.join((view.get('dns') or {}).get('addresses') or []) or '-'}"]
        if tls:
            seen.append(f"tls {tls.get('failure') or ('valid' if tls.get('valid') else 'not valid')}")
        if page:
            seen.append(f"http {page.get('failure') or page.get('status')}")
        lines.append(f"  helper {asked['helper']}: {'; '.join(seen)}")
    if record.get("error"):
        lines.append(f"  probe error: {record['error'].strip().splitlines()[-1]}")
    return "\n".join(lines) + "\n"


def show_file(path: Path, include_clean: bool = False) -> str:
    records = read_records(path)
    shown = [r for r in records if include_clean or r["blocking"] != "none"]
    parts = [format_record(r) for r in shown]
    hidden = len(records) - len(shown)
    footer = f"{len(records)} records" + (
        f"; {hidden} with nothing found not shown (--all shows them)" if hidden else ""
    )
    return "\n".join(parts) + ("\n" if parts else "") + footer + "\n"
