"""Rollback when health fails after `up`: real sshd, real watchdog, the stand-in `docker`, and a
health URL served here that answers 502 while the server holds a Dockerfile marked broken."""

# ruff: noqa: F811 - test_rebuild's fixtures are imported by name and used as parameters

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_rebuild import (
    COMPOSE,
    DOCKERFILE,
    GATEWAY,
    GATEWAY_SOURCES,
    DockerStub,
    Seeded,
    docker,  # noqa: F401
    rebuild_hook,
    rebuild_table,
    seeded,  # noqa: F401
)

from conftest import StartDaemon
from helpers import wait_until
from opswatch.daemon.engine import Daemon
from opswatch.model import RebuildResult

BROKEN = "# broken"


@pytest.fixture
def health_of() -> Iterator[Callable[[Path], str]]:
    """`health_of(remote_file) -> url`: 502 while the file holds BROKEN (or always, once
    `always_fail` is set), else 200."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(watched: Path, *, always_fail: bool = False) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                broken = always_fail or BROKEN in watched.read_text()
                self.send_response(502 if broken else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/sse"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def deploy_broken(
    seeded: Seeded, start_daemon: StartDaemon, docker: DockerStub, url: str, on_failure: str
) -> tuple[Daemon, RebuildResult]:
    service = {"name": GATEWAY, "health": url}
    table = rebuild_table(service=[service], health_timeout_s=1, on_failure=on_failure)
    config = seeded.write(rebuild=table)
    docker.install(watch=seeded.remote_root / DOCKERFILE)
    (seeded.remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_daemon(config, presync=True)
    local = seeded.repo / DOCKERFILE
    local.write_text(local.read_text() + BROKEN + "\n")
    wait_until(lambda: daemon.status().rebuilds, 60)
    wait_until(lambda: rebuild_hook(daemon).worker.idle)
    (result,) = daemon.status().rebuilds
    return daemon, result


def test_a_failed_health_check_rolls_the_batch_back_rebuilds_and_checks_again(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    health_of: Callable[..., str],
) -> None:
    remote = seeded.remote_root / DOCKERFILE
    old = (seeded.repo / DOCKERFILE).read_text()
    daemon, result = deploy_broken(seeded, start_daemon, docker, health_of(remote), "rollback")
    assert remote.read_text() == old
    assert [(c.args, c.seen) for c in docker.calls()] == [
        (f"compose build {GATEWAY}", BROKEN),
        (f"compose up -d {GATEWAY}", BROKEN),
        (f"compose build {GATEWAY}", old.splitlines()[-1]),
        (f"compose up -d {GATEWAY}", old.splitlines()[-1]),
    ]
    status = daemon.status().to_json()
    failed_batch = status["last_batch"]["id"] - 1  # type: ignore[index]
    assert (result.ok, result.rolled_back, result.batch) == (False, True, failed_batch)
    assert result.detail.startswith("health failed (HTTP 502), rolled back to batch 1 (healthy)")
    assert status["rolled_back"] == [DOCKERFILE] and status["pending"] == 0
    assert daemon.history.recorder is not None
    (rollback,) = daemon.history.recorder.history.batches(1)
    assert (rollback.kind, rollback.undoes) == ("rollback", failed_batch)


def test_a_rollback_that_fails_health_too_is_reported_not_retried(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    health_of: Callable[..., str],
) -> None:
    url = health_of(seeded.remote_root / DOCKERFILE, always_fail=True)
    daemon, result = deploy_broken(seeded, start_daemon, docker, url, "rollback")
    assert result.rolled_back and not result.ok
    assert "rolled back to batch 1 (still failing: HTTP 502)" in result.detail
    assert len(docker.calls()) == 4
    assert rebuild_hook(daemon).worker.idle


def test_with_keep_nothing_is_put_back(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    health_of: Callable[..., str],
) -> None:
    remote = seeded.remote_root / DOCKERFILE
    _daemon, result = deploy_broken(seeded, start_daemon, docker, health_of(remote), "keep")
    assert BROKEN in remote.read_text()
    assert (result.ok, result.rolled_back) == (False, False)
    assert "HTTP 502 after" in result.detail
    assert len(docker.calls()) == 2


def test_a_failed_build_rolls_nothing_back(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    health_of: Callable[..., str],
) -> None:
    remote = seeded.remote_root / DOCKERFILE
    service = {"name": GATEWAY, "health": health_of(remote)}
    config = seeded.write(rebuild=rebuild_table(service=[service], on_failure="rollback"))
    docker.install(then="exit 1")
    (seeded.remote_root / GATEWAY_SOURCES).mkdir(parents=True)  # what its Dockerfile copies
    daemon = start_daemon(config, presync=True)
    local = seeded.repo / DOCKERFILE
    local.write_text(local.read_text() + BROKEN + "\n")
    wait_until(lambda: daemon.status().rebuilds, 30)
    (result,) = daemon.status().rebuilds
    assert (result.ok, result.rolled_back) == (False, False)
    assert result.detail.startswith("build failed (exit 1)")
    assert BROKEN in remote.read_text()


def test_a_compose_change_that_fails_health_is_rolled_back_and_applied_again(
    seeded: Seeded,
    start_daemon: StartDaemon,
    docker: DockerStub,
    health_of: Callable[..., str],
) -> None:
    remote = seeded.remote_root / "ops/docker-compose.production.yml"
    service = {"name": "demo", "health": health_of(remote)}
    table = rebuild_table(service=[service], health_timeout_s=1, on_failure="rollback")
    config = seeded.write(rebuild=table)
    docker.install(watch=remote)
    daemon = start_daemon(config, presync=True)
    local = seeded.repo / COMPOSE
    old = local.read_text()
    local.write_text(old + BROKEN + "\n")
    wait_until(lambda: daemon.status().rebuilds, 60)
    wait_until(lambda: rebuild_hook(daemon).worker.idle)
    (result,) = daemon.status().rebuilds
    assert remote.read_text() == old
    assert (result.service, result.ok, result.rolled_back) == ("*", False, True)
    assert result.detail.startswith("health failed (HTTP 502), rolled back to batch 1 (healthy)")
    assert [(c.args, c.seen) for c in docker.calls()] == [
        ("compose config -q", BROKEN),
        ("compose up -d", BROKEN),
        ("compose up -d", old.splitlines()[-1]),
    ]
