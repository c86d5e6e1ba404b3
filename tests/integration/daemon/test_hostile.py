"""Hostile control requests over the real socket of a real `opswatch run`: each gets an error
reply or a closed connection, and afterwards the daemon still answers, syncs and pauses."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
import test_control
from test_control import RUNBOOK, StartDaemon, edit, remote_of

from daemon_process import DaemonProcess, opswatch
from helpers import wait_until

pytestmark = pytest.mark.sshd

start_daemon = test_control.start_daemon  # the fixture, shared

HOSTILE = [
    b"not json\n",
    b"\xff\xfe\x00\n",
    b"[" * 50_000 + b"\n",  # deeper than the JSON parser recurses
    b"[]\n",
    b'"flush"\n',
    b'{"v": 1}\n',
    b'{"v": true, "cmd": "flush"}\n',
    b'{"v": 1, "cmd": "flush", "args": {"bogus": 1}}\n',
    b'{"v": 1, "cmd": "flush", "args": []}\n',
    b'{"v": 1, "cmd": "status", "args": {"x": 1}}\n',
    b'{"v": 1, "cmd": "pause", "args": {"seconds": "10m"}}\n',
    b'{"v": 1, "cmd": "pause", "args": {"seconds": 8640000000000}}\n',  # 100000000d
    b'{"v": 1, "cmd": "pause", "args": {"seconds": 1e999}}\n',
    b'{"v": 1, "cmd": "pause", "args": {"seconds": -1}}\n',
    b'{"v": 1, "cmd": "rebuilt", "args": {"service": "x", "ok": true}}\n',
    b'{"v": 1, "cmd": "__init__"}\n',
    b'{"v": 1, "cmd": "flush", "args": {"seconds": ' + b"9" * 5000 + b"}}\n",
    b'{"v": 1, "cmd": "' + b"x" * (2 * 1024 * 1024) + b'"}\n',  # a 2 MB line
]


def send_raw(daemon: DaemonProcess, payload: bytes) -> bytes | None:
    """The reply line, or None when the daemon closed the connection without one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        try:
            conn.connect(str(daemon.paths.socket))
        except BlockingIOError:  # the listen backlog is full: the connection is refused
            return None
        try:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            return conn.makefile("rb").readline() or None
        except (ConnectionResetError, BrokenPipeError):
            return None


def refused(reply: bytes | None) -> bool:
    return reply is None or json.loads(reply)["ok"] is False


def test_hostile_requests_are_refused_and_the_daemon_carries_on(
    start_daemon: StartDaemon, repo: Path, remote_root: Path
) -> None:
    daemon = start_daemon()
    for payload in HOSTILE:
        reply = send_raw(daemon, payload)
        assert refused(reply), (payload[:80], reply)
    replies: list[bytes | None] = []

    def flood(payload: bytes) -> None:
        replies.append(send_raw(daemon, payload))

    many = [threading.Thread(target=flood, args=(p,)) for p in HOSTILE * 6]
    for thread in many:
        thread.start()
    for thread in many:
        thread.join(timeout=60)
    assert len(replies) == len(many) and all(refused(r) for r in replies)

    status = json.loads(opswatch(daemon.config, "status", "--json").stdout)
    assert status["state"] == "watching" and status["paused_until"] is None
    edit(repo, RUNBOOK, "# after the hostile requests\n")
    wait_until(
        lambda: remote_of(remote_root, RUNBOOK).read_text() == "# after the hostile requests\n",
        message="the edit to land",
    )
    assert opswatch(daemon.config, "pause", "--for", "10m").returncode == 0
    assert daemon.wait_for(lambda s: s["state"] == "paused", "paused")["paused_until"]
    assert opswatch(daemon.config, "resume").returncode == 0
    daemon.wait_for(lambda s: s["state"] == "watching", "resumed")
    assert '"internal_error"' not in daemon.text
    assert daemon.process is not None and daemon.process.poll() is None


def test_an_absurd_pause_is_refused_by_the_cli_too(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    done = opswatch(daemon.config, "pause", "--for", "100000000d")
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert "at most a year" in done.stderr and "Traceback" not in done.stderr
    assert daemon.wait_for(lambda s: True, "status")["state"] == "watching"
