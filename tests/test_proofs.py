"""Confirmed means proven (issue 19): each rule that confirms a verdict, beside the honest
situation that looks most like it, which must not be confirmed.

Observations are built as a run records them (see tests/test_realweb.py); the lab shows the same
rules against real servers and a real interceptor (tests/test_lab.py).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from probe.analyze.chain import FailureCause, analyze_chain
from probe.analyze.verdict import AnalysisContext, judge
from probe.loaders.catalogs import load_catalogs
from probe.loaders.roots import load_roots
from probe.vocabulary.anomalies import Confidence
from tests import pki
from tests.conftest import PkiFixture
from tests.test_realweb import AT, HOST, _handshake, _tls_observations

QAZNET = (
    Path(__file__).parent
    / "data"
    / "kz-interception-roots"
    / ("00309c736dd661da6f1eb24173aa849944c168a43a15bffd192eecfdb6f8dbd2.pem")
)


@pytest.fixture(scope="module")
def ctx(test_pki: PkiFixture) -> AnalysisContext:
    return AnalysisContext(roots=load_roots(test_pki.roots_pem), catalogs=load_catalogs(), documentation_is_public=True)


def _judge(ctx: AnalysisContext, *handshakes: dict, helper_tls: dict | None = None):  # type: ignore[no-untyped-def]
    obs = _tls_observations(*handshakes)
    if helper_tls is not None:
        obs["helpers"] = [{"helper": "https://helper.example", "response": {"tls": helper_tls}, "failure": None}]
    return judge({"host": HOST}, obs, AT, False, ctx)


def _helper_saw(leaf: pki.Leaf, valid: bool) -> dict:
    return {"failure": None, "valid": valid, "leaf_spki_sha256": pki.spki_sha256(leaf.cert),
            "leaf_issuer": leaf.cert.issuer.rfc4514_string()}  # fmt: skip


def _assert_proven(j, *basis: str) -> None:  # type: ignore[no-untyped-def]
    assert j.confidence == Confidence.CONFIRMED
    assert set(basis) <= set(j.basis), j.basis


def _assert_not_proven(j) -> None:  # type: ignore[no-untyped-def]
    assert (j.confidence, j.basis) == (Confidence.UNCONFIRMED, [])


def _assert_valid_record(j, handshake: dict) -> None:  # type: ignore[no-untyped-def]
    """The judgement, written as a run writes it, is a record the schema accepts."""
    from probe.results.record import RunContext, build_record
    from probe.vocabulary.targets import parse_target
    from tests.conftest import validate_record

    run = RunContext("0" * 32, {"resolver": "system", "system_resolver_addresses": [], "control_resolver": None,
                                "helpers": [], "asn": None, "country": None, "as_name": None, "region": None},
                     {"roots": {"source": "test", "sha256": "0" * 64, "count": 1}, "catalogs": {},
                      "control_sni": None, "documentation_addresses_public": True})  # fmt: skip
    assert handshake["purpose"] == "target"  # the observations are hand-made; the judgement is what is checked
    validate_record(build_record(run, parse_target(HOST, None, 1), AT, None, j))


# --- the chain's own signatures -------------------------------------------------------------------


def test_an_expired_leaf_with_a_reissued_intermediate_is_the_sites_expired_certificate(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """The verifier cannot find one moment when leaf and re-issued intermediate were both valid;
    the path by signatures can, and then the leaf's dates say what browsers say: expired."""
    issuing = pki.make_intermediate(test_pki.public_root, pki.name(CN="Issuing CA 2019"))
    leaf = pki.make_leaf(issuing, [HOST], valid_days=(-800, -400))
    reissued = pki.reissue(issuing, test_pki.public_root, valid_days=(-100, 700))
    chain = [leaf.cert, reissued.cert]
    encoded = [base64.b64encode(pki.der(c)).decode() for c in chain]
    assert analyze_chain(encoded, HOST, AT, ctx.roots, ctx.catalogs)["failure_cause"] == FailureCause.EXPIRED
    control = pki.make_leaf(test_pki.public_intermediate, ["example.org"])
    j = _judge(ctx, _handshake(chain), _handshake(control.chain, "control_sni", "example.org"))
    assert (j.blocking, j.interceptor) == ("down", None)
    assert "tls.expired_certificate" in j.anomalies
    _assert_proven(j, "publicly_signed")
    # The look-alike: a forger copies names and dates, but signs with its own key.
    forger = pki.make_intermediate(pki.make_root(pki.name(CN="Forger Root")), pki.name(CN="Issuing CA 2019"))
    forged = pki.make_leaf(forger, [HOST], valid_days=(-800, -400))
    j = _judge(ctx, _handshake(forged.chain), _handshake(control.chain, "control_sni", "example.org"))
    assert j.blocking != "down" and "tls.expired_certificate" not in j.anomalies


