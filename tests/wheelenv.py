"""The wheel built from the checkout, installed with its declared dependencies (from the package
registry) into a fresh venv outside the checkout, as the operating guide installs it.

Shared by tests/test_wheel.py (every command, from another directory, with no PYTHONPATH) and
tests/test_service.py (the shipped systemd unit run as an unprivileged user): conftest.py builds it
once a session. The venv lives in a directory of its own under the system's temporary directory,
readable by every user (pytest's own temporary trees are root's alone), and is made from an
interpreter every user can run: a service's user cannot reach one under /root or /home
(`ProtectHome=yes` hides them), so pyenv's is passed over for the system's python3. Without the
registry the tests that need it are skipped, and the skip says so.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = (Path("/root"), Path("/home"), Path("/run/user"))  # what ProtectHome=yes hides from a service

# What pip prints when it cannot reach the registry (and only then is a test skipped).
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|No route to host|ConnectTimeoutError|ReadTimeoutError|"
    r"ProxyError|Could not fetch URL|connection broken by"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    package: Path  # the installed package's folder, in the venv's site-packages
    env: dict[str, str]
    work: Path  # the current directory for every command: outside the checkout, no targets.txt
    shared: bool  # every user can run the venv's python (its interpreter is outside /root and /home)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def probe(self, *args: str, timeout: float = 120, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        command = [*prefix, str(self.venv / "bin" / "probe"), *args]
        return subprocess.run(command, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout)


def reachable_by_everyone(path: Path) -> bool:
    """Every user can reach `path` (each folder above it is searchable by others), and a service with
    ProtectHome=yes too (it is not under /root, /home or /run/user)."""
    path = path.resolve()
    if any(path.is_relative_to(private) for private in PRIVATE):
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def _interpreter() -> tuple[str, bool]:
    """The Python the venv is made from: the one running the tests when every user can run it, else
    the system's python3 when it is recent enough (and, on Debian, has python3-venv); and whether
    every user can run the result."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    if reachable_by_everyone(base):
        return str(base), True
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system and reachable_by_everyone(Path(system)):
        check = "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))"
        if subprocess.run([system, "-c", check], capture_output=True, timeout=60).returncode == 0:
            return system, True
    return sys.executable, False


def _pip_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}


def _skip_without_registry(directory: Path) -> None:
    """Download pip itself, bypassing pip's cache: the registry answers, or the test is skipped."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--timeout", "20",
               "--retries", "1", "-d", str(directory), "pip"]  # fmt: skip
    result = subprocess.run(command, env=_pip_env(), capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        why = next((line for line in lines if _UNREACHABLE.search(line)), lines[-1]).strip()
        pytest.skip(f"the package registry cannot be reached, so the wheel's install is not tested: {why}")


def _pip(args: list[str], what: str, cwd: Path) -> None:
    """Run pip; skip when the registry cannot be reached, fail with pip's words otherwise."""
    result = subprocess.run(args, cwd=cwd, env=_pip_env(), capture_output=True, text=True, timeout=600)
    if result.returncode == 0:
        return
    output = result.stdout + result.stderr
    unreachable = _UNREACHABLE.search(output)
    if unreachable:
        pytest.skip(f"the package registry cannot be reached ({unreachable.group(0)}), so {what} is not tested")
    pytest.fail(f"{what} failed (pip exit {result.returncode}):\n{output[-4000:]}")


def _sources(destination: Path) -> Path:
    """The files a build from the checkout reads: the top-level files and the package, without caches
    (building in a copy keeps build/ and *.egg-info out of the checkout that others work in)."""
    destination.mkdir()
    for item in ROOT.iterdir():
        if item.is_file():
            shutil.copy2(item, destination / item.name)
    shutil.copytree(ROOT / "probe", destination / "probe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


@contextmanager
def installed_wheel() -> Iterator[Installed]:
    """Build the wheel, install it in a fresh venv, and remove everything afterwards."""
    base = Path(tempfile.mkdtemp(prefix="kz-probe-wheel-"))
    try:
        base.chmod(0o755)  # the service's user runs the venv's programs (tests/test_service.py)
        assert not base.resolve().is_relative_to(ROOT)
        _skip_without_registry(base / "reachable")
        source = _sources(base / "source")
        dist = base / "dist"
        _pip(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
            "the wheel's build",
            base,
        )
        (wheel,) = dist.glob("kz_probe-*.whl")
        venv = base / "venv"
        python, shared = _interpreter()
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
        _pip([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], "installing the wheel", base)
        package = next((venv / "lib").glob("python3*/site-packages/probe"))
        home, work = base / "home", base / "work"
        home.mkdir()
        work.mkdir()
        env = {
            "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "LANG": "C.UTF-8",
        }
        yield Installed(wheel, venv, package, env, work, shared)
    finally:
        shutil.rmtree(base, ignore_errors=True)
