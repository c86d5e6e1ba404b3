"""The background's pieces on their own: durations, the status text, the control protocol
(against a stand-in daemon), the lock, sd_notify on real datagram sockets, desktop notices."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opswatch.cli.control import format_status, parse_duration, span
from opswatch.daemon import sdnotify
from opswatch.daemon.control import (
    PROTOCOL_VERSION,
    ControlClient,
    ControlServer,
    check_socket_path,
    peer_uid,
)
from opswatch.daemon.lock import DaemonLock
from opswatch.daemon.notify import DesktopNotifier, StatusMonitor, notice_command, summary
from opswatch.daemon.requests import ControlRequest, Flush, Pause, Resume
from opswatch.errors import AlreadyRunningError, NotRunningError, OpswatchError, UsageError
from opswatch.model import RebuildResult, State, Status
from opswatch.paths import StatePaths

# -- durations and the human status ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *[("30s", 30), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("90", 90)],
        ("365d", 365 * 86400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "soon", "10x", "0s", "-5m", "m10", "1h 30m", "100000000d", "366d", "9" * 400]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (8000, "2h 13m")],
)
def test_spans(seconds: int, text: str) -> None:
    assert span(seconds) == text


NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def status_json(**fields: Any) -> dict[str, Any]:
    base = Status(State.WATCHING, True, "droplet", pid=42, config="/x/opswatch.toml").to_json()
    return {**base, **fields}


def test_human_status_lists_the_first_pending_paths_and_counts_the_rest() -> None:
    paths = [f"docs/ops/runbooks/{n}.md" for n in range(8)]
    text = format_status(
        status_json(
            state="paused",
            pending=8,
            pending_paths=paths,
            connected_since=(NOW - timedelta(hours=2, minutes=13)).isoformat(),
        ),
        NOW,
    )
    assert "opswatch is paused  (pid 42, config /x/opswatch.toml)" in text
    assert "droplet, connected for 2h 13m" in text
    assert "pending:     8: docs/ops/runbooks/0.md, " in text
    assert "docs/ops/runbooks/4.md, … (3 more)" in text
    assert "docs/ops/runbooks/5.md" not in text
    assert "paused:      until `opswatch resume`" in text


def test_human_status_shows_errors_rebuilds_conflicts_held_and_pause_end() -> None:
    rebuild = RebuildResult("demo", False, NOW.isoformat(), "build failed: exit 1")
    text = format_status(
        status_json(
            state="paused",
            connected=False,
            paused_until=(NOW + timedelta(minutes=10)).isoformat(),
            last_error="connection refused",
            rebuilds=[{"service": "demo", "ok": False, "at": rebuild.at, "detail": rebuild.detail}],
            conflicts=["/root/portfolio/ops/docker-compose.production.yml"],
            held=2,
            held_paths=["a", "b"],
            build_gaps=[
                {
                    "service": "coda-mcp-gateway",
                    "source": "src/package.json",
                    "instruction": "COPY",
                    "reason": "not on the server and no rule sends it",
                }
            ],
        ),
        NOW,
    )
    assert "droplet, not connected" in text
    assert "(in 10m)" in text
    assert "last error:  connection refused" in text
    assert "rebuild:     demo FAILED at" in text and "build failed: exit 1" in text
    assert "conflicts:   /root/portfolio/ops/docker-compose.production.yml" in text
    assert "held:        2 file(s) waiting for `opswatch flush`: a, b" in text
    gap = "coda-mcp-gateway: COPY src/package.json: not on the server and no rule sends it"
    assert f"build gap:   {gap}" in text


# -- the control protocol against a stand-in daemon ----------------------------------------------


class StandInDaemon:
    """Answers like the engine: requests resolve on another thread."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.requests: list[ControlRequest] = []
        self.hold = False

    def status(self) -> Status:
        return Status(State.WATCHING, True, "droplet", pid=os.getpid())

    def submit(self, request: ControlRequest) -> Future[dict[str, object]]:
        self.requests.append(request)
        future: Future[dict[str, object]] = Future()
        if isinstance(request, Flush):
            future.set_exception(OpswatchError("2 file(s) failed: disk full"))
        elif not self.hold:
            future.set_result({"echo": request.command, **vars(request)})
        return future


@pytest.fixture
def served(state_dir: Path) -> Iterator[tuple[StandInDaemon, StatePaths]]:
    paths = StatePaths(state_dir / "s", state_dir / "r").ensure()
    daemon = StandInDaemon()
    server = ControlServer(daemon, paths)
    server.start()
    yield daemon, paths
    server.stop()


def test_status_is_answered_without_the_engine(served: tuple[StandInDaemon, StatePaths]) -> None:
    daemon, paths = served
    result = ControlClient(paths, "cfg").request("status")
    assert result["state"] == "watching" and result["pid"] == os.getpid()
    assert daemon.requests == []


def test_engine_commands_are_forwarded_with_their_arguments(
    served: tuple[StandInDaemon, StatePaths],
) -> None:
    daemon, paths = served
    client = ControlClient(paths, "cfg")
    assert client.request("pause", seconds=30.0) == {"echo": "pause", "seconds": 30.0}
    assert client.request("resume") == {"echo": "resume"}
    assert daemon.requests == [Pause(30.0), Resume()]


