"""What proved a confirmed verdict: a record's `confidence_basis` holds these strings.

Each names evidence that no honest server, and no honest network, produces (docs/verdicts.md
gives the argument for each, and the honest situations that come close). A `confirmed` record
always names at least one; an `unconfirmed` one names none.
"""

from __future__ import annotations

from enum import StrEnum

from probe.vocabulary import tables


class Proof(StrEnum):
    CONTROL_RESOLVER = "control_resolver"
    VALID_CHAIN = "valid_chain"
    DNS_BLOCKPAGE_FINGERPRINT = "dns_blockpage_fingerprint"
    CONTROL_SNI_REACHED_SERVER = "control_sni_reached_server"
    INJECTED_RESET = "injected_reset"
    HELPER_REACHED = "helper_reached"
    HELPER_SAME_FAILURE = "helper_same_failure"
    HELPER_SAME_CHAIN = "helper_same_chain"
    HELPER_PUBLIC_CHAIN = "helper_public_chain"
    CATALOG_FINGERPRINT = "catalog_fingerprint"
    MINTED_CERTIFICATE = "minted_certificate"
    CONTROL_COVERS_NAME = "control_covers_name"
    PUBLICLY_SIGNED = "publicly_signed"
    LOCAL_INTERCEPTOR_CATALOG = "local_interceptor_catalog"
    OS_STORE_FORGES_EVERY_NAME = "os_store_forges_every_name"
    BLOCKPAGE_FINGERPRINT = "blockpage_fingerprint"
    CONTROL_FLOWS = "control_flows"  # issue 22: throttling
    QUIC_CONTROL_SNI_COMPLETED = "quic_control_sni_completed"  # issue 22: QUIC


DESCRIPTIONS: dict[Proof, str] = {
    Proof.CONTROL_RESOLVER: "The encrypted control resolver (or the helper's lookup from outside) resolved the name while the system resolver denied it or answered a bogon or an injected answer (or agreed with it, for a clean record).",
    Proof.VALID_CHAIN: "The address presented a chain valid for the name under the reference roots: the answer reached the real site.",
    Proof.DNS_BLOCKPAGE_FINGERPRINT: "The system resolver answered an address that a blockpage fingerprint (the catalog's or OONI's) names.",
    Proof.CONTROL_SNI_REACHED_SERVER: "At the same address the control name reached the TLS server while the target's name was reset or silenced, twice: the name is the trigger.",
    Proof.INJECTED_RESET: "The reset was born at least two hops nearer than the server: its IP TTL against the server's own packets of the same connection. Sent by something on the path.",
    Proof.HELPER_REACHED: "The helper, outside the network, completed the stage that failed here.",
    Proof.HELPER_SAME_FAILURE: "The helper, outside the network, failed at the same stage: the site is down for everyone.",
    Proof.HELPER_SAME_CHAIN: "The helper, outside the network, was presented the same leaf and found it invalid too (or, for a national CA's chain, the same leaf): what is seen here is the site's own.",
    Proof.HELPER_PUBLIC_CHAIN: "The helper, outside the network, was presented a chain valid for the name under the reference roots, while the chain here leads to no reference root.",
    Proof.CATALOG_FINGERPRINT: "A presented certificate, or the key that signed one, is a catalogued interception CA (by SHA-256 of its DER or its key, or by its signature).",
    Proof.MINTED_CERTIFICATE: "The minting test: asked at the same address for a random name that cannot exist, the same untrusted issuer presented a leaf naming exactly that name.",
    Proof.CONTROL_COVERS_NAME: "At the same address the control name got a publicly valid chain whose leaf also covers the target's name: the server holds a public certificate for the name.",
    Proof.PUBLICLY_SIGNED: "The chain is signed, certificate by certificate, up to a reference root: a public CA issued it, so it is the site's own (expired, for other names, or refused by the verifier's limits).",
    Proof.LOCAL_INTERCEPTOR_CATALOG: "The chain's issuer is a local interceptor the catalog names (antivirus, corporate gateway, debugging proxy).",
    Proof.OS_STORE_FORGES_EVERY_NAME: "The machine's own trust store accepts the chain, and the same issuer forged the control name too: software of the machine's owner.",
    Proof.BLOCKPAGE_FINGERPRINT: "The page matches a blockpage fingerprint (the catalog's, or OONI's public tables), and the helper, if asked, did not get the same page.",
    Proof.CONTROL_FLOWS: "The helper's bulk endpoint sent the same bytes, in the same rounds, at full speed to flows with the control name and with no name, while the flow with the target's name was slowed or frozen every time: the name alone is the difference.",
    Proof.QUIC_CONTROL_SNI_COMPLETED: "At the same address the control name completed a QUIC handshake while the target's name met silence or a refusal over UDP, and TLS over TCP with the target's name worked: the name triggers the QUIC blocking.",
}


def markdown_table() -> str:
    """The proof table of docs/verdicts.md."""
    return tables.markdown_table("basis", "what it shows", DESCRIPTIONS)


if __name__ == "__main__":
    print(markdown_table(), end="")
