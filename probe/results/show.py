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


def format_record(record: dict[str, Any]) -> str:
    target = record["target"]
    lines = [
        f"{target['input']}  [{target.get('category') or '-'}]",
        f"  verdict:   {record['blocking']}",
        f"  anomalies: {', '.join(record['anomalies']) or '-'}",
        f"  measured:  {record['measurement_start_time']}  id {record['measurement_id']}",
    ]
    interceptor = record.get("interceptor")
    if interceptor:
        named = interceptor.get("name") or "not in any catalog"
        how = interceptor.get("matched_by") or "-"
        lines.append(f"  interceptor: {named} (id {interceptor.get('catalog_id') or '-'}, matched by {how})")
        lines.append(f"    issuer: {interceptor['issuer']}")
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
