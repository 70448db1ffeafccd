"""Every anomaly code the analysis can emit, and every verdict, defined once.

Rules name codes as `Anomaly` members, never as string literals, so that mypy and a test catch a
code that is not in the vocabulary. docs/anomalies.md and the JSON Schema's enums are checked
against this module (`python3 -m probe.vocabulary.anomalies` prints the table).
"""

from __future__ import annotations

from enum import StrEnum

from probe.vocabulary import tables


class Anomaly(StrEnum):
    """A stable code named `stage.outcome`; a record's `anomalies` holds these strings."""

    NETWORK_OFFLINE = "network.offline"
    DNS_CONTROL_FAILED = "dns.control_failed"
    DNS_NXDOMAIN = "dns.nxdomain"
    DNS_NO_ANSWER = "dns.no_answer"
    DNS_SERVFAIL = "dns.servfail"
    DNS_REFUSED = "dns.refused"
    DNS_TIMEOUT = "dns.timeout"
    DNS_FAILURE = "dns.failure"
    DNS_BOGON = "dns.bogon"
    DNS_BLOCKPAGE_IP = "dns.blockpage_ip"
    DNS_INCONSISTENT = "dns.inconsistent"
    DNS_INJECTED = "dns.injected"
    DNS_TRANSPARENT_PROXY = "dns.transparent_proxy"
    DNS_NAME_DOES_NOT_EXIST = "dns.name_does_not_exist"
    DNS_IP_TTL_DIFFERS = "dns.ip_ttl_differs"
    DNS_PROXY_ANSWERED_INJECTION_PROBE = "dns.proxy_answered_injection_probe"
    TCP_TIMEOUT = "tcp.timeout"
    TCP_REFUSED = "tcp.refused"
    TCP_RESET = "tcp.reset"
    TCP_UNREACHABLE = "tcp.unreachable"
    TCP_NETWORK_UNREACHABLE = "tcp.network_unreachable"
    TCP_FAILURE = "tcp.failure"
    TCP_INJECTED_RST = "tcp.injected_rst"
    TLS_RESET = "tls.reset"
    TLS_INJECTED_RST = "tls.injected_rst"
    TLS_TIMEOUT = "tls.timeout"
    TLS_EOF = "tls.eof"
    TLS_ALERT = "tls.alert"
    TLS_FAILURE = "tls.failure"
    TLS_SNI_TRIGGERED = "tls.sni_triggered"
    TLS_FAILS_FOR_ANY_NAME = "tls.fails_for_any_name"
    TLS_CERT_MISMATCH = "tls.cert_mismatch"
    TLS_LEAF_KEY_DIFFERS = "tls.leaf_key_differs"
    TLS_UNTRUSTED_CHAIN = "tls.untrusted_chain"
    TLS_KNOWN_INTERCEPTION_CA = "tls.known_interception_ca"
    TLS_INTERCEPTION_CA_NAME = "tls.interception_ca_name"
    TLS_LOCAL_INTERCEPTOR = "tls.local_interceptor"
    TLS_TRUSTED_BY_OS_STORE = "tls.trusted_by_os_store"
    TLS_HOSTNAME_MISMATCH = "tls.hostname_mismatch"
    TLS_NO_SCTS = "tls.no_scts"
    TLS_RSA_EXPONENT_3 = "tls.rsa_exponent_3"
    TLS_EXTENSIONS_STRIPPED = "tls.extensions_stripped"
    TLS_CHAIN_COMPLETED = "tls.chain_completed"
    TLS_EXPIRED_CERTIFICATE = "tls.expired_certificate"
    TLS_WRONG_NAME_SAME_SITE = "tls.wrong_name_same_site"
    TLS_OTHER_SITE_CERTIFICATE = "tls.other_site_certificate"
    TLS_CHAIN_TOO_LONG = "tls.chain_too_long"
    TLS_SELF_SIGNED = "tls.self_signed"
    TLS_UNKNOWN_ISSUER = "tls.unknown_issuer"
    TLS_CONTROL_SNI_CONTRAST = "tls.control_sni_contrast"
    TLS_CONTROL_COVERS_NAME = "tls.control_covers_name"
    TLS_MINTED_CERTIFICATE = "tls.minted_certificate"
    TLS_NATIONAL_CA = "tls.national_ca"
    TLS_NATIONAL_CA_NAME = "tls.national_ca_name"
    TLS_UNPARSEABLE_CERTIFICATE = "tls.unparseable_certificate"
    TLS_PUBLIC_CHAIN_REJECTED = "tls.public_chain_rejected"
    TLS_RESIDUAL_BLOCKING = "tls.residual_blocking"
    HTTP_RESET = "http.reset"
    HTTP_TIMEOUT = "http.timeout"
    HTTP_EOF = "http.eof"
    HTTP_FAILURE = "http.failure"
    HTTP_DIFF = "http.diff"
    HTTP_BLOCKPAGE = "http.blockpage"
    HTTP_BLOCKPAGE_VAGUE = "http.blockpage_vague"
    HTTP_BLOCKPAGE_SUSPECTED = "http.blockpage_suspected"
    HTTP_BLOCKPAGE_TRAITS = "http.blockpage_traits"
    HTTP_REDIRECT_HOP = "http.redirect_hop"
    QUIC_TIMEOUT = "quic.timeout"  # issue 22: QUIC
    QUIC_REFUSED = "quic.refused"
    QUIC_FAILURE = "quic.failure"
    QUIC_SNI_TRIGGERED = "quic.sni_triggered"
    QUIC_FAILS_FOR_ANY_NAME = "quic.fails_for_any_name"
    HELPER_FAILED = "helper.failed"
    HELPER_SAME_FAILURE = "helper.same_failure"
    THROUGHPUT_THROTTLED = "throughput.throttled"  # issue 22: throttling
    THROUGHPUT_FROZEN = "throughput.frozen"
    THROUGHPUT_UNSTABLE = "throughput.unstable"


