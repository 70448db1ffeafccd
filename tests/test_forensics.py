"""Packet forensics in a lab of several real routers: the censor's hop, and injected resets.

The same run is made twice: as root (CAP_NET_RAW: the capture and the TTL sweep run), and with
CAP_NET_RAW dropped by capsh (both recorded as skipped, with the reason); the verdicts must be the
same. Unit tests cover the capability check, the rules, and that scapy stays unimported.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.analyze.forensics import censor_hop, injected_resets
from probe.forensics.capability import raw_capability
from tests.conftest import by_host, read_results
from tests.lab.lab import missing_prerequisites

ROOT = Path(__file__).resolve().parents[1]


def test_the_capability_is_read_from_the_process_not_the_user_id(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tprobe\nUid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n", encoding="ascii")
    assert raw_capability(status) == "no CAP_NET_RAW (effective capabilities)"  # root, but no capability
    status.write_text("Name:\tprobe\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000002000\n", encoding="ascii")
    assert raw_capability(status) is None  # a user given cap_net_raw alone


def test_ordinary_packets_are_read_as_scapy_reads_them() -> None:
    """A server's SYN-ACK and data are read with struct (a clean run never loads scapy): the same
    summary as scapy's dissection, for every combination of flags."""
    from probe.forensics import scapy_quiet
    from probe.forensics.capture import _plain_tcp_summary

    layers = scapy_quiet.load()
    for flags in ("SA", "A", "PA", "FA", "FPA", "S", "R", "RA", "SEC", "U"):
        for payload in (b"", b"hello"):
            raw = bytes(layers.IP(src="203.0.113.1", dst="192.0.2.1", ttl=57, id=4242)
                        / layers.TCP(sport=443, dport=5555, flags=flags) / payload)  # fmt: skip
            packet = layers.IP(raw)
            expected = {"flags": str(packet[layers.TCP].flags), "ip_ttl": 57, "ip_id": 4242, "payload": len(payload)}
            assert _plain_tcp_summary(raw) == expected, flags


def _packet(flags: str, ttl: int, ip_id: int = 0) -> dict:
    return {"flags": flags, "ip_ttl": ttl, "ip_id": ip_id, "payload": 0, "t": 0.1}


def test_a_reset_is_injected_only_when_it_does_not_come_from_where_the_server_is() -> None:
    def observations(reset: dict, extra: list[dict] | None = None) -> dict:
        tcp = {"address": "203.0.113.9", "port": 443, "failure": None, "purpose": "target",
               "wire": [_packet("SA", 52), *(extra or []), reset]}  # fmt: skip
        handshake = {"address": "203.0.113.9", "purpose": "target", "failure": "connection_reset"}
        return {"tcp_connect": [tcp], "tls_handshakes": [handshake]}

    assert injected_resets(observations(_packet("R", 52))) == []  # the server's own reset
    (mark,) = injected_resets(observations(_packet("R", 61)))  # born nine hops nearer
    assert (mark["stage"], mark["why"], mark["rst"], mark["server"]["ip_ttl"]) == (
        "tls", ["ip_ttl"], {"ip_ttl": 61, "ip_id": 0}, 52
    )
    numbered = [_packet("A", 52, 4000), _packet("PA", 52, 4001)]
    assert injected_resets(observations(_packet("R", 52, 4002), numbered)) == []  # next in the server's sequence
    (mark,) = injected_resets(observations(_packet("R", 52, 17), numbered))  # same TTL, foreign IP ID
    assert mark["why"] == ["ip_id"]
    lonely = {"tcp_connect": [{"address": "203.0.113.9", "failure": "connection_reset", "purpose": "target",
                               "wire": [_packet("RA", 61)]}], "tls_handshakes": []}  # fmt: skip
    assert injected_resets(lonely) == []  # nothing of the server's to compare with: no claim


