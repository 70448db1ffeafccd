"""scapy, imported lazily and quietly: logging silenced before the import, `conf.verb = 0`, and
its caches and configuration under the XDG directories (never in the working directory).

Only the forensic steps call `load()`; `probe --help` and runs without forensics never import it.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import SimpleNamespace


@functools.lru_cache(maxsize=1)
def load() -> SimpleNamespace:
    """The few scapy layers the probe dissects packets with."""
    for name in ("scapy", "scapy.runtime", "scapy.loading", "scapy.interactive"):
        logging.getLogger(name).setLevel(logging.ERROR)
    home = Path.home()
    for variable, default in (("XDG_CACHE_HOME", home / ".cache"), ("XDG_CONFIG_HOME", home / ".config")):
        if not os.environ.get(variable):
            os.environ[variable] = str(default)
    from scapy.config import conf

    conf.verb = 0
    conf.ipv6_enabled = False  # no IPv6 routes read at import
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror

    return SimpleNamespace(IP=IP, TCP=TCP, UDP=UDP, ICMP=ICMP, IPerror=IPerror, TCPerror=TCPerror, UDPerror=UDPerror)
