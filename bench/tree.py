"""The 10 000-file tree: a first sync into an empty server, and a restart with nothing changed.

What a laptop pays after waking up (a restart or reconnect: list everything, find nothing to
do) and when a tree is first put under opswatch. opswatch is measured from ``opswatch run``'s
start to its own status saying connected, reconciled, watching; rsync as ``rsync -a -e ssh``
of the same tree, into an empty folder (first) and again with nothing changed (no-op). Repeats
alternate the order; each repeat starts from an empty server and an empty opswatch state.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from idle import make_tree
from tools import start_child, stop_child, wait_watching, write_opswatch_config

TREE_WORKLOADS = {
    "restart": "restart with nothing changed, 10 000 files in 100 folders → watching",
    "first": "first sync of those 10 000 files (server empty) → watching",
}


class TreeBench:
    def __init__(self, work: Path, server: Any) -> None:
        self.server = server
        self.base = work / "tree"
        self.local = self.base / "local"
        make_tree(self.local)
        self.config = self.local / "opswatch.toml"
        self.log = self.base / "opswatch.log"

    def _fresh(self, name: str) -> Path:
        remote = self.base / f"remote-{name}"
        shutil.rmtree(remote, ignore_errors=True)
        remote.mkdir(parents=True)
        return remote

    def opswatch(self, round_no: int) -> tuple[float, float]:
        """(first sync → watching, restart → watching), each in its own process."""
        remote = self._fresh("opswatch")
        state = self.base / f"state-{round_no}"
        write_opswatch_config(self.config, self.server, remote, quiet_ms=300)
        times = []
        for _ in range(2):
            process = start_child(self.config, state, self.log)
            try:
                times.append(wait_watching(process, self.config, state))
            finally:
                stop_child(process)
        landed = sum(1 for _ in (remote / "ops").rglob("*.yml"))
        if landed != 10_000:
            raise RuntimeError(f"opswatch's first sync landed {landed} of 10 000 files")
        shutil.rmtree(state, ignore_errors=True)
        return times[0], times[1]

    def rsync(self) -> tuple[float, float]:
        """(first run into an empty folder, a second run with nothing changed)."""
        remote = self._fresh("rsync")
        rsh = f"ssh -F {self.server.ssh_config}"
        command = [
            "rsync", "-a", "-e", rsh, f"{self.local}/ops/", f"{self.server.alias}:{remote}/ops/",
        ]  # fmt: skip
        times = []
        for _ in range(2):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"rsync failed: {done.stderr.strip()}")
        return times[0], times[1]


def measure_tree(
    work: Path, server: Any, *, repeats: int, with_rsync: bool, log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    bench = TreeBench(work, server)
    names = ["opswatch", "rsync -e ssh"] if with_rsync else ["opswatch"]
    samples: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in TREE_WORKLOADS}
    for index in range(repeats):
        for name in names if index % 2 == 0 else list(reversed(names)):
            first, again = bench.opswatch(index) if name == "opswatch" else bench.rsync()
            samples["first"][name].append(first)
            samples["restart"][name].append(again)
            log(f"tree   #{index} {name:13} first {first:.2f} s, restart {again:.2f} s")
    return samples
