"""Idle cost of the opswatch daemon on a 10 000-file tree, and how fast a restart is watching.

CPU seconds and resident memory come from /proc (utime + stime of the daemon process, all
threads; VmRSS). "Watching" is the daemon's own status: connected, first reconcile done.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from opswatch.demo.sshd import LocalSshd
from tools import start_child, stop_child, wait_watching, write_opswatch_config

FOLDERS = 100
FILES_PER_FOLDER = 100


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_tree(root: Path) -> int:
    for folder in range(FOLDERS):
        path = root / "ops" / f"area{folder:03d}"
        path.mkdir(parents=True)
        for index in range(FILES_PER_FOLDER):
            text = f"# area {folder} file {index}\nkey: value-{folder}-{index}\n"
            (path / f"file{index:03d}.yml").write_text(text)
    return FOLDERS * FILES_PER_FOLDER


def measure_idle(work: Path, sshd: LocalSshd, *, window_s: float, restarts: int) -> dict[str, Any]:
    local = work / "idle" / "local"
    remote = work / "idle" / "remote"
    remote.mkdir(parents=True)
    files = make_tree(local)
    config = local / "opswatch.toml"
    write_opswatch_config(config, sshd, remote, quiet_ms=300)
    state = work / "idle-state"
    log = work / "idle-opswatch.log"

    process = start_child(config, state, log)
    first_sync = wait_watching(process, config, state)
    landed = sum(1 for _ in (remote / "ops").rglob("*.yml"))
    time.sleep(2.0)
    rss_after_first_sync = rss_mb(process.pid)
    stop_child(process)

    restart_s = []
    for _ in range(restarts):
        process = start_child(config, state, log)
        restart_s.append(wait_watching(process, config, state))
        stop_child(process)

    # The usual state: started with nothing changed since the last run, then left alone.
    process = start_child(config, state, log)
    restart_s.append(wait_watching(process, config, state))
    time.sleep(2.0)  # let the start settle (the first probe timer, the announcing thread)
    before = cpu_seconds(process.pid)
    started = time.monotonic()
    time.sleep(window_s)
    cpu = cpu_seconds(process.pid) - before
    elapsed = time.monotonic() - started
    rss = rss_mb(process.pid)
    stop_child(process)
    return {
        "files": files,
        "landed_on_first_start": landed,
        "first_start_s": first_sync,
        "rss_after_first_sync_mb": rss_after_first_sync,
        "window_s": elapsed,
        "cpu_s_per_min": cpu / elapsed * 60,
        "rss_mb": rss,
        "restart_to_watching_s": restart_s,
        "restart_to_watching_median_s": statistics.median(restart_s),
    }
