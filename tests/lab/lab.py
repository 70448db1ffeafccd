"""The censorship lab: Linux network namespaces with real servers, resolvers, interceptors and filters.

`Lab(name).up()` builds everything from `topology.py`; `down()` removes it all, processes,
namespaces and their resolv.conf, and is safe to call twice or on a half-built lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests import pki
from tests.lab import topology as t

REPO = Path(__file__).resolve().parents[2]
REQUIRED_PROGRAMS = ("ip", "iptables", "nginx", "dnsmasq", "unbound", "mitmdump", "ss")
NETNS_ETC = Path("/etc/netns")


class LabError(RuntimeError):
    pass


def missing_prerequisites() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the censorship lab needs root (network namespaces)"
    missing = [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"the censorship lab needs {', '.join(missing)} (bash .ci/run installs them)"
    return None


def _run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


class Lab:
    def __init__(self, name: str = "kzlab", directory: Path | None = None) -> None:
        self.name = name
        roles = ("client", "isp", "world", "off", "hijacked")
        self.client, self.isp, self.world, self.offline, self.hijacked = (f"{name}-{role}" for role in roles)
        self.namespaces = (self.client, self.isp, self.world, self.offline, self.hijacked)
        self.directory = directory or Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.roots_pem = self.directory / "lab-public-roots.pem"
        self.catalog = self.directory / "lab-catalog.json"
        self.national_catalog = self.directory / "lab-national-cas.json"

    # --- building -------------------------------------------------------------------------
    def up(self) -> Lab:
        reason = missing_prerequisites()
        if reason:
            raise LabError(reason)
        self.down(quiet=True)
        try:
            self._write_pki()
            self._build_network()
            self._install_filters()
            self._start_services()
        except BaseException:
            self.down(quiet=True)
            raise
        (self.directory / "lab.json").write_text(json.dumps(self.describe(), indent=2), encoding="utf-8")
        return self

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "directory": str(self.directory),
            "namespaces": {
                "client": self.client,
                "hijacked_client": self.hijacked,
                "isp": self.isp,
                "world": self.world,
                "offline": self.offline,
            },
            "roots": str(self.roots_pem),
            "catalog": str(self.catalog),
            "national_catalog": str(self.national_catalog),
            "control_resolvers": [
                f"tls://{t.PUBLIC_RESOLVER}#{t.RESOLVER_NAME}",
                f"https://{t.PUBLIC_RESOLVER}/dns-query",
                f"udp://{t.PUBLIC_RESOLVER}",
            ],
            "sites": t.SITES,
        }

    def _write_pki(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        root = pki.make_root(pki.name(CN="Lab Public Root CA", O="Lab Trust Services", C="US"))
        issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA", O="Lab Trust Services"))
        pki.write_pem(self.roots_pem, [root.cert])
        private = pki.make_root(pki.name(CN="Self-made Root", O="A Careless Site"))
        for host in [*t.SITES, "default.lab"]:
            pki.make_leaf(
                private if host in t.UNTRUSTED_SITES else issuing,
                t.CERTIFICATE_NAMES.get(host, [host]),
                aia_url=t.AIA_URL,
                valid_days=(-90, -1) if host in t.EXPIRED_SITES else (-0.25, 90),
                leaf_only=host in t.LEAF_ONLY_SITES,
            ).write(d, host)
        self._write_proof_pki(root, issuing)
        (d / "issuing-ca.der").write_bytes(pki.der(issuing.cert))  # what the AIA URL serves
        pki.make_leaf(issuing, [t.RESOLVER_NAME, t.PUBLIC_RESOLVER]).write(d, t.RESOLVER_NAME)
        pki.make_leaf(issuing, [t.HELPER_NAME, t.HELPER_ADDRESS]).write(d, t.HELPER_NAME)
        for stem, subject in (
            ("mitm-isca", pki.name(C="KZ", O="ISCA", CN="Information Security Certification Authority CA")),
            ("mitm-antivirus", pki.name(CN="ESET SSL Filter CA", O="ESET, spol. s r. o.", C="SK")),
        ):
            authority = pki.make_root(subject, rsa_key=True)
            confdir = d / stem
            confdir.mkdir(exist_ok=True)
            (confdir / "mitmproxy-ca.pem").write_bytes(pki.key_pem(authority.key) + pki.der_pem(authority.cert))
        self.catalog.write_text(json.dumps(t.LAB_BLOCKPAGE_CATALOG, indent=2), encoding="utf-8")

    def _write_proof_pki(self, root: pki.Authority, issuing: pki.Authority) -> None:
        """Certificates for issue 19's look-alikes and proofs: a national CA (catalogued by the lab
        as a national CA), an expired leaf with a re-issued intermediate, a CDN's two edges under
        sibling public CAs, and the roots of a minting interceptor and of an unparseable forgery."""
        d = self.directory
        national = pki.make_root(pki.name(CN=t.LAB_NATIONAL_ROOT, O="Lab Ministry", C="ZZ"))
        national_issuing = pki.make_intermediate(national, pki.name(CN="Lab National Issuing CA", C="ZZ"))
        for host in t.NATIONAL_SITES:
            pki.make_leaf(national_issuing, [host]).write(d, host)
        entry = {"id": "lab-national-root", "name": t.LAB_NATIONAL_ROOT, "country": "ZZ", "kind": "root",
                 "certificate_pem": pki.der_pem(national.cert).decode(), "sources": ["tests/lab/lab.py"],
                 "sha256_der": pki.hashlib_sha256(pki.der(national.cert)),
                 "sha256_spki": pki.spki_sha256(national.cert)}  # fmt: skip
        self.national_catalog.write_text(json.dumps({"catalog": "national_cas", "version": "lab",
                                                     "certificates": [entry]}), encoding="utf-8")  # fmt: skip
        old_issuing = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA 2019", O="Lab Trust Services"))
        reissued = pki.reissue(old_issuing, root, valid_days=(-100, 700))
        for host in t.REISSUED_SITES:
            leaf = pki.make_leaf(old_issuing, [host], valid_days=(-800, -400))
            pki.Leaf(leaf.cert, leaf.key, [leaf.cert, reissued.cert]).write(d, host)
        sibling = pki.make_intermediate(root, pki.name(CN="Lab Public Issuing CA 2", O="Lab Trust Services"))
        pki.make_leaf(issuing, ["cdn-siblings.lab"]).write(d, "cdn-siblings-a")
        pki.make_leaf(sibling, ["cdn-siblings.lab"]).write(d, "cdn-siblings-b")
        gateway = pki.make_root(pki.name(CN=t.LAB_GATEWAY_ROOT, O="Some Network"), rsa_key=True)
        confdir = d / "mitm-gateway"
        confdir.mkdir(exist_ok=True)
        (confdir / "mitmproxy-ca.pem").write_bytes(pki.key_pem(gateway.key) + pki.der_pem(gateway.cert))
        # A forged leaf OpenSSL serves and cryptography refuses: its version field says v4.
        forger = pki.make_root(pki.name(CN="Some Forger Root"))
        forged = pki.make_leaf(forger, ["unparseable.lab"])
        der = bytearray(pki.der(forged.cert))
        at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
        der[at + 4] = 3
        (d / "unparseable.pem").write_bytes(pki.raw_der_pem(bytes(der)) + pki.der_pem(forger.cert))
        (d / "unparseable.key").write_bytes(pki.key_pem(forged.key))

    def _ns(self, namespace: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run("ip", "netns", "exec", namespace, *args, check=check)

    def _build_network(self) -> None:
        for namespace in self.namespaces:
            _run("ip", "netns", "add", namespace)
            self._ns(namespace, "ip", "link", "set", "lo", "up")
        # Every namespace gets its own resolv.conf, so that nothing in the lab asks the host's resolver.
        for namespace in self.namespaces:
            resolver = t.PUBLIC_RESOLVER if namespace in (self.isp, self.world) else t.ISP_RESOLVER
            etc = NETNS_ETC / namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:2 attempts:1\n", encoding="ascii")
        _run("ip", "link", "add", "c0", "netns", self.client, "type", "veth", "peer", "name", "r0", "netns", self.isp)
        _run("ip", "link", "add", "r1", "netns", self.isp, "type", "veth", "peer", "name", "w0", "netns", self.world)
        _run("ip", "link", "add", "c2", "netns", self.hijacked, "type", "veth", "peer", "name", "r2", "netns", self.isp)
        steps = [
            (self.client, f"ip addr add {t.CLIENT_ADDRESS}/24 dev c0"),
            (self.client, "ip link set c0 up"),
            (self.isp, f"ip addr add {t.ISP_CLIENT_SIDE}/24 dev r0"),
            (self.isp, f"ip addr add {t.ISP_RESOLVER}/24 dev r0"),
            (self.isp, f"ip addr add {t.BLOCKPAGE_SERVER}/24 dev r0"),
            (self.isp, f"ip addr add {t.REDIRECT_SERVER}/24 dev r0"),
            (self.isp, f"ip addr add {t.ALTERED_PAGE_SERVER}/24 dev r0"),
            (self.isp, f"ip addr add {t.OONI_PAGE_SERVER}/24 dev r0"),
            (self.isp, "ip link set r0 up"),
            (self.isp, f"ip addr add {t.ISP_WORLD_SIDE}/24 dev r1"),
            (self.isp, "ip link set r1 up"),
            (self.isp, "sysctl -qw net.ipv4.ip_forward=1"),
            (self.world, f"ip addr add {t.WORLD_ADDRESS}/24 dev w0"),
            (self.world, "ip link set w0 up"),
            # Only the lab's own networks are routed; no namespace has a default route.
            (self.client, f"ip route add 198.51.100.0/24 via {t.ISP_CLIENT_SIDE}"),
            (self.client, f"ip route add 203.0.113.0/24 via {t.ISP_CLIENT_SIDE}"),
            (self.isp, f"ip route add 203.0.113.0/24 via {t.WORLD_ADDRESS}"),
            (self.world, f"ip route add 192.0.2.0/24 via {t.ISP_WORLD_SIDE}"),
            # The hijacked client: its own link to the ISP, in the upper half of 192.0.2.0/24.
            (self.hijacked, f"ip addr add {t.HIJACKED_CLIENT_ADDRESS}/25 dev c2"),
            (self.hijacked, "ip link set c2 up"),
            (self.isp, f"ip addr add {t.ISP_HIJACKED_SIDE}/25 dev r2"),
            (self.isp, "ip link set r2 up"),
            (self.hijacked, f"ip route add 192.0.2.0/25 via {t.ISP_HIJACKED_SIDE}"),
            (self.hijacked, f"ip route add 198.51.100.0/24 via {t.ISP_HIJACKED_SIDE}"),
            (self.hijacked, f"ip route add 203.0.113.0/24 via {t.ISP_HIJACKED_SIDE}"),
        ]
        for address in t.WORLD_SITE_ADDRESSES:
            steps.append((self.world, f"ip addr add {address}/32 dev lo"))
        for namespace, command in steps:
            self._ns(namespace, *command.split())

    def _install_filters(self) -> None:
        """The censor's kernel packet filters on the ISP router."""
        rules = [
            # Every packet to this address is dropped: connects time out.
            f"-A FORWARD -d {t.BLACKHOLE} -j DROP",
            # A RST answers the SYN.
            f"-A FORWARD -p tcp -d {t.RST_ON_SYN} --syn -j REJECT --reject-with tcp-reset",
            # The ClientHello carrying a blocked name is answered with a RST, or silently dropped.
            f"-A FORWARD -p tcp -d {t.SNI_FILTERED} --dport 443 -m string --string tls-reset.lab --algo bm "
            "-j REJECT --reject-with tcp-reset",
            f"-A FORWARD -p tcp -d {t.SNI_FILTERED} --dport 443 -m string --string tls-silence.lab --algo bm -j DROP",
            # Residual blocking: once the name was seen twice, every connection from that client
            # to the address is reset for a while, whatever its name.
            f"-A FORWARD -p tcp -d {t.RESIDUAL_FILTERED} --dport 443 -m recent --name residual --rcheck "
            f"--seconds {t.RESIDUAL_SECONDS} --hitcount 2 -j REJECT --reject-with tcp-reset",
            f"-A FORWARD -p tcp -d {t.RESIDUAL_FILTERED} --dport 443 -m string --string residual.lab --algo bm "
            "-m recent --name residual --set -j REJECT --reject-with tcp-reset",
            # Behind a CDN that refuses unknown names with an alert, one name is reset.
            f"-A FORWARD -p tcp -d {t.CDN_STRICT} --dport 443 -m string --string cdn-strict.lab --algo bm "
            "-j REJECT --reject-with tcp-reset",
            # A plain HTTP request naming a blocked Host is answered with a RST, or swallowed.
            f"-A FORWARD -p tcp -d {t.HTTP_SITES} --dport 80 -m string --string Host:_http-rst.lab --algo bm "
            "-j REJECT --reject-with tcp-reset",
            f"-A FORWARD -p tcp -d {t.HTTP_SITES} --dport 80 -m string --string Host:_http-silence.lab --algo bm "
            "-j DROP",
        ]
        nat_rules = [
            # Plain HTTP to a blocked site's address is diverted to the ISP's blockpage server
            # (NAT sees only a connection's first packet, so the divert is by address).
            f"-A PREROUTING -i r0 -p tcp -d {t.HTTP_DIVERTED} --dport 80 "
            f"-j DNAT --to-destination {t.BLOCKPAGE_SERVER}:80",
            # ... or to a server that redirects to the ISP's blockpage host.
            f"-A PREROUTING -i r0 -p tcp -d {t.HTTP_REDIRECTED} --dport 80 "
            f"-j DNAT --to-destination {t.REDIRECT_SERVER}:80",
            # ... or to a page of the ISP's own that no fingerprint knows.
            f"-A PREROUTING -i r0 -p tcp -d {t.HTTP_ALTERED} --dport 80 "
            f"-j DNAT --to-destination {t.ALTERED_PAGE_SERVER}:80",
            # ... or to a page that OONI's public fingerprints know.
            f"-A PREROUTING -i r0 -p tcp -d {t.HTTP_OONI_FINGERPRINTED} --dport 80 "
            f"-j DNAT --to-destination {t.OONI_PAGE_SERVER}:80",
            # HTTPS to these addresses goes through the transparent interceptors.
            f"-A PREROUTING -i r0 -p tcp -d {t.ISCA_INTERCEPTED} --dport 443 "
            f"-j REDIRECT --to-ports {t.ISCA_PROXY_PORT}",
            f"-A PREROUTING -i r0 -p tcp -d {t.ANTIVIRUS_INTERCEPTED} --dport 443 "
            f"-j REDIRECT --to-ports {t.ANTIVIRUS_PROXY_PORT}",
            f"-A PREROUTING -i r0 -p tcp -d {t.MINTED_INTERCEPTED} --dport 443 "
            f"-j REDIRECT --to-ports {t.MINTING_PROXY_PORT}",
            f"-A PREROUTING -i r0 -p tcp -d {t.UNPARSEABLE_INTERCEPTED} --dport 443 "
            f"-j REDIRECT --to-ports {t.UNPARSEABLE_PROXY_PORT}",
            # The hijacked client's ISP rewrites every plain DNS query to its own resolver.
            f"-A PREROUTING -i r2 -p udp --dport 53 -j DNAT --to-destination {t.ISP_RESOLVER}:53",
        ]
        for rule in rules:  # "_" stands for a space inside a matched string
            self._ns(self.isp, "iptables", *(word.replace("Host:_", "Host: ") for word in rule.split()))
        for rule in nat_rules:
            self._ns(self.isp, "iptables", "-t", "nat", *rule.split())

    # --- services -----------------------------------------------------------------------------
    def _spawn(self, namespace: str, label: str, *args: str) -> None:
        log = (self.directory / f"{label}.log").open("wb")
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": str(REPO),
            "XDG_CACHE_HOME": str(self.directory / "cache"),
            "XDG_CONFIG_HOME": str(self.directory / "config"),
            "HOME": str(self.directory),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append((label, process))

    def _wait_listening(self, namespace: str, label: str, proto: str, address: str, port: int) -> None:
        flag = "-ltnH" if proto == "tcp" else "-lunH"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if name == label and process.poll() is not None:
                    log = (self.directory / f"{label}.log").read_text(errors="replace")[-2000:]
                    raise LabError(f"{label} exited ({process.returncode}): {log}")
            listening = self._ns(namespace, "ss", flag, check=False).stdout
            if any(
                f"{address}:{port}" in line or f"*:{port}" in line or f"0.0.0.0:{port}" in line
                for line in listening.splitlines()
            ):
                return
            time.sleep(0.1)
        raise LabError(f"{label} is not listening on {address}:{port} after 20 s")

    def _wait_log(self, namespace: str, label: str, text: str) -> None:
        log = self.directory / f"{label}.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if text in log.read_text(errors="replace"):
                return
            for name, process in self.processes:
                if name == label and process.poll() is not None:
                    raise LabError(f"{label} exited ({process.returncode}): {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        raise LabError(f"{label} did not say {text!r} within 60 s")

    def _nginx_conf(self, role: str, servers: str) -> Path:
        d = self.directory
        temp = d / f"nginx-{role}-tmp"
        temp.mkdir(exist_ok=True)
        conf = d / f"nginx-{role}.conf"
        conf.write_text(
            f"""user root;
daemon off;
worker_processes 1;
pid {d}/nginx-{role}.pid;
error_log {d}/nginx-{role}-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  default_type text/html;
{servers}
}}
""",
            encoding="utf-8",
        )
        return conf

    def _world_nginx(self) -> Path:
        d = self.directory
        page = '"<html><head><title>{0}</title></head><body>The real {0}.</body></html>"'
        default_listen = " ".join(f"listen {a}:443 ssl default_server;" for a in t.DEFAULT_SITE_ADDRESSES)
        site_listen = " ".join(f"listen {a}:443 ssl;" for a in t.HTTPS_SITE_ADDRESSES)
        http_listen = " ".join(f"listen {a}:80 default_server;" for a in t.HTTPS_SITE_ADDRESSES)
        servers = [
            f"""  server {{ {default_listen} server_name _;
    ssl_certificate {d}/default.lab.pem; ssl_certificate_key {d}/default.lab.key;
    location / {{ return 200 {page.format("default.lab")}; }} }}""",
            # A broken server: it refuses every handshake, whatever the name.
            f"""  server {{ listen {t.BROKEN_TLS}:443 ssl default_server; ssl_reject_handshake on; }}""",
            # A CDN edge: unknown names get an alert (unrecognized_name), its own names their sites.
            f"""  server {{ listen {t.CDN_STRICT}:443 ssl default_server; ssl_reject_handshake on; }}""",
            # The lab CA publishes its intermediate where its certificates' AIA extension points.
            f"""  server {{ listen {t.CLEAN_SITES}:80; server_name pki.lab;
    location = /issuing-ca.der {{ alias {d}/issuing-ca.der; default_type application/pkix-cert; }} }}""",
            f"""  server {{ listen {t.HTTP_SITES}:80; server_name redirect-out.lab;
    location / {{ return 301 "https://tls-reset.lab/"; }} }}""",
            f"""  server {{ listen {t.HTTP_SITES}:80; server_name loop.lab;
    location / {{ return 302 "http://loop.lab/again"; }} }}""",
            f"""  server {{ listen {t.HTTP_SITES}:80; server_name login-redirect.lab;
    location / {{ return 302 "{t.LOGIN_URL}"; }} }}""",
            f"""  server {{ {http_listen} server_name _;
    location / {{ return 200 {page.format("$host")}; }} }}""",
        ]
        visitor = (  # long enough to look like a real page; what differs per visit is nginx's variables
            f'"<html><head><title>Your address is $remote_addr - {t.VISITOR_SITE}</title></head><body>'
            "<p>Served to $remote_addr at $time_iso8601.</p><form method='post'>"
            "<input type='hidden' name='csrf' value='$request_id'><input name='q'></form>"
            + "<p>Today's stories, written and edited by the newsroom, with photographs and maps.</p>" * 30
            + '</body></html>"'
        )
        servers += self._proof_servers(site_listen)
        for host in t.SITES:
            servers.append(
                f"""  server {{ {site_listen} server_name {host};
    ssl_certificate {d}/{host}.pem; ssl_certificate_key {d}/{host}.key;
    location / {{ return 200 {visitor if host == t.VISITOR_SITE else page.format(host)}; }} }}"""
            )
        return self._nginx_conf("world", "\n".join(servers))

    def _proof_servers(self, site_listen: str) -> list[str]:
        """The national site on a shared host and on its own address (its default there), the
        re-issued site, and the CDN's two edges, each with its own certificate."""
        d = self.directory
        page = '"<html><head><title>{0}</title></head><body>The real {0}.</body></html>"'

        def server(listen: str, name: str, stem: str) -> str:
            return f"""  server {{ {listen} server_name {name};
    ssl_certificate {d}/{stem}.pem; ssl_certificate_key {d}/{stem}.key;
    location / {{ return 200 {page.format(name)}; }} }}"""

        return [
            server(site_listen, "national.lab", "national.lab"),
            server(f"listen {t.NATIONAL_OWN}:443 ssl default_server;", "national-own.lab", "national-own.lab"),
            server(site_listen, "reissued.lab", "reissued.lab"),
            server(f"listen {t.SIBLING_EDGE_A}:443 ssl default_server;", "cdn-siblings.lab", "cdn-siblings-a"),
            server(f"listen {t.SIBLING_EDGE_B}:443 ssl default_server;", "cdn-siblings.lab", "cdn-siblings-b"),
        ]

    def _blockpage_nginx(self) -> Path:
        # Like many real blockpages, it tells the visitor their address: the probe must scrub it.
        page = (
            f"<html><head><title>{t.BLOCKPAGE_TITLE}</title></head>"
            "<body>Blocked by order. Your address: $remote_addr</body></html>"
        )
        altered = "<html><head><title>Notice</title></head><body>This page is not available.</body></html>"
        fingerprinted = (
            f"<html><head><title>Блокировка</title></head><body><p>{t.OONI_BLOCKPAGE_TEXT}</p></body></html>"
        )
        server = f"""  server {{ listen {t.BLOCKPAGE_SERVER}:80 default_server; server_name _;
    location / {{ return 200 "{page}"; }} }}
  server {{ listen {t.ALTERED_PAGE_SERVER}:80 default_server; server_name _;
    location / {{ return 200 "{altered}"; }} }}
  server {{ listen {t.OONI_PAGE_SERVER}:80 default_server; server_name _; charset utf-8;
    location / {{ return 200 "{fingerprinted}"; }} }}
  server {{ listen {t.UNPARSEABLE_PROXY_PORT} ssl default_server; server_name _;
    ssl_certificate {self.directory}/unparseable.pem; ssl_certificate_key {self.directory}/unparseable.key;
    location / {{ return 200 "<html><head><title>unparseable.lab</title></head><body>Forged.</body></html>"; }} }}
  server {{ listen {t.REDIRECT_SERVER}:80 default_server; server_name _;
    location / {{ return 302 "http://{t.BLOCKPAGE_HOST}/blocked.html?host=$host"; }} }}"""
        return self._nginx_conf("blockpage", server)

    def _unbound_conf(self) -> Path:
        d = self.directory
        lines = [
            "server:",
            f"  interface: {t.PUBLIC_RESOLVER}",
            f"  interface: {t.PUBLIC_RESOLVER}@853",
            f"  interface: {t.PUBLIC_RESOLVER}@443",
            "  port: 53",
            "  tls-port: 853",
            "  https-port: 443",
            '  http-endpoint: "/dns-query"',
            f'  tls-service-pem: "{d}/{t.RESOLVER_NAME}.pem"',
            f'  tls-service-key: "{d}/{t.RESOLVER_NAME}.key"',
            f'  identity: "{t.RESOLVER_IDENTITY}"',
            "  hide-identity: no",
            "  access-control: 0.0.0.0/0 allow",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{d}"',
            f'  pidfile: "{d}/unbound.pid"',
            "  use-syslog: no",
            '  logfile: ""',
            "  do-daemonize: no",
            "  verbosity: 1",
            # Nothing but the lab's zone: no recursion towards the real root servers.
            '  local-zone: "." refuse',
            '  local-zone: "lab." static',
        ]
        for host, address in {**t.SITES, **t.PROOF_SITES, **t.WORLD_PRIVATE_NAMES}.items():
            lines.append(f'  local-data: "{host}. 300 IN A {address}"')
        lines += ["remote-control:", "  control-enable: no"]
        conf = d / "unbound.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _start_services(self) -> None:
        d = self.directory
        self._spawn(self.world, "unbound", "unbound", "-d", "-c", str(self._unbound_conf()))
        self._spawn(self.world, "nginx-world", "nginx", "-c", str(self._world_nginx()))
        lies = []
        for host, address in t.ISP_DNS_ANSWERS.items():
            lies.append(f"--address=/{host}/{address}" if address else f"--address=/{host}/")
        self._spawn(
            self.isp, "dnsmasq-isp", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--bind-interfaces", f"--listen-address={t.ISP_RESOLVER}", f"--server={t.PUBLIC_RESOLVER}",
            "--user=root", "--pid-file=", "--log-facility=-", *lies,
        )  # fmt: skip
        self._spawn(self.isp, "nginx-blockpage", "nginx", "-c", str(self._blockpage_nginx()))
        forged = "|".join(name.replace(".", r"\.") for name in t.ISCA_FORGED_NAMES)
        mitm_common = ("--mode", "transparent", "--set", "ssl_insecure=true", "--set", "block_global=false", "-q")
        self._spawn(
            self.isp, "mitm-isca", "mitmdump", *mitm_common, "--listen-port", str(t.ISCA_PROXY_PORT),
            "--set", f"confdir={d / 'mitm-isca'}", "--allow-hosts", f"^({forged})$",
        )  # fmt: skip
        self._spawn(
            self.isp, "mitm-antivirus", "mitmdump", *mitm_common, "--listen-port", str(t.ANTIVIRUS_PROXY_PORT),
            "--set", f"confdir={d / 'mitm-antivirus'}",
        )  # fmt: skip
        self._spawn(  # bumps every name, under a root no catalog names
            self.isp, "mitm-gateway", "mitmdump", *mitm_common, "--listen-port", str(t.MINTING_PROXY_PORT),
            "--set", f"confdir={d / 'mitm-gateway'}",
        )  # fmt: skip
        self._spawn(
            self.isp, "injector", sys.executable, "-m", "tests.lab.injector", "--iface", "r0",
            "--name", t.INJECTED_NAME, "--answer", t.INJECTED_ANSWER, "--ttl", str(t.INJECTED_IP_TTL),
            "--late-name", t.LATE_INJECTED_NAME, "--late-delay", str(t.LATE_INJECTION_DELAY),
        )  # fmt: skip
        self._spawn(
            self.world, "hostile", sys.executable, "-m", "tests.lab.hostile", "--site", t.HOSTILE_SITE,
            "--resolver", t.HOSTILE_RESOLVER,
        )  # fmt: skip
        self._spawn(
            self.world, "helper", sys.executable, "-m", "probe", "helper", "serve",
            "--listen", f"{t.HELPER_ADDRESS}:443", "--tls-cert", str(d / f"{t.HELPER_NAME}.pem"),
            "--tls-key", str(d / f"{t.HELPER_NAME}.key"), "--roots", str(self.roots_pem),
            "--allow-documentation-addresses", "--timeout", "3",
        )  # fmt: skip
        self._wait_listening(self.world, "unbound", "udp", t.PUBLIC_RESOLVER, 53)
        self._wait_listening(self.world, "nginx-world", "tcp", t.CLEAN_SITES, 443)
        self._wait_listening(self.world, "unbound", "tcp", t.PUBLIC_RESOLVER, 853)
        self._wait_listening(self.world, "unbound", "tcp", t.PUBLIC_RESOLVER, 443)
        self._wait_listening(self.isp, "dnsmasq-isp", "udp", t.ISP_RESOLVER, 53)
        self._wait_listening(self.isp, "nginx-blockpage", "tcp", t.BLOCKPAGE_SERVER, 80)
        self._wait_listening(self.isp, "mitm-isca", "tcp", "*", t.ISCA_PROXY_PORT)
        self._wait_listening(self.isp, "mitm-antivirus", "tcp", "*", t.ANTIVIRUS_PROXY_PORT)
        self._wait_listening(self.isp, "mitm-gateway", "tcp", "*", t.MINTING_PROXY_PORT)
        self._wait_listening(self.isp, "nginx-blockpage", "tcp", "*", t.UNPARSEABLE_PROXY_PORT)
        self._wait_log(self.isp, "injector", "injector ready")
        self._wait_log(self.world, "hostile", "hostile ready")
        self._wait_listening(self.world, "helper", "tcp", t.HELPER_ADDRESS, 443)

    # --- using ----------------------------------------------------------------------------------
    def probe(self, namespace: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the real `probe` command inside a namespace."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "PYTHONPATH": str(REPO),
            "XDG_CACHE_HOME": str(self.directory / "cache"),
            "HOME": str(self.directory),
        }
        return subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "probe", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.directory,
        )

    # --- tearing down ---------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> None:
        tear_down([process for _, process in self.processes], self.namespaces, quiet)
        self.processes.clear()


def tear_down(processes: list[subprocess.Popen[bytes]], namespaces: tuple[str, ...], quiet: bool = True) -> None:
    """Stop the lab's processes (their whole groups), then remove its namespaces and their
    resolv.conf; safe on a half-built lab and when called twice."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    existing = set(_run("ip", "netns", "list", check=False).stdout.split())
    for namespace in namespaces:
        if namespace in existing:
            for pid in _run("ip", "netns", "pids", namespace, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", namespace, check=not quiet)
        shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
