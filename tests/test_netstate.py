"""The network's state per run (issue 22): full, cut off from abroad, an allow-list, no internet.

The rules are pure functions over typed rounds of the reference endpoints (each state, and the
honest look-alikes that must stay `unknown`). In the lab (`tests/lab/netstate.py`) the real probe
runs behind an ISP whose iptables FORWARD rules are the profile: each state is told apart and is in
every record of the run, a regional cut gives the two clients different states, and a fleet's log
with a cut-off becomes one episode of `probe report`, in English and Russian, never site blocking.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.analyze.network_state import judge_check
from probe.cli.main import main
from probe.loaders.reference_endpoints import ReferenceEndpointsError, load_reference_endpoints
from probe.vocabulary.netstate import EndpointResult, Kind, NetworkCheck, NetworkState, Origin, Side
from tests.conftest import read_results
from tests.lab.lab import missing_prerequisites
from tests.reportdata import PROBES, record, write_log

_REASON = missing_prerequisites()


def _result(name: str, side: Side, answered: bool, kind: Kind = Kind.HTTPS) -> EndpointResult:
    return EndpointResult(
        name, side, kind, Origin.CATALOG, answered, None if answered else "generic_timeout_error", 0.1
    )


def _check(domestic: list[bool], foreign: list[bool], resolver: bool | None = True) -> NetworkCheck:
    results = [_result(f"d{n}", Side.DOMESTIC, a) for n, a in enumerate(domestic)]
    results += [_result(f"f{n}", Side.FOREIGN, a) for n, a in enumerate(foreign)]
    if resolver is not None:
        results.append(_result("the system resolver", Side.DOMESTIC, resolver, Kind.SYSTEM_RESOLVER))
    return NetworkCheck(0, "2022-01-05T08:00:00.000000Z", tuple(results))


@pytest.mark.parametrize(
    ("domestic", "foreign", "resolver", "state", "basis"),
    [
        ([True, True], [True, True, True], True, NetworkState.FULL, "foreign_answered"),
        ([True, False], [False, False, False], True, NetworkState.CUT_OFF_ABROAD, "domestic_only"),
        ([True, True], [True, False, False, True], True, NetworkState.ALLOW_LIST, "foreign_partial"),
        ([False, False], [False, False, False], False, NetworkState.NO_INTERNET, "nothing_answered"),
        # The system resolver alone is no domestic service: a home router answers from its cache.
        ([False, False], [False, False, False], True, NetworkState.NO_INTERNET, "nothing_answered"),
        # The honest look-alikes: too little evidence is `unknown`, never a cut-off or an allow-list.
        ([True], [True, True, False], True, NetworkState.UNKNOWN, "one_foreign_down"),  # a broken anycast node
        ([], [False, False, False], True, NetworkState.UNKNOWN, "no_domestic_endpoint"),  # a country not in the catalog
        ([True], [False], True, NetworkState.UNKNOWN, "one_foreign_endpoint"),
        ([False, False], [True, False, False], True, NetworkState.UNKNOWN, "domestic_failed"),
        ([True], [], True, NetworkState.UNKNOWN, "no_foreign_endpoint"),
    ],
)
def test_each_state_and_its_honest_look_alikes(
    domestic: list[bool], foreign: list[bool], resolver: bool, state: NetworkState, basis: str
) -> None:
    judged = judge_check(_check(domestic, foreign, resolver))
    assert (judged.state, judged.basis) == (state, basis)


def test_an_endpoint_with_no_route_counts_neither_way() -> None:
    """An IPv6-only network has no route to the IPv4 anycast services: nothing is sent to them, and
    the control resolver answering (over IPv6) is not an allow-list."""
    unrouted = EndpointResult("anycast", Side.FOREIGN, Kind.HTTPS, Origin.CATALOG, False, "no_route", 0.0, asked=False)
    check = _check([True], [True, True])
    check = NetworkCheck(0, check.at, (*check.results, unrouted, unrouted))
    assert judge_check(check).state == NetworkState.FULL


@pytest.mark.lab
def test_an_endpoint_the_routing_table_cannot_reach_is_not_asked() -> None:
    """In a network namespace with loopback only (`unshare -n`), as on an IPv6-only network for an
    IPv4 service: the kernel has no route, nothing is sent, and the endpoint is recorded as not asked."""
    import shutil
    import subprocess
    import sys

    from tests.lab.lab import REPO

    if _REASON or shutil.which("unshare") is None:
        pytest.skip(_REASON or "needs unshare")
    code = (
        "import asyncio\n"
        "from probe.observe.config import MeasureConfig\n"
        "from probe.observe.network_state import ask_endpoint\n"
        "from probe.vocabulary.netstate import Endpoint, Kind, Side\n"
        "class Roots:\n    path = ''\n    def validates(self, *a): return False\n"
        "config = MeasureConfig(timeout=1.0, roots=Roots(), resolver=None, control_resolver=None, control_sni=None)\n"
        "e = Endpoint('anycast', Side.FOREIGN, Kind.HTTPS, host='anycast-a.lab', address='203.0.113.11')\n"
        "r = asyncio.run(ask_endpoint(e, config))\n"
        "print(r.asked, r.answered, r.failure)\n"
    )
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=env)  # fmt: skip
    assert result.stdout.split() == ["False", "False", "no_route"], result.stderr[-2000:]


def test_a_bug_while_asking_an_endpoint_is_not_the_networks_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe bug asking the foreign endpoints must not read as a cut-off: they are recorded not
    asked, with the bug, and the state stays unknown; a network error still counts as not answered."""
    import asyncio

    from probe.observe import network_state as observe_state
    from probe.observe.config import MeasureConfig
    from probe.vocabulary.netstate import Endpoint

    async def buggy(endpoint: Any, config: Any, clock: Any) -> tuple[bool, str | None]:
        if endpoint.side == Side.FOREIGN:
            raise AttributeError("'NoneType' object has no attribute 'pools'")
        return True, None

    class Roots:
        path = ""

    monkeypatch.setattr(observe_state, "_https", buggy)
    config = MeasureConfig(timeout=1.0, roots=Roots(), resolver=None, control_resolver=None, control_sni=None)  # type: ignore[arg-type]
    endpoints = [
        Endpoint(f"f{n}", Side.FOREIGN, Kind.HTTPS, host=f"f{n}.lab", address=f"192.0.2.{n}") for n in (1, 2, 3)
    ]
    endpoints += [
        Endpoint(f"d{n}", Side.DOMESTIC, Kind.HTTPS, host=f"d{n}.lab", address=f"198.51.100.{n}") for n in (1, 2)
    ]
    monkeypatch.setattr(observe_state, "_unroutable", lambda endpoint: False)
    check = asyncio.run(observe_state.check_network(tuple(endpoints), config, 0))
    results = [r for r in check.results if r.side == Side.FOREIGN]
    assert [(r.asked, r.answered) for r in results] == [(False, False)] * 3
    assert all(r.failure is not None and r.failure.startswith("probe_error: AttributeError") for r in results)
    assert judge_check(check).state == NetworkState.UNKNOWN  # not cut_off_abroad

    async def refused(endpoint: Any, config: Any, clock: Any) -> tuple[bool, str | None]:
        if endpoint.side == Side.FOREIGN:
            raise ConnectionRefusedError(111, "Connection refused")
        return True, None

    monkeypatch.setattr(observe_state, "_https", refused)
    check = asyncio.run(observe_state.check_network(tuple(endpoints), config, 0))
    assert [(r.asked, r.answered, r.failure) for r in check.results if r.side == Side.FOREIGN] == [
        (True, False, "connection_refused")
    ] * 3


