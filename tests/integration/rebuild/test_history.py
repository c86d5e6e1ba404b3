"""The deploy history and undo, end to end: real sshd, real watchdog, the stand-in `docker`,
a git repository, the daemon behind its control socket and the `opswatch` command."""

# ruff: noqa: F811 - test_rebuild's fixtures are imported by name and used as parameters

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_rebuild import (
    DOCKERFILE,
    GATEWAY,
    GATEWAY_SOURCES,
    DockerStub,
    Seeded,
    docker,  # noqa: F401
    health_server,  # noqa: F401
    rebuild_table,
    seeded,  # noqa: F401
    settled,
)

from conftest import StartDaemon
from helpers import wait_until
from opswatch.cli.main import cli
from opswatch.daemon.control import ControlServer
from opswatch.daemon.engine import Daemon
from opswatch.daemon.requests import Pause, Reconnect, Resume
from opswatch.paths import state_paths

NEW_GATE = "docs/ops/quality_gates/new.sh"  # a new file no Dockerfile copies: it builds nothing


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def commit_all(repo: Path) -> str:
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed")
    return git(repo, "rev-parse", "HEAD")


def opswatch(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def history_json(config: Path) -> list[dict[str, Any]]:
    done = opswatch(config, "history", "--json")
    assert done.exit_code == 0, done.output
    batches: list[dict[str, Any]] = json.loads(done.stdout)
    return batches


@pytest.fixture
def served() -> Iterator[Callable[[Daemon, Path], None]]:
    """The daemon's control socket, so that the `opswatch` command finds it running."""
    servers: list[ControlServer] = []

    def serve(daemon: Daemon, config: Path) -> None:
        server = ControlServer(daemon, state_paths(config))
        server.start()
        servers.append(server)

    yield serve
    for server in servers:
        server.stop()


def land_one_batch(daemon: Daemon, repo: Path) -> None:
    """An edit (with a mode change) and a new file, sent together as one batch."""
    daemon.submit(Pause()).result(10)
    dockerfile = repo / DOCKERFILE
    dockerfile.write_text(dockerfile.read_text() + "# edit 1\n")
    dockerfile.chmod(0o600)
    (repo / NEW_GATE).write_text("# new\n")
    wanted = {DOCKERFILE, NEW_GATE}
    wait_until(lambda: wanted <= set(daemon.status().pending_paths))
    daemon.submit(Resume()).result(30)


def test_batches_are_recorded_undone_and_undone_again(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    served: Callable[[Daemon, Path], None],
    health_server: Callable[..., str],
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    commit = commit_all(repo)
    service = {"name": GATEWAY, "health": health_server([200])}
    config = seeded.write(rebuild=rebuild_table(service=[service]))
    docker.install(watch=remote_root / DOCKERFILE)
    (remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_daemon(config, presync=True)
    served(daemon, config)
    old = (repo / DOCKERFILE).read_bytes()
    land_one_batch(daemon, repo)
    wait_until(settled(daemon, 2))
    wait_until(lambda: history_json(config)[0]["rebuilds"], 30)
    newest = history_json(config)[0]
    assert (newest["kind"], newest["commit"], newest["branch"]) == ("batch", commit, "main")
    assert newest["dirty"] is True  # the edit is not committed
    files = {f["path"]: f for f in newest["files"]}
    assert files[DOCKERFILE]["before"] == sha(old)
    assert files[DOCKERFILE]["after"] == sha((repo / DOCKERFILE).read_bytes())
    assert (files[DOCKERFILE]["mode_before"], files[DOCKERFILE]["mode_after"]) == (0o644, 0o600)
    assert files[NEW_GATE]["created"] is True
    assert [(r["service"], r["ok"]) for r in newest["rebuilds"]] == [(GATEWAY, True)]
    calls = len(docker.calls())

    done = opswatch(config, "undo")
    assert done.exit_code == 0, done.output
    assert f"batch {newest['id']} undone" in done.output
    assert f"{GATEWAY}: ok: build, up: ok; health: " in done.output  # checked, as any batch
    remote = remote_root / DOCKERFILE
    assert remote.read_bytes() == old and remote.stat().st_mode & 0o777 == 0o644
    assert not (remote_root / NEW_GATE).exists()
    assert [c.seen for c in docker.calls()[calls:]] == ['CMD ["node", "dist/index.js"]'] * 2
    status = daemon.status().to_json()
    assert status["rolled_back"] == [DOCKERFILE, NEW_GATE]
    assert status["pending"] == 0
    undo = history_json(config)[0]
    assert (undo["kind"], undo["undoes"]) == ("undo", newest["id"])
    assert status["last_batch"]["id"] == undo["id"]  # type: ignore[index]

    done = opswatch(config, "undo")  # the undo of the undo
    assert done.exit_code == 0, done.output
    assert remote.read_bytes() == (repo / DOCKERFILE).read_bytes()
    assert remote.stat().st_mode & 0o777 == 0o600
    assert (remote_root / NEW_GATE).read_text() == "# new\n"
    assert daemon.status().to_json()["rolled_back"] == []


def test_undo_refuses_a_file_changed_on_the_server_and_names_it(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    served: Callable[[Daemon, Path], None],
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install()
    (remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_daemon(config, presync=True)
    served(daemon, config)
    land_one_batch(daemon, repo)
    wait_until(settled(daemon, 2))
    remote = remote_root / DOCKERFILE
    remote.write_text("FROM changed-by-hand\n")
    done = opswatch(config, "undo")
    assert done.exit_code == 1
    assert f"{remote} changed on the server since" in done.output
    assert remote.read_text() == "FROM changed-by-hand\n"
    assert (remote_root / NEW_GATE).exists()
    done = opswatch(config, "undo", "--force")
    assert done.exit_code == 0, done.output
    assert remote.read_text() == (repo / DOCKERFILE).read_text().replace("# edit 1\n", "")


def test_a_rolled_back_file_goes_again_when_edited(
    seeded: Seeded, start_daemon: StartDaemon, served: Callable[[Daemon, Path], None]
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    daemon = start_daemon(config, presync=True)
    served(daemon, config)
    runbook = repo / "docs/ops/runbooks/deploy.md"
    runbook.write_text("# v2\n")
    wait_until(lambda: daemon.status().uploaded == 1)
    assert opswatch(config, "undo").exit_code == 0
    assert daemon.status().to_json()["rolled_back"] == ["docs/ops/runbooks/deploy.md"]
    daemon.submit(Reconnect()).result(10)  # the reconcile after it must not send it again
    wait_until(lambda: daemon.status().to_json().get("reconciles", 0) >= 2)
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_text() != "# v2\n"
    runbook.write_text("# v3\n")
    wait_until(lambda: (remote_root / "docs/ops/runbooks/deploy.md").read_text() == "# v3\n")
    assert daemon.status().to_json()["rolled_back"] == []


def test_one_shot_undo_without_a_daemon(seeded: Seeded) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    assert opswatch(config, "sync").exit_code == 0
    runbook = repo / "docs/ops/runbooks/deploy.md"
    old = runbook.read_bytes()
    runbook.write_text("# v2\n")
    assert opswatch(config, "sync").exit_code == 0
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_text() == "# v2\n"
    done = opswatch(config, "undo")
    assert done.exit_code == 0, done.output
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_bytes() == old
    done = opswatch(config, "sync")  # a rolled-back file is not sent by a plain sync either
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_bytes() == old
    batches = history_json(config)
    assert [b["kind"] for b in batches] == ["undo", "sync", "sync"]
    shown = opswatch(config, "history", str(batches[1]["id"]))
    assert "changed  docs/ops/runbooks/deploy.md" in shown.output and "+1 -4" in shown.output


def test_a_corrupt_history_never_stops_the_daemon(
    seeded: Seeded, start_daemon: StartDaemon
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    folder = state_paths(config).ensure().history
    folder.mkdir(parents=True)
    (folder / "history.sqlite").write_bytes(b"not a database " * 300)
    daemon = start_daemon(config, presync=False)
    (repo / "docs/ops/runbooks/deploy.md").write_text("# still synced\n")
    wait_until(
        lambda: (remote_root / "docs/ops/runbooks/deploy.md").read_text() == "# still synced\n"
    )
    assert daemon.status().to_json()["last_batch"] is None


def test_a_corrupt_history_row_is_left_out(seeded: Seeded, start_daemon: StartDaemon) -> None:
    repo = seeded.repo
    config = seeded.write()
    daemon = start_daemon(config, presync=True)
    (repo / "docs/ops/runbooks/deploy.md").write_text("# v2\n")
    wait_until(lambda: daemon.status().uploaded == 1)
    db = sqlite3.connect(state_paths(config).history / "history.sqlite")
    db.execute("UPDATE file SET before = 'garbage' WHERE batch = 2")
    db.commit()
    db.close()
    (repo / "docs/ops/runbooks/deploy.md").write_text("# v3\n")
    wait_until(lambda: daemon.status().uploaded == 2)
    assert [b["id"] for b in history_json(config)] == [3, 1]
    assert daemon.status().to_json()["last_batch"]["id"] == 3  # type: ignore[index]


def test_sync_force_keeps_the_server_copy_so_undo_brings_it_back(seeded: Seeded) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    assert opswatch(config, "sync").exit_code == 0
    remote = remote_root / "docs/ops/runbooks/deploy.md"
    remote.write_text("# changed on the server\n")
    (repo / "docs/ops/runbooks/deploy.md").write_text("# v2\n")
    assert opswatch(config, "sync").exit_code == 1  # a conflict: left alone
    assert opswatch(config, "sync", "--force").exit_code == 0
    assert remote.read_text() == "# v2\n"
    forced = history_json(config)[0]
    (entry,) = forced["files"]
    assert entry["before"] == sha(b"# changed on the server\n")
    assert opswatch(config, "undo").exit_code == 0
    assert remote.read_text() == "# changed on the server\n"


def test_flush_sends_a_rolled_back_file_again(
    seeded: Seeded, start_daemon: StartDaemon, served: Callable[[Daemon, Path], None]
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    daemon = start_daemon(config, presync=True)
    served(daemon, config)
    (repo / "docs/ops/runbooks/deploy.md").write_text("# v2\n")
    wait_until(lambda: daemon.status().uploaded == 1)
    assert opswatch(config, "undo").exit_code == 0
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_text() != "# v2\n"
    done = opswatch(config, "flush")
    assert done.exit_code == 0, done.output
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_text() == "# v2\n"
    assert daemon.status().to_json()["rolled_back"] == []


def test_one_shot_undo_rebuilds_what_it_put_back(seeded: Seeded, docker: DockerStub) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install(watch=remote_root / DOCKERFILE)
    (remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    assert opswatch(config, "sync").exit_code == 0
    dockerfile = repo / DOCKERFILE
    old = dockerfile.read_text()
    dockerfile.write_text(old + "# edit 1\n")
    assert opswatch(config, "sync").exit_code == 0
    assert docker.calls() == []  # a one-shot sync deploys nothing by itself
    done = opswatch(config, "undo")
    assert done.exit_code == 0, done.output
    assert (remote_root / DOCKERFILE).read_text() == old
    assert [(c.args, c.seen) for c in docker.calls()] == [
        (f"compose build {GATEWAY}", old.splitlines()[-1]),
        (f"compose up -d {GATEWAY}", old.splitlines()[-1]),
    ]
    listed = opswatch(config, "history", "-n", "1")
    assert listed.exit_code == 0 and len(listed.output.splitlines()) == 1
    assert "undo" in listed.output and f"rebuilds: {GATEWAY} ok" in listed.output
