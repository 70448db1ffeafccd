"""Packet forensics in plain words, for `probe show` and the report's evidence."""

from __future__ import annotations

from typing import Any

INTERFERENCE = {
    "reset": "a reset",
    "forged_certificate": "a forged certificate",
    "silence": "silence (its packets were dropped)",
    "handshake_failure": "a failed handshake",
}


def forensics_lines(forensics: dict[str, Any] | None) -> list[str]:
    """`analysis.forensics` of a record as sentences an analyst can cite."""
    if not forensics:
        return []
    lines = []
    hop = forensics.get("censor_hop")
    if hop:
        where = f"censor located at hop {hop['hop']} from the probe"
        if hop.get("router_before"):
            asn = f", {hop['router_before_asn']}" if hop.get("router_before_asn") else ""
            where += f", just after router {hop['router_before']}{asn}"
        what = INTERFERENCE.get(hop.get("interference"), str(hop.get("interference")))
        passed = {True: "; the control name passed there", False: "; the control name met it too"}.get(
            hop.get("control_passed"), ""
        )
        lines.append(f"{where}: the target name met {what}{passed}")
    for mark in forensics.get("injected_rst") or []:
        rst, server = mark["rst"], mark["server"]
        lines.append(
            f"{mark['stage'].upper()} reset injected by the path ({mark['purpose']} connection to {mark['address']}): "
            f"it came with IP TTL {rst['ip_ttl']} and IP ID {rst['ip_id']}, the server's own packets with "
            f"IP TTL {server['ip_ttl']} and IP ID {server['ip_id']}"
        )
    return lines
