"""Content decides: a touch or a rewrite with the same bytes sends nothing and builds nothing.

Real sshd, real watchdog, the stand-in `docker` of test_rebuild.
"""
# ruff: noqa: F811 - test_rebuild's fixtures are imported by name and used as parameters

from __future__ import annotations

import os
from pathlib import Path

from test_rebuild import (
    DOCKERFILE,
    GATEWAY,
    GATEWAY_SOURCES,
    DockerStub,
    Seeded,
    docker,  # noqa: F401
    rebuild_table,
    seeded,  # noqa: F401
    settled,
)

from conftest import StartDaemon
from helpers import wait_until
from opswatch.daemon.engine import Daemon


def manifest_saw(daemon: Daemon, remote: Path, local: Path) -> bool:
    """The daemon handled the last change of ``local``: its manifest holds that file's stat."""
    pushed = daemon.manifest.get(str(remote))
    return pushed is not None and pushed.mtime_ns == local.stat().st_mtime_ns


def test_touch_and_same_bytes_send_nothing_a_real_edit_builds_once(
    seeded: Seeded, start_daemon: StartDaemon, docker: DockerStub
) -> None:
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write(rebuild=rebuild_table())
    docker.install(watch=remote_root / DOCKERFILE)
    (remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_daemon(config, presync=True)
    local, remote = repo / DOCKERFILE, remote_root / DOCKERFILE
    before = remote.stat()
    future = before.st_mtime_ns + 5_000_000_000
    os.utime(local, ns=(future, future))  # a touch
    wait_until(lambda: manifest_saw(daemon, remote, local), message="the touch to be handled")
    assert remote.stat().st_ino == before.st_ino  # not replaced: no upload
    assert int(remote.stat().st_mtime) == future // 1_000_000_000  # the mtime an upload sets
    local.write_bytes(local.read_bytes())  # same bytes, new mtime
    wait_until(lambda: manifest_saw(daemon, remote, local), message="the rewrite to be handled")
    assert remote.stat().st_ino == before.st_ino
    assert daemon.status().uploaded == 0 and docker.calls() == []
    local.write_text(local.read_text() + "# real edit\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    wait_until(settled(daemon, 1))
    assert daemon.status().uploaded == 1
    assert [(c.args, c.seen) for c in docker.calls()] == [
        (f"compose build {GATEWAY}", "# real edit"),
        (f"compose up -d {GATEWAY}", "# real edit"),
    ]


def test_a_same_size_edit_in_the_same_second_is_sent(
    seeded: Seeded, start_daemon: StartDaemon
) -> None:
    """rsync's blind spot: same size, same whole second. The hash sees it."""
    repo, remote_root = seeded.repo, seeded.remote_root
    config = seeded.write()
    daemon = start_daemon(config, presync=True)
    local = repo / "docs/ops/runbooks/deploy.md"
    stamp = local.stat().st_mtime_ns
    text = local.read_text()
    local.write_text(text.replace("Push", "Send"))
    os.utime(local, ns=(stamp + 1, stamp + 1))
    wait_until(lambda: daemon.status().uploaded == 1)
    assert (remote_root / "docs/ops/runbooks/deploy.md").read_text() == local.read_text()
