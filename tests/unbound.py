"""A real unbound on 127.0.0.1 for the tests: forwarding a zone to a given upstream."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.dnsmasq import free_udp_port, stop_process, wait_until_answering


class Unbound:
    """Forwards `zone` to 127.0.0.1:`upstream_port` and refuses everything else.

    Forwarded to a resolver that refuses, unbound answers SERVFAIL at once: a real SERVFAIL."""

    def __init__(self, zone: str, upstream_port: int) -> None:
        binary = shutil.which("unbound")
        if binary is None:
            raise RuntimeError("unbound is not installed (apt-get install unbound); .ci/run installs it")
        self.port = free_udp_port()
        self.directory = Path(tempfile.mkdtemp(prefix="unbound-"))
        conf = self.directory / "unbound.conf"
        conf.write_text(
            f"""server:
  interface: 127.0.0.1
  port: {self.port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{self.directory}"
  pidfile: ""
  use-syslog: no
  do-daemonize: no
  do-not-query-localhost: no
  local-zone: "." refuse
  local-zone: "{zone}." transparent
forward-zone:
  name: "{zone}."
  forward-addr: 127.0.0.1@{upstream_port}
remote-control:
  control-enable: no
""",
            encoding="utf-8",
        )
        self.process = subprocess.Popen(
            [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_answering(self.process, self.port, "probe.invalid", "unbound")

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)
