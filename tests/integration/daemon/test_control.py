"""The daemon in the background, through the real CLI: status, pause, resume, flush, the lock.

Each test starts `opswatch run` as a subprocess against the session's real sshd and talks to it
with `opswatch status|pause|resume|flush` subprocesses, as a user does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon_process import DaemonProcess, opswatch
from helpers import wait_until
from opswatch.demo.sshd import LocalSshd
from opswatch.ssh.transfer import is_temp_name

pytestmark = pytest.mark.sshd

RUNBOOK = "docs/ops/runbooks/deploy.md"
QUIET = {"debounce_ms": 100, "max_delay_ms": 300}

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def start_daemon(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config, tmp_path: Path
) -> Iterator[StartDaemon]:
    started: list[DaemonProcess] = []

    def start(*, wait: str = "synced", top: str = "", **overrides: object) -> DaemonProcess:
        """`top`: TOML put before the first table (top-level keys such as `notify`)."""
        overrides.setdefault("sync", QUIET)
        config = write_config(repo, sshd_server, remote_root, **overrides)
        config.write_text(top + config.read_text())
        daemon = DaemonProcess(config, tmp_path / f"daemon-{len(started)}.log")
        started.append(daemon)
        return daemon.start(wait=wait)

    yield start
    for daemon in started:
        daemon.close()


def remote_of(remote_root: Path, local: str) -> Path:
    return remote_root / local  # the seed rules map docs/ops/runbooks/ to the same path


def temp_files(remote_root: Path) -> list[Path]:
    return [p for p in remote_root.rglob("*") if is_temp_name(p.name)]


def edit(repo: Path, relative: str, text: str) -> None:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def let_the_engine_turn(daemon: DaemonProcess) -> None:
    """Two requests the engine answers: it has run a send check between them, then one more."""
    for _ in range(2):
        assert daemon.client.request("reconnect", timeout=30) == {}


# -- not running ------------------------------------------------------------------------------


def test_commands_exit_3_when_no_daemon_runs(
    repo: Path, sshd_server: LocalSshd, remote_root: Path, write_config
) -> None:
    config = write_config(repo, sshd_server, remote_root)
    commands = (["status"], ["status", "--json"], ["pause"], ["resume"], ["flush"], ["stop"])
    for command in (*commands, ["reload"]):
        done = opswatch(config, *command)
        assert done.returncode == 3, (command, done.stdout, done.stderr)
        assert done.stderr.strip() == f"error: opswatch is not running (config {config})"


# -- status -----------------------------------------------------------------------------------


def test_status_json_has_every_documented_field_typed(
    start_daemon: StartDaemon, repo: Path
) -> None:
    daemon = start_daemon()
    done = opswatch(daemon.config, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["state"] in {"watching", "syncing", "paused", "held", "offline", "error"}
    assert status["state"] == "watching"
    assert status["connected"] is True
    assert isinstance(status["pending"], int) and status["pending"] == 0
    assert status["pending_paths"] == []
    assert isinstance(status["last_sync"], str)
    datetime.fromisoformat(status["last_sync"])
    assert status["last_error"] is None
    assert status["paused_until"] is None
    assert isinstance(status["uploaded"], int) and status["uploaded"] == 5  # the seed's 5 files
    assert status["rebuilds"] == []
    assert status["conflicts"] == []
    assert status["pid"] == daemon.pid
    assert status["config"] == str(daemon.config)
    assert isinstance(status["host"], str)


def test_human_status_shows_state_host_pending_and_counters(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    assert opswatch(daemon.config, "pause").returncode == 0
    edit(daemon.config.parent, RUNBOOK, "# changed while paused\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the edit to be pending")
    done = opswatch(daemon.config, "status")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"opswatch is paused  (pid {daemon.pid}, config {daemon.config})" in out
    assert "127.0.0.1, connected for " in out
    assert f"pending:     1: {RUNBOOK}" in out
    assert "paused:      until `opswatch resume`" in out
    assert "uploaded:    5 file(s)" in out
    assert "last error:  —" in out


# -- pause, resume, flush ---------------------------------------------------------------------


def test_pause_records_edits_and_resume_sends_them_in_one_batch(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    before = remote_of(remote_root, RUNBOOK).read_text()
    done = opswatch(daemon.config, "pause")
    assert done.returncode == 0, done.stderr
    edit(repo, RUNBOOK, "# step 1 of a multi-file edit\n")
    edit(repo, "docs/ops/runbooks/rollback.md", "# step 2\n")
    status = daemon.wait_for(lambda s: s["pending"] == 2, "both edits to be pending")
    assert status["state"] == "paused"
    assert set(status["pending_paths"]) == {RUNBOOK, "docs/ops/runbooks/rollback.md"}
    # Past the longest a batch may wait, an unpaused daemon would have sent them by now.
    time.sleep(QUIET["max_delay_ms"] / 1000)
    let_the_engine_turn(daemon)
    assert remote_of(remote_root, RUNBOOK).read_text() == before
    assert not remote_of(remote_root, "docs/ops/runbooks/rollback.md").exists()
    batches_before = len(daemon.events("batch"))

    done = opswatch(daemon.config, "resume")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resumed; sent 2 file(s)"
    # resume answers once the batch landed: no waiting needed
    assert remote_of(remote_root, RUNBOOK).read_text() == "# step 1 of a multi-file edit\n"
    assert remote_of(remote_root, "docs/ops/runbooks/rollback.md").read_text() == "# step 2\n"
    batches = daemon.events("batch")[batches_before:]
    assert len(batches) == 1 and '"files": 2' in batches[0]
    status = daemon.wait_for(lambda s: s["state"] == "watching", "watching again")
    assert status["pending"] == 0 and status["paused_until"] is None


def test_pause_for_a_duration_resumes_by_itself(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    done = opswatch(daemon.config, "pause", "--for", "2s")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("paused until ")
    status = daemon.wait_for(lambda s: s["state"] == "paused", "paused")
    assert isinstance(status["paused_until"], str)
    datetime.fromisoformat(status["paused_until"])
    edit(repo, RUNBOOK, "# sent when the pause runs out\n")
    daemon.wait_for(lambda s: s["state"] == "paused" and s["pending"] == 1, "pending")
    daemon.wait_for(
        lambda s: s["state"] == "watching" and s["pending"] == 0 and s["paused_until"] is None,
        "the pause to run out and the edit to be sent",
    )
    assert remote_of(remote_root, RUNBOOK).read_text() == "# sent when the pause runs out\n"
    assert daemon.events("resumed")


def test_pause_rejects_a_bad_duration(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    done = opswatch(daemon.config, "pause", "--for", "soon")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "duration" in done.stderr


def test_flush_sends_now_and_returns_once_landed(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    # A quiet period nobody waits out: only flush sends.
    daemon = start_daemon(sync={"debounce_ms": 600_000, "max_delay_ms": 600_000})
    edit(repo, RUNBOOK, "# flushed\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the edit to be pending")
    done = opswatch(daemon.config, "flush")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flushed; 1 file(s) landed"
    assert remote_of(remote_root, RUNBOOK).read_text() == "# flushed\n"
    done = opswatch(daemon.config, "flush")
    assert (done.returncode, done.stdout.strip()) == (0, "nothing pending")


def test_with_delete_emptied_folders_go_and_flush_and_status_say_removed(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    runbooks = repo / "docs/ops/runbooks"
    for name in ("old/deep/a.md", "old/b.md", "keep/c.md"):
        (runbooks / name).parent.mkdir(parents=True, exist_ok=True)
        (runbooks / name).write_text(f"{name}\n")
    quiet = {"debounce_ms": 600_000, "max_delay_ms": 600_000, "delete": True}
    daemon = start_daemon(sync=quiet)
    there = remote_root / "docs/ops/runbooks"
    assert (there / "old/deep/a.md").is_file()
    (there / "keep/server-notes.txt").write_text("not opswatch's\n")
    shutil.rmtree(runbooks / "old")
    (runbooks / "keep/c.md").unlink()
    (repo / "docs/ops/docker-compose.production.yml").unlink()  # the only file in ops/
    daemon.wait_for(lambda s: s["pending"] == 4, "the deletes to be pending")
    done = opswatch(daemon.config, "flush")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "flushed; 4 file(s) removed, 2 emptied folder(s) removed"
    assert not (there / "old").exists()
    assert (there / "keep").is_dir() and not (there / "keep/c.md").exists()  # not only ours
    assert (there / "deploy.md").is_file()
    assert (remote_root / "ops").is_dir(), "a rule's `to` folder stays, empty or not"
    status = json.loads(opswatch(daemon.config, "status", "--json").stdout)
    assert (status["removed"], status["removed_folders"]) == (4, 2)
    text = opswatch(daemon.config, "status").stdout
    assert f"uploaded:    {status['uploaded']} file(s), removed 4 and 2 emptied folder(s)" in text
    # The folder comes back when a file goes there again.
    (runbooks / "old").mkdir()
    (runbooks / "old/new.md").write_text("again\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the new file to be pending")
    assert opswatch(daemon.config, "flush").stdout.strip() == "flushed; 1 file(s) landed"
    assert (there / "old/new.md").read_text() == "again\n"


def test_flush_that_fails_exits_1_with_the_error(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    # Where the runbooks' folder must go, the server has a file: they can't land.
    (remote_root / "playbooks").write_text("in the way\n")
    rules = [{"from": "docs/ops", "match": ["runbooks/"], "to": "playbooks"}]
    quiet = {"debounce_ms": 600_000, "max_delay_ms": 600_000}
    daemon = start_daemon(wait="connected", rule=rules, sync=quiet)
    daemon.wait_for(lambda s: s["connected"], "connected")
    edit(repo, RUNBOOK, "# cannot land\n")
    daemon.wait_for(lambda s: RUNBOOK in s["pending_paths"], "the edit to be pending")
    done = opswatch(daemon.config, "flush")
    report = f"stdout={done.stdout!r} stderr={done.stderr!r}\n--- daemon log ---\n{daemon.text}"
    assert done.returncode == 1, report
    assert done.stderr.startswith("error: ") and "not a folder" in done.stderr, report
    assert (remote_root / "playbooks").read_text() == "in the way\n"


def test_pause_survives_a_restart(start_daemon: StartDaemon, repo: Path, remote_root: Path) -> None:
    daemon = start_daemon()
    assert opswatch(daemon.config, "pause").returncode == 0
    assert daemon.stop() == 0

    daemon = start_daemon(wait="connected")
    status = daemon.wait_for(lambda s: s["connected"], "connected again")
    assert status["state"] == "paused"
    edit(repo, RUNBOOK, "# edited after the restart\n")
    daemon.wait_for(lambda s: s["pending"] == 1, "the edit to be pending")
    time.sleep(QUIET["max_delay_ms"] / 1000)
    let_the_engine_turn(daemon)
    assert remote_of(remote_root, RUNBOOK).read_text() != "# edited after the restart\n"
    done = opswatch(daemon.config, "resume")
    assert done.returncode == 0, done.stderr
    assert remote_of(remote_root, RUNBOOK).read_text() == "# edited after the restart\n"


# -- the socket and the lock ------------------------------------------------------------------


def test_socket_folder_is_private(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    folder = daemon.paths.socket.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(daemon.paths.socket.stat().st_mode)
    assert stat.S_IMODE(daemon.paths.socket.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(daemon.paths.lock_file.stat().st_mode) & 0o077 == 0


def test_a_second_instance_is_refused_naming_the_running_pid(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    done = opswatch(daemon.config, "run")
    assert done.returncode != 0
    assert f"already running for {daemon.config} (pid {daemon.pid})" in done.stderr
    status = opswatch(daemon.config, "status", "--json")
    assert status.returncode == 0 and f'"pid": {daemon.pid}' in status.stdout


def test_a_socket_left_by_kill_9_is_reclaimed(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    assert daemon.paths.socket.exists()  # left behind: nobody removed it
    done = opswatch(daemon.config, "status")
    assert done.returncode == 3, done.stderr

    again = start_daemon()
    done = opswatch(again.config, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert f'"pid": {again.pid}' in done.stdout


# -- stopping during a large upload -------------------------------------------------------------

BIG_BYTES = 48 * 1024 * 1024


def _upload_big_file_then_signal(
    daemon: DaemonProcess, repo: Path, remote_root: Path, signals: int
) -> tuple[Path, bytes]:
    content = os.urandom(1024) * (BIG_BYTES // 1024)
    staging = repo / "big.staging"
    staging.write_bytes(content)
    target = remote_of(remote_root, "docs/ops/runbooks/big.md")
    os.replace(staging, repo / "docs/ops/runbooks/big.md")  # one event, the file complete
    folder = target.parent

    def upload_in_flight() -> bool:
        return any(is_temp_name(name) for name in os.listdir(folder))

    wait_until(upload_in_flight, timeout=30, interval=0.002, message="the upload to start")
    daemon.signal(signal.SIGTERM)
    if signals == 2:
        # Two signals sent at once may arrive as one: send the second once the first is seen.
        wait_until(lambda: daemon.events("stopping"), message="the first SIGTERM to be handled")
        daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0, daemon.text
    return target, content


def test_sigterm_during_a_large_upload_lets_it_land_whole(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    target, content = _upload_big_file_then_signal(daemon, repo, remote_root, signals=1)
    assert temp_files(remote_root) == []
    assert target.read_bytes() == content


def test_a_second_sigterm_still_lets_the_upload_land_whole(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    target, content = _upload_big_file_then_signal(daemon, repo, remote_root, signals=2)
    assert temp_files(remote_root) == []
    assert target.read_bytes() == content


# -- telling the outside world ------------------------------------------------------------------


def test_the_service_manager_hears_ready_status_and_stopping(
    start_daemon: StartDaemon, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(state_dir / "notify"))
        manager.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", str(state_dir / "notify"))
        daemon = start_daemon()
        messages = [manager.recv(4096).decode()]
        assert messages[0].startswith("READY=1\nSTATUS=")
        assert f"MAINPID={daemon.pid}" in messages[0]
        while "STATUS=watching · 127.0.0.1 · 0 pending" not in messages[-1]:
            messages.append(manager.recv(4096).decode())
        assert daemon.stop() == 0
        while not messages[-1].startswith("STOPPING=1"):
            messages.append(manager.recv(4096).decode())


def test_a_desktop_notice_once_when_the_daemon_enters_the_error_state(
    start_daemon: StartDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shown = tmp_path / "notices"
    fake = bin_dir / "notify-send"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{shown}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    empty_known_hosts = tmp_path / "known_hosts.empty"
    empty_known_hosts.touch()
    daemon = start_daemon(
        wait="answering", top="notify = true\n", remote={"known_hosts": str(empty_known_hosts)}
    )
    status = daemon.wait_for(lambda s: s["state"] == "error", "the error state")
    assert "not in" in status["last_error"]  # the unknown host key
    wait_until(shown.exists, message="the notice")
    let_the_engine_turn(daemon)  # a reconnect hits the same error: no second notice
    daemon.wait_for(lambda s: s["state"] == "error", "the error state again")
    daemon.stop()
    lines = shown.read_text().splitlines()
    assert len(lines) == 1, lines
    assert "opswatch: 127.0.0.1" in lines[0] and "not in" in lines[0]