def test_the_censor_hop_is_where_the_target_meets_interference_and_the_control_passes() -> None:
    from probe.analyze.common import AnalysisContext

    def side(outcome: str, routers: list[str], leaf: str | None = None) -> dict:
        return {"outcome": outcome, "routers": routers, "unreachable_from": [], "leaf_sha256": leaf}

    steps = [
        {"ttl": 1, "target": side("expired", ["192.0.2.1"]), "control": side("expired", ["192.0.2.1"])},
        {"ttl": 2, "target": side("expired", ["198.51.100.2"]), "control": side("expired", ["198.51.100.2"])},
        {"ttl": 3, "target": side("timeout", []), "control": side("expired", ["198.51.100.6"])},
    ]
    context = AnalysisContext(roots=None, catalogs=None)  # type: ignore[arg-type]  # neither is read here
    hop = censor_hop({"address": "203.0.113.10", "steps": steps}, set(), context)
    assert hop is not None
    assert (hop["hop"], hop["interference"], hop["router_before"], hop["control_passed"]) == (
        3, "silence", "198.51.100.2", True
    )
    both_silent = [*steps[:2], {"ttl": 3, "target": side("timeout", []), "control": side("timeout", [])}]
    assert censor_hop({"address": "x", "steps": both_silent}, set(), context) is None  # a silent path: no claim
    forged = [steps[0], {"ttl": 2, "target": side("handshake", [], "ab"), "control": side("handshake", [], "cd")}]
    assert censor_hop({"address": "x", "steps": forged}, {"ab"}, context)["interference"] == "forged_certificate"
    real = [steps[0], {"ttl": 2, "target": side("handshake", [], "ef"), "control": side("handshake", [], "cd")}]
    assert censor_hop({"address": "x", "steps": real}, {"ab"}, context) is None  # the server's own certificate
    both_reset = [steps[0], {"ttl": 4, "target": side("reset", []), "control": side("reset", [])}]
    assert censor_hop({"address": "x", "steps": both_reset}, set(), context) is None  # a server resetting all


