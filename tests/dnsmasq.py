"""A real resolver (dnsmasq) on 127.0.0.1 for the tests, answering only from its own rules."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import dns.message
import dns.query


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dnsmasq:
    """`records` maps a name to an address, or to None for NXDOMAIN. Other names: REFUSED."""

    def __init__(self, records: dict[str, str | None], extra: list[str] | None = None) -> None:
        binary = shutil.which("dnsmasq")
        if binary is None:
            raise RuntimeError("dnsmasq is not installed (apt-get install dnsmasq-base); .ci/run installs it")
        # A port free for UDP may be taken for TCP (an outgoing connection's): dnsmasq binds both and
        # exits at once (2) when it cannot; another port is then tried, a few times at most.
        for attempt in range(5):
            try:
                self._start(binary, records, extra)
                return
            except RuntimeError:
                if attempt == 4 or self.process.returncode != 2:
                    raise

    def _start(self, binary: str, records: dict[str, str | None], extra: list[str] | None) -> None:
        self.port = free_udp_port()
        args = [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={self.port}",
            "--user=root",
            "--pid-file=",
            "--log-facility=-",
        ]
        for host, address in records.items():
            args.append(f"--address=/{host}/{address}" if address else f"--address=/{host}/")
        args += extra or []
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_answering(self.process, self.port, next(iter(records)), "dnsmasq")

    def stop(self) -> None:
        stop_process(self.process)


def wait_until_answering(process: subprocess.Popen[bytes], port: int, name: str, label: str) -> None:
    """Wait for a resolver on 127.0.0.1:`port` to answer anything (5 s at most)."""
    query = dns.message.make_query(name, "A")
    for _ in range(50):
        if process.poll() is not None:
            raise RuntimeError(f"{label} exited with {process.returncode}")
        try:
            dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{label} did not answer within 5 s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
