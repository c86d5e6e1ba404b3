"""`opswatch run` as a real subprocess, and the real `opswatch` CLI, for the background tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import wait_until
from opswatch.daemon.control import ControlClient
from opswatch.errors import OpswatchError
from opswatch.paths import StatePaths, state_paths


def opswatch_command() -> list[str]:
    script = Path(sys.executable).parent / "opswatch"
    if script.is_file():
        return [str(script)]
    found = shutil.which("opswatch")
    return [found] if found else [sys.executable, "-m", "opswatch"]


def opswatch(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way a user does; the state folder comes from the environment."""
    return subprocess.run(
        [*opswatch_command(), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class DaemonProcess:
    """One `opswatch run`; its log (JSON lines) goes to `log`, shown when a wait fails."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.paths: StatePaths = state_paths(config)
        self.client = ControlClient(self.paths, config)

    def start(self, *, wait: str = "synced") -> DaemonProcess:
        """Start, then wait until it is "answering", "connected" or (the default) "synced"."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*opswatch_command(), "--config", str(self.config), "--log-format", "json", "run"],
                stdout=log,
                stderr=log,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        conditions = {
            "answering": lambda s: True,
            "connected": lambda s: s["connected"],
            "synced": lambda s: s["connected"] and s["last_sync"],
        }
        self.wait_for(conditions[wait], f"the daemon to be {wait}")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def status(self) -> dict[str, Any] | None:
        try:
            return self.client.request("status", timeout=5)
        except OpswatchError:
            return None

    def wait_for(self, predicate: Any, what: str, timeout: float = 20) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"opswatch run exited {self.process.returncode}:\n{self.text}")
            status = self.status()
            return status if status is not None and predicate(status) else None

        try:
            return wait_until(check, timeout=timeout, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{self.text}") from None

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self, name: str) -> list[str]:
        return [line for line in self.text.splitlines() if f'"event": "{name}"' in line]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait()

    def stop_within(self, seconds: float, then: Callable[[], None] = lambda: None) -> float:
        """SIGTERM (then ``then()``), and the seconds until exit, which must come within
        ``seconds``, with exit 0, by the daemon's own stop (not its last-resort forced exit)."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        then()
        try:
            code = self.wait(timeout=seconds + 5)  # a little more, to say by how much it overran
        except subprocess.TimeoutExpired:
            raise AssertionError(f"running {seconds + 5:g} s after SIGTERM\n{self.text}") from None
        took = time.monotonic() - started
        print(f"SIGTERM to exit: {took:.2f} s")
        assert took <= seconds, f"exit took {took:.1f} s after SIGTERM\n{self.text}"
        assert code == 0, self.text
        assert self.events("stop_forced") == [], self.text
        return took

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