# --- the helper's view ----------------------------------------------------------------------------


def test_cdn_edges_with_sibling_public_intermediates_are_not_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """Let's Encrypt's R10/R11, or a CDN with two CAs: the helper sees another valid leaf from
    another public issuer. Both chains validate: nothing was substituted."""
    sibling = pki.make_intermediate(test_pki.public_root, pki.name(CN="Probe Test Public Issuing CA 2"))
    here = pki.make_leaf(test_pki.public_intermediate, [HOST])
    there = pki.make_leaf(sibling, [HOST])
    j = _judge(ctx, _handshake(here.chain), helper_tls=_helper_saw(there, valid=True))
    assert (j.blocking, j.interceptor) == ("none", None)
    assert "tls.cert_mismatch" not in j.anomalies and "tls.leaf_key_differs" in j.anomalies
    # The rule that does confirm: here a chain under no reference root, the helper's public.
    gateway = pki.make_root(pki.name(CN="Gateway CA"))
    forged = pki.make_leaf(gateway, [HOST], extra_chain=[gateway.cert])
    j = _judge(ctx, _handshake(forged.chain), helper_tls=_helper_saw(there, valid=True))
    assert j.blocking == "tls_mitm" and "tls.cert_mismatch" in j.anomalies
    _assert_proven(j, "helper_public_chain")
    # Look-alikes: this node serves a snakeoil certificate that signs itself, or misses an
    # intermediate that could not be fetched, while the helper met a healthy node.
    snake_root = pki.make_root(pki.name(CN=HOST))
    snakeoil = pki.Leaf(snake_root.cert, snake_root.key, [snake_root.cert])
    missing = pki.make_leaf(pki.make_intermediate(gateway, pki.name(CN="Unfetched CA")), [HOST], leaf_only=True)
    for node in (snakeoil, missing):
        j = _judge(ctx, _handshake(node.chain), helper_tls=_helper_saw(there, valid=True))
        assert "tls.cert_mismatch" not in j.anomalies
        _assert_not_proven(j)


def test_an_expired_public_chain_here_and_a_fresh_one_outside_is_not_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """One CDN edge still serves last year's certificate: a public CA signed it; no forger did."""
    stale = pki.make_leaf(test_pki.public_intermediate, [HOST], valid_days=(-400, -2))
    fresh = pki.make_leaf(test_pki.public_intermediate, [HOST])
    j = _judge(ctx, _handshake(stale.chain), helper_tls=_helper_saw(fresh, valid=True))
    assert j.blocking == "down" and j.interceptor is None


# --- the control SNI ------------------------------------------------------------------------------


