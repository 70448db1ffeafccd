"""Whether this process may open raw sockets: the capability, not the user id.

A volunteer may run the probe as root in a container without CAP_NET_RAW, or as a user who was
given it (`setcap cap_net_raw+ep`, or systemd's `AmbientCapabilities=CAP_NET_RAW`).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

CAP_NET_RAW = 13  # linux/capability.h


def raw_capability(status: Path = Path("/proc/self/status")) -> str | None:
    """None if raw sockets can be opened; otherwise why not, in words for the record."""
    if sys.platform == "linux":
        try:
            for line in status.read_text(encoding="ascii").splitlines():
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
                    return None if effective >> CAP_NET_RAW & 1 else "no CAP_NET_RAW (effective capabilities)"
        except (OSError, ValueError):
            pass
    try:  # elsewhere (or no /proc): try it
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except OSError as exc:
        return f"raw sockets refused: {exc.strerror or exc}"
    return None