def test_the_shipped_catalog_names_its_sources_and_a_bad_file_names_its_place(tmp_path: Path) -> None:
    catalog = load_reference_endpoints()
    kz = catalog.for_country("kz")
    assert {"egov.kz", "the system resolver"} <= {e.name for e in kz if e.side == Side.DOMESTIC}
    assert len([e for e in kz if e.side == Side.FOREIGN]) >= 2
    assert catalog.for_country("ZZ") == catalog.foreign  # a country not known: no domestic endpoint
    bad = tmp_path / "endpoints.json"
    bad.write_text(json.dumps({"foreign": [{"name": "x", "kind": "https", "host": "x.example"}]}))
    with pytest.raises(ReferenceEndpointsError, match=r"endpoints.json: foreign\[0\] \(x\): 'sources'"):
        load_reference_endpoints(bad)
    bad.write_text(json.dumps({"foreign": [{"name": "x", "kind": "ftp", "sources": ["s"]}]}))
    with pytest.raises(ReferenceEndpointsError, match=r"foreign\[0\] \(x\): 'kind' must be one of"):
        load_reference_endpoints(bad)


def test_the_run_summary_says_the_state_and_sets_its_findings_apart(tmp_path: Path) -> None:
    from probe.run.progress import format_summary
    from probe.run.summary import RunSummary

    summary = RunSummary(results_path=tmp_path / "r.jsonl", total=3, measured=3)
    summary.verdicts.update({"tcp": 2, "none": 1})
    summary.during_restriction.update({"tcp": 2, "none": 1})
    counts = {"domestic": {"asked": 2, "answered": 2}, "foreign": {"asked": 4, "answered": 0}}
    summary.network_states += [
        {"check": n, "checked_at": f"2022-01-05T08:0{n}:00.000000Z", "state": "cut_off_abroad", "basis": "x", **counts}
        for n in range(2)
    ]
    text = format_summary(summary)
    assert text.count("cut off from abroad") == 1  # said when it began, not at every round
    assert "3 targets were measured while the network was restricted" in text
    assert not summary.blocking_found  # the exit code says no site blocking
    summary.verdicts["tcp"] += 1  # one measured with full connectivity
    assert summary.blocking_found