DESCRIPTIONS: dict[Anomaly, str] = {
    Anomaly.NETWORK_OFFLINE: "The probe had no network at all (no route, or every attempt failed locally); the record claims nothing about the site.",
    Anomaly.DNS_CONTROL_FAILED: "The control resolver gave no usable answer, so the system resolver's answer could not be checked.",
    Anomaly.DNS_NXDOMAIN: "The system resolver said the name does not exist (NXDOMAIN) while the control resolved it.",
    Anomaly.DNS_NO_ANSWER: "The system resolver returned no address while the control returned some.",
    Anomaly.DNS_SERVFAIL: "The system resolver answered SERVFAIL while the control resolved the name.",
    Anomaly.DNS_REFUSED: "The system resolver answered REFUSED while the control resolved the name.",
    Anomaly.DNS_TIMEOUT: "The system resolver did not answer in time while the control resolved the name.",
    Anomaly.DNS_FAILURE: "The system resolver failed in another way (see the failure string) while the control resolved the name.",
    Anomaly.DNS_BOGON: "The system resolver returned a special-purpose address (loopback, private, link-local, reserved, unspecified) that the control did not.",
    Anomaly.DNS_BLOCKPAGE_IP: "The system resolver returned an address (or a CNAME to a name) listed in the blockpage catalog or OONI's DNS fingerprints, and the control did not.",
    Anomaly.DNS_INCONSISTENT: "The system resolver's addresses share none with the control's, and no TLS handshake to them presented a chain valid for the name.",
    Anomaly.DNS_INJECTED: "A device on the path answers DNS: an address that runs no resolver answered with an answer neither the control nor a TLS handshake confirms (and not the transparent proxy's own), or one query got differing replies.",
    Anomaly.DNS_TRANSPARENT_PROXY: "Plain DNS to the control's address is answered by someone else: its answers or its identity (CHAOS id.server) differ from the control's encrypted channel. A property of the network, not a verdict by itself.",
    Anomaly.DNS_NAME_DOES_NOT_EXIST: "Both the system resolver and the control say the name does not exist: the site is gone, not blocked.",
    Anomaly.DNS_IP_TTL_DIFFERS: "A reply from the system's nameserver arrived with another IP TTL than its reply for an ordinary name: a hint of a device on the path, recorded, never a verdict on its own.",
    Anomaly.DNS_PROXY_ANSWERED_INJECTION_PROBE: "The injection probe (a query to an address that runs no resolver) was answered with the same answer the network's transparent DNS proxy gives: the proxy, not an injector.",
    Anomaly.TCP_TIMEOUT: "TCP connects to every address timed out.",
    Anomaly.TCP_REFUSED: "TCP connects were refused (a RST answered the SYN).",
    Anomaly.TCP_RESET: "TCP connects were reset.",
    Anomaly.TCP_INJECTED_RST: "A reset of a TCP connect came with another IP TTL (hop distance) than every packet the server sent on the same connection, or an IP ID out of that connection's sequence: sent by something on the path (packet capture, CAP_NET_RAW).",
    Anomaly.TCP_UNREACHABLE: "TCP connects failed with host unreachable (an ICMP error from the path).",
    Anomaly.TCP_NETWORK_UNREACHABLE: "TCP connects failed with network unreachable (an ICMP error) although a route existed when the run began: a finding like any other, never taken for a dead uplink.",
    Anomaly.TCP_FAILURE: "TCP connects failed in another way (see the failure string).",
    Anomaly.TLS_RESET: "The connection was reset during the TLS handshake (after the ClientHello).",
    Anomaly.TLS_INJECTED_RST: "The reset during the TLS handshake came with another IP TTL (hop distance) or IP ID than the server's own packets of the same connection: sent by something on the path (packet capture, CAP_NET_RAW).",
    Anomaly.TLS_TIMEOUT: "The TLS handshake got no answer until the timeout (silence after the ClientHello).",
    Anomaly.TLS_EOF: "The connection was closed during the TLS handshake.",
    Anomaly.TLS_ALERT: "The TLS handshake ended with an alert from the peer.",
    Anomaly.TLS_FAILURE: "The TLS handshake failed in another way (see the failure string).",
    Anomaly.TLS_SNI_TRIGGERED: "The same address completed a handshake with the control SNI, without the target's failure or substitution: the name triggers the interference.",
    Anomaly.TLS_FAILS_FOR_ANY_NAME: "The handshake also failed with the control SNI: the server or the whole address is broken or blocked; the name is not shown to be the trigger.",
    Anomaly.TLS_CERT_MISMATCH: "The helper, outside the network, saw a chain valid for the name under its reference roots, while the chain here leads to no reference root: interception, proven (`helper_public_chain`).",
    Anomaly.TLS_LEAF_KEY_DIFFERS: "The helper saw another leaf, and both chains are valid (even from different public CAs): recorded only, as CDN edges and key rotation give exactly this.",
    Anomaly.TLS_UNTRUSTED_CHAIN: "The presented chain does not validate for the name under the reference roots.",
    Anomaly.TLS_KNOWN_INTERCEPTION_CA: "A presented certificate is in the interception catalog, matched by the SHA-256 of its DER or of its public key.",
    Anomaly.TLS_INTERCEPTION_CA_NAME: "An issuer or subject in the chain carries the name of a catalogued interception CA; the key itself is not catalogued.",
    Anomaly.TLS_LOCAL_INTERCEPTOR: "The chain is issued by a local interceptor named in the catalog (antivirus, corporate gateway, debugging proxy).",
    Anomaly.TLS_TRUSTED_BY_OS_STORE: "The chain does not validate under the reference roots but does under this machine's own trust store: a root its owner installed (antivirus, gateway, or a national certificate). With the control name forged by the same issuer too, the verdict is local_interception.",
    Anomaly.TLS_HOSTNAME_MISMATCH: "The leaf certificate does not cover the name (supporting evidence).",
    Anomaly.TLS_NO_SCTS: "The leaf certificate carries no embedded Certificate Transparency SCTs (supporting evidence).",
    Anomaly.TLS_RSA_EXPONENT_3: "The leaf's RSA key uses public exponent 3, as the 2019 Kazakhstan forgeries did (supporting evidence).",
    Anomaly.TLS_EXTENSIONS_STRIPPED: "The leaf lacks AIA, CRL distribution points, policies and SCTs, as stripped forgeries do (supporting evidence).",
    Anomaly.TLS_CHAIN_COMPLETED: "The server sent an incomplete chain; completed from the certificate's AIA CA Issuers URL (as browsers do), it validates under the reference roots: the site's own mess, not an anomaly of the path.",
    Anomaly.TLS_EXPIRED_CERTIFICATE: "The chain validates under the reference roots but for time: a certificate in it has expired or is not yet valid. A forger cannot make a public CA's signature: the site's own fault.",
    Anomaly.TLS_WRONG_NAME_SAME_SITE: "The chain validates under the reference roots for names of the same site (say `www.` only), at an address the control confirms: the site's own misconfiguration.",
    Anomaly.TLS_OTHER_SITE_CERTIFICATE: "The chain validates under the reference roots, but for names of another site (listed in the analysis): the connection reached some other server.",
    Anomaly.TLS_CHAIN_TOO_LONG: "The chain would validate but is longer than the verifier allows: the site's own mess.",
    Anomaly.TLS_SELF_SIGNED: "The leaf certificate signs itself: a site's own certificate, not a forger's (forgers issue from a CA). Without other evidence, nothing is concluded.",
    Anomaly.TLS_UNKNOWN_ISSUER: "The chain leads to no reference root and could not be completed: an unknown issuer. Without a proof (catalogued key, helper, minting test, a public certificate the server hides) a suspected interception, unconfirmed.",
    Anomaly.TLS_CONTROL_SNI_CONTRAST: "A hint, never proof on its own: at the same address the control SNI got a different leaf whose chain validates for the control name under the reference roots. Virtual hosting (one address, a certificate per name) gives the same picture.",
    Anomaly.TLS_CONTROL_COVERS_NAME: "Proof of substitution: at the same address the control SNI got a publicly valid chain whose leaf also covers the target's name, yet the target's name got a chain that does not validate. The server holds a public certificate for the name; no virtual hosting serves an untrusted one instead.",
    Anomaly.TLS_MINTED_CERTIFICATE: "Proof of interception (the minting test): asked at the same address for a random name that cannot exist, something presented a leaf naming exactly that name, issued by the same untrusted issuer as the target's leaf: a CA minting certificates for whatever name is asked, which no honest server holds.",
    Anomaly.TLS_NATIONAL_CA: "The chain verifies for the name to a national CA outside Mozilla's store that sites really use (catalog `national_cas`, matched by fingerprint): the site's own choice, not interception.",
    Anomaly.TLS_NATIONAL_CA_NAME: "A certificate carries the name of a catalogued national CA, but the chain does not verify to that CA's key: what a forger would make. A suspicion, never a confirmed finding either way.",
    Anomaly.TLS_UNPARSEABLE_CERTIFICATE: "A presented certificate could not be parsed; its raw bytes were still matched against the catalogs. Never taken for a clean chain.",
    Anomaly.TLS_PUBLIC_CHAIN_REJECTED: "The chain is signed up to a reference root and covers the name, but the verifier rejects it for another reason (key usage, constraints): the site's own mess, not a forgery.",
    Anomaly.TLS_RESIDUAL_BLOCKING: "After the target's name failed twice while the control name reached the server in between, the control name failed too when asked again at once: the censor blocks the address for a while after seeing the name (residual blocking), not a server that refuses one name.",
    Anomaly.HTTP_RESET: "The connection was reset after the HTTP request.",
    Anomaly.HTTP_TIMEOUT: "No complete HTTP response arrived before the timeout.",
    Anomaly.HTTP_EOF: "The connection was closed after the HTTP request without a response.",
    Anomaly.HTTP_FAILURE: "The HTTP exchange failed in another way (see the failure string).",
    Anomaly.HTTP_DIFF: "The page differs from the one the helper fetched from outside, compared as OONI does (status, then body length, uncommon header names and title) once what honest pages vary per visitor is normalised: a hint, blocking only with a blockpage's traits or a fingerprint.",
    Anomaly.HTTP_BLOCKPAGE: "The HTTP response matches a blockpage fingerprint (the catalog's, or OONI's public tables: body or header), anywhere on the way.",
    Anomaly.HTTP_BLOCKPAGE_VAGUE: "The response matches a fingerprint of vague blocking words (OONI scope `vbw`): a weak signal, recorded, never a verdict on its own.",
    Anomaly.HTTP_BLOCKPAGE_SUSPECTED: "No fingerprint matches, but strong signs agree: a redirect to another host, carrying the original host or URL, served from the resolver's network or a private address. Verdict `http`, unconfirmed.",
    Anomaly.HTTP_BLOCKPAGE_TRAITS: "The page differs from the helper's and has a blockpage's traits (blocking words, none of the site's own content), but matches no fingerprint: verdict `http`, unconfirmed (a site's own geo-block or a CDN's challenge looks alike).",
    Anomaly.HTTP_REDIRECT_HOP: "The finding is on a redirect hop, not the target's first response (the hop is named in `analysis.redirect_hop`).",
    Anomaly.QUIC_TIMEOUT: "The QUIC (HTTP/3) handshake with the target's name timed out while TLS over TCP to the same address worked; `datagrams_received` 0 is silence: UDP/443 dropped on the way, or nothing serving QUIC there.",
    Anomaly.QUIC_REFUSED: "The QUIC handshake was refused (ICMP port unreachable for UDP/443) while TLS over TCP to the same address worked.",
    Anomaly.QUIC_FAILURE: "The QUIC handshake failed in another way (the peer closed it, with a TLS alert or a QUIC error): the server answered over QUIC; a hint, never a verdict on its own.",
    Anomaly.QUIC_SNI_TRIGGERED: "At the same address the control name completed a QUIC handshake while the target's name got silence or a refusal (and TLS over TCP worked): the name triggers the QUIC blocking. Confirmed.",
    Anomaly.QUIC_FAILS_FOR_ANY_NAME: "The control name's QUIC handshake failed too: UDP/443 to the address is dropped for every name, or no QUIC server listens there (a server that advertises h3 and does not serve it, a network or home firewall that drops UDP/443 look the same). Unconfirmed.",
    Anomaly.HELPER_FAILED: "A helper (control vantage) could not be reached or refused the request; verdicts rest on what the probe saw alone.",
    Anomaly.HELPER_SAME_FAILURE: "The helper failed at the same stage from outside the network: the site is down for everyone, not blocked.",
    Anomaly.THROUGHPUT_THROTTLED: "In every round of downloads from one server (at least two), the flow whose ClientHello carried the target's name was at most a quarter as fast as the slowest flow with the control name or none, while those were healthy and agreed with each other: the name is slowed (`analysis.throttle`).",
    Anomaly.THROUGHPUT_FROZEN: "In every round, the flow with the target's name stalled at the same byte offset (within 4 KiB) while the flows with the control name or none went well past it: the name's flows are frozen after that many bytes (`analysis.throttle.offset`).",
    Anomaly.THROUGHPUT_UNSTABLE: "The target's flow was slow in every round, but the healthy flows with the control name or none differed from each other as much: the link varies too much to blame the name. Recorded, no verdict.",
}
ANOMALIES: dict[str, str] = {str(code): text for code, text in DESCRIPTIONS.items()}


