"""Telling the world outside about the daemon's state: the service manager's STATUS line, and
an optional desktop notice (``notify = true``) when the daemon enters the error state.

A ``StatusMonitor`` thread polls the daemon's thread-safe snapshot and calls its listeners when
the one-line summary changes; the engine thread never waits on a slow ``notify-send``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

import structlog

from opswatch.daemon import sdnotify
from opswatch.model import State, Status

log = structlog.get_logger("opswatch.notify")

Listener = Callable[[Status], None]
Runner = Callable[[Sequence[str]], None]

POLL_S = 1.0
NOTICE_TIMEOUT_S = 10.0
TITLE = "opswatch"
# AppleScript gets the texts as arguments, never spliced into the script: no quoting to get wrong.
OSASCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


def summary(status: Status) -> str:
    """One line for `systemctl status`: state, host, pending, the error if there is one."""
    text = f"{status.state.value} · {status.host} · {status.pending} pending"
    if status.held_paths:
        text += f" · {len(status.held_paths)} held"
    if status.last_error:
        text += f" · error: {status.last_error}"
    return text


def notice_command(title: str, body: str, platform: str = sys.platform) -> list[str] | None:
    """The desktop notice command for this platform, or None when there is none."""
    if platform == "darwin":
        osascript = shutil.which("osascript")
        if osascript is None:
            return None
        return [osascript, *(arg for line in OSASCRIPT for arg in ("-e", line)), title, body]
    notify_send = shutil.which("notify-send")
    if notify_send is None:
        return None
    return [notify_send, "--app-name", TITLE, "--urgency", "critical", title, body]


def _run_quietly(command: Sequence[str]) -> None:
    done = subprocess.run(
        list(command), capture_output=True, text=True, timeout=NOTICE_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        log.warning("notice_failed", command=command[0], error=done.stderr.strip()[:200])


class DesktopNotifier:
    """Shows one desktop notice per distinct error while the daemon is in the error state."""

    def __init__(self, run: Runner = _run_quietly, platform: str = sys.platform) -> None:
        self.run = run
        self.platform = platform
        self._shown: set[str] = set()
        self._missing_logged = False

    def __call__(self, status: Status) -> None:
        if status.state is not State.ERROR:
            return
        error = status.last_error or "opswatch stopped syncing"
        if error in self._shown:
            return
        self._shown.add(error)
        command = notice_command(f"{TITLE}: {status.host}", error, self.platform)
        if command is None:
            if not self._missing_logged:
                log.warning("notice_unavailable", reason="neither notify-send nor osascript found")
                self._missing_logged = True
            return
        try:
            self.run(command)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notice_failed", command=command[0], error=str(exc))
        else:
            log.info("notice", error=error)


def service_status(status: Status) -> None:
    sdnotify.status(summary(status))


class StatusMonitor:
    """Polls ``snapshot`` and calls every listener when the summary line changes."""

    def __init__(
        self, snapshot: Callable[[], Status], listeners: Sequence[Listener], poll: float = POLL_S
    ) -> None:
        self.snapshot = snapshot
        self.listeners = list(listeners)
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="opswatch-status", daemon=True)
        self._last: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def check(self) -> None:
        status = self.snapshot()
        line = summary(status)
        if line == self._last:
            return
        self._last = line
        for listener in self.listeners:
            try:
                listener(status)
            except Exception as exc:  # a broken notice must not end status reporting
                log.warning("status_listener_failed", error=str(exc))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.poll)
