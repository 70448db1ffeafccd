"""Special-purpose addresses that no public site uses (IANA special-purpose registries)."""

from __future__ import annotations

import ipaddress

DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_EXTRA_BOGONS = tuple(ipaddress.ip_network(n) for n in ("100.64.0.0/10", "198.18.0.0/15", "0.0.0.0/8"))


def is_bogon(address: str, documentation_is_public: bool = False) -> bool:
    """True for loopback, private, link-local, reserved, unspecified, multicast and similar addresses.

    `documentation_is_public` makes the documentation ranges count as public: only the lab, whose
    "world" lives in them, asks for that.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if documentation_is_public and any(ip in net for net in DOCUMENTATION_NETWORKS if net.version == ip.version):
        return False
    if any(ip in net for net in _EXTRA_BOGONS if net.version == ip.version):
        return True
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified or ip.is_multicast