class Blocking(StrEnum):
    """A record's verdict (`blocking`): the stage that was interfered with, or why none is named."""

    NONE = "none"
    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    TLS_MITM = "tls_mitm"
    HTTP = "http"
    QUIC = "quic"  # issue 22: HTTP/3 blocked while TCP and TLS work
    LOCAL_INTERCEPTION = "local_interception"
    DOWN = "down"
    OFFLINE = "offline"
    INCONCLUSIVE = "inconclusive"
    THROTTLED = "throttled"  # issue 22: the name's flows slowed or frozen (analysis.throttle)


class Confidence(StrEnum):
    """How well a record's verdict is proven (docs/verdicts.md): the report publishes `confirmed` only."""

    CONFIRMED = "confirmed"  # a control proved it (catalog, control SNI, helper, resolver and TLS)
    UNCONFIRMED = "unconfirmed"  # nothing contradicted it, but nothing proved it


BLOCKING_VALUES = tuple(str(value) for value in Blocking)
CONFIDENCE_VALUES = tuple(str(value) for value in Confidence)
CENSORSHIP = frozenset(
    {Blocking.DNS, Blocking.TCP, Blocking.TLS, Blocking.TLS_MITM, Blocking.HTTP, Blocking.QUIC, Blocking.THROTTLED}
)  # issue 22: QUIC, throttling


def markdown_table() -> str:
    """The code table of docs/anomalies.md."""
    return tables.markdown_table("code", "meaning", DESCRIPTIONS)


if __name__ == "__main__":
    print(markdown_table(), end="")
