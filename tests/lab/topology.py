"""The censorship lab's plan: namespaces, addresses, sites, and what the censor does to each.

Addresses come only from the documentation ranges. No namespace has a default route: each knows
only the lab's own networks, so nothing can leave the lab.

    client (volunteer)        isp (router, censor)                 world (sites, public resolver)
    192.0.2.10  --veth--  192.0.2.1 | 198.51.100.1  --veth--  198.51.100.2 + 203.0.113.0/24
                          192.0.2.53 resolver (dnsmasq: forwards, lies about some names)
                          192.0.2.80 blockpage (nginx)
                          mitmproxy x2 (transparent; ISCA-named root, antivirus-named root)
                          iptables: drop, RST on SYN, RST/silence after a ClientHello, HTTP divert
"""

from __future__ import annotations

CLIENT_ADDRESS = "192.0.2.10"
ISP_CLIENT_SIDE = "192.0.2.1"
ISP_RESOLVER = "192.0.2.53"
BLOCKPAGE_SERVER = "192.0.2.80"
REDIRECT_SERVER = "192.0.2.81"  # answers every request with a redirect to the blockpage host
ALTERED_PAGE_SERVER = "192.0.2.82"  # the ISP's own page, which no fingerprint knows
OONI_PAGE_SERVER = "192.0.2.83"  # a page that OONI's public fingerprints know (a Russian national blockpage)
BLOCKPAGE_HOST = "blockpage.isp.lab"  # known only to the ISP's resolver
ISP_WORLD_SIDE = "198.51.100.1"
WORLD_ADDRESS = "198.51.100.2"
PUBLIC_RESOLVER = "203.0.113.53"
LAB_NETWORKS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")

# Site addresses in the world, one per kind of treatment on the path.
CLEAN_SITES = "203.0.113.10"
RST_ON_SYN = "203.0.113.11"
BLACKHOLE = "203.0.113.12"
SNI_FILTERED = "203.0.113.13"
ISCA_INTERCEPTED = "203.0.113.20"
ANTIVIRUS_INTERCEPTED = "203.0.113.21"
HTTP_SITES = "203.0.113.30"
HTTP_DIVERTED = "203.0.113.31"
HTTP_REDIRECTED = "203.0.113.32"
HTTP_ALTERED = "203.0.113.33"  # the ISP serves its own page here, one no fingerprint knows
HTTP_OONI_FINGERPRINTED = "203.0.113.34"  # the ISP serves a page OONI's fingerprints know
CDN_STRICT = "203.0.113.14"  # a CDN edge that refuses unknown names with an alert, as large CDNs do
HOSTILE_SITE = "203.0.113.70"  # servers that misbehave on purpose (tests/lab/hostile.py)
HOSTILE_RESOLVER = "203.0.113.71"  # a resolver that does
DOWN_SITE = "203.0.113.42"  # nothing listens: down for everyone
HELPER_ADDRESS = "203.0.113.90"  # the control vantage, `probe helper serve`
UNREACHABLE_HELPER = "203.0.113.91"  # nothing listens
BROKEN_TLS = "203.0.113.40"
CDN_EDGE_A = "203.0.113.60"  # what the world's resolver answers for cdn.lab
CDN_EDGE_B = "203.0.113.61"  # what the ISP's resolver answers: another edge of the same CDN
INJECTED_ANSWER = "203.0.113.66"  # what the on-path injector claims; nothing runs there
NATIONAL_OWN = "203.0.113.64"  # a national-CA site on an address of its own (every name gets its chain)
SIBLING_EDGE_A = "203.0.113.62"  # a CDN edge with one public issuing CA: what the world's resolver answers
SIBLING_EDGE_B = "203.0.113.63"  # another edge, another public issuing CA: what the ISP's resolver answers
MINTED_INTERCEPTED = "203.0.113.22"  # an interceptor that bumps every name, under a root no catalog names
UNPARSEABLE_INTERCEPTED = "203.0.113.23"  # an interceptor whose forged leaf the parser refuses
RESIDUAL_FILTERED = "203.0.113.15"  # an SNI filter whose block outlives the name (residual blocking)
WORLD_SITE_ADDRESSES = (
    CLEAN_SITES,
    RST_ON_SYN,
    BLACKHOLE,
    SNI_FILTERED,
    ISCA_INTERCEPTED,
    ANTIVIRUS_INTERCEPTED,
    HTTP_SITES,
    HTTP_DIVERTED,
    HTTP_REDIRECTED,
    HTTP_ALTERED,
    HTTP_OONI_FINGERPRINTED,
    CDN_STRICT,
    HOSTILE_SITE,
    HOSTILE_RESOLVER,
    DOWN_SITE,
    HELPER_ADDRESS,
    UNREACHABLE_HELPER,
    BROKEN_TLS,
    CDN_EDGE_A,
    CDN_EDGE_B,
    PUBLIC_RESOLVER,
    NATIONAL_OWN,
    SIBLING_EDGE_A,
    SIBLING_EDGE_B,
    MINTED_INTERCEPTED,
    UNPARSEABLE_INTERCEPTED,
    RESIDUAL_FILTERED,
)
# Where nginx serves the HTTPS sites (the resolver's address has its own DoH server on 443).
HTTPS_SITE_ADDRESSES = tuple(
    a
    for a in WORLD_SITE_ADDRESSES
    if a
    not in (PUBLIC_RESOLVER, BROKEN_TLS, DOWN_SITE, HELPER_ADDRESS, UNREACHABLE_HELPER, HOSTILE_SITE, HOSTILE_RESOLVER)
)
# Where nginx answers an unknown name with the default site's certificate (not CDN_STRICT: an alert;
# not the national site's own address, nor the sibling CDN edges, which answer with their own).
DEFAULT_SITE_ADDRESSES = tuple(
    a for a in HTTPS_SITE_ADDRESSES if a not in (CDN_STRICT, NATIONAL_OWN, SIBLING_EDGE_A, SIBLING_EDGE_B)
)
HELPER_NAME = "helper.lab"
RESOLVER_NAME = "resolver.lab"  # the public resolver's certificate name, for DoT and DoH
RESOLVER_IDENTITY = "world-public-resolver"

