"""The contenders: opswatch's daemon and the tools users would otherwise use, one driver each.

Every driver owns a local tree and a remote tree of its own (both under the benchmark's work
folder; the remote one is reached through the loopback sshd), so a watcher never sees another
contender's writes. ``push`` is what a user would run after saving (nothing for the watchers).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opswatch.daemon.control import ControlClient
from opswatch.demo.sshd import LocalSshd
from opswatch.errors import OpswatchError
from opswatch.paths import StatePaths, config_key

BENCH = Path(__file__).resolve().parent
SRC = BENCH.parent / "src"


class Tool:
    name = "?"
    watches = False  # syncs by itself when files change

    def __init__(self, work: Path, sshd: LocalSshd) -> None:
        self.sshd = sshd
        slug = self.name.replace(" ", "-")
        self.local = work / slug / "local"
        self.remote = work / slug / "remote"
        self.local.mkdir(parents=True)
        self.remote.mkdir(parents=True)

    @property
    def ssh(self) -> list[str]:
        return ["-F", str(self.sshd.ssh_config)]

    @property
    def host(self) -> str:
        return self.sshd.alias

    def start(self) -> None:
        """Begin watching (watchers) once the initial trees are written."""

    def push(self, workload: str, changed: Sequence[Path]) -> None:
        """Send ``changed`` (files of ``local/ops/<workload>``) the tool's way."""

    def stop(self) -> None:
        pass

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")

    def _target(self, path: Path) -> str:
        return f"{self.host}:{self.remote / path.relative_to(self.local)}"


class ScpPerFile(Tool):
    """The manual procedure: one ``scp`` per changed file."""

    name = "scp per file"

    def push(self, workload: str, changed: Sequence[Path]) -> None:
        for path in changed:
            self._run(["scp", "-q", *self.ssh, str(path), self._target(path)])


class OneScp(Tool):
    """One ``scp`` for the whole change (``-r`` over the workload's folders)."""

    name = "one scp"

    def push(self, workload: str, changed: Sequence[Path]) -> None:
        if len(changed) == 1:
            self._run(["scp", "-q", *self.ssh, str(changed[0]), self._target(changed[0])])
            return
        folder = self.local / "ops" / workload
        parts = sorted(str(p) for p in folder.iterdir())
        self._run(["scp", "-q", "-r", *self.ssh, *parts, self._target(folder)])


class Rsync(Tool):
    """``rsync -a -e ssh`` of the workload's folder, as a user would after saving."""

    name = "rsync -e ssh"

    def push(self, workload: str, changed: Sequence[Path]) -> None:
        folder = self.local / "ops" / workload
        rsh = f"ssh -F {self.sshd.ssh_config}"
        self._run(["rsync", "-a", "-e", rsh, f"{folder}/", self._target(folder) + "/"])


class Lsyncd(Tool):
    """lsyncd's ``default.rsyncssh`` with the smallest delay it accepts (0)."""

    name = "lsyncd"
    watches = True

    def __init__(self, work: Path, sshd: LocalSshd) -> None:
        super().__init__(work, sshd)
        self.config = work / "lsyncd.lua"
        self.log = work / "lsyncd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cfg = self.sshd.ssh_config
        self.config.write_text(
            f"""settings {{ nodaemon = true, logfile = "{self.log}", insist = true }}
sync {{
    default.rsyncssh,
    source = "{self.local}/",
    host = "{self.host}",
    targetdir = "{self.remote}/",
    delay = 0,
    rsync = {{ rsh = "/usr/bin/ssh -F {cfg}" }},
    ssh = {{ _extra = {{ "-F", "{cfg}" }} }},
}}
"""
        )
        self.process = subprocess.Popen(
            ["lsyncd", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class Opswatch(Tool):
    """``opswatch run`` watching ``ops/``."""

    name = "opswatch"
    watches = True

    def __init__(self, work: Path, sshd: LocalSshd, *, quiet_ms: int) -> None:
        super().__init__(work, sshd)
        self.quiet_ms = quiet_ms
        self.config = self.local / "opswatch.toml"
        self.state = work / "opswatch-state"
        self.log = work / "opswatch.log"
        self.process: subprocess.Popen[str] | None = None

    def write_config(self) -> None:
        write_opswatch_config(self.config, self.sshd, self.remote, quiet_ms=self.quiet_ms)

    def start(self) -> None:
        self.write_config()
        self.process = start_child(self.config, self.state, self.log)
        wait_watching(self.process, self.config, self.state)

    def stop(self) -> None:
        if self.process is not None:
            stop_child(self.process)
            self.process = None


# -- the opswatch child process, shared with the idle measurement ------------------------------


def write_opswatch_config(path: Path, sshd: LocalSshd, remote: Path, *, quiet_ms: int) -> None:
    empty = path.parent.parent / "ssh_config.empty"
    empty.touch()
    path.write_text(
        f"""[remote]
host = "{sshd.host}"
port = {sshd.port}
user = "{sshd.user}"
root = "{remote}"
known_hosts = "{sshd.known_hosts}"
identity_file = "{sshd.client_key}"
ssh_config = "{empty}"

[sync]
debounce_ms = {quiet_ms}
max_delay_ms = 2000
hold_over = 0

[[rule]]
from = "ops"
to = "ops"
"""
    )


def start_child(config: Path, state: Path, log: Path) -> subprocess.Popen[str]:
    """``opswatch run`` itself, in its own process, with its own state folder."""
    env = {**os.environ, "OPSWATCH_STATE_DIR": str(state)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    with open(log, "a") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "opswatch", "-c", str(config), "--log-level", "warning", "run"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            env=env,
        )


def wait_watching(
    process: subprocess.Popen[str], config: Path, state: Path, timeout: float = 300.0
) -> float:
    """Seconds until the daemon's own status says: connected, reconciled, watching.

    Asked over its control socket every 5 ms, the way ``opswatch status`` asks, without the
    cost of starting a CLI process per look.
    """
    started = time.perf_counter()
    paths = StatePaths(state=state / config_key(config), runtime=state / config_key(config))
    client = ControlClient(paths, config)
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(
                f"the opswatch daemon exited before watching (code {process.returncode})"
            )
        try:
            status = client.request("status", timeout=5.0)
        except OpswatchError:
            status = {}
        if (
            status.get("state") == "watching"
            and status.get("connected")
            and status.get("last_sync")
        ):
            return time.perf_counter() - started
        time.sleep(0.005)
    raise RuntimeError("the opswatch daemon took too long to start")


def stop_child(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def available(command: str) -> bool:
    return shutil.which(command) is not None
