"""Every input is data and nothing hangs: bad ignore files, FIFOs, a dripping health endpoint,
a huge status, a state folder that is a file. Each case once crashed, hung or looped."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WriteConfig
from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.daemon.control import ControlClient, ControlServer
from opswatch.demo.sshd import LocalSshd
from opswatch.model import RebuildResult, State, Status
from opswatch.paths import StatePaths
from opswatch.rebuild.health import check_health

RUNBOOKS = "docs/ops/runbooks"
IGNORE = "docs/ops/.opswatchignore"
QUIET = {"debounce_ms": 100, "max_delay_ms": 300}
STOP_S = 10  # SIGTERM ends the daemon within this, in every state


def one_error_line(done: Any, expected: str) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert f"error: {expected}" in done.stderr, done.stderr


# -- ignore files --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("sync",), ("sync", "--dry-run"), ("verify",)])
def test_an_invalid_ignore_pattern_is_a_config_error_naming_file_and_line(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    command: tuple[str, ...],
) -> None:
    (repo / IGNORE).write_text("*.log\n[z-a]\n")
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, *command)
    assert done.returncode == 2
    one_error_line(done, f"{IGNORE}:2: invalid pattern")


def test_an_invalid_rule_pattern_is_a_config_error(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig
) -> None:
    rules = [{"from": "docs/ops", "match": ["[z-a]"], "to": "ops"}]
    config = write_config(repo, sshd_server, remote_root, rule=rules)
    done = opswatch(config, "sync")
    assert done.returncode == 2
    one_error_line(done, f'{config}: rule[0].match: "[z-a]": invalid pattern')


@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "too big"])
def test_an_ignore_file_that_is_not_a_small_regular_file_stops_nothing_but_itself(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, kind: str
) -> None:
    make_bad_ignore_file(repo / IGNORE, kind)
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync", timeout=60)  # it used to block on the FIFO for ever
    assert done.returncode == 2
    one_error_line(done, IGNORE)


def make_bad_ignore_file(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(b"# padding\n" * 200_000)


@pytest.fixture
def daemon(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config: WriteConfig, tmp_path: Path
) -> Iterator[DaemonProcess]:
    config = write_config(repo, sshd_server, remote_root, sync=QUIET)
    process = DaemonProcess(config, tmp_path / "daemon.log")
    yield process
    process.close()


def refused(status: dict[str, Any]) -> dict[str, str]:
    return {r["path"]: r["reason"] for r in status.get("refused", [])}


def test_an_ignore_file_broken_while_running_holds_its_folder_until_fixed(
    daemon: DaemonProcess, repo: Path, remote_root: Path
) -> None:
    daemon.start()
    (repo / IGNORE).write_text("[z-a]\n")
    status = daemon.wait_for(
        lambda s: any(".opswatchignore:1: invalid pattern" in r for r in refused(s).values()),
        "the held folder to show in status",
    )
    assert status["state"] == "watching"
    (repo / RUNBOOKS / "new.md").write_text("written while the folder is held\n")
    daemon.client.request("flush", timeout=30)
    assert not (remote_root / RUNBOOKS / "new.md").exists()
    (repo / IGNORE).write_text("*.log\n")  # fixed: what waited goes now
    wait_until(lambda: (remote_root / RUNBOOKS / "new.md").exists(), timeout=20)
    assert daemon.stop() == 0


def test_a_daemon_does_not_start_on_an_invalid_ignore_file(
    daemon: DaemonProcess, repo: Path
) -> None:
    (repo / IGNORE).write_text("[z-a]\n")
    done = opswatch(daemon.config, "run", timeout=60)
    assert done.returncode == 2
    one_error_line(done, f"{IGNORE}:1: invalid pattern")


def test_a_fifo_appearing_while_running_neither_blocks_nor_outlives_sigterm(
    daemon: DaemonProcess, repo: Path, remote_root: Path
) -> None:
    daemon.start()
    os.mkfifo(repo / IGNORE)
    daemon.wait_for(
        lambda s: (
            any(".opswatchignore" in p for p in refused(s))
            or any(".opswatchignore" in r for r in refused(s).values())
        ),
        "the FIFO ignore file to be held",
    )
    runbook = repo / RUNBOOKS / "deploy.md"
    runbook.unlink()
    os.mkfifo(runbook)  # a file replaced by a FIFO mid-batch: refused, never opened blocking
    (repo / IGNORE).unlink()
    (repo / RUNBOOKS / "after.md").write_text("after the FIFOs\n")
    wait_until(lambda: (remote_root / RUNBOOKS / "after.md").exists(), timeout=20)
    status = daemon.wait_for(
        lambda s: f"{RUNBOOKS}/deploy.md" in refused(s), "the FIFO file to be refused"
    )
    assert "not a regular file" in refused(status)[f"{RUNBOOKS}/deploy.md"]
    assert (remote_root / RUNBOOKS / "deploy.md").exists()  # the server copy is kept
    daemon.stop_within(STOP_S)


def test_sigterm_while_the_ignore_file_is_a_fifo(daemon: DaemonProcess, repo: Path) -> None:
    daemon.start()
    os.mkfifo(repo / IGNORE)
    daemon.wait_for(
        lambda s: any(
            ".opswatchignore" in p or ".opswatchignore" in r for p, r in refused(s).items()
        ),
        "the FIFO ignore file to be held",
    )
    (repo / RUNBOOKS / "held.md").write_text("an edit in the held folder\n")
    daemon.stop_within(STOP_S)


# -- state ---------------------------------------------------------------------------------------


def test_a_state_folder_that_is_a_file_is_one_error_line(
    repo: Path,
    sshd_server: LocalSshd,
    remote_root: Path,
    write_config: WriteConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "state"
    state.write_text("not a folder\n")
    monkeypatch.setenv("OPSWATCH_STATE_DIR", str(state))
    config = write_config(repo, sshd_server, remote_root)
    done = opswatch(config, "sync")
    assert done.returncode == 2
    one_error_line(done, "cannot use the state folder")


# -- status --------------------------------------------------------------------------------------


class _Daemon:
    """Just enough of a daemon for the control server: a status with a huge build output."""

    def __init__(self, detail: str) -> None:
        self.stopping = threading.Event()
        self._status = Status(
            State.WATCHING,
            connected=True,
            host="droplet",
            rebuilds=(RebuildResult("web", False, "2026-01-01T00:00:00Z", detail),),
        )

    def status(self) -> Status:
        return self._status

    def submit(self, name: str, **args: Any) -> Any:
        raise NotImplementedError


def test_status_arrives_whatever_its_size(tmp_path: Path) -> None:
    paths = StatePaths(state=tmp_path, runtime=Path(tmp_path / "run"))
    server = ControlServer(_Daemon("x" * 200_000 + " the end"), paths)  # type: ignore[arg-type]
    server.start()
    try:
        status = ControlClient(paths, "test").request("status")
    finally:
        server.stop()
    assert status["rebuilds"][0]["detail"].endswith(" the end")


# -- health --------------------------------------------------------------------------------------


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """An HTTP server that accepts, then sends one byte of a header every 0.2 s, for ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/health"
    stop.set()
    listener.close()


def test_the_health_check_ends_at_its_deadline_whatever_the_server_does(
    dripping_server: str,
) -> None:
    result: list[tuple[bool, str]] = []
    check = threading.Thread(target=lambda: result.append(check_health(dripping_server, 1)))
    check.start()
    check.join(timeout=30)  # a per-read timeout never ends here: each read gets a byte
    assert not check.is_alive(), "the health check ignored its deadline"
    [(ok, _detail)] = result
    assert not ok


def test_a_bad_health_url_is_a_failure_not_a_crash() -> None:
    ok, detail = check_health("http://[::1/x", 0.1, sleep=lambda _s: None)
    assert not ok and "Invalid IPv6 URL" in detail
