"""The tree reads as the flow: stages import only what lies below them, and one vocabulary.

docs/architecture.md explains the layers these tests hold in place.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from probe.analyze.common import Judgement
from probe.vocabulary.anomalies import DESCRIPTIONS, Anomaly, markdown_table

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "probe"

# What each part of the package may import from the probe itself (besides itself and the
# top-level `probe` module, which only holds the version).
ALLOWED: dict[str, set[str]] = {
    "vocabulary": set(),
    "netx": {"vocabulary"},
    "observe": {"vocabulary", "netx"},
    "analyze": {"vocabulary"},
    "loaders": {"vocabulary", "analyze"},
    "forensics": {"vocabulary", "netx", "observe"},
    "helper": {"vocabulary", "netx", "observe", "analyze"},
    "results": {"vocabulary", "netx", "analyze", "loaders"},
    "run": {"vocabulary", "netx", "observe", "analyze", "loaders", "forensics", "results"},
    "report": {"vocabulary", "results"},
    "publish": {"vocabulary", "results", "run"},
    "cli": {
        "vocabulary",
        "netx",
        "observe",
        "analyze",
        "loaders",
        "forensics",
        "helper",
        "results",
        "run",
        "report",
        "publish",
    },  # fmt: skip
}
# Analysis is pure: no network, no files, no processes.
ANALYZE_FORBIDDEN = {"socket", "ssl", "select", "selectors", "subprocess", "requests", "dns", "urllib.request"}
MAX_MODULE_LINES = 400
_CODE_LITERAL = re.compile(r"^(network|dns|tcp|tls|http|helper)\.[a-z0-9_]+$")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(module: str) -> str | None:
    """`probe.analyze.dns` -> `analyze`; `probe` itself -> None."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_every_part_imports_only_what_lies_below_it() -> None:
    wrong = []
    for path in _modules():
        own = _part(_module_name(path))
        if own is None or path.parent == PACKAGE:
            continue
        assert own in ALLOWED, f"{path}: a new part of the package; place it in ALLOWED and docs/architecture.md"
        for name in _imports(path):
            if not name.startswith("probe."):
                continue
            other = _part(name)
            if other in (own, None) or other in ALLOWED[own]:
                continue
            if other not in ALLOWED:  # `from probe import __version__` and the like
                continue
            wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_tree_is_its_parts_and_nothing_beside_them() -> None:
    """Every module lives in one of the parts; the top level holds only the version and `python -m probe`."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], f"modules beside the parts: {top}"
    parts = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert parts == sorted(ALLOWED), f"parts {parts} against ALLOWED {sorted(ALLOWED)}"


def test_analysis_touches_no_network_and_no_files() -> None:
    for path in (PACKAGE / "analyze").glob("*.py"):
        imported = {name.split(".")[0] for name in _imports(path)} | _imports(path)
        assert not imported & ANALYZE_FORBIDDEN, f"{path.name} imports {imported & ANALYZE_FORBIDDEN}"
        text = path.read_text(encoding="utf-8")
        for call in ("open(", ".read_bytes(", ".read_text(", "importlib.resources"):
            assert call not in text, f"{path.name} reads files ({call}); that belongs to probe.loaders"


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    names = {_module_name(p) for p in _modules()}
    for path in _modules():
        module = _module_name(path)
        graph[module] = {n for n in _imports(path) if n in names and n != module}

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join([*trail, node])
        state[node] = 1
        for child in sorted(graph[node]):
            visit(child, [*trail, node])
        state[node] = 2

    for module in sorted(graph):
        visit(module, [])


def test_modules_stay_small() -> None:
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by what it holds"


def test_rules_name_codes_from_the_vocabulary_only() -> None:
    """A code written as a string literal would be a new, undocumented code that no check catches."""
    found = []
    for path in _modules():
        if path.parent.name == "vocabulary":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _CODE_LITERAL.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use Anomaly members instead of literals:\n" + "\n".join(found)


def test_a_code_outside_the_vocabulary_is_refused() -> None:
    judgement = Judgement()
    judgement.add(Anomaly.TLS_UNTRUSTED_CHAIN)
    with pytest.raises(TypeError, match="tls.untrusted_chian"):
        judgement.add("tls.untrusted_chian")  # type: ignore[arg-type]
    assert judgement.anomalies == [Anomaly.TLS_UNTRUSTED_CHAIN]


def test_every_code_is_described_and_the_docs_table_is_generated_from_them() -> None:
    assert set(DESCRIPTIONS) == set(Anomaly)
    doc = (ROOT / "docs" / "anomalies.md").read_text(encoding="utf-8")
    assert markdown_table() in doc, "docs/anomalies.md: paste `python3 -m probe.vocabulary.anomalies` over the table"


def test_nothing_reads_the_shared_folder_beside_the_checkout() -> None:
    """A clone of the project alone must run every test: test data lives in tests/data."""
    folder = "sha" + "red"  # spelled apart, so that this file does not find itself
    patterns = (f"../{folder}", f'"{folder}" / "data"', f"{folder}/data/")
    for path in [*ROOT.joinpath("tests").rglob("*.py"), *_modules()]:
        text = path.read_text(encoding="utf-8")
        assert not [p for p in patterns if p in text], f"{path} reads the folder beside the checkout"


def test_every_case_in_the_reliability_guide_names_a_test_that_exists() -> None:
    names = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    guide = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"\b(test_[a-z0-9_]+)\b(?!\.py)", guide))  # test names, not file names
    assert cited, "docs/reliability.md cites no test"
    assert not cited - names, f"docs/reliability.md cites tests that do not exist: {sorted(cited - names)}"


def test_docs_list_every_proof_with_its_argument() -> None:
    """docs/verdicts.md carries the table of `confidence_basis` values and argues for each."""
    from probe.vocabulary.proofs import Proof
    from probe.vocabulary.proofs import markdown_table as proof_table

    doc = (ROOT / "docs" / "verdicts.md").read_text(encoding="utf-8")
    assert proof_table() in doc, "docs/verdicts.md: paste `python3 -m probe.vocabulary.proofs` over the table"
    argued = doc[doc.index("## Why each proof proves it") :]
    for proof in Proof:
        assert f"`{proof}`" in argued.split("The table of bases")[0], f"docs/verdicts.md argues nothing for {proof}"


def test_every_error_the_probe_raises_on_purpose_has_one_root() -> None:
    """An expected error is a `ProbeError` (its message names the place; the command line says it in one
    line); any other exception reaching the command line is a bug. Only the interruption, which must pass
    through `except Exception`, stands apart."""
    outside = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(base) for base in node.bases}
            if bases & {"Exception", "ValueError", "OSError", "RuntimeError"}:
                outside.append(f"{path.relative_to(ROOT)}: {node.name}({', '.join(sorted(bases))})")
    expected = [
        "probe/vocabulary/errors.py: InputError(ProbeError, ValueError)",
        "probe/vocabulary/errors.py: ProbeError(Exception)",
    ]
    assert sorted(outside) == expected, "\n".join(outside)