def test_a_failed_request_keeps_its_message_and_exit_code(
    served: tuple[StandInDaemon, StatePaths],
) -> None:
    _daemon, paths = served
    with pytest.raises(OpswatchError, match="2 file\\(s\\) failed: disk full") as caught:
        ControlClient(paths, "cfg").request("flush", timeout=None)
    assert caught.value.exit_code == 1


def test_a_request_pending_when_the_daemon_stops_is_answered(
    served: tuple[StandInDaemon, StatePaths],
) -> None:
    daemon, paths = served
    daemon.hold = True
    daemon.stopping.set()
    with pytest.raises(OpswatchError, match="stopping"):
        ControlClient(paths, "cfg").request("resume", timeout=None)


def raw_request(paths: StatePaths, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(paths.socket))
        conn.sendall(payload)
        return conn.makefile("rb").readline()


def test_another_protocol_version_is_refused_clearly(
    served: tuple[StandInDaemon, StatePaths],
) -> None:
    _daemon, paths = served
    reply = raw_request(paths, b'{"v": 99, "cmd": "status"}\n')
    assert b'"ok": false' in reply and b"protocol version 99" in reply
    assert f'"v": {PROTOCOL_VERSION}'.encode() in reply
    assert b'"ok": false' in raw_request(paths, b'{"v": 1, "cmd": "rm -rf"}\n')
    assert b"bad request" in raw_request(paths, b"not json\n")


def test_a_peer_with_another_uid_is_refused(state_dir: Path) -> None:
    paths = StatePaths(state_dir / "s", state_dir / "r").ensure()
    server = ControlServer(StandInDaemon(), paths, allowed_uid=os.getuid() + 1)
    server.start()
    try:
        with pytest.raises(OpswatchError, match=f"uid {os.getuid()} may not control"):
            ControlClient(paths, "cfg").request("status")
    finally:
        server.stop()
    assert not paths.socket.exists()


def test_peer_uid_is_the_uid_at_the_other_end() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert peer_uid(left) == os.getuid()


def test_no_socket_means_not_running(state_dir: Path) -> None:
    paths = StatePaths(state_dir, state_dir)
    with pytest.raises(NotRunningError, match=r"opswatch is not running \(config /a/b.toml\)"):
        ControlClient(paths, "/a/b.toml").request("status")


def test_a_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"too long .* OPSWATCH_STATE_DIR"):
        check_socket_path(tmp_path / ("x" * 120) / "control.sock")


def test_the_lock_admits_one_daemon_and_names_it(state_dir: Path) -> None:
    lock_file = state_dir / "daemon.lock"
    running = rf"/a/b.toml \(pid {os.getpid()}\)"
    with DaemonLock(lock_file, "/a/b.toml"), pytest.raises(AlreadyRunningError, match=running):
        DaemonLock(lock_file, "/a/b.toml").acquire()
    with DaemonLock(lock_file, "/a/b.toml"):  # released: taken again
        pass


# -- sd_notify --------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_the_manager_socket(
    abstract: bool, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        if abstract:
            name = f"opswatch-test-{os.getpid()}-{id(manager)}"
            manager.bind(b"\0" + name.encode())
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            manager.bind(str(state_dir / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(state_dir / "notify"))
        manager.settimeout(5)
        assert sdnotify.ready("watching · droplet")
        message = manager.recv(4096).decode().split("\n")
        assert message[:2] == ["READY=1", "STATUS=watching · droplet"]
        assert sdnotify.stopping()
        assert manager.recv(4096).decode().split("\n")[0] == "STOPPING=1"


def test_sd_notify_without_a_manager_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert sdnotify.status("x") is False


# -- desktop notices and the status monitor ----------------------------------------------------


def error_status(error: str | None, state: State = State.ERROR) -> Status:
    return Status(state, False, "droplet", last_error=error)


def test_one_notice_per_distinct_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "notify-send"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    shown: list[Sequence[str]] = []
    notifier = DesktopNotifier(run=shown.append, platform="linux")
    notifier(error_status("host key changed"))
    notifier(error_status("host key changed"))
    notifier(error_status("refused every key", State.OFFLINE))  # not the error state
    notifier(error_status("refused every key"))
    assert [command[-1] for command in shown] == ["host key changed", "refused every key"]
    assert shown[0][0] == str(fake)


def test_osascript_gets_the_texts_as_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "osascript"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    command = notice_command("opswatch", 'say "hi"', platform="darwin")
    assert command is not None and command[-2:] == ["opswatch", 'say "hi"']
    assert all('say "hi"' not in part for part in command[:-1])


def test_status_monitor_calls_listeners_when_the_summary_changes() -> None:
    statuses = [error_status(None, State.WATCHING)] * 2 + [error_status("boom")]
    seen: list[str] = []
    monitor = StatusMonitor(lambda: statuses.pop(0), [lambda s: seen.append(summary(s))])
    for _ in range(3):
        monitor.check()
    assert seen == ["watching · droplet · 0 pending", "error · droplet · 0 pending · error: boom"]
