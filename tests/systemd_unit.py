"""A systemd unit read as systemd reads it, and run as systemd would run it where systemd cannot run
(tests/test_service.py): its user, capabilities, environment and directories, and the mount
namespace of ProtectSystem=strict, ProtectHome=yes and PrivateTmp=yes, emulated with unshare,
mount and setpriv. A [Service] setting this module does not know fails the test that uses it."""

from __future__ import annotations

import pwd
import re
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

VENV = "/opt/kz-probe"  # where docs/operating.md installs the probe for a service
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a system service's PATH
SERVICE_USER = "nobody"  # stands in for User=kzprobe: an unprivileged user that owns nothing

# Every [Service] setting the emulation knows, and the values it emulates (None: any value).
EMULATED: dict[str, set[str] | None] = {
    "Type": {"oneshot"}, "User": None, "Group": None, "StateDirectory": None, "CacheDirectory": None,
    "Environment": None, "WorkingDirectory": None, "ExecStart": None, "SuccessExitStatus": None,
    "TimeoutStartSec": None, "Nice": None, "NoNewPrivileges": {"yes"}, "AmbientCapabilities": None,
    "CapabilityBoundingSet": None, "ProtectSystem": {"strict"}, "ProtectHome": {"yes"}, "PrivateTmp": {"yes"},
}  # fmt: skip


# --- the unit file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    settings: list[tuple[str, str, str]]  # (section, key, value), in order
    path: Path

    @classmethod
    def parse(cls, path: Path) -> Unit:
        """systemd's syntax: [sections], Key=Value, comments (# or ;), backslash continuations."""
        settings, section, pending = [], "", ""
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = pending + raw.strip()
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
            elif line and line[0] not in "#;":
                if line.startswith("["):
                    section = line.strip("[]")
                elif "=" not in line:
                    raise AssertionError(f"{path.name}:{number}: not Key=Value: {line!r}")
                else:
                    key, _, value = line.partition("=")
                    settings.append((section, key.strip(), value.strip()))
        return cls(settings, path)

    def values(self, key: str, section: str = "Service") -> list[str]:
        """Every value of a list setting (an empty assignment resets the list, as systemd reads it)."""
        found: list[str] = []
        for where, name, value in self.settings:
            if (where, name) == (section, key):
                found = [*found, value] if value else []
        return found

    def value(self, key: str, default: str | None = None) -> str:
        found = self.values(key)
        assert found or default is not None, f"{self.path.name} has no {key}="
        return found[-1] if found else str(default)

    def success(self) -> set[int]:
        """The exit codes the service counts as success: 0 and SuccessExitStatus= (signal names aside)."""
        return {0} | {
            int(word) for value in self.values("SuccessExitStatus") for word in value.split() if word.isdigit()
        }

    def capabilities(self, key: str) -> list[str]:
        return [word.removeprefix("CAP_").lower() for value in self.values(key) for word in value.split()]


def expand(value: str, roots: dict[str, Path]) -> str:
    """A system unit's specifiers: %S /var/lib, %C /var/cache (here the test's stand-ins), %%."""

    def one(found: re.Match[str]) -> str:
        letter = found.group(1)
        if letter == "%":
            return "%"
        assert letter in roots, f"the specifier %{letter} is not emulated"
        return str(roots[letter])

    return re.sub(r"%(.)", one, value)


@dataclass(frozen=True)
class Service:
    """The unit's command line, user, directories and environment, as systemd would start it here."""

    argv: list[str]
    env: dict[str, str]
    workdir: Path
    state: Path
    cache: Path
    home: Path
    user: pwd.struct_passwd
    prefix: list[str]  # nice and setpriv: the user, the capabilities, no new privileges
    success: set[int]


