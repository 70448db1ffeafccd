"""Result logs with known events, for the report's tests: records made by the probe's own
record builder, valid against the schema, with the times, networks, probes and findings a test sets."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from probe.analyze.common import Judgement
from probe.results.record import RunContext, build_record
from probe.vocabulary.anomalies import Anomaly, Blocking, Confidence
from probe.vocabulary.targets import parse_target

ISCA = "CN=Information Security Certification Authority CA,O=ISCA,C=KZ"
ESET = "C=SK,O=ESET\\, spol. s r. o.,CN=ESET SSL Filter CA"
NETWORK_NAMES = {"AS9198": "Kazakhtelecom", "AS21299": "Kar-Tel", "AS29355": "Kcell"}


def _lookup(resolver: str, host: str, addresses: list[str]) -> dict[str, Any]:
    return {"resolver": resolver, "transport": "udp", "hostname": host, "addresses": addresses,
            "failure": None if addresses else "dns_nxdomain_error", "queries": []}  # fmt: skip


def observations(host: str, answers: list[str], control: list[str]) -> dict[str, Any]:
    return {
        "dns": {
            "system": _lookup("system", host, answers),
            "system_udp": None,
            "control": _lookup("https://203.0.113.53/dns-query", host, control),
            "control_plain": None,
            "injection": None,
            "control_identity": None,
            "resolver_baseline": None,
        },
        "tcp_connect": [],
        "tls_handshakes": [],
        "http_requests": [],
        "addresses_from": "system",
        "helpers": [],
    }


def record(
    host: str,
    when: str,
    network: str | None,
    probe: str,
    finding: str = "none",
    *,
    confirmed: bool = True,
    region: str | None = None,
    answers: list[str] | None = None,
) -> dict[str, Any]:
    """One measurement. `finding`: none, tls_mitm (ISCA), dns (a bogon), tcp (a timeout),
    http (the lab's blockpage) or local_interception (ESET)."""
    judgement = Judgement(confidence=Confidence.CONFIRMED if confirmed else Confidence.UNCONFIRMED)
    real = ["198.51.100.7"]
    seen = list(real)
    if finding == "tls_mitm":
        judgement.blocking = Blocking.TLS_MITM
        judgement.add(Anomaly.TLS_UNTRUSTED_CHAIN, Anomaly.TLS_KNOWN_INTERCEPTION_CA, Anomaly.TLS_SNI_TRIGGERED)
        judgement.interceptor = {"catalog": "interception_cas", "catalog_id": "kz-isca-2020", "country": "KZ",
                                 "name": "Information Security Certification Authority CA (December 2020)",
                                 "issuer": ISCA, "chain_top_issuer": ISCA, "matched_by": "sha256_der",
                                 "matched_certificate": 1}  # fmt: skip
    elif finding == "dns":
        judgement.blocking = Blocking.DNS
        judgement.add(Anomaly.DNS_BOGON)
        seen = answers or ["10.10.34.35"]
    elif finding == "tcp":
        judgement.blocking = Blocking.TCP
        judgement.add(Anomaly.TCP_TIMEOUT)
    elif finding == "http":
        judgement.blocking = Blocking.HTTP
        judgement.add(Anomaly.HTTP_BLOCKPAGE)
        judgement.blockpage = {"id": "lab-isp-blockpage", "name": "Lab ISP blockpage", "country": "ZZ",
                               "matched": "title of the response"}  # fmt: skip
    elif finding == "local_interception":
        judgement.blocking = Blocking.LOCAL_INTERCEPTION
        judgement.add(Anomaly.TLS_LOCAL_INTERCEPTOR)
        judgement.interceptor = {"catalog": "local_interceptors", "catalog_id": "eset", "country": None,
                                 "name": "ESET SSL Filter", "issuer": ESET, "chain_top_issuer": ESET,
                                 "matched_by": "issuer_name", "matched_certificate": 0}  # fmt: skip
    else:
        assert finding == "none", finding
    run = RunContext(
        run_id=uuid.uuid4().hex,
        network={"resolver": "system", "system_resolver_addresses": [], "control_resolver": None, "helpers": [],
                 "asn": network, "country": "KZ", "as_name": NETWORK_NAMES.get(network or ""), "region": region},
        reference={"roots": {}, "catalogs": {}, "control_sni": "example.org", "documentation_addresses_public": False},
        probe_id=probe,
    )  # fmt: skip
    started = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return build_record(run, parse_target(host, None, 1), started, observations(host, seen, real), judgement)


def write_log(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


PROBES = [f"{n:032x}" for n in range(1, 20)]


def fleet(directory: Path) -> Path:
    """A fleet's logs with known events:
    - 6 and 7 December 2020, Nur-Sultan: ISCA interception of two sites on AS9198, seen by three probes
      (one site seen from AS21299 too), never reachable again in the period;
    - a DNS block of dns.example on AS9198 from 2 to 3 December, reachable again on 4 December;
    - an unconfirmed TCP timeout (tcp.example, AS29355) that the report leaves out by default;
    - a volunteer's antivirus (ESET) on AS29355: listed apart, never censorship;
    - a clean site throughout.
    """
    nur = "Nur-Sultan"
    a = [
        record("dns.example", "2020-12-01T08:00:00Z", "AS9198", PROBES[0], region=nur),
        record("dns.example", "2020-12-02T08:00:00Z", "AS9198", PROBES[0], "dns", region=nur),
        record("dns.example", "2020-12-03T08:00:00Z", "AS9198", PROBES[1], "dns", region=nur),
        record("dns.example", "2020-12-04T08:00:00Z", "AS9198", PROBES[0], region=nur),
        record("www.facebook.com", "2020-12-05T09:00:00Z", "AS9198", PROBES[0], region=nur),
        record("clean.example", "2020-12-05T09:00:00Z", "AS9198", PROBES[0], region=nur),
    ]
    b = [
        record(host, f"2020-12-0{day}T{hour}:00:00Z", "AS9198", probe, "tls_mitm", region=nur)
        for day, hour, probe in ((6, "10", PROBES[0]), (6, "12", PROBES[1]), (7, "09", PROBES[2]))
        for host in ("www.facebook.com", "twitter.com")
    ]
    c = [
        record("twitter.com", "2020-12-06T11:00:00Z", "AS21299", PROBES[3], "tls_mitm", region=nur),
        record("twitter.com", "2020-12-07T11:00:00Z", "AS21299", PROBES[3], "tls_mitm", region=nur),
        record("tcp.example", "2020-12-06T11:00:00Z", "AS29355", PROBES[4], "tcp", confirmed=False, region="Almaty"),
        record("mail.example", "2020-12-06T11:30:00Z", "AS29355", PROBES[4], "local_interception", region="Almaty"),
        record("clean.example", "2020-12-07T11:30:00Z", "AS29355", PROBES[4], region="Almaty"),
    ]
    write_log(directory / "node-a" / "2020-12-01.jsonl", a)
    write_log(directory / "node-a" / "2020-12-06.jsonl", b)
    write_log(directory / "node-b" / "run.jsonl", c)
    return directory


def episode_fleet(directory: Path) -> Path:
    """A December-2020 fleet with known episodes (days in Asia/Almaty, UTC+6 then):
    - AS9198: ISCA interception of twitter.com and www.facebook.com from 6 to 7 December, seen in
      Nur-Sultan and Karaganda (facebook seen reachable on 7 December while twitter was still
      intercepted: the episode goes on); twitter.com reachable on 10 December ends it; intercepted
      again from 19 to 21 December: a second episode, with nothing measured from 11 to 18;
    - AS21299: a DNS block of dns.example on 2 and on 5 December with no measurement of it in
      between (clean.example reachable on 3 December is not one of its sites): one episode, 2-5;
    - AS29355: an interception measured at 2020-11-30T23:30Z, 1 December in Almaty;
    - two probes with no AS, each seeing an interception: two unknown networks, never one.
    """
    k, n, a = PROBES[0], PROBES[1], PROBES[2]
    records = [
        record("twitter.com", "2020-12-06T04:00:00Z", "AS9198", k, "tls_mitm", region="Nur-Sultan"),
        record("www.facebook.com", "2020-12-06T04:05:00Z", "AS9198", k, "tls_mitm", region="Nur-Sultan"),
        record("twitter.com", "2020-12-07T05:00:00Z", "AS9198", n, "tls_mitm", region="Karaganda"),
        record("www.facebook.com", "2020-12-07T06:00:00Z", "AS9198", n, region="Karaganda"),
        record("twitter.com", "2020-12-10T05:00:00Z", "AS9198", k, region="Nur-Sultan"),
        record("twitter.com", "2020-12-19T05:00:00Z", "AS9198", k, "tls_mitm", region="Nur-Sultan"),
        record("twitter.com", "2020-12-21T05:00:00Z", "AS9198", n, "tls_mitm", region="Karaganda"),
        record("dns.example", "2020-12-02T05:00:00Z", "AS21299", a, "dns", region="Almaty"),
        record("clean.example", "2020-12-03T05:00:00Z", "AS21299", a, region="Almaty"),
        record("dns.example", "2020-12-05T05:00:00Z", "AS21299", a, "dns", region="Almaty"),
        record("twitter.com", "2020-11-30T23:30:00Z", "AS29355", PROBES[3], "tls_mitm", region="Almaty"),
        record("twitter.com", "2020-12-08T05:00:00Z", None, PROBES[10], "tls_mitm"),
        record("twitter.com", "2020-12-08T06:00:00Z", None, PROBES[11], "tls_mitm"),
    ]
    write_log(directory / "fleet.jsonl", records)
    return directory


def certified_fleet(directory: Path) -> Path:
    """The episode fleet, its interceptions carrying the chain the network presented, as the probe
    records it (base64 DER, leaf first, in the target's handshake) with its fingerprints in the
    analysis: a leaf for the site signed by an ISCA-named root; on AS29355 the leaf alone (one
    certificate, as a forging middlebox often presents)."""
    import base64
    import hashlib

    from tests.pki import der, make_leaf, make_root, name

    logs = episode_fleet(directory)
    root = make_root(name(CN="Information Security Certification Authority CA", O="ISCA", C="KZ"))
    path = logs / "fleet.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for entry in (r for r in records if r["blocking"] == "tls_mitm"):
        leaf = make_leaf(root, [entry["target"]["host"]])
        alone = entry["network"]["asn"] == "AS29355"
        certificates = [der(leaf.cert)] if alone else [der(leaf.cert), der(root.cert)]
        entry["observations"]["tls_handshakes"] = [
            {"address": "198.51.100.7", "port": 443, "server_name": entry["target"]["host"], "purpose": "target",
             "peer_certificates": [base64.b64encode(c).decode() for c in certificates], "failure": None},
        ]  # fmt: skip
        entry["analysis"]["tls"] = {
            "certificates": [{"sha256_der": hashlib.sha256(c).hexdigest()} for c in certificates]
        }
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return logs
