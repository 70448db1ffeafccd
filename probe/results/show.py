"""`probe show PATH`: records printed for a person, certificates described in full.

PATH is a results file or a folder of them (found as `probe report` finds them). Every readable
record is printed, and then each line that is not one, by its place. Records that claim nothing
about their site (an offline run, targets the run's deadline left: no observations) are counted on
one line per verdict instead of a block each. The anomaly codes printed are explained at the end.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probe.analyze.certs import CERTIFICATE_ERRORS, decode_chain, describe_certificate
from probe.results.files import open_text, results_files
from probe.results.forensics_text import forensics_lines
from probe.results.privacy import scrub_page_text
from probe.results.throughput_text import throughput_lines  # issue 22
from probe.vocabulary.anomalies import ANOMALIES, Anomaly

GROUP_NAMES_UP_TO = 5  # a group of no more targets than this names them
LEGEND_WIDTH = 100


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
    "quic_control_sni_completed": "the control name's QUIC handshake completing at the same address",  # issue 22
    "control_flows": "the same server's flows for the control name and for none, at full speed",  # issue 22
}


def format_record(record: dict[str, Any]) -> str:
    target = record["target"]
    lines = [
        f"{target['input']}  [{target.get('category') or '-'}]",
        f"  verdict:   {record['blocking']} ({_how_sure(record)})",
        f"  anomalies: {', '.join(record['anomalies']) or '-'}",
        f"  measured:  {record['measurement_start_time']}  id {record['measurement_id']}",
    ]
    lines += _network_state_lines(record.get("network_state"))  # issue 22: the network's state meanwhile
    interceptor = record.get("interceptor")
    if interceptor:
        named = interceptor.get("name") or "not in any catalog"
        how = interceptor.get("matched_by") or "-"
        if how in ("issuer_name", "subject_name"):
            how += ": by name only, which any CA can carry"
        lines.append(f"  interceptor: {named} (id {interceptor.get('catalog_id') or '-'}, matched by {how})")
        lines.append(f"    issuer: {interceptor['issuer']}")
    national = (record.get("analysis") or {}).get("national_ca")
    if national:
        named = f"{national['name']} (id {national['id']})"
        if record.get("blocking") == "tls_mitm":
            lines.append(f"  national CA: {named}, intercepting here (see what proved it above)")
        else:
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
    lines += _quic_lines(observations.get("quic"))  # issue 22: QUIC
    throttle = (record.get("analysis") or {}).get("throttle")  # issue 22: throttling
    lines += throughput_lines(observations.get("throughput"), throttle)  # issue 22
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
    if observations.get("stage_error"):
        lines.append(f"  probe error while measuring: {_last_line(observations['stage_error'])}")
    if record.get("error"):
        lines.append(f"  probe error: {_last_line(record['error'])}")
    return "\n".join(lines) + "\n"


NETWORK_STATE_WORDS = {  # issue 22 (docs/verdicts.md, "The network's state")
    "full": "full connectivity",
    "cut_off_abroad": "cut off from abroad (domestic services answered, no foreign one)",
    "allow_list": "an allow-list (domestic services and some foreign ones answered, others not)",
    "no_internet": "no internet (no reference service answered)",
    "unknown": "unknown (too little evidence)",
}


def _network_state_lines(state: dict[str, Any] | None) -> list[str]:
    """The network's state while the target was measured; a restricted one explains the site's failure."""
    if not state:
        return []
    counts = (f"domestic {state['domestic']['answered']}/{state['domestic']['asked']}, "
              f"foreign {state['foreign']['answered']}/{state['foreign']['asked']} answered")  # fmt: skip
    lines = [f"  network:   {NETWORK_STATE_WORDS.get(state['state'], state['state'])} ({counts}; {state['basis']})"]
    if state["state"] in ("cut_off_abroad", "allow_list", "no_internet"):
        lines.append("             a failure here is the network's state, not this site's blocking")
    return lines


def _quic_lines(quic: dict[str, Any] | None) -> list[str]:
    """Why QUIC was tried, then each handshake and how it ended (issue 22)."""
    if not quic:
        return []
    why = f"h3 advertised ({quic['alt_svc']})" if quic.get("reason") == "alt_svc" else "asked (--quic always)"
    lines = [f"  quic: {why}"]
    for h in quic.get("handshakes") or []:
        if h["failure"] is None:
            outcome = f"{h.get('negotiated_protocol') or '-'} (QUIC {h.get('quic_version') or '?'})"
            page = h.get("http_status") or h.get("http_failure")
            outcome += f", HTTP/3 {page}" if page else ""
        elif h.get("datagrams_received"):
            alert = f" (alert {h['alert']})" if h.get("alert") else ""
            outcome = f"{h['failure']}{alert} after {h['datagrams_received']} datagrams"
        else:
            outcome = f"{h['failure']}, nothing came back"
        lines.append(f"  quic {h['address']}:{h['port']} sni={h['server_name']} ({h['purpose']}): {outcome}")
    return lines


def _last_line(text: str) -> str:
    """What a probe error was (its last line: `Type: message`)."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else "-"


