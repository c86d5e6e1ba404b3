"""The real engine over a `FakeRemote`, with clocks turned by hand: one `turn()` at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakes import FakeClock, FakeRemote
from opswatch.config import parse_config
from opswatch.daemon.engine import Daemon
from opswatch.daemon.requests import parse_request
from opswatch.model import Change, ChangeKind
from opswatch.paths import StatePaths

REMOTE_ROOT = "/srv/app"
RUNBOOK = "docs/ops/runbooks/deploy.md"
FILES = {
    "docs/ops/Dockerfile.demo": "FROM nginx\n",
    RUNBOOK: "# Deploy\n",
    "docs/ops/runbooks/rollback.md": "# Rollback\n",
    "docs/ops/.env": "SECRET=1\n",  # never sent
}
RETRY_S = 30.0
QUIET_S = 0.3


def remote_of(local: str) -> str:
    return f"{REMOTE_ROOT}/{local}"


@dataclass
class Engine:
    daemon: Daemon
    remote: FakeRemote
    clock: FakeClock
    wall: FakeClock
    repo: Path
    paths: StatePaths

    def turn(self, times: int = 1) -> dict[str, Any]:
        for _ in range(times):
            self.daemon.turn(wait=False)
        return self.status()

    def status(self) -> dict[str, Any]:
        return self.daemon.status().to_json()

    def advance(self, seconds: float) -> dict[str, Any]:
        """Both clocks move on, as they do while awake; then one turn."""
        self.clock.advance(seconds)
        self.wall.advance(seconds)
        return self.turn()

    def edit(self, relative: str, text: str, kind: ChangeKind = ChangeKind.MODIFIED) -> None:
        path = self.repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.notice(Change(relative, kind))

    def notice(self, event: object) -> dict[str, Any]:
        """What the watcher thread does: queue an event; handled in this turn, at this time."""
        self.daemon.events.put(event)
        return self.turn()

    def request(self, name: str, **args: Any) -> Any:
        """Submit a control request as the socket would, turn once, return its future."""
        future = self.daemon.submit(parse_request(name, args))
        self.turn()
        return future

    def on_server(self, relative: str) -> bytes | None:
        stored = self.remote.files.get(remote_of(relative))
        return stored.content if stored else None


def make_engine(tmp_path: Path, **sync: Any) -> Engine:
    repo = tmp_path / "repo"
    for relative, text in FILES.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    doc = {
        "remote": {"host": "droplet", "root": REMOTE_ROOT},
        "sync": {"debounce_ms": int(QUIET_S * 1000), "max_delay_ms": 2000, **sync},
        "rule": [{"from": "docs/ops", "match": ["Dockerfile.*", "runbooks/"], "to": "docs/ops"}],
    }
    config = parse_config(doc, repo / "opswatch.toml")
    paths = StatePaths(tmp_path / "state", tmp_path / "state").ensure()
    remote, clock, wall = FakeRemote(), FakeClock(1000.0), FakeClock(1_750_000_000.0)
    daemon = Daemon(
        config, paths, remote, clock=clock, wall=wall, watch=False, failed_retry_s=RETRY_S
    )
    return Engine(daemon, remote, clock, wall, repo, paths)


def sent(files: int) -> dict[str, object]:
    """A flush's answer when ``files`` uploads landed and nothing was removed."""
    return {"sent": files, "removed": 0, "removed_folders": 0, "failed": {}}
