"""How fast records are judged: the cost of re-judging an archive when a catalog grows.

Run: python bench/bench_analysis.py [N]. Prints records judged per second for a clean chain and a
forged one. Not a test: speed goals live here, never in the test suite.
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import certifi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probe.analyze.verdict import AnalysisContext, judge  # noqa: E402
from probe.loaders.catalogs import load_catalogs  # noqa: E402
from probe.loaders.roots import load_roots  # noqa: E402
from tests import pki  # noqa: E402


def _observations(chain: list) -> dict:
    handshake = {
        "address": "203.0.113.10", "port": 443, "server_name": "site.lab", "tls_version": "TLSv1.3",
        "cipher_suite": "TLS_AES_128_GCM_SHA256", "negotiated_protocol": None, "failure": None, "alert": None,
        "peer_certificates": [base64.b64encode(pki.der(c)).decode() for c in chain],
        "t0": 0.0, "t": 0.1, "purpose": "target",
    }  # fmt: skip
    lookup = {"resolver": "x", "transport": "udp", "hostname": "site.lab", "addresses": ["203.0.113.10"],
              "failure": None, "queries": []}  # fmt: skip
    return {"dns": {"system": lookup, "control": lookup}, "addresses_from": "system",
            "tcp_connect": [{"address": "203.0.113.10", "port": 443, "failure": None, "t0": 0, "t": 0,
                             "purpose": "target"}],
            "tls_handshakes": [handshake], "http_requests": []}  # fmt: skip


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    root = pki.make_root(pki.name(CN="Bench Root"))
    forger = pki.make_root(pki.name(C="KZ", O="ISCA", CN="Information Security Certification Authority"))
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "roots.pem"
        bundle.write_bytes(Path(certifi.where()).read_bytes() + pki.der_pem(root.cert))
        roots = load_roots(bundle)
    ctx = AnalysisContext(roots=roots, catalogs=load_catalogs(), documentation_is_public=True)
    at = dt.datetime.now(dt.UTC)
    cases = {
        "clean chain": _observations(pki.make_leaf(root, ["site.lab"]).chain),
        "forged chain": _observations(pki.make_leaf(forger, ["site.lab"], rsa_exponent=3, stripped=True).chain),
    }
    for label, observations in cases.items():
        start = time.perf_counter()
        for _ in range(count):
            judge({"host": "site.lab"}, observations, at, False, ctx)
        elapsed = time.perf_counter() - start
        print(f"{label}: {count / elapsed:,.0f} records judged per second ({count} in {elapsed:.2f} s)")


if __name__ == "__main__":
    main()
