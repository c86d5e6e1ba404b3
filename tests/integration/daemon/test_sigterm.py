"""SIGTERM ends `opswatch run` within 10 s, exit 0, in every state it once hung in: a batch
stopped mid-way with a file turned into a FIFO, a black-holed link, a build that runs long, a
health endpoint that drips. (A FIFO ignore file is in `test_hostile_inputs.py`.)

Each test measures from the signal to the process's exit; the bound is the requirement.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import WriteConfig
from daemon_process import DaemonProcess
from engine_thread import trust_through
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.ssh.transfer import is_temp_name
from proxy import TcpProxy

RUNBOOKS = "docs/ops/runbooks"
DOCKERFILE = "docs/ops/Dockerfile.demo"
COMPOSE = "docs/ops/docker-compose.production.yml"
QUIET = {"debounce_ms": 100, "max_delay_ms": 300}
STOP_S = 10.0  # SIGTERM ends the daemon within this, in every state


def temp_files(remote_root: Path) -> list[Path]:
    return [p for p in remote_root.rglob("*") if is_temp_name(p.name)]


# -- through a proxy: a batch stopped in its middle ----------------------------------------------


@pytest.fixture
def proxied_daemon(
    own_sshd: LocalSshd, tmp_path: Path, repo: Path, remote_root: Path, write_config: WriteConfig
) -> Iterator[tuple[TcpProxy, DaemonProcess]]:
    with TcpProxy(own_sshd.port) as proxy:
        known_hosts = tmp_path / "known_hosts.proxy"
        trust_through(own_sshd, proxy.port, known_hosts)
        config = write_config(
            repo,
            own_sshd,
            remote_root,
            remote={"port": proxy.port, "known_hosts": str(known_hosts)},
            sync=QUIET,
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        yield proxy, daemon
        daemon.close()


def write_batch(repo: Path, count: int, size: int) -> list[Path]:
    files = []
    for number in range(count):
        path = repo / RUNBOOKS / f"batch-{number:02}.md"
        path.write_bytes(f"file {number}\n".encode() * (size // 8))
        files.append(path)
    return files


def test_a_file_replaced_by_a_fifo_mid_batch(
    proxied_daemon: tuple[TcpProxy, DaemonProcess], repo: Path, remote_root: Path
) -> None:
    proxy, daemon = proxied_daemon
    daemon.start()
    proxy.stall_after(512 * 1024)  # the batch stops in its middle, deterministically
    files = write_batch(repo, 8, 256 * 1024)
    wait_until(lambda: proxy.stalled, message="the upload to reach the stall point")
    last = files[-1]
    last.unlink()
    os.mkfifo(last)  # planned as a regular file, now a FIFO: opening it must not block
    daemon.stop_within(STOP_S, then=proxy.resume)  # the batch in flight finishes
    assert temp_files(remote_root) == []


def test_a_link_black_holed_mid_batch(
    proxied_daemon: tuple[TcpProxy, DaemonProcess], repo: Path
) -> None:
    proxy, daemon = proxied_daemon
    daemon.start()
    proxy.stall_after(512 * 1024)
    write_batch(repo, 8, 256 * 1024)
    wait_until(lambda: proxy.stalled, message="the upload to reach the stall point")
    # The stall watchdog would cut the link after 30 s; SIGTERM must not wait for it.
    daemon.stop_within(STOP_S)
    assert daemon.events("stop_overdue"), daemon.text  # the batch had its grace period


# -- rebuilds: a build that runs long, a health endpoint that drips -------------------------------


@pytest.fixture
def docker(remote_bin: Path) -> Iterator[Callable[[str], None]]:
    """Installs a stand-in `docker` on the shared sshd's PATH running ``script``."""
    stub = remote_bin / "docker"

    def install(script: str) -> None:
        stub.write_text(f"#!/bin/sh\n{script}\n")
        stub.chmod(0o755)

    yield install
    stub.unlink(missing_ok=True)  # the session's sshd is shared


@dataclass(frozen=True)
class Dripping:
    url: str
    asked: threading.Event  # set once the health check connected


@pytest.fixture
def dripping() -> Iterator[Dripping]:
    """An HTTP server that sends one byte of its headers every 3 s, for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    asked = threading.Event()

    def drip(conn: socket.socket) -> None:
        asked.set()
        with conn:
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(3):
                    conn.sendall(b"X")
            except OSError:
                return

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield Dripping(f"http://127.0.0.1:{listener.getsockname()[1]}/health", asked)
    stop.set()
    listener.close()


@pytest.fixture
def rebuilding(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
) -> Iterator[Callable[..., DaemonProcess]]:
    """`rebuilding(**rebuild)`: a synced daemon with automatic rebuilds of the demo service."""
    daemons: list[DaemonProcess] = []
    (remote_root / RUNBOOKS).mkdir(parents=True)  # what the demo's Dockerfile copies

    def start(**rebuild: object) -> DaemonProcess:
        table = {"mode": "auto", "compose_dir": "ops", "compose_file": COMPOSE, **rebuild}
        config = write_config(repo, sshd_server, remote_root, sync=QUIET, rebuild=table)
        daemon = DaemonProcess(config, tmp_path / "daemon.log")
        daemons.append(daemon)
        return daemon.start()

    yield start
    for daemon in daemons:
        daemon.close()


def edit_dockerfile(repo: Path) -> None:
    (repo / DOCKERFILE).write_text((repo / DOCKERFILE).read_text() + "# edit\n")


def test_a_build_that_runs_long(
    rebuilding: Callable[..., DaemonProcess],
    docker: Callable[[str], None],
    repo: Path,
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "build.pid"
    docker(f"echo $$ > '{pid_file}'; exec sleep 600")
    daemon = rebuilding(timeout_s=900)
    edit_dockerfile(repo)
    wait_until(pid_file.exists, timeout=30, message="the build to start on the server")
    try:
        daemon.stop_within(STOP_S)
    finally:  # the build is the server's: it runs on after the daemon is gone
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_health_endpoint_that_drips(
    rebuilding: Callable[..., DaemonProcess],
    docker: Callable[[str], None],
    dripping: Dripping,
    repo: Path,
) -> None:
    docker("exit 0")
    service = {"name": "demo", "health": dripping.url}
    daemon = rebuilding(service=[service], health_timeout_s=60)
    edit_dockerfile(repo)
    wait_until(dripping.asked.is_set, timeout=30, message="the health check to start")
    time.sleep(1)  # a byte or two into the answer
    daemon.stop_within(STOP_S)