def test_scapy_is_not_imported_for_help_or_a_run_without_forensics(tmp_path: Path) -> None:
    """scapy takes a while to load and writes caches: only the forensic steps may import it."""
    code = (
        "import sys\nfrom probe.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(any(name.split('.')[0] == 'scapy' for name in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    helped = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, env=env)
    assert helped.stdout.strip().endswith("False"), helped.stdout[-300:]
    if os.geteuid() != 0:
        pytest.skip("the run half needs a network namespace (root)")
    targets = tmp_path / "t.txt"
    targets.write_text("192.0.2.1\n", encoding="ascii")
    run = ["run", "--targets", str(targets), "--out", str(tmp_path / "out"), "--no-forensics", "--quiet", "--lab"]
    namespace = f"noscapy{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:  # a namespace with no route at all: the run is offline, nothing leaves this machine
        ran = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", code, *run],
                             capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert "offline" in (tmp_path / "out").rglob("*.jsonl").__next__().read_text()
    assert ran.stdout.strip().endswith("False"), ran.stdout[-300:] + ran.stderr[-1000:]


# --- the multi-hop lab ---------------------------------------------------------------------------

_REASON = missing_prerequisites() or (None if shutil.which("capsh") else "capsh is needed (libcap2-bin)")


@pytest.fixture(scope="module")
def path_lab() -> Iterator:
    if _REASON:
        pytest.skip(_REASON)
    from tests.lab.multihop import MultiHopLab

    lab = MultiHopLab(f"mh{os.getpid() % 100000}")
    atexit.register(lab.down)
    try:
        yield lab.up()
    finally:
        lab.down()
        atexit.unregister(lab.down)


def _run(lab, drop_raw: bool) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    from tests.lab import multihop as m

    out = lab.directory / ("without" if drop_raw else "with")
    targets = lab.directory / "targets.txt"
    names = [m.FILTERED_NAME, m.INTERCEPTED_NAME, m.RESETTING_NAME, m.SYN_RESET_NAME, m.CLEAN_NAME]
    targets.write_text("\n".join(names) + "\n")
    result = lab.probe(
        "run", "--targets", str(targets), "--out", str(out), "--roots", str(lab.roots_pem), "--control-resolver",
        f"udp://{m.RESOLVER}", "--control-sni", m.CONTROL_NAME, "--lab", "--os-store", "none", "--timeout", "3",
        "--asn-db", str(lab.asn_table), "--quiet", "--forensics-limit", "5", drop_raw=drop_raw,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]  # blocking found
    return by_host(read_results(out))


@pytest.fixture(scope="module")
def with_capability(path_lab) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return _run(path_lab, drop_raw=False)


@pytest.fixture(scope="module")
def without_capability(path_lab) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return _run(path_lab, drop_raw=True)


@pytest.mark.lab
def test_an_sni_filter_is_located_after_the_core_router_and_its_reset_marked(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.FILTERED_NAME]
    assert (record["blocking"], record["confidence"]) == ("tls", "confirmed")
    assert "tls.injected_rst" in record["anomalies"]
    forensics = record["analysis"]["forensics"]
    # The filter acts in the core router's forwarding path: a ClientHello with TTL 2 expires at the
    # core (ICMP from it), one with TTL 3 is forwarded there, and reset. The control name passes on
    # to the transit router.
    assert forensics["censor_hop"] == {"hop": 3, "interference": "reset", "router_before": m.CORE_EDGE_SIDE,
                                       "router_before_asn": "AS64501", "control_passed": True,
                                       "address": m.SITES_ADDRESS}  # fmt: skip
    mark = next(mark for mark in forensics["injected_rst"] if mark["purpose"] == "target")
    # The core is two hops away (its reset arrives with 64 - 1), the server four (64 - 3).
    assert (mark["stage"], mark["rst"]["ip_ttl"], mark["server"]["ip_ttl"]) == ("tls", 63, 61)
    steps = record["observations"]["forensics"]["locate"]["steps"]
    assert [step["target"]["routers"] for step in steps] == [[m.EDGE_CLIENT_SIDE], [m.CORE_EDGE_SIDE], []]
    assert steps[-1]["control"]["routers"] == [m.TRANSIT_CORE_SIDE]


@pytest.mark.lab
def test_a_tls_interceptor_is_located_at_the_core_router(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.INTERCEPTED_NAME]
    assert record["blocking"] == "tls_mitm"
    # A transparent proxy terminates the connection: the ClientHello that reaches the core (TTL 2)
    # gets the forged certificate; the control name, passed through, the real one.
    hop = record["analysis"]["forensics"]["censor_hop"]
    assert (hop["hop"], hop["interference"], hop["router_before"], hop["router_before_asn"]) == (
        2, "forged_certificate", m.EDGE_CLIENT_SIDE, "AS64500"
    )
    assert hop["control_passed"] is True


@pytest.mark.lab
def test_a_reset_answering_the_syn_is_located_by_the_syn_itself(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.SYN_RESET_NAME]
    assert record["blocking"] == "tcp"
    located = record["observations"]["forensics"]["locate"]
    assert (located["mode"], located["server_name"]) == ("syn", None), located  # the SYN carries the TTL
    assert record["analysis"]["forensics"] is not None, json.dumps(located)
    hop = record["analysis"]["forensics"]["censor_hop"]
    assert (hop["hop"], hop["interference"], hop["router_before"]) == (3, "reset", m.CORE_EDGE_SIDE)
    # No packet of the server's reached the probe: nothing to compare the reset with, no mark.
    assert "tcp.injected_rst" not in record["anomalies"]


@pytest.mark.lab
def test_a_servers_own_reset_is_not_marked(with_capability: dict) -> None:
    from tests.lab import multihop as m

    record = with_capability[m.RESETTING_NAME]
    assert record["blocking"] == "inconclusive"  # every name is reset: a broken server, no claim
    assert not {"tls.injected_rst", "tcp.injected_rst"} & set(record["anomalies"])
    wire = record["observations"]["tcp_connect"][0]["wire"]
    resets = [p for p in wire if "R" in p["flags"]]
    synack = next(p for p in wire if p["flags"] == "SA")
    assert resets and {p["ip_ttl"] for p in resets} == {synack["ip_ttl"]} == {61}  # captured, and consistent


@pytest.mark.lab
def test_without_the_capability_the_steps_are_skipped_and_the_verdicts_are_the_same(
    with_capability: dict, without_capability: dict
) -> None:
    assert {h: r["blocking"] for h, r in without_capability.items()} == {
        h: r["blocking"] for h, r in with_capability.items()
    }
    for host, record in without_capability.items():
        state = record["observations"]["forensics"]
        assert state["capture"] == {"status": "skipped", "reason": "no CAP_NET_RAW (effective capabilities)"}, host
        assert record["analysis"]["forensics"] is None, host
        assert all("wire" not in tcp for tcp in record["observations"]["tcp_connect"]), host
    from tests.lab import multihop as m

    for host in (m.FILTERED_NAME, m.INTERCEPTED_NAME, m.SYN_RESET_NAME):
        assert without_capability[host]["observations"]["forensics"]["locate"] == {
            "status": "skipped", "reason": "no CAP_NET_RAW (effective capabilities)"
        }  # fmt: skip
    assert with_capability[m.CLEAN_NAME]["observations"]["forensics"]["locate"] is None  # nothing to locate


@pytest.mark.lab
def test_probe_show_says_where_the_censor_sits_in_plain_words(path_lab, with_capability: dict) -> None:  # type: ignore[no-untyped-def]
    from probe.results.files import results_files
    from probe.results.show import show_file
    from tests.lab import multihop as m

    (path,) = results_files([path_lab.directory / "with"])
    text = show_file(path)
    assert (
        f"forensics: censor located at hop 3 from the probe, just after router {m.CORE_EDGE_SIDE}, AS64501: "
        "the target name met a reset; the control name passed there"
    ) in text
    injected = "forensics: TLS reset injected by the path (target connection to 203.0.113.10): it came with IP TTL 63"
    assert injected in text
    assert "the target name met a forged certificate" in text


@pytest.mark.lab
def test_the_report_page_shows_the_censors_hop_in_a_browser(path_lab, with_capability: dict) -> None:  # type: ignore[no-untyped-def]
    """As a person sees it: the monitoring record opened in chromium, the event's evidence expanded."""
    from probe.cli import main
    from tests.test_report_html import CHROMIUM, CHROMIUM_ARGS

    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    out = path_lab.directory / "report.html"
    assert main(["report", str(path_lab.directory / "with"), "--all-confidence", "--out", str(out)]) == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 1400})
            tab.goto(out.as_uri())
            row = tab.locator("#events tbody tr", has_text="filtered.lab")
            row.locator("summary").click()
            evidence = row.locator("details ul")
            assert evidence.is_visible()
            text = evidence.inner_text()
            tab.screenshot(path=str(path_lab.directory.parent / "forensics-report.png"), full_page=True)
        finally:
            browser.close()
    assert "censor located at hop 3 from the probe, just after router 198.51.100.2, AS64501" in text
    assert "TLS reset injected by the path" in text


