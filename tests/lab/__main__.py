"""Bring the lab up and leave it running, or take it down: `python -m tests.lab up|down|status`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.lab.lab import Lab, LabError

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
            try:
                import os
                import signal

                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
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
    STATE.mkdir(parents=True, exist_ok=True)
    description = lab.describe() | {"pids": [p.pid for _, p in lab.processes]}
    state.write_text(json.dumps(description, indent=2))
    print(json.dumps(description, indent=2))
    print(
        f"\nThe lab is up. Try:\n  cd {lab.directory} && ip netns exec {lab.client} {sys.executable} -m probe.cli run "
        f"--targets targets.txt --roots {lab.roots_pem} --control-resolver udp://203.0.113.53 --lab "
        f"--catalog {lab.catalog} --timeout 3\nTake it down with: python -m tests.lab down --name {args.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
