"""The real daemon on a thread of the test process, with short deadlines, through a fault proxy.

`EngineThread(config_path, ...)` builds the same `Daemon` over the same `SshRemote` that
`opswatch run` builds, only with deadlines a test can wait for (probe every second, a stalled
request cut after two), and runs its engine on a thread. `status()` is the daemon's own
snapshot: the same object `opswatch status --json` prints.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from helpers import wait_until
from opswatch.config import load_config
from opswatch.daemon.engine import Daemon
from opswatch.daemon.requests import parse_request
from opswatch.demo.sshd import LocalSshd
from opswatch.model import Status
from opswatch.paths import state_paths
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

TIMEOUT_S = 3.0  # connect, banner, auth, channel open
STALL_S = 2.0  # an SFTP request unanswered this long cuts the connection
PROBE_INTERVAL_S = 1.0
PROBE_DEADLINE_S = 1.0


def trust_through(sshd: LocalSshd, port: int, known_hosts: Path) -> None:
    """A known_hosts naming sshd's current key under the proxy's port (what a client dials)."""
    public = sshd.host_key.with_name(sshd.host_key.name + ".pub").read_text().split()
    known_hosts.write_text(f"[{sshd.host}]:{port} {public[0]} {public[1]}\n")


class EngineThread:
    def __init__(
        self, config_path: Path, *, wall: Any = None, failed_retry_s: float | None = None
    ) -> None:
        self.config = load_config(config_path)
        self.paths = state_paths(config_path).ensure()
        self.remote = SshRemote(
            resolve_endpoint(self.config.remote), timeout=TIMEOUT_S, stall_s=STALL_S
        )
        extra: dict[str, Any] = {"wall": wall} if wall is not None else {}
        if failed_retry_s is not None:
            extra["failed_retry_s"] = failed_retry_s
        self.daemon = Daemon(
            self.config,
            self.paths,
            self.remote,
            probe_interval_s=PROBE_INTERVAL_S,
            probe_deadline_s=PROBE_DEADLINE_S,
            **extra,
        )
        self.seen: list[dict[str, Any]] = []  # every distinct status observed by waits
        self._thread = threading.Thread(target=self.daemon.run, name="engine", daemon=True)

    def status(self) -> dict[str, Any]:
        snapshot: Status = self.daemon.status()
        found = snapshot.to_json()
        if not self.seen or self.seen[-1] != found:
            self.seen.append(found)
        return found

    def wait_for(self, predicate: Any, what: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            assert self._thread.is_alive(), "the engine thread died"
            status = self.status()
            return status if predicate(status) else None

        return wait_until(check, timeout=timeout, interval=0.05, message=what)

    def wait_synced(self) -> dict[str, Any]:
        return self.wait_for(
            lambda s: s["connected"] and s.get("reconciles", 0) >= 1 and s["pending"] == 0,
            "the first reconcile",
        )

    def request(self, name: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        """A control request through the engine: answered only if the engine is not stuck."""
        return self.daemon.submit(parse_request(name, args)).result(timeout=timeout)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the engine did not stop"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