@dataclass
class Shown:
    """What `probe show` prints, and the lines of the files that are not records, by their place."""

    text: str
    unreadable: list[str] = field(default_factory=list)


def show_file(path: Path, include_clean: bool = False) -> str:
    return show(path, include_clean).text


def show(path: Path, include_clean: bool = False) -> Shown:
    """Every readable record of a results file, or of every results file in a folder."""
    files = results_files([path])
    parts: list[str] = []
    unreadable: list[str] = []
    codes: set[str] = set()
    total = hidden = 0
    for file in files:
        blocks: list[str] = []
        groups: dict[str, list[str]] = {}
        for place, record in _records(file, unreadable):
            total += 1
            if not include_clean and record.get("blocking") == "none":
                hidden += 1
            elif record.get("observations") is None or record.get("blocking") == "offline":  # one line a verdict
                groups.setdefault(_unmeasured(record), []).append(str(record["target"].get("input")))
            else:
                try:
                    blocks.append(format_record(scrub_page_text(record)))
                except (KeyError, TypeError, AttributeError, IndexError) as exc:
                    unreadable.append(f"{place}: a record this version cannot show ({type(exc).__name__}: {exc})")
                    continue
                codes.update(str(code) for code in record.get("anomalies") or [])
        blocks += [_group_line(words, names) for words, names in groups.items()]
        if len(files) > 1 and blocks:
            blocks.insert(0, f"== {file}\n")
        parts += blocks
    footer = f"{total} records" + (f" in {len(files)} files" if len(files) > 1 else "")
    if hidden:
        footer += f"; {hidden} with nothing found not shown (--all shows them)"
    text = "\n".join(parts) + ("\n" if parts else "") + footer + "\n" + _legend(codes)
    return Shown(text, unreadable)


def _records(path: Path, unreadable: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(place, record) for each line that is a record; each other line's place and what it is
    goes to `unreadable`. A file cut short (a run killed while writing) ends with part of a line."""
    number = 0
    try:
        with open_text(path, errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                place = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    cut = (
                        not line.endswith("\n")
                        or exc.msg.startswith("Unterminated")
                        or (exc.pos >= len(line.rstrip()) - 1)
                    )
                    unreadable.append(f"{place}: " + ("not a whole record (cut short?)" if cut else
                                                      f"not a JSON record ({exc.msg})"))  # fmt: skip
                    continue
                if not isinstance(record, dict) or "schema_version" not in record:
                    unreadable.append(f"{place}: not a probe record")
                elif not isinstance(record.get("target"), dict):
                    unreadable.append(f"{place}: a record this version cannot show (no target)")
                else:
                    yield place, record
    except Exception as exc:  # a compressed file cut short, or unreadable: what was read is shown
        unreadable.append(f"{path}: cannot read after line {number} ({type(exc).__name__}: {exc})")


def _unmeasured(record: dict[str, Any]) -> str:
    """A record that claims nothing about its site (offline, not measured) in words: the same
    words for the same verdict."""
    blocking = str(record.get("blocking"))
    if record.get("not_measured") == "deadline":
        words = f"{blocking} (not measured: the run's deadline came first)"
    elif blocking == "offline" and record.get("offline") == "no_internet":
        words = "offline (no internet: nothing the probe asked answered)"
    elif blocking == "offline" and record.get("offline") == "captive_portal":
        words = "offline (a captive portal: this network asked to log in)"
    elif blocking == "offline":
        words = "offline (no network)"
    elif record.get("not_measured"):
        words = f"{blocking} (not measured: {record['not_measured']})"
    else:
        words = blocking
    anomalies = [code for code in record.get("anomalies") or [] if code != Anomaly.NETWORK_OFFLINE]
    if anomalies:
        words += f"; anomalies: {', '.join(anomalies)}"
    if record.get("error"):
        words += f"; probe error: {_last_line(str(record['error']))}"
    return words


def _group_line(words: str, names: list[str]) -> str:
    count = f"{len(names)} target{'s' if len(names) != 1 else ''}"
    listed = f": {', '.join(names)}" if len(names) <= GROUP_NAMES_UP_TO else ""
    return f"{count}: {words}{listed}\n"


def _legend(codes: set[str]) -> str:
    """Each anomaly code printed, in words (probe/vocabulary/anomalies.py, docs/anomalies.md)."""
    if not codes:
        return ""
    lines = ["", "What the anomaly codes mean:"]
    for code in sorted(codes):
        text = f"{code}: {ANOMALIES.get(code, 'not a code this version knows (a newer probe wrote it)')}"
        lines.append(textwrap.fill(text, LEGEND_WIDTH, initial_indent="  ", subsequent_indent="      "))
    return "\n".join(lines) + "\n"