# --- the lab ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    if _REASON:
        pytest.skip(_REASON)
    from tests.lab.chainworld import running
    from tests.lab.netstate import NetStateLab

    with running(NetStateLab(f"ns{os.getpid() % 100000}")) as world:
        yield world


TARGETS = ["egov.lab", "news.lab", "anycast-b.lab"]


def _run(lab: Any, client: str, profile: str, out: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    lab.set_profile(client, profile)
    result = lab.run(client, out, TARGETS, *extra)
    assert result.returncode in (0, 1, 3), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout), read_results(out)


def _states(records: list[dict]) -> set[str]:
    assert all("network_state" in r for r in records), "a record without the network's state"
    return {r["network_state"]["state"] for r in records}


@pytest.mark.lab
def test_full_connectivity_in_every_record_and_asked_again_during_the_run(lab: Any, tmp_path: Path) -> None:
    code, summary, records = _run(lab, lab.client_a, "full", tmp_path / "full", "--network-check-every", "1")
    assert _states(records) == {"full"}
    assert code == 0 and {r["blocking"] for r in records} == {"none"}
    assert len(summary["network_states"]) >= 2  # the start, and again every target
    first = records[0]["network_state"]
    assert (first["domestic"], first["foreign"]) == ({"asked": 2, "answered": 2}, {"asked": 4, "answered": 4})
    assert {e["name"] for e in first["endpoints"]} >= {"egov.lab", "bank.lab", "control resolver", "anycast-a.lab"}