# A second client, behind an ISP that rewrites every plain DNS query to its own resolver.
HIJACKED_CLIENT_ADDRESS = "192.0.2.130"
ISP_HIJACKED_SIDE = "192.0.2.129"

ISCA_PROXY_PORT = 8443
ANTIVIRUS_PROXY_PORT = 8444

# name -> the address the world's public resolver gives. nginx serves every HTTPS name here
# with a certificate from the lab's public CA.
SITES: dict[str, str] = {
    "clean.lab": CLEAN_SITES,
    "news.lab": CLEAN_SITES,
    "dns-bogon.lab": CLEAN_SITES,
    "dns-nxdomain.lab": CLEAN_SITES,
    "dns-blockpage.lab": CLEAN_SITES,
    "rst-syn.lab": RST_ON_SYN,
    "blackhole.lab": BLACKHOLE,
    "tls-reset.lab": SNI_FILTERED,
    "tls-silence.lab": SNI_FILTERED,
    "forged.lab": ISCA_INTERCEPTED,
    "passed.lab": ISCA_INTERCEPTED,
    "antivirus.lab": ANTIVIRUS_INTERCEPTED,
    "http-clean.lab": HTTP_SITES,
    "http-blocked.lab": HTTP_DIVERTED,
    "http-rst.lab": HTTP_SITES,
    "http-silence.lab": HTTP_SITES,
    "http-redirect.lab": HTTP_REDIRECTED,
    "http-altered.lab": HTTP_ALTERED,
    "down.lab": DOWN_SITE,
    "broken.lab": BROKEN_TLS,
    "cdn.lab": CDN_EDGE_A,
    "dns-injected.lab": CLEAN_SITES,
    "selfsigned.lab": CLEAN_SITES,  # serves a certificate no public CA issued, to everyone
    # The real web's certificate mess, which no censor made:
    "aia.lab": CLEAN_SITES,  # sends its leaf only; the intermediate is at its AIA URL
    "pki.lab": CLEAN_SITES,  # where the lab's CA publishes its intermediate (plain HTTP)
    "expired.lab": CLEAN_SITES,  # a publicly issued certificate that has expired
    "www-only.lab": CLEAN_SITES,  # a certificate for www.www-only.lab only
    "cdn-strict.lab": CDN_STRICT,  # behind a CDN that refuses unknown names; reset by the censor
    "cdn-open.lab": CDN_STRICT,  # the same CDN, not blocked
    "redirect-out.lab": HTTP_SITES,  # plain HTTP that redirects to https://tls-reset.lab/
    "login-redirect.lab": HTTP_SITES,  # plain HTTP that redirects to a login page on accounts.lab
    "accounts.lab": CLEAN_SITES,
    "http-ooni.lab": HTTP_OONI_FINGERPRINTED,
    "late-injected.lab": CLEAN_SITES,
    "loop.lab": HTTP_SITES,  # plain HTTP that redirects to itself, for ever
    "hostile.lab": HOSTILE_SITE,
    "visitor.lab": CLEAN_SITES,  # prints the visitor's address, the time and a token (VISITOR_SITE)
}
# A page that prints what differs per visit, as many real pages do: the visitor's address (in its
# title too), the time and a per-request token. The probe's and the helper's visits are the same page.
VISITOR_SITE = "visitor.lab"
UNTRUSTED_SITES = ("selfsigned.lab",)
LEAF_ONLY_SITES = ("aia.lab",)
EXPIRED_SITES = ("expired.lab",)
# name -> the names its certificate covers, where they are not the name itself.
CERTIFICATE_NAMES = {"www-only.lab": ["www.www-only.lab"]}
AIA_URL = "http://pki.lab/issuing-ca.der"
OONI_BLOCKPAGE_TEXT = "Доступ к сайту ограничен в соответствии с Федеральными законами"  # ooni.ru_0
OONI_BLOCKPAGE_ID = "ooni.ru_0"
LOGIN_URL = "https://accounts.lab/login?continue=http%3A%2F%2Flogin-redirect.lab%2F"

