"""The national CAs catalog (`probe/data/national_cas.json`): real certificates, checked as they load.

Each entry carries its certificate as PEM; the loader recomputes the fingerprints from it and refuses
an entry whose stated ones differ. tests/data/national-roots holds the same certificates, with their
provenance (README.md there), so that the shipped catalog can be compared with what was checked.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probe.analyze.catalog import CatalogError, Catalogs, NationalCertificate, add_document
from probe.analyze.certs import name_attributes
from probe.loaders.catalogs import load_catalogs

DATA = Path(__file__).parent / "data" / "national-roots"
SHIPPED_VERSION = "2026-12-03"

# The issuer key of kz-nca-rsa-2018 ("НЕГІЗГІ КУӘЛАНДЫРУШЫ ОРТАЛЫҚ (RSA)", 2015-2025) as NCANode's
# documentation quotes it (malikzh/NCANode docs/03_API/09_RAW.verify.md, commit 95e2601). Its whole
# certificate was found nowhere, so it is not in the catalog; its key checks the intermediate's signature.
KZ_RSA_ROOT_2015_SPKI = (
    "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAlqLdP8Z8G8sr5fWi+lp8r2fqRe2NLsiuHntkNTqu11bnY7h+q5LlAbTVJiPfFRchqegg"
    "64shKdqNy+9rPW3Swq2hwAQQ2HrAwoTaeKPgh3tusVxhRAyEmq2vVwGWmuiciuDUSr45hMYMEGb8SwocFdW17gx6b+MYivcQ4UQv+Jgmt1r00tyB"
    "d5qcavUISM/xmYqNfj+oxYCpuHto+DSYmkD1LCgObSe8JJ2BMYH1ShF7GoLprvnEh1BhxhYQj9zHqnlgee3j96IeAT+nfB0mOgK06pzMqXUAwJ0i"
    "p1F5zSzDhRfE/6Y9GLI5O3mPNeU1LMH70DTPoPHwFg4+Cvo9UGkuYO5ZQBsEPZIAXalW8f11u5O5wA5wQPv/v9Q1NCfjMsu3UiGG7pNemOkOatzI"
    "n22aP4ys8Zfrq+UfgDuRsQcevwmSEnhcyQ9CbZv1T28wTHU8WhF3vwB/f93Z2rJorvJuHuJFk/aBPckeQW3eDxgks3L1dZM2nIIeYrUkE3oey223"
    "eVQQa/YWAfOF8svVt2HbtQPjhGGj6858xvTYi4FErZA2P5nojgJ7jSdSMWiu8dLt/KjNHTDEIPaYCKvt0qtgS36gV0QCbXGyrSTNIXrXhCeX71SY"
    "vJbjPMYmSH94tY6KERSpSd5ixVaVYKbZVbyww8ZTD1PBeL42esSCaZsCAwEAAQ=="
)
KZ_RSA_ROOT_2015_SPKI_SHA256 = "5a3dce1a3a954448c3f6abcde0b41e16f3fc2de6c20ce6a63e560fbf7fe7e6b7"


def _shipped() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (resources.files("probe") / "data" / "national_cas.json").read_text(encoding="utf-8")
    )
    return document


def _certificate(entry: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificate(entry["certificate_pem"].encode("ascii"))


def _write(tmp_path: Path, document: dict[str, Any], name: str = "extra.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def _extra(entry: dict[str, Any]) -> dict[str, Any]:
    return {"catalog": "national_cas", "version": "2026-12-24", "certificates": [entry]}


def test_the_shipped_catalog_loads_with_its_certificates_and_names() -> None:
    catalogs = load_catalogs()
    ids = [entry.id for entry in catalogs.national_roots]
    assert ids == ["ru-trusted-root-ca-2022", "ru-trusted-sub-ca-2022", "ru-trusted-sub-ca-2024", "kz-nca-rsa-2018"]
    assert all(isinstance(entry, NationalCertificate) and entry.sources for entry in catalogs.national_roots)
    assert {entry.kind for entry in catalogs.national_roots} == {"root", "intermediate"}
    assert {rule.kind for rule in catalogs.national_names} == {"national_ca"}
    assert {rule.country for rule in catalogs.national_names} == {"RU", "KZ"}


def test_every_entry_s_fingerprints_are_those_of_its_certificate() -> None:
    loaded = {entry.id: entry for entry in load_catalogs().national_roots}
    for entry in _shipped()["certificates"]:
        certificate = _certificate(entry)
        der = certificate.public_bytes(serialization.Encoding.DER)
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert entry["sha256_der"] == hashlib.sha256(der).hexdigest(), entry["id"]
        assert entry["sha256_spki"] == hashlib.sha256(spki).hexdigest(), entry["id"]
        assert entry["sha1"] == hashlib.sha1(der).hexdigest(), entry["id"]  # noqa: S324 - as sources cite it
        assert entry["subject"] == certificate.subject.rfc4514_string()
        assert entry["not_before"] == certificate.not_valid_before_utc.date().isoformat()
        assert entry["not_after"] == certificate.not_valid_after_utc.date().isoformat()
        assert (loaded[entry["id"]].der, loaded[entry["id"]].sha256_spki) == (der, entry["sha256_spki"])
        assert len(entry["sources"]) >= 2, f"{entry['id']}: a certificate needs two sources"


def test_each_certificate_is_signed_by_its_issuer() -> None:
    certificates = {entry["id"]: _certificate(entry) for entry in _shipped()["certificates"]}
    root = certificates["ru-trusted-root-ca-2022"]
    root.verify_directly_issued_by(root)
    certificates["ru-trusted-sub-ca-2022"].verify_directly_issued_by(root)
    certificates["ru-trusted-sub-ca-2024"].verify_directly_issued_by(root)
    # kz-nca-rsa-2018: its issuer's certificate is not listed; its issuer's key, as a second source quotes it, is.
    kz = certificates["kz-nca-rsa-2018"]
    spki = base64.b64decode(KZ_RSA_ROOT_2015_SPKI)
    assert hashlib.sha256(spki).hexdigest() == KZ_RSA_ROOT_2015_SPKI_SHA256
    issuer_key = serialization.load_der_public_key(spki)
    assert isinstance(issuer_key, rsa.RSAPublicKey)
    issuer_key.verify(kz.signature, kz.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    assert KZ_RSA_ROOT_2015_SPKI_SHA256 not in {e.sha256_spki for e in load_catalogs().national_roots}


def test_the_test_data_files_are_the_catalog_s_certificates_byte_for_byte() -> None:
    shipped = {entry["certificate_pem"] for entry in _shipped()["certificates"]}
    files = {path.read_text(encoding="ascii") for path in DATA.glob("*.pem")}
    assert files == shipped
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for entry in _shipped()["certificates"]:
        assert entry["sha256_der"] in readme.lower(), f"{entry['id']}: README.md does not give its fingerprint"


def test_the_name_rules_cover_every_catalogued_certificate() -> None:
    catalogs = load_catalogs()
    for certificate in catalogs.national_certificates():
        for name in (certificate.subject, certificate.issuer):
            assert any(rule.matches(name_attributes(name)) for rule in catalogs.national_names), name


def test_national_certificates_are_parsed_once_and_all_load_in_this_build() -> None:
    catalogs = load_catalogs()
    parsed = catalogs.national_certificates()
    assert parsed is catalogs.national_certificates()
    assert [c.public_bytes(serialization.Encoding.DER) for c in parsed] == [e.der for e in catalogs.national_roots]
    assert Catalogs().national_certificates() == ()


def test_no_national_certificate_is_an_interception_ca() -> None:
    catalogs = load_catalogs()
    intercepting = {e.sha256_der for e in catalogs.interception_certificates}
    intercepting |= {e.sha256_spki for e in catalogs.interception_certificates}
    assert not intercepting & {e.sha256_der for e in catalogs.national_roots}
    assert not intercepting & {e.sha256_spki for e in catalogs.national_roots}


def test_a_catalog_file_adds_national_certificates(tmp_path: Path) -> None:
    entry = copy.deepcopy(_shipped()["certificates"][0]) | {"id": "ru-root-again"}
    catalogs = load_catalogs([_write(tmp_path, _extra(entry))])
    assert [e.id for e in catalogs.national_roots][-1] == "ru-root-again"
    versions = catalogs.describe()["national_cas"]
    assert versions[0] == f"builtin:national_cas@{SHIPPED_VERSION}"
    assert versions[1].startswith("extra.json sha256:") and versions[1].endswith("@2026-12-24")


@pytest.mark.parametrize("key", ["sha256_der", "sha256_spki", "sha1"])
def test_a_tampered_fingerprint_names_the_file_and_the_entry(tmp_path: Path, key: str) -> None:
    entry = copy.deepcopy(_shipped()["certificates"][2])
    entry[key] = ("0" if entry[key][0] != "0" else "1") + entry[key][1:]
    path = _write(tmp_path, _extra(entry))
    with pytest.raises(CatalogError) as raised:
        load_catalogs([path])
    message = str(raised.value)
    assert message.startswith(f"{path}: certificates[1] (ru-trusted-sub-ca-2024): '{key}' is ")
    assert f"the certificate's is {_shipped()['certificates'][2][key]}" in message


def _broken(pem: str, how: str) -> str:
    lines = pem.splitlines()
    if how == "bad base64":
        lines[3] = lines[3][:10] + "!" + lines[3][11:]
    elif how == "truncated":
        del lines[10:14]
    elif how == "no end line":
        lines = lines[:-1]
    elif how == "two certificates":
        lines = lines + lines
    elif how == "not a certificate":
        lines = [lines[0], base64.b64encode(b"\x30\x03\x02\x01\x01").decode(), lines[-1]]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("how", ["bad base64", "truncated", "no end line", "two certificates", "not a certificate"])
def test_a_broken_pem_names_the_file_and_the_entry(tmp_path: Path, how: str) -> None:
    entry = copy.deepcopy(_shipped()["certificates"][0])
    entry["certificate_pem"] = _broken(entry["certificate_pem"], how)
    path = _write(tmp_path, _extra(entry))
    with pytest.raises(CatalogError, match=r"certificates\[1\] \(ru-trusted-root-ca-2022\)") as raised:
        load_catalogs([path])
    assert str(raised.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"certificate_pem": None}, "'certificate_pem' must be a non-empty string"),
        ({"sha256_der": None}, "needs 'sha256_der'"),
        ({"kind": "leaf"}, "'kind' must be one of root, intermediate"),
        ({"sources": []}, "'sources' must be a non-empty list"),
    ],
)
def test_an_incomplete_entry_is_refused_with_its_place(change: dict[str, Any], expected: str) -> None:
    entry = {k: v for k, v in (copy.deepcopy(_shipped()["certificates"][1]) | change).items() if v is not None}
    with pytest.raises(CatalogError, match=r"^extra\.json: certificates\[1\] \(ru-trusted-sub-ca-2022\): ") as raised:
        add_document(Catalogs(), _extra(entry), "extra.json")
    assert expected in str(raised.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=16), inner, max_size=6),
        max_leaves=20,
    )
)
def test_any_national_document_is_added_or_refused_with_its_place(document: object) -> None:
    shaped = {"catalog": "national_cas", "certificates": document, "names": document}
    pem_shaped = {"catalog": "national_cas", "certificates": [{"id": "x", "certificate_pem": document}]}
    for candidate in (shaped, pem_shaped):
        try:
            add_document(Catalogs(), candidate, "extra.json")
        except CatalogError as exc:
            assert str(exc).startswith("extra.json")


def test_a_certificate_this_build_cannot_parse_is_listed_by_its_raw_fingerprints() -> None:
    """As a GOST-keyed certificate would be: matched by fingerprint, never offered for verification."""
    der = bytearray(_certificate(_shipped()["certificates"][0]).public_bytes(serialization.Encoding.DER))
    version = der.index(bytes.fromhex("a003020102"))
    der[version + 4] = 0x07  # an X.509 version no parser knows
    with pytest.raises(x509.InvalidVersion):
        x509.load_der_x509_certificate(bytes(der))
    body = base64.encodebytes(bytes(der)).decode("ascii")
    entry = {
        "id": "unparseable",
        "name": "A certificate cryptography refuses",
        "kind": "root",
        "subject": "CN=as stated",
        "certificate_pem": f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n",
        "sha256_der": hashlib.sha256(der).hexdigest(),
        "sha256_spki": _shipped()["certificates"][0]["sha256_spki"],  # the key is unchanged
        "sources": ["a test"],
    }
    catalogs = Catalogs()
    add_document(catalogs, _extra(entry), "extra.json")
    assert (catalogs.national_roots[0].subject, catalogs.national_roots[0].der) == ("CN=as stated", bytes(der))
    assert catalogs.national_certificates() == ()
    entry["certificate_pem"] = entry["certificate_pem"].replace(body, base64.encodebytes(bytes(der[:-40])).decode())
    with pytest.raises(CatalogError, match=r"\(unparseable\): 'certificate_pem' is not a DER certificate"):
        add_document(Catalogs(), _extra(entry), "extra.json")
