"""Side-by-side benchmark: opswatch against scp, rsync and lsyncd over a loopback OpenSSH sshd.

    python3 bench/run.py            # the full run (several minutes)
    python3 bench/run.py --quick    # fewer repeats, no 500 × scp, a short idle window
    python3 bench/run.py --link 40:50   # through a link of 40 ms round trip and 50 Mbit/s

Each measurement is "write the files → the remote copy of every one of them holds the new
content" (every file is read back and compared). Repeats alternate the order of the tools;
the table shows medians and each tool's time divided by opswatch's. A JSON file with every
sample goes to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from idle import measure_idle  # noqa: E402
from link import LinkedServer, parse  # noqa: E402
from opswatch.demo.sshd import LocalSshd  # noqa: E402
from tools import Lsyncd, OneScp, Opswatch, Rsync, ScpPerFile, Tool, available  # noqa: E402
from tree import TREE_WORKLOADS, measure_tree  # noqa: E402

SINGLE_SIZE = 4 * 1024
BURST_FILES = 500
BURST_SIZE = 2 * 1024
BIG_SIZE = 50 * 1024 * 1024
EDITS = {
    "single": "one 4 KiB file edited",
    "burst": "500 files × 2 KiB changed at once",
    "big": "one 50 MiB file",
}
WORKLOADS = {**EDITS, **TREE_WORKLOADS}
# What no tool can beat on a link (None on loopback): the bytes at the link's rate plus the
# round trips a protocol must make. A watched edit: one to look at the target and open where
# the file goes, then half of one for the content to reach the server (the measurement stops
# when the file is there, not when the client hears of it). A (re)start: an SSH connection
# (TCP, key exchange, new keys, auth, channel and subsystem: 7 round trips) and one to look at
# the server; the tree's names (~30 bytes each, at best) or contents (~45 bytes) on top.
TREE_NAMES_BYTES = 10_000 * 30
TREE_CONTENT_BYTES = 10_000 * 45
FLOOR: dict[str, tuple[float, float]] = {  # workload: (bytes, round trips)
    "single": (SINGLE_SIZE, 1.5),
    "burst": (BURST_FILES * BURST_SIZE, 1.5),
    "big": (BIG_SIZE, 1.5),
    "restart": (TREE_NAMES_BYTES, 8),
    "first": (TREE_CONTENT_BYTES, 10),
}


def floor_s(workload: str, link: tuple[float, float] | None) -> float | None:
    if link is None:
        return None
    rtt_ms, mbit = link
    size, trips = FLOOR[workload]
    return size * 8 / (mbit * 1e6) + trips * rtt_ms / 1000


PEERS: list[tuple[type[Tool], str]] = [
    (ScpPerFile, "scp"),
    (OneScp, "scp"),
    (Rsync, "rsync"),
    (Lsyncd, "lsyncd"),
]


# -- workloads -------------------------------------------------------------------------------


def workload_files(local: Path, workload: str) -> list[Path]:
    base = local / "ops" / workload
    if workload == "single":
        return [base / "edit.txt"]
    if workload == "burst":
        return [base / f"d{i % 10}" / f"f{i:03d}.txt" for i in range(BURST_FILES)]
    return [base / "big.bin"]


def contents(workload: str, round_no: int) -> list[bytes]:
    """New content for every file; consecutive rounds differ in size by a byte, because rsync
    (and so lsyncd) skips a file of the same size and the same whole-second mtime."""
    trim = round_no % 2
    tag = f"round {round_no}"
    if workload == "single":
        return [(f"edit {tag}\n".encode() * SINGLE_SIZE)[: SINGLE_SIZE - trim]]
    if workload == "burst":
        return [
            (f"file {i} {tag}\n".encode() * BURST_SIZE)[: BURST_SIZE - trim]
            for i in range(BURST_FILES)
        ]
    return [os.urandom(BIG_SIZE - trim)]


def write(files: Sequence[Path], data: Sequence[bytes]) -> None:
    for path, content in zip(files, data, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def wait_match(pairs: Sequence[tuple[Path, bytes]], timeout: float = 120.0) -> None:
    """Until every remote file holds its expected content (each read back and compared)."""
    deadline = time.perf_counter() + timeout
    for path, expected in pairs:
        seen: tuple[int, int, int] | None = None
        while True:
            try:
                info = os.stat(path)
                stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
                if stamp != seen and info.st_size == len(expected):
                    seen = stamp
                    if path.read_bytes() == expected:
                        break
            except FileNotFoundError:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{path} never got the expected content")
            time.sleep(0.0005)


def measure(tool: Tool, workload: str, data: Sequence[bytes]) -> float:
    files = workload_files(tool.local, workload)
    targets = [tool.remote / p.relative_to(tool.local) for p in files]
    started = time.perf_counter()
    write(files, data)
    tool.push(workload, files)
    wait_match(list(zip(targets, data, strict=True)))
    return time.perf_counter() - started


# -- setup -----------------------------------------------------------------------------------


def ensure_peers() -> list[str]:
    """Install missing peers via apt when root on Debian; return the names still missing."""
    wanted = {"scp": "openssh-client", "rsync": "rsync", "lsyncd": "lsyncd"}
    missing = [name for name in wanted if not available(name)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {', '.join(missing)} via apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        packages = sorted({wanted[name] for name in missing})
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, env=env)
        missing = [name for name in wanted if not available(name)]
    return missing


def prepare(tool: Tool, workloads: Sequence[str]) -> None:
    """Initial trees on both sides, then the watcher started and caught up."""
    data = {w: contents(w, 1) for w in workloads}  # round 0 follows: a different size
    for workload in workloads:
        write(workload_files(tool.local, workload), data[workload])
        if not tool.watches:
            # The server already holds the previous version: put it there directly (the
            # remote tree is on this machine), rather than 500 handshakes of scp per file.
            for path in workload_files(tool.local, workload):
                target = tool.remote / path.relative_to(tool.local)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    tool.start()
    for workload in workloads:
        files = workload_files(tool.local, workload)
        targets = [tool.remote / p.relative_to(tool.local) for p in files]
        wait_match(list(zip(targets, data[workload], strict=True)), timeout=300)


def repeats_for(args: argparse.Namespace, workload: str, tool: Tool) -> int:
    if workload == "burst" and isinstance(tool, ScpPerFile):
        return 0 if args.quick else 1  # 500 ssh handshakes: minutes per repeat
    if args.repeats:
        return int(args.repeats)
    base = {"single": 9, "burst": 5, "big": 3}[workload]
    return max(1, base // 3) if args.quick else base


# -- reporting -------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError:
            return "missing"
        return (done.stdout or done.stderr).strip().splitlines()[0] if done else ""

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    import paramiko

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": paramiko.__version__,
        "openssh": first_line(["ssh", "-V"]),
        "rsync": first_line(["rsync", "--version"]),
        "lsyncd": first_line(["lsyncd", "--version"]),
    }


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), e.g. "ext4"."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and path.is_relative_to(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return kind


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(
    medians: dict[str, dict[str, float]],
    names: list[str],
    quiet_s: float,
    link: tuple[float, float] | None,
) -> str:
    head = ["workload", *names, "opswatch − quiet period"]
    if link is not None:
        head.append("floor")
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload, label in WORKLOADS.items():
        if workload not in medians:
            continue
        ours = medians[workload].get("opswatch")
        cells = [label]
        for name in names:
            value = medians[workload].get(name)
            if value is None:
                cells.append("skipped" if workload in EDITS else "—")
            elif name == "opswatch" or ours is None:
                cells.append(fmt(value))
            else:
                cells.append(f"{fmt(value)} ({value / ours:.1f}×)")
        watched = workload in EDITS
        cells.append(fmt(ours - quiet_s) if ours is not None and watched else "")
        floor = floor_s(workload, link)
        if floor is not None:
            cells.append(fmt(floor))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def target_lines(
    medians: dict[str, dict[str, float]],
    idle: dict[str, Any],
    quiet_s: float,
    link: tuple[float, float] | None,
) -> list[str]:
    lines: list[str] = []

    def ratio(workload: str, peer: str, minus_quiet: bool, limit: float) -> None:
        if workload not in medians:
            return  # not run (--only)
        ours = medians[workload].get("opswatch")
        theirs = medians[workload].get(peer)
        if ours is None or theirs is None:
            lines.append(f"{workload} vs {peer}: not measured")
            return
        value = (ours - quiet_s if minus_quiet else ours) / theirs
        verdict = "met" if value <= limit else "NOT met"
        lines.append(f"{workload} vs {peer}: {value:.3f}× (target ≤ {limit}×) {verdict}")

    if link is not None:
        return lines + link_targets(medians, quiet_s, link, ratio)
    single = medians.get("single", {}).get("opswatch")
    if single is not None:
        extra = (single - quiet_s) * 1000
        lines.append(f"single: latency − quiet = {extra:.1f} ms (target ≤ 10 ms)")
    ratio("single", "lsyncd", True, 0.1)
    ratio("single", "scp per file", True, 0.1)
    ratio("burst", "rsync -e ssh", False, 0.4)
    ratio("burst", "lsyncd", False, 0.4)
    ratio("big", "one scp", False, 0.6)
    if idle:
        lines.append(f"idle: {idle['cpu_s_per_min']:.3f} CPU-s/min (target ≤ 0.05)")
        lines.append(
            f"idle: {idle['rss_mb']:.1f} MB resident after a restart, "
            f"{idle['rss_after_first_sync_mb']:.1f} MB after the first sync (target ≤ 60)"
        )
        lines.append(
            f"restart → watching: {idle['restart_to_watching_median_s']:.2f} s (target ≤ 2)"
        )
        lines.append(
            f"first start, {idle['landed_on_first_start']} files uploaded → watching: "
            f"{idle['first_start_s']:.2f} s"
        )
    return lines


def link_targets(
    medians: dict[str, dict[str, float]],
    quiet_s: float,
    link: tuple[float, float],
    ratio: Callable[[str, str, bool, float], None],
) -> list[str]:
    """The targets on a link, in round trips and ratios of the same run."""
    rtt_s = link[0] / 1000
    lines = []
    single = medians.get("single", {}).get("opswatch")
    if single is not None:
        trips = (single - quiet_s) / rtt_s
        verdict = "met" if trips <= 2.5 else "NOT met"
        lines.append(f"single: latency − quiet = {trips:.2f} RTT (target ≤ 2.5) {verdict}")
    ratio("single", "rsync -e ssh", True, 0.2)
    ratio("burst", "rsync -e ssh", False, 0.4)
    ratio("burst", "lsyncd", False, 0.4)
    big = medians.get("big", {}).get("opswatch")
    if big is not None:
        share = BIG_SIZE * 8 / (link[1] * 1e6) / big
        verdict = "met" if share >= 0.85 else "NOT met"
        lines.append(f"big: {share:.0%} of the link rate (target ≥ 85%) {verdict}")
    ratio("restart", "rsync -e ssh", False, 1.0)
    ratio("first", "rsync -e ssh", False, 1.5)
    return lines


# -- main ------------------------------------------------------------------------------------


def run_workloads(
    args: argparse.Namespace, edits: list[str], tools: list[Tool], log: Callable[[str], None]
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {w: {t.name: [] for t in tools} for w in edits}
    for workload in edits:
        rounds = max(repeats_for(args, workload, t) for t in tools)
        for index in range(rounds):
            data = contents(workload, index)
            order = tools if index % 2 == 0 else list(reversed(tools))
            for tool in order:
                if index >= repeats_for(args, workload, tool):
                    continue
                seconds = measure(tool, workload, data)
                samples[workload][tool.name].append(seconds)
                log(f"{workload:6} #{index} {tool.name:13} {fmt(seconds)}")
                time.sleep(0.3)  # let watchers settle before the next contender writes
    return samples


def run_all(
    args: argparse.Namespace,
    work: Path,
    server: Any,
    missing: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, dict[str, list[float]]], list[str], dict[str, Any]]:
    """Every workload asked for against ``server`` (the sshd, or the link in front of it)."""
    tools: list[Tool] = [Opswatch(work, server, quiet_ms=args.quiet_ms)]
    wanted = args.tools.split(",") if args.tools is not None else None
    for kind, command in PEERS:
        if command not in missing and (wanted is None or kind.name in wanted):
            tools.append(kind(work, server))
    names = [t.name for t in tools]
    edits = [w for w in args.only if w in EDITS]
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        if edits:
            for tool in tools:
                log(f"preparing {tool.name}")
                prepare(tool, edits)
            samples = run_workloads(args, edits, tools, log)
    finally:
        for tool in tools:
            try:
                tool.stop()
            except Exception as exc:
                log(f"stopping {tool.name}: {exc}")
    if any(w in TREE_WORKLOADS for w in args.only):
        log("tree: 10 000 files in 100 folders, first sync and restart")
        repeats = args.repeats or (1 if args.quick else 3)
        with_rsync = "rsync" not in missing and (wanted is None or "rsync -e ssh" in wanted)
        tree = measure_tree(work, server, repeats=repeats, with_rsync=with_rsync, log=log)
        samples.update({w: tree[w] for w in TREE_WORKLOADS if w in args.only})
    idle: dict[str, Any] = {}
    if not args.no_idle:
        log("idle: 10 000 files, connected, nothing changing")
        window = args.idle_s or (15.0 if args.quick else 60.0)
        idle = measure_idle(work, server, window_s=window, restarts=3 if args.quick else 5)
    return samples, names, idle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--quiet-ms", type=int, default=50, help="opswatch's sync.debounce_ms")
    parser.add_argument("--idle-s", type=float, help="idle window (default 60, quick 15)")
    parser.add_argument("--no-idle", action="store_true", help="skip the idle measurement")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(WORKLOADS),
        metavar="WORKLOAD",
        help="run only this workload (single, burst, big, restart, first; may be repeated)",
    )
    parser.add_argument("--repeats", type=int, help="repeats per workload and tool")
    parser.add_argument(
        "--link",
        metavar="RTT_MS:MBIT",
        help="put a delaying, rate-limiting proxy between every contender and the sshd "
        "(e.g. 40:50: 40 ms round trip, 50 Mbit/s each way)",
    )
    parser.add_argument(
        "--work-dir",
        help="where the trees (local and remote), the state and the sshd go "
        "(default: the system's temp folder; see the README on the server's filesystem)",
    )
    parser.add_argument(
        "--tools",
        help="comma-separated contenders besides opswatch (e.g. 'rsync -e ssh,lsyncd')",
    )
    args = parser.parse_args(argv)
    args.only = [w for w in WORKLOADS if w in (args.only or WORKLOADS)]

    def log(line: str) -> None:
        print(line, flush=True)

    missing = ensure_peers()
    for name in missing:
        log(f"{name} is not installed: its columns are skipped")
    link = parse(args.link) if args.link else None
    work = Path(tempfile.mkdtemp(prefix="opswatch-bench-", dir=args.work_dir))
    try:
        with LocalSshd(work / "sshd") as sshd:
            server: Any = sshd
            if link is not None:
                server = LinkedServer(sshd, link[0], link[1], work / "link").start()
                log(f"through a link of {link[0]:g} ms round trip and {link[1]:g} Mbit/s")
            try:
                samples, names, idle = run_all(args, work, server, missing, log)
            finally:
                if link is not None:
                    server.stop()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    medians = {
        w: {n: statistics.median(s) for n, s in by_tool.items() if s}
        for w, by_tool in samples.items()
    }
    quiet_s = args.quiet_ms / 1000
    report = table(medians, names, quiet_s, link)
    verdicts = target_lines(medians, idle, quiet_s, link)
    log("\n" + report + "\n")
    for line in verdicts:
        log(line)
    info = machine()
    info["work_fs"] = filesystem_of(Path(args.work_dir or tempfile.gettempdir()).resolve())
    log("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "quick": args.quick,
                "only": args.only,
                "work_dir": str(work.parent),
                "quiet_ms": args.quiet_ms,
                "link": args.link,
                "machine": info,
                "samples_s": samples,
                "medians_s": medians,
                "idle": idle,
                "table": report,
                "targets": verdicts,
            },
            indent=2,
        )
    )
    log(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