# Names the world's resolver answers with a private address: the helper must refuse them.
WORLD_PRIVATE_NAMES = {"private.lab": "10.20.30.40", "metadata.lab": "169.254.169.254"}

# What the ISP's resolver says instead of what the world's says.
ISP_DNS_ANSWERS: dict[str, str | None] = {
    "dns-bogon.lab": "10.10.34.35",  # a lie: a private address, as Iran's resolvers answer
    "dns-nxdomain.lab": None,  # a lie: NXDOMAIN
    "dns-blockpage.lab": BLOCKPAGE_SERVER,  # a lie: the ISP's blockpage
    "cdn.lab": CDN_EDGE_B,  # no lie: another edge of the same CDN, with a valid certificate
    "cdn-siblings.lab": SIBLING_EDGE_B,  # no lie: another edge, under a sibling public CA
    BLOCKPAGE_HOST: BLOCKPAGE_SERVER,  # the ISP's own name
}

# The on-path injector races forged answers for this name (and names under it).
INJECTED_NAME = "dns-injected.lab"
INJECTED_IP_TTL = 200
# ... and for this one, only after a delay: the forged reply arrives after the target's handshake.
LATE_INJECTED_NAME = "late-injected.lab"
LATE_INJECTION_DELAY = 0.5

# SNIs the ISCA-named interceptor forges; every other name through it is passed untouched.
ISCA_FORGED_NAMES = ("forged.lab",)

BLOCKPAGE_TITLE = "Access to this resource is restricted - Lab ISP"

# The catalog entries a lab run adds with --catalog: the lab ISP's blockpage, by address and title.
LAB_BLOCKPAGE_CATALOG = {
    "catalog": "blockpages",
    "version": "lab",
    "http": [
        {
            "id": "lab-isp-blockpage",
            "name": "Lab ISP blockpage",
            "country": "ZZ",
            "field": "title",
            "match": "contains",
            "pattern": "Access to this resource is restricted",
            "sources": ["tests/lab/topology.py"],
        },
        {
            "id": "lab-isp-redirect",
            "name": "Lab ISP redirect to its blockpage host",
            "country": "ZZ",
            "field": "header:location",
            "match": "prefix",
            "pattern": f"http://{BLOCKPAGE_HOST}/",
            "sources": ["tests/lab/topology.py"],
        },
    ],
    "dns": [
        {
            "id": "lab-isp-blockpage-address",
            "name": "Lab ISP blockpage server",
            "country": "ZZ",
            "address": BLOCKPAGE_SERVER,
            "sources": ["tests/lab/topology.py"],
        }
    ],
}

# --- Confirmed means proven (issue 19): honest look-alikes of interception, and proofs of it ------
MINTING_PROXY_PORT = 8445
UNPARSEABLE_PROXY_PORT = 8446
RESIDUAL_SECONDS = 20
PROOF_SITES: dict[str, str] = {
    "national.lab": CLEAN_SITES,  # a national CA's certificate, on a shared host
    "national-own.lab": NATIONAL_OWN,  # ... and on an address of its own
    "reissued.lab": CLEAN_SITES,  # an expired certificate, served with its re-issued intermediate
    "cdn-siblings.lab": SIBLING_EDGE_A,
    "minted.lab": MINTED_INTERCEPTED,
    "unparseable.lab": UNPARSEABLE_INTERCEPTED,
    "residual.lab": RESIDUAL_FILTERED,
}
NATIONAL_SITES = ("national.lab", "national-own.lab")
REISSUED_SITES = ("reissued.lab",)
# The national root's catalog entry is written by the lab (its certificate is made there).
LAB_NATIONAL_ROOT = "Lab National Root CA"
LAB_GATEWAY_ROOT = "Lab Gateway Root"  # the minting interceptor's root: in no catalog