def test_scapy_loads_quietly_with_its_caches_under_the_xdg_directories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env.pop("XDG_CONFIG_HOME", None)
    loaded = subprocess.run([sys.executable, "-c", "from probe.forensics import scapy_quiet; scapy_quiet.load()"],
                            capture_output=True, text=True, env=env, cwd=work, timeout=60)  # fmt: skip
    assert loaded.returncode == 0 and loaded.stdout == "" and loaded.stderr == ""  # not a word on the terminal
    assert (tmp_path / "cache" / "scapy").is_dir()
    assert list(work.iterdir()) == []  # nothing in the working directory


FILTER_CHECK = """
import socket, time
from probe.forensics.capture import PacketCapture
from probe.forensics import scapy_quiet
from scapy.sendrecv import send
layers = scapy_quiet.load()
capture = PacketCapture()
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
packets = capture.watch_tcp(sock, "127.0.0.1", 443, time.monotonic)
for flags, payload in (("A", b""), ("A", b"data without push"), ("PA", b"pushed"), ("R", b""), ("SA", b"")):
    send(layers.IP(src="127.0.0.1", dst="127.0.0.1") / layers.TCP(sport=443, dport=port, flags=flags) / payload)
time.sleep(0.3)
print(sorted(p["flags"] for p in packets))
"""


def test_the_kernel_filter_passes_only_syns_resets_and_pushed_data() -> None:
    """What the rest of the machine receives never reaches Python: checked on a namespace's loopback."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a namespace, raw sockets)")
    namespace = f"bpf{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        seen = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", FILTER_CHECK],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert seen.stdout.strip() == "['PA', 'R', 'SA']", seen.stdout + seen.stderr[-2000:]
