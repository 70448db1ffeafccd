"""What the small lab worlds share (tests/lab/multihop.py, quicworld.py, throttle.py, netstate.py):
a chain of namespaces (clients, routers, a world) each with its own resolv.conf, veth links between
them, processes started in a namespace with a log and a clean environment, waiting for a service
to listen, the real `probe` in a client namespace, and the teardown (also of a half-built world).

The simple chain is the main lab's client, ISP and world (tests/lab/topology.py):

    client 192.0.2.10 -- 192.0.2.1 isp 198.51.100.1 -- 198.51.100.2 world (203.0.113.0/24 on lo)

Documentation addresses only; only the lab's own networks are routed, no namespace has a default route.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self, TypeVar

from tests import pki
from tests.lab import topology
from tests.lab.lab import NETNS_ETC, REPO, LabError, _run, tear_down

CLIENT, ISP_CLIENT_SIDE = topology.CLIENT_ADDRESS, topology.ISP_CLIENT_SIDE
ISP_WORLD_SIDE, WORLD = topology.ISP_WORLD_SIDE, topology.WORLD_ADDRESS
# A veth link: each end's namespace, interface and address with its prefix length.
Link = tuple[str, str, str, str, str, str]
Step = tuple[str, str]  # namespace, command (split on spaces)


World = TypeVar("World", bound="ChainWorld")


@contextlib.contextmanager
def running(world: World) -> Iterator[World]:
    """A world up for a test module, torn down after it, and at exit should the tests be killed."""
    atexit.register(world.down)
    try:
        yield world.up()
    finally:
        world.down()
        atexit.unregister(world.down)


class ChainWorld:
    """A lab world of `roles` (namespaces named `{name}-{role}`), which subclasses build in `_pki`, `_network`,
    `_censor` and `_services`."""

    def __init__(self, name: str, roles: tuple[str, ...]) -> None:
        self.name = name
        self.namespaces = tuple(f"{name}-{role}" for role in roles)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.roots_pem = self.directory / "roots.pem"

    def up(self) -> Self:
        """Build the world (after removing one of the same name a crash left); on any failure, tear it down."""
        try:
            tear_down([], self.namespaces)
            self._pki()
            self._network()
            self._censor()
            self._services()
        except BaseException:
            self.down()
            raise
        return self

    def _pki(self) -> None:
        raise NotImplementedError

    def _network(self) -> None:
        raise NotImplementedError

    def _censor(self) -> None:
        """The censor's rules; none by default."""

    def _services(self) -> None:
        raise NotImplementedError

    def _ns(self, namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", namespace, *args, check=check)

    def _public_ca(self) -> pki.Authority:
        """The lab's public CA (its root written to `roots_pem`); the issuing CA that signs the sites."""
        root = pki.make_root(pki.name(CN="Lab Public Root CA", O="Lab Trust Services", C="US"))
        issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA", O="Lab Trust Services"))
        pki.write_pem(self.roots_pem, [root.cert])
        return issuing

    def _namespaces(self, resolvers: dict[str, str]) -> None:
        """Each namespace, its loopback up and its own resolv.conf naming `resolvers[namespace]`."""
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
            self._ns(namespace, "ip", "link", "set", "lo", "up")
            etc = NETNS_ETC / namespace
            etc.mkdir(parents=True, exist_ok=True)
            resolv = f"nameserver {resolvers[namespace]}\noptions timeout:2 attempts:1\n"
            (etc / "resolv.conf").write_text(resolv, encoding="ascii")

    def _links(self, links: Iterable[Link]) -> list[Step]:
        """The veth pairs made; the steps that address each end and set it up."""
        steps: list[Step] = []
        for left, left_if, left_address, right, right_if, right_address in links:
            _run("ip", "link", "add", left_if, "netns", left, "type", "veth", "peer", "name", right_if, "netns", right)
            for namespace, interface, address in ((left, left_if, left_address), (right, right_if, right_address)):
                steps += [
                    (namespace, f"ip addr add {address} dev {interface}"),
                    (namespace, f"ip link set {interface} up"),
                ]
        return steps

    def _steps(self, steps: Iterable[Step]) -> None:
        for namespace, command in steps:
            self._ns(namespace, *command.split())

    def _env(self, **extra: str) -> dict[str, str]:
        """A clean environment: the checkout's code, and a home and caches inside the world's directory."""
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
                "HOME": str(self.directory), "XDG_CACHE_HOME": str(self.directory / "cache"), **extra}  # fmt: skip

    def _spawn(self, namespace: str, label: str, *args: str) -> None:
        """A long-running process in `namespace`, its output in `{label}.log`; stopped by `down()`."""
        log = (self.directory / f"{label}.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                ["ip", "netns", "exec", namespace, *args],
                env=self._env(XDG_CONFIG_HOME=str(self.directory / "config")),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        log.close()  # the child holds its own copy

    def _nginx(self, namespace: str, servers: str) -> None:
        """nginx in `namespace` with `servers` (its `server { ... }` blocks), in the foreground, as root."""
        d = self.directory
        temp = d / "nginx-tmp"
        temp.mkdir()
        (d / "nginx.conf").write_text(
            f"user root; daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{ access_log off; client_body_temp_path {temp}/b; "
            f"proxy_temp_path {temp}/p; fastcgi_temp_path {temp}/f; uwsgi_temp_path {temp}/u; "
            f"scgi_temp_path {temp}/s;\n{servers}}}\n",
            encoding="utf-8",
        )
        self._spawn(namespace, "nginx", "nginx", "-c", str(d / "nginx.conf"))

    def _dnsmasq(self, namespace: str, label: str, listen: str, *options: str) -> None:
        """dnsmasq in the foreground on `listen` alone, with no upstream but what `options` give."""
        self._spawn(namespace, label, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", "--bind-interfaces", f"--listen-address={listen}", "--user=root", "--pid-file=",
                    *options)  # fmt: skip

    def _wait(self, namespace: str, proto: str, needle: str) -> None:
        """Until something in `namespace` listens on `needle` (`address:port` or `:port`), for 30 s at most."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listening = self._ns(namespace, "ss", "-ltnH" if proto == "tcp" else "-lunH", check=False).stdout
            if needle in listening:
                return
            time.sleep(0.1)
        logs = {p.name: p.read_text(errors="replace")[-500:] for p in self.directory.glob("*.log")}
        raise LabError(f"nothing listens on {proto} {needle} in {namespace} after 30 s: {json.dumps(logs)}")

    def _probe(
        self, namespace: str, command: list[str], timeout: float, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`command` (the real `probe`, perhaps wrapped) in `namespace`, run from the world's directory."""
        return subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, text=True,
                              timeout=timeout, env=self._env(**env), cwd=self.directory)  # fmt: skip

    def down(self) -> None:
        tear_down(self.processes, self.namespaces)
        self.processes.clear()
        shutil.rmtree(self.directory, ignore_errors=True)