def test_virtual_hosting_is_a_hint_and_a_hidden_public_certificate_a_proof(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    private = pki.make_root(pki.name(CN="Some Private CA"))
    own = pki.make_leaf(private, [HOST])
    # A shared host: the site's own private-CA certificate, the host's public default for other names.
    default = pki.make_leaf(test_pki.public_intermediate, ["default.hosting.example"])
    j = _judge(ctx, _handshake(own.chain), _handshake(default.chain, "control_sni", "example.org"))
    assert j.blocking == "tls_mitm" and "tls.control_sni_contrast" not in j.anomalies  # suspected, no contrast
    _assert_not_proven(j)
    # A host that serves the control name too (a CDN): a contrast, and still only a hint.
    cdn = pki.make_leaf(test_pki.public_intermediate, ["example.org"])
    j = _judge(ctx, _handshake(own.chain), _handshake(cdn.chain, "control_sni", "example.org"))
    assert j.blocking == "tls_mitm" and "tls.control_sni_contrast" in j.anomalies
    _assert_not_proven(j)
    # An address of its own: the control name gets the identical chain: no contrast at all.
    j = _judge(ctx, _handshake(own.chain), _handshake(own.chain, "control_sni", "example.org"))
    assert "tls.control_sni_contrast" not in j.anomalies
    _assert_not_proven(j)
    # The server shows the control name a public certificate that covers the target's name too.
    real = pki.make_leaf(test_pki.public_intermediate, [HOST, f"*.{HOST}", "example.org"])
    j = _judge(ctx, _handshake(own.chain), _handshake(real.chain, "control_sni", "example.org"))
    assert j.blocking == "tls_mitm" and "tls.control_covers_name" in j.anomalies
    _assert_proven(j, "control_covers_name")


# --- the minting test -----------------------------------------------------------------------------


def test_a_certificate_minted_for_a_name_that_cannot_exist_proves_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    minter = pki.make_root(pki.name(CN="Unnamed Gateway Root"))
    forged = pki.make_leaf(minter, [HOST])
    random_name = f"5f2c9a.{HOST}.invalid"
    minted = pki.make_leaf(minter, [random_name])
    j = _judge(ctx, _handshake(forged.chain), _handshake(minted.chain, "minting", random_name))
    assert j.blocking == "tls_mitm" and "tls.minted_certificate" in j.anomalies
    assert j.interceptor["issuer"] == "CN=Unnamed Gateway Root"
    _assert_proven(j, "minted_certificate")
    # Look-alikes: the server's default certificate for the odd name (another name, or a wildcard
    # of the site's), another issuer's leaf, or one that signs itself: no minting shown.
    wildcard = pki.make_leaf(minter, [f"*.{HOST}", HOST])
    stranger = pki.make_leaf(pki.make_root(pki.name(CN="Other Root")), [random_name])
    own_root = pki.make_root(pki.name(CN=random_name))
    self_signed = pki.Leaf(own_root.cert, own_root.key, [own_root.cert])
    for answer in (wildcard, stranger, self_signed):
        j = _judge(ctx, _handshake(forged.chain), _handshake(answer.chain, "minting", random_name))
        assert "tls.minted_certificate" not in j.anomalies
        _assert_not_proven(j)
    # A self-signed site certificate is never interception, minted look-alike or not.
    site_root = pki.make_root(pki.name(CN=HOST))
    site_self = pki.Leaf(site_root.cert, site_root.key, [site_root.cert])
    j = _judge(ctx, _handshake(site_self.chain), _handshake(self_signed.chain, "minting", random_name))
    assert (j.blocking, j.interceptor) == ("inconclusive", None)


# --- catalogs -------------------------------------------------------------------------------------


def test_the_real_qaznet_root_beside_a_leaf_it_did_not_sign_proves_nothing(ctx: AnalysisContext) -> None:
    """Anyone can append a public certificate: the real Qaznet root after a leaf that a root of the
    same name but another key signed is that other root's chain, named by name only. (The root's
    own signature, or its certificate on the leaf's path, does confirm: see the signature test.)"""
    from cryptography import x509

    real = x509.load_pem_x509_certificate(QAZNET.read_bytes())
    impostor = pki.make_root(real.subject, rsa_key=True)
    forged = pki.make_leaf(impostor, [HOST])
    for chain in ([forged.cert, real], forged.chain):
        j = _judge(ctx, _handshake(chain))
        assert j.blocking == "tls_mitm" and "tls.interception_ca_name" in j.anomalies
        assert "tls.known_interception_ca" not in j.anomalies
        _assert_not_proven(j)


def test_an_unparseable_forged_leaf_is_never_clean(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    real = pki.make_leaf(test_pki.public_intermediate, [HOST])
    broken = bytearray(pki.der(real.cert))
    # The version field's INTEGER (inside [0] EXPLICIT) set to 7: OpenSSL serves it, cryptography refuses it.
    at = broken.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
    assert at > 0
    broken[at + 4] = 7
    obs = _tls_observations(_handshake(real.chain))
    obs["tls_handshakes"][0]["peer_certificates"][0] = base64.b64encode(bytes(broken)).decode()
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert j.blocking != "none" and "tls.unparseable_certificate" in j.anomalies
    _assert_not_proven(j)
    # Seen from outside with a public chain and another key: still only a suspicion, never clean.
    other = pki.make_leaf(test_pki.public_intermediate, [HOST])
    j = judge({"host": HOST}, {**obs, "helpers": [{"helper": "h", "failure": None,
              "response": {"tls": _helper_saw(other, valid=True)}}]}, AT, False, ctx)  # fmt: skip
    assert j.blocking != "none"
    _assert_not_proven(j)  # a CDN edge may serve a quirky certificate the parser refuses


# --- a clean verdict ------------------------------------------------------------------------------


def test_a_clean_record_is_confirmed_only_when_nothing_suspicious_was_seen(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    real = pki.make_leaf(test_pki.public_intermediate, [HOST])
    j = _judge(ctx, _handshake(real.chain))
    assert j.blocking == "none"
    _assert_proven(j, "control_resolver", "valid_chain")


def test_every_confirmed_judgement_names_its_proof(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    """Whatever the rule, a confirmed verdict carries a basis, and an unconfirmed one none."""
    minter = pki.make_root(pki.name(CN="Minter"))
    cases = [
        [_handshake(pki.make_leaf(test_pki.public_intermediate, [HOST]).chain)],
        [_handshake(pki.make_leaf(minter, [HOST]).chain)],
        [_handshake(pki.make_leaf(minter, [HOST]).chain),
         _handshake(pki.make_leaf(minter, ["a.invalid"]).chain, "minting", "a.invalid")],
        [_handshake(pki.make_leaf(test_pki.public_intermediate, [HOST], valid_days=(-9, -1)).chain)],
    ]  # fmt: skip
    for handshakes in cases:
        j = _judge(ctx, *handshakes)
        assert bool(j.basis) == (j.confidence == Confidence.CONFIRMED), (j.blocking, j.basis)


def test_a_chain_that_leaves_the_catalogued_root_out_is_matched_by_its_signature(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """Forged chains rarely carry their root (2019: leaf and "Security Certificate" only). A root
    whose certificate the catalog holds is found by its signature on the intermediate; a root of
    the same name with another key is not."""
    from cryptography.hazmat.primitives import serialization

    from probe.analyze.catalog import add_document

    root = pki.make_root(pki.name(CN="Lab Interception Root", C="ZZ"), rsa_key=True)
    issuing = pki.make_intermediate(root, pki.name(CN="Security Certificate", C="ZZ"))
    forged = pki.make_leaf(issuing, [HOST])
    catalogs = load_catalogs()
    pem = root.cert.public_bytes(serialization.Encoding.PEM).decode()
    add_document(catalogs, {"catalog": "interception_cas", "version": "test", "certificates": [
        {"id": "zz-root", "name": "Lab Interception Root", "country": "ZZ", "certificate_pem": pem,
         "sha256_der": pki.hashlib_sha256(pki.der(root.cert)), "sources": ["this test"]}]}, "test.json")  # fmt: skip
    grown = AnalysisContext(roots=ctx.roots, catalogs=catalogs, documentation_is_public=True)
    assert forged.chain == [forged.cert, issuing.cert]  # the root is not presented
    presented = _judge(grown, _handshake([*forged.chain, root.cert]))  # ... or it is, on the path
    assert (presented.interceptor["catalog_id"], presented.interceptor["matched_by"]) == ("zz-root", "sha256_der")
    _assert_proven(presented, "catalog_fingerprint")
    j = _judge(grown, _handshake(forged.chain))
    assert j.blocking == "tls_mitm" and (j.interceptor["catalog_id"], j.interceptor["matched_by"]) == (
        "zz-root", "signature")  # fmt: skip
    assert j.interceptor["matched_certificate"] == 1
    _assert_proven(j, "catalog_fingerprint")
    _assert_valid_record(j, _handshake(forged.chain))
    impostor = pki.make_root(root.cert.subject, rsa_key=True)
    look_alike = pki.make_leaf(pki.make_intermediate(impostor, pki.name(CN="Security Certificate", C="ZZ")), [HOST])
    j = _judge(grown, _handshake(look_alike.chain))
    assert j.interceptor is None or j.interceptor["catalog_id"] != "zz-root"
    _assert_not_proven(j)
    # A fingerprint stated wrongly in a catalog file is refused, naming the entry.
    from probe.analyze.catalog import CatalogError

    with pytest.raises(CatalogError, match=r"test\.json: certificates\[1\]: 'sha256_der'"):
        add_document(load_catalogs(), {"catalog": "interception_cas", "certificates": [
            {"id": "zz", "name": "x", "certificate_pem": pem, "sha256_der": "0" * 64, "sources": ["t"]}]},
            "test.json")  # fmt: skip


# --- national CAs ---------------------------------------------------------------------------------


def _national_context(ctx: AnalysisContext, root: pki.Authority) -> AnalysisContext:
    from cryptography.hazmat.primitives import serialization

    from probe.analyze.catalog import add_document

    catalogs = load_catalogs()
    add_document(catalogs, {"catalog": "national_cas", "version": "test", "certificates": [
        {"id": "zz-national-root", "name": "ZZ National Root", "country": "ZZ", "kind": "root",
         "certificate_pem": root.cert.public_bytes(serialization.Encoding.PEM).decode(),
         "sha256_der": pki.hashlib_sha256(pki.der(root.cert)), "sha256_spki": pki.spki_sha256(root.cert),
         "sources": ["this test"]}],
        "names": [{"id": "zz-national-name", "name": "ZZ National Root", "country": "ZZ",
                   "match": {"CN": "ZZ National Root"}, "sources": ["this test"]}]}, "national.json")  # fmt: skip
    return AnalysisContext(roots=ctx.roots, catalogs=catalogs, documentation_is_public=True)


def test_a_site_under_a_national_ca_is_its_own_choice_on_a_shared_host_or_its_own_address(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    national = pki.make_root(pki.name(CN="ZZ National Root", C="ZZ"))
    grown = _national_context(ctx, national)
    bank = pki.make_leaf(pki.make_intermediate(national, pki.name(CN="ZZ National Sub CA", C="ZZ")), [HOST])
    default = pki.make_leaf(test_pki.public_intermediate, ["default.hosting.example", "example.org"])
    for control in (default.chain, bank.chain):  # a shared host's public default; an address of its own
        j = _judge(grown, _handshake(bank.chain), _handshake(control, "control_sni", "example.org"))
        assert (j.blocking, j.interceptor) == ("none", None)
        assert "tls.national_ca" in j.anomalies and j.national_ca["id"] == "zz-national-root"
        _assert_not_proven(j)  # a state could intercept with its own CA: clean, but not proven clean
    # Seen the same from outside: confirmed clean.
    j = _judge(grown, _handshake(bank.chain), helper_tls=_helper_saw(bank, valid=False))
    assert j.blocking == "none"
    _assert_proven(j, "helper_same_chain")
    # Expired under the national CA: the site's own certificate, down.
    stale = pki.make_leaf(pki.make_intermediate(national, pki.name(CN="ZZ National Sub CA", C="ZZ")), [HOST],
                          valid_days=(-400, -3))  # fmt: skip
    assert _judge(grown, _handshake(stale.chain)).blocking == "down"
    # A state intercepting with its own CA: another key seen from outside under a public chain.
    real = pki.make_leaf(test_pki.public_intermediate, [HOST])
    j = _judge(grown, _handshake(bank.chain), helper_tls=_helper_saw(real, valid=True))
    assert j.blocking == "tls_mitm" and j.interceptor["catalog"] == "national_cas"
    _assert_proven(j, "helper_public_chain")
    _assert_valid_record(j, _handshake(bank.chain))
    # The national CA's name on another key: what a forger would make, a suspicion either way.
    impostor = pki.make_root(pki.name(CN="ZZ National Root", C="ZZ"))
    j = _judge(grown, _handshake(pki.make_leaf(impostor, [HOST]).chain))
    assert "tls.national_ca_name" in j.anomalies and "tls.national_ca" not in j.anomalies
    assert j.blocking == "tls_mitm"
    _assert_not_proven(j)


def test_the_real_russian_sub_ca_presented_with_a_leaf_it_did_not_sign_is_no_national_chain(
    ctx: AnalysisContext,
) -> None:
    from cryptography import x509

    sub = x509.load_pem_x509_certificate((Path(__file__).parent / "data" / "national-roots" / (
        "russian-trusted-sub-ca-2024.pem")).read_bytes())  # fmt: skip
    impostor = pki.make_root(sub.subject)
    forged = pki.make_leaf(impostor, [HOST])
    j = _judge(ctx, _handshake([forged.cert, sub]))
    assert "tls.national_ca" not in j.anomalies and "tls.national_ca_name" in j.anomalies
    _assert_not_proven(j)


def test_probe_show_says_what_proved_a_finding_in_words(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    from probe.results.show import PROOF_WORDS, format_record
    from probe.vocabulary.proofs import Proof

    assert set(PROOF_WORDS) == {str(proof) for proof in Proof}
    record = {"target": {"input": HOST, "category": None}, "blocking": "tls_mitm", "anomalies": [],
              "measurement_start_time": "2026-12-03T10:00:00.000000Z", "measurement_id": "0" * 32,
              "confidence": "confirmed", "confidence_basis": ["minted_certificate"], "observations": {},
              "analysis": {"national_ca": None}}  # fmt: skip
    shown = format_record(record)
    assert "verdict:   tls_mitm (confirmed by a certificate minted for a name that cannot exist)" in shown
    record.update(
        confidence="unconfirmed",
        confidence_basis=[],
        blocking="none",
        analysis={"national_ca": {"id": "ru-trusted-root-ca-2022", "name": "Russian Trusted Root CA"}},
    )
    shown = format_record(record)
    assert "verdict:   none (unconfirmed)" in shown and "national CA: Russian Trusted Root CA" in shown
    assert "the site's own choice" in shown
    record.update(blocking="tls_mitm", confidence="confirmed", confidence_basis=["helper_public_chain"])
    shown = format_record(record)
    assert "intercepting here" in shown and "the site's own choice" not in shown


def test_a_chain_of_look_alike_cas_cannot_make_path_building_explode(test_pki: PkiFixture) -> None:
    """Six CAs of one name, each cross-signed by every other (30 certificates): the search is
    bounded by signature checks, not by the number of paths (thousands)."""
    from unittest import mock

    from probe.analyze import paths as chain_module

    name = pki.name(CN="Loop CA")
    cas = [pki.make_root(name) for _ in range(6)]
    crossed = [pki.reissue(cas[i], cas[j], (-1, 10)).cert for i in range(6) for j in range(6) if i != j]
    leaf = pki.make_leaf(cas[0], [HOST])
    with mock.patch.object(chain_module, "issued_by", wraps=chain_module.issued_by) as checked:
        found = chain_module.signed_path(leaf.cert, crossed, (test_pki.public_root.cert,))
    assert found is None
    assert checked.call_count <= 64  # unbounded, this search makes thousands


def test_a_forgery_signed_with_a_sites_own_public_key_is_not_publicly_signed(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """Any domain owner holds a publicly issued key. An interceptor that signs forged leaves with
    it does not make a public CA's signature: the leaf's issuer is no CA."""
    own = pki.make_leaf(test_pki.public_intermediate, ["interceptor.example"])
    as_issuer = pki.Authority(own.cert, own.key, [test_pki.public_intermediate.cert, test_pki.public_root.cert])
    for days in ((-0.25, 90), (-400, -2)):  # fresh, and dated as expired
        forged = pki.make_leaf(as_issuer, [HOST], valid_days=days)
        chain = [forged.cert, own.cert, test_pki.public_intermediate.cert]
        real = pki.make_leaf(test_pki.public_intermediate, [HOST])
        j = _judge(ctx, _handshake(chain), helper_tls=_helper_saw(real, valid=True))
        assert j.blocking == "tls_mitm", (days, j.blocking, j.anomalies)
        _assert_proven(j, "helper_public_chain")
        assert "tls.expired_certificate" not in j.anomalies


def test_a_catalogued_root_appended_to_a_sites_own_valid_chain_proves_nothing(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """A bundle mistake (or a prank): the site's valid public chain with the real Qaznet root
    appended. The root signed nothing on the leaf's path: no interception."""
    from cryptography import x509

    real = pki.make_leaf(test_pki.public_intermediate, [HOST])
    qaznet = x509.load_pem_x509_certificate(QAZNET.read_bytes())
    j = _judge(ctx, _handshake([*real.chain, qaznet]))
    assert (j.blocking, j.interceptor) == ("none", None)


# --- the honest look-alikes the fresh-eyes review found -----------------------------------------


def _failed(purpose: str, failure: str, server_name: str = HOST) -> dict:
    return {**_handshake([], purpose, server_name), "failure": failure, "peer_certificates": []}


def test_an_sni_block_is_proven_only_when_reset_or_silenced_twice(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    control = _handshake(
        pki.make_leaf(test_pki.public_intermediate, ["example.org"]).chain, "control_sni", "example.org"
    )
    twice = _judge(ctx, _failed("target", "connection_reset"), control, _failed("target_retry", "connection_reset"))
    assert twice.blocking == "tls"
    _assert_proven(twice, "control_sni_reached_server")
    # Once only (the retry could not connect), or closed twice (an SNI-routing proxy whose
    # backend for the name is down): a finding, unconfirmed.
    once = _judge(ctx, _failed("target", "connection_reset"), control)
    closed = _judge(ctx, _failed("target", "eof_error"), control, _failed("target_retry", "eof_error"))
    for j in (once, closed):
        assert j.blocking == "tls" and "tls.sni_triggered" in j.anomalies
        _assert_not_proven(j)


def test_a_fingerprinted_page_that_the_helper_got_too_is_the_sites_own(ctx: AnalysisContext) -> None:
    """A news page that links the regulator's register (an OONI fingerprint), fetched alike from
    outside: the fingerprint matched the site's content, not a censor's page."""
    from tests.test_realweb import _http_observations, _response

    body = (
        "<html><head><title>How to check a block</title></head>"
        "<body>See http://eais.rkn.gov.ru/ for the register.</body></html>"
    )
    obs = _http_observations([_response("http://site.example/", 200, "198.51.100.7", 0, body=body,
                                        title="How to check a block")])  # fmt: skip
    alone = judge({"host": HOST}, obs, AT, False, ctx)
    assert alone.blocking == "http" and alone.confidence == Confidence.CONFIRMED
    page = {"status": 200, "title": "How to check a block", "body_length": len(body), "body_sha256": None,
            "failure": None}  # fmt: skip
    obs["helpers"] = [{"helper": "h", "failure": None, "response": {"http": page}}]
    j = judge({"host": HOST}, obs, AT, False, ctx)
    assert "http.blockpage" in j.anomalies
    _assert_not_proven(j)


def test_a_struggling_resolver_is_a_finding_and_a_denial_a_proof(ctx: AnalysisContext, test_pki: PkiFixture) -> None:
    from tests.test_realweb import _lookup

    real = _handshake(pki.make_leaf(test_pki.public_intermediate, [HOST]).chain)
    for failure, proven_ in (("dns_servfail_error", False), ("generic_timeout_error", False),
                             ("dns_nxdomain_error", True)):  # fmt: skip
        obs = _tls_observations(real)
        obs["dns"]["system"] = _lookup("system", [], failure)
        j = judge({"host": HOST}, obs, AT, False, ctx)
        assert j.blocking == "dns", failure
        assert (j.confidence == Confidence.CONFIRMED) == proven_, failure


def test_a_reset_one_hop_nearer_than_the_server_is_recorded_not_proof() -> None:
    """A firewall or load balancer just in front of the server resets honestly, one hop nearer."""
    from probe.analyze.forensics import _far_from_server

    mark = {"why": ["ip_ttl"], "rst": {"ip_ttl": 62}, "server": {"ip_ttl": 61}}
    assert not _far_from_server(mark)
    assert _far_from_server({**mark, "rst": {"ip_ttl": 63}})  # born two hops nearer: the path's
    assert not _far_from_server({**mark, "rst": {"ip_ttl": 253}})  # a 255-TTL box one hop nearer (3 - 2)
    assert not _far_from_server({**mark, "why": ["ip_id"]})


def test_a_local_interceptors_name_in_a_sites_own_certificate_is_not_local_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """The antivirus maker's own site (its subject names the maker, O=AO Kaspersky Lab), here
    expired: the site's own certificate, not the volunteer's antivirus."""
    leaf = pki.make_leaf(test_pki.public_intermediate, [HOST], valid_days=(-90, -1))
    from cryptography import x509 as x509_module
    from cryptography.hazmat.primitives import hashes

    named = (x509_module.CertificateBuilder().subject_name(pki.name(CN=HOST, O="AO Kaspersky Lab"))
             .issuer_name(leaf.cert.issuer).public_key(leaf.key.public_key()).serial_number(7)
             .not_valid_before(leaf.cert.not_valid_before_utc).not_valid_after(leaf.cert.not_valid_after_utc)
             .add_extension(x509_module.SubjectAlternativeName([x509_module.DNSName(HOST)]), critical=False)
             .sign(test_pki.public_intermediate.key, hashes.SHA256()))  # fmt: skip
    j = _judge(ctx, _handshake([named, test_pki.public_intermediate.cert]))
    assert j.blocking == "down" and j.interceptor is None


def test_the_same_leaf_the_helper_validates_is_neither_down_nor_interception(
    ctx: AnalysisContext, test_pki: PkiFixture
) -> None:
    """The server holds the site's key (the helper got the same leaf and its roots accept it), our
    roots do not: nothing to conclude."""
    private = pki.make_root(pki.name(CN="Roots We Lack"))
    leaf = pki.make_leaf(private, [HOST], extra_chain=[private.cert])
    j = _judge(ctx, _handshake(leaf.chain), helper_tls=_helper_saw(leaf, valid=True))
    assert j.blocking == "inconclusive" and "helper.same_failure" not in j.anomalies
    j = _judge(ctx, _handshake(leaf.chain), helper_tls=_helper_saw(leaf, valid=False))
    assert j.blocking == "down"
    _assert_proven(j, "helper_same_chain")
