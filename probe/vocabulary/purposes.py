"""Why a connection was made: every TCP connect and TLS handshake of a record names its purpose.

The target's own connection, its contrasts (the control SNI, a retry, the minting test), the same
for each redirect hop, and the check of an http:// target's DNS answer on port 443. Records older
than the field carry none: the decoder reads that as `TARGET`, as the rules always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Purpose(StrEnum):
    TARGET = "target"  # the target's own connection
    TARGET_RETRY = "target_retry"  # the name once more, after the control SNI reached the server
    CONTROL_SNI = "control_sni"  # the same address with the control name
    MINTING = "minting"  # the same address with a random name that cannot exist
    DNS_CHECK = "dns_check"  # an http:// target's answer, checked with a handshake on port 443
    REDIRECT = "redirect"  # a redirect hop's own connection (with its `hop`)
    REDIRECT_RETRY = "redirect_retry"
    REDIRECT_CONTROL_SNI = "redirect_control_sni"
    REDIRECT_MINTING = "redirect_minting"


DEFAULT_PURPOSE = Purpose.TARGET  # what a record without the field meant


PurposeSet = tuple[Purpose, ...]


@dataclass(frozen=True)
class HopPurposes:
    """The purposes of one hop's handshakes, grouped as the rules ask for them."""

    own: PurposeSet  # the name's own handshake, a retry last
    control: PurposeSet
    minting: PurposeSet


TARGET_HOP = HopPurposes((Purpose.TARGET, Purpose.TARGET_RETRY), (Purpose.CONTROL_SNI,), (Purpose.MINTING,))
REDIRECT_HOP = HopPurposes(
    (Purpose.REDIRECT, Purpose.REDIRECT_RETRY), (Purpose.REDIRECT_CONTROL_SNI,), (Purpose.REDIRECT_MINTING,)
)
CONTROL_PURPOSES = frozenset({Purpose.CONTROL_SNI, Purpose.REDIRECT_CONTROL_SNI})