class SimpleChain(ChainWorld):
    """The main lab's chain: client (c0) - ISP (`isp_interfaces`: toward the client, toward the world) - world (w0),
    `world_addresses` on the world's loopback, and every namespace asking `resolver`."""

    isp_interfaces: tuple[str, str]
    world_addresses: tuple[str, ...]
    resolver: str

    def __init__(self, name: str) -> None:
        super().__init__(name, ("client", "isp", "world"))
        self.client, self.isp, self.world = self.namespaces

    def _network(self) -> None:
        client, isp, world = self.namespaces
        toward_client, toward_world = self.isp_interfaces
        self._namespaces(dict.fromkeys(self.namespaces, self.resolver))
        steps = [
            *self._links(
                [
                    (client, "c0", f"{CLIENT}/24", isp, toward_client, f"{ISP_CLIENT_SIDE}/24"),
                    (isp, toward_world, f"{ISP_WORLD_SIDE}/30", world, "w0", f"{WORLD}/30"),
                ]
            ),
            (isp, "sysctl -qw net.ipv4.ip_forward=1"),
            # Only the lab's own networks are routed; no namespace has a default route.
            (client, f"ip route add 198.51.100.0/24 via {ISP_CLIENT_SIDE}"),
            (client, f"ip route add 203.0.113.0/24 via {ISP_CLIENT_SIDE}"),
            (isp, f"ip route add 203.0.113.0/24 via {WORLD}"),
            (world, f"ip route add 192.0.2.0/24 via {ISP_WORLD_SIDE}"),
        ]
        steps += [(world, f"ip addr add {address}/32 dev lo") for address in self.world_addresses]
        self._steps(steps)


def probe_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "probe", *args]
