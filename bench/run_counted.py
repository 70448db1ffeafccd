"""Run one command as this process's only child and count every process of it.

    python3 bench/run_counted.py REPORT.json -- COMMAND [ARG...]

CPU is `RUSAGE_CHILDREN` of this parent, which runs nothing else: the command's start-up is counted,
and so is every process it starts (this parent is a child subreaper, so a process the command leaves
behind is reaped here, its CPU counted too). Memory: the largest single process's peak RSS
(`ru_maxrss`), and the peak of all the command's processes' PSS together (sampled every 0.2 s from
/proc, shared pages split between the processes that share them, as after a fork). The sampling
costs this parent's CPU, which is not counted. REPORT.json gets wall, cpu, max_rss_mb, peak_pss_mb,
returncode and stray (processes still alive 30 s after the command ended, then killed).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def parents() -> dict[int, int]:
    """Every process's parent, from /proc/PID/stat."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in parents().items():
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: run_counted.py REPORT.json -- COMMAND [ARG...]")
    report, command = Path(sys.argv[1]), sys.argv[3:]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    start = time.perf_counter()
    child = os.fork()
    if child == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        me = os.getpid()
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(pss_kb(pid) for pid in descendants(me)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode, wall = 70, 0.0
    while True:  # reap the command, then whatever it left behind (bounded below)
        try:
            pid, status, _ = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if pid == child:
            returncode, wall = os.waitstatus_to_exitcode(status), time.perf_counter() - start
            break
    stray, deadline = 0, time.monotonic() + 30
    while True:
        try:
            pid, _, _ = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0 and time.monotonic() > deadline:
            left = descendants(os.getpid())
            stray = len(left)
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        elif pid == 0:
            time.sleep(0.05)
    done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    counted = {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "peak_pss_mb": peak[0] / 1024,
        "returncode": returncode,
        "stray": stray,
    }
    report.write_text(json.dumps(counted), encoding="utf-8")


if __name__ == "__main__":
    main()