def service(unit: Unit, venv: Path, base: Path) -> Service:
    unknown = {key for section, key, _ in unit.settings if section == "Service"} - set(EMULATED)
    assert not unknown, f"{unit.path.name}: emulate {sorted(unknown)} in tests/systemd_unit.py before shipping them"
    for key, accepted in EMULATED.items():
        for value in unit.values(key):
            assert accepted is None or value in accepted, f"{unit.path.name}: {key}={value} is not emulated"
    roots = {"S": base / "state", "C": base / "cache"}
    (name,) = unit.value("StateDirectory").split()
    (cache_name,) = unit.value("CacheDirectory").split()
    state, cache = roots["S"] / name, roots["C"] / cache_name
    working = unit.value("WorkingDirectory")
    assert working == f"/var/lib/{name}", f"WorkingDirectory={working}: the results go beside the state"
    argv = shlex.split(expand(unit.value("ExecStart"), roots))
    assert argv[0].startswith(f"{VENV}/bin/"), f"ExecStart={argv[0]}: the unit runs the probe from its venv"
    argv[0] = str(venv) + argv[0].removeprefix(VENV)
    assert not [arg for arg in argv[1:] if VENV in arg]
    user = pwd.getpwnam(SERVICE_USER)  # stands in for User=kzprobe
    home = base / "home"  # root's, empty, read-only: ProtectHome=yes
    env = {
        "PATH": SYSTEMD_PATH, "HOME": str(home), "USER": user.pw_name, "LOGNAME": user.pw_name,
        "SHELL": "/usr/sbin/nologin", "INVOCATION_ID": secrets.token_hex(16),
        "STATE_DIRECTORY": str(state), "CACHE_DIRECTORY": str(cache),
    }  # fmt: skip
    for value in unit.values("Environment"):
        env.update(word.split("=", 1) for word in shlex.split(expand(value, roots)))  # type: ignore[misc]
    ambient, bounding = unit.capabilities("AmbientCapabilities"), unit.capabilities("CapabilityBoundingSet")
    prefix = [
        "nice", "-n", unit.value("Nice", "0"),
        "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
        "--inh-caps=" + ",".join(["-all", *(f"+{c}" for c in ambient)]),
        *([f"--ambient-caps=+{',+'.join(ambient)}"] if ambient else []),
        "--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in bounding)]),
        *(["--no-new-privs"] if unit.value("NoNewPrivileges", "no") == "yes" else []),
    ]  # fmt: skip
    return Service(argv, env, state, state, cache, home, user, prefix, unit.success())


# --- the sandbox: what systemd does before it runs ExecStart ---------------------------------------

# Run by root in a mount namespace of its own; "$@" is the service's command. KZ_KEEP: the test's
# trees under /tmp (the venv, the stand-ins for /var/lib and /var/cache), carried into the private
# /tmp; KZ_WRITABLE: the state and cache directories.
SANDBOX = r"""
set -eu
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$KZ_ETC/upper,workdir=$KZ_ETC/work" /etc
i=0
for keep in $KZ_KEEP; do mount --bind "$keep" "/etc/.kz-keep/$i"; i=$((i + 1)); done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
i=0
for keep in $KZ_KEEP; do mkdir -p "$keep"; mount --move "/etc/.kz-keep/$i" "$keep"; i=$((i + 1)); done
for private in /home /root /run/user; do
    if [ -d "$private" ]; then mount -t tmpfs -o ro,mode=000 tmpfs "$private"; fi
done
for writable in $KZ_WRITABLE; do mount --bind "$writable" "$writable"; done
awk '$6 !~ /^ro/ { print $5 }' /proc/self/mountinfo | while read -r point; do
    case "$point" in /dev | /dev/* | /proc | /proc/* | /sys | /sys/* | /tmp | /var/tmp) continue ;; esac
    case " $KZ_WRITABLE " in *" $point "*) continue ;; esac
    mount -o remount,bind,ro "$point"
done
exec "$@"
"""


@dataclass(frozen=True)
class Sandbox:
    service: Service
    etc: Path  # the overlay's layers: upper/kz-probe/config.toml is /etc/kz-probe/config.toml
    keep: tuple[Path, ...]

    def run(
        self, netns: str, command: list[str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """The service's ExecStart (or another command, as the service's user) in `netns`."""
        svc = self.service
        variables = [f"{key}={value}" for key, value in svc.env.items()]
        program = ["ip", "netns", "exec", netns, *svc.prefix, "--", "env", "-i", "-C", str(svc.workdir),
                   *variables, *(command or svc.argv)]  # fmt: skip
        root_env = {"PATH": SYSTEMD_PATH, "KZ_ETC": str(self.etc), "KZ_KEEP": " ".join(map(str, self.keep)),
                    "KZ_WRITABLE": f"{svc.state} {svc.cache}"}  # fmt: skip
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SANDBOX, "sandbox", *program],
            env=root_env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
