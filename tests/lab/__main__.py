"""Bring the lab up and leave it running, or take it down: `python -m tests.lab up|down|status`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from tests.lab import topology as t
from tests.lab.lab import REPO, Lab, LabError

STATE = Path("/run/kzlab")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--name", default="kzlab", help="namespace prefix (default kzlab)")
    args = parser.parse_args()
    state = STATE / f"{args.name}.json"
    if args.action == "status":
        print(state.read_text() if state.exists() else f"no lab named {args.name} is up")
        return 0
    if args.action == "down":
        directory = json.loads(state.read_text())["directory"] if state.exists() else None
        lab = Lab(args.name, Path(directory) if directory else None)
        pids = json.loads(state.read_text()).get("pids", []) if state.exists() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        lab.down(quiet=True)
        state.unlink(missing_ok=True)
        print(f"lab {args.name} is down")
        return 0
    lab = Lab(args.name)
    try:
        lab.up()
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    targets = lab.directory / "targets.txt"
    names = [n for n in t.SITES if not n.startswith("http-")] + [
        f"http://{n}/" for n in t.SITES if n.startswith("http-")
    ]
    targets.write_text("\n".join(names) + "\n", encoding="utf-8")
    STATE.mkdir(parents=True, exist_ok=True)
    description = lab.describe() | {"pids": [p.pid for _, p in lab.processes]}
    state.write_text(json.dumps(description, indent=2))
    print(json.dumps(description, indent=2))
    print(
        f"\nThe lab is up. Try:\n  cd {lab.directory} && PYTHONPATH={REPO} ip netns exec {lab.client} "
        f"{sys.executable} -m probe run --targets targets.txt --roots {lab.roots_pem} "
        f"--control-resolver tls://{t.PUBLIC_RESOLVER}#{t.RESOLVER_NAME} --catalog {lab.catalog} --lab --timeout 3 "
        f"--helper https://{t.HELPER_ADDRESS}/\n"
        f"  then: {sys.executable} -m probe show results/*.jsonl\n"
        f"Take it down with: python3 -m tests.lab down --name {args.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