@pytest.mark.lab
def test_a_cut_off_from_abroad_is_not_offline_and_not_site_blocking(
    lab: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, records = _run(lab, lab.client_a, "cut_off", tmp_path / "cut")
    assert _states(records) == {"cut_off_abroad"}
    state = records[0]["network_state"]
    assert (state["domestic"]["answered"], state["foreign"]["answered"]) == (2, 0)
    hosts = {r["target"]["host"]: r for r in records}
    assert hosts["egov.lab"]["blocking"] == "none"  # a domestic site is reachable: the run had a network
    assert summary["offline"] is None and code != 3  # never `offline`: domestic services answered
    assert [s["state"] for s in summary["network_states"]] == ["cut_off_abroad"]
    assert code == 0  # what failed abroad is the network's state, not a site's blocking
    capsys.readouterr()
    assert main(["show", str(next((tmp_path / "cut").rglob("*.jsonl")))]) == 0
    assert "network:   cut off from abroad" in capsys.readouterr().out


@pytest.mark.lab
def test_an_allow_list_is_told_from_a_cut_off(lab: Any, tmp_path: Path) -> None:
    code, summary, records = _run(lab, lab.client_a, "allow_list", tmp_path / "allow")
    assert _states(records) == {"allow_list"}
    state = records[0]["network_state"]
    assert (state["domestic"]["answered"], state["foreign"]) == (2, {"asked": 4, "answered": 2})
    news = {r["target"]["host"]: r for r in records}["news.lab"]
    assert news["blocking"] in ("tcp", "inconclusive")  # the site's verdict stays as observed ...
    assert all(f.get("network_state") == "allow_list" for f in summary["findings"])  # ... attributed to the state
    assert code == 0


@pytest.mark.lab
def test_no_internet_stays_offline(lab: Any, tmp_path: Path) -> None:
    code, summary, records = _run(lab, lab.client_a, "no_internet", tmp_path / "none")
    assert _states(records) == {"no_internet"}
    assert code == 3 and summary["offline"] == "no_internet"
    assert {r["blocking"] for r in records} == {"offline"}


@pytest.mark.lab
def test_a_regional_cut_gives_the_two_clients_different_states(lab: Any, tmp_path: Path) -> None:
    lab.set_profile(lab.client_a, "full")
    _, _, cut = _run(lab, lab.client_b, "cut_off", tmp_path / "b")
    _, _, open_region = _run(lab, lab.client_a, "full", tmp_path / "a")
    assert (_states(open_region), _states(cut)) == ({"full"}, {"cut_off_abroad"})


@pytest.mark.lab
def test_no_route_at_all_is_no_internet_in_every_record(tmp_path: Path) -> None:
    """A network namespace with loopback only (`unshare -n`): nothing is asked, and every offline
    record still says the network's state."""
    import shutil
    import subprocess
    import sys

    from tests.lab.lab import REPO
    from tests.lab.netstate import endpoints_catalog

    if _REASON or shutil.which("unshare") is None:
        pytest.skip(_REASON or "needs unshare")
    endpoints, targets, out = tmp_path / "endpoints.json", tmp_path / "targets.txt", tmp_path / "out"
    endpoints.write_text(json.dumps(endpoints_catalog()), encoding="utf-8")
    targets.write_text("news.lab\n203.0.113.10\n", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "PYTHONPATH": str(REPO),
           "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip
    result = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "probe", "run", "--targets", str(targets), "--out", str(out),
         "--control-resolver", "udp://203.0.113.53", "--lab", "--reference-endpoints", str(endpoints),
         "--country", "KZ", "--no-forensics", "--yes", "--quiet"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-2000:]
    records = read_results(out)
    assert {r["blocking"] for r in records} == {"offline"} and len(records) == 2
    assert {(r["network_state"]["state"], r["network_state"]["basis"]) for r in records} == {
        ("no_internet", "no_route")
    }


# --- the report -------------------------------------------------------------------------------------


def _state(state: str) -> dict[str, Any]:
    answered = {"full": 3, "cut_off_abroad": 0}[state]
    return {"state": state, "basis": "domestic_only" if answered == 0 else "foreign_answered", "check": 0,
            "checked_at": "2022-01-05T08:00:00.000000Z", "domestic": {"asked": 2, "answered": 2},
            "foreign": {"asked": 3, "answered": answered}, "endpoints": []}  # fmt: skip


def cut_off_fleet(directory: Path) -> Path:
    """AS9198 in Almaty: full on 4 January 2022, cut off from abroad from 5 to 10 January (every foreign
    site timed out meanwhile, confirmed `tcp` by their own rules), full again on 11 and 12 January."""
    records = []
    for day, state in [(4, "full"), *((d, "cut_off_abroad") for d in range(5, 11)), (11, "full"), (12, "full")]:
        for site in ("twitter.com", "www.facebook.com"):
            finding = "tcp" if state == "cut_off_abroad" else "none"
            made = record(site, f"2022-01-{day:02d}T08:00:00Z", "AS9198", PROBES[0], finding, region="Almaty")
            made["network_state"] = _state(state)
            records.append(made)
    return write_log(directory / "cut.jsonl", records)


def test_a_fleet_log_with_a_cut_off_is_one_episode_in_english_and_russian(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = cut_off_fleet(tmp_path / "logs")
    assert main(["report", str(logs), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(e["network"], e["finding"]) for e in report["episodes"]] == [("AS9198", "cut_off_abroad")]
    episode = report["episodes"][0]
    assert (episode["first_day"], episode["last_day"], episode["ended_day"]) == (
        "2022-01-05",
        "2022-01-10",
        "2022-01-11",
    )
    assert report["sentences"]["en"] == [
        "From 5 to 10 January 2022, on AS9198 (Kazakhtelecom) in Almaty, users could reach only domestic services: "
        "every foreign service checked was unreachable. Seen by 1 probe in 12 measurements."
    ]
    (ru,) = report["sentences"]["ru"]
    assert ru.startswith("С 5 по 10 января 2022 г. в сети AS9198 («Kazakhtelecom») в Алматы")
    assert "только внутренние" in ru
    assert main(["report", str(logs), "--format", "json", "--month", "2022-01", "--language", "kk"]) == 0
    month = json.loads(capsys.readouterr().out)["month"]["kk"]
    assert any("AS9198" in line for line in month[1:-1])


def test_duckdb_and_spark_give_the_same_cut_off_episode(tmp_path: Path) -> None:
    """Both engines go through queries.py: the network's own episode is the same, field by field."""
    import glob
    import shutil

    import duckdb

    from probe.report.build import build_report, close
    from probe.report.load import Filters

    pytest.importorskip("pyspark", reason="the spark extra: pip install '.[spark]'")
    if shutil.which("java") is None and not glob.glob("/usr/lib/jvm/*/bin/java"):
        pytest.skip("Spark needs a Java runtime (default-jre-headless)")
    logs = cut_off_fleet(tmp_path / "logs")
    found = []
    for engine in ("duckdb", "spark"):
        con = duckdb.connect()
        try:
            report = build_report(con, [logs], Filters(), ("en", "ru"), engine=engine, spark_master="local[1]")
            found.append(([e.as_dict() for e in report.episodes], report.sentences, report.coverage))
        finally:
            close(con)
    assert [e["finding"] for e in found[0][0]] == ["cut_off_abroad"]
    assert found[0] == found[1]


def test_probe_watch_alerts_the_cut_offs_onset_and_end_and_no_site(tmp_path: Path) -> None:
    """The same failures without the network's state are a blocking episode that `probe watch` alerts;
    measured cut off from abroad, they are the network's state: one alert when the cut-off starts, one
    when full connectivity is back, and no site said to be blocked."""
    import xml.etree.ElementTree as ET

    atom = "{http://www.w3.org/2005/Atom}"
    logs = cut_off_fleet(tmp_path / "cut")
    bare = tmp_path / "bare" / "cut.jsonl"
    bare.parent.mkdir()
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "network_state"}) + "\n"
                            for line in logs.read_text(encoding="utf-8").splitlines()), encoding="utf-8")  # fmt: skip
    titles = {}
    for name, store in (("cut", logs.parent), ("bare", bare.parent)):
        feed = tmp_path / f"{name}.xml"
        assert main(["watch", str(store), "--once", "--state", str(tmp_path / f"{name}.json"), "--atom", str(feed),
                     "--language", "en"]) == 0  # fmt: skip
        titles[name] = [e.findtext(f"{atom}title") for e in ET.parse(feed).getroot().findall(f"{atom}entry")]
    assert titles["bare"] and all("connection blocking" in t for t in titles["bare"]), titles  # the control
    assert sorted(titles["cut"]) == [
        "Network restricted on AS9198 (Kazakhtelecom): cut off from abroad",
        "Network restriction ended on AS9198 (Kazakhtelecom): cut off from abroad",
    ]
