"""Running a command on the server: one exec channel, output streamed, a deadline enforced.

The command runs in its own session (``setsid``) and first reports its process-group id, so
that a deadline can stop the whole group remotely instead of leaving an orphan behind.
"""

from __future__ import annotations

import shlex
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from opswatch.errors import ConnectError, RemoteCommandError

PID_MARK = "opswatch-pgid:"
KILL_GRACE_S = 3.0


@dataclass
class CommandResult:
    exit_status: int
    output: list[str] = field(default_factory=list)  # the last lines, stdout and stderr merged
    timed_out: bool = False


def wrap(command: str) -> str:
    inner = f'printf "%s\\n" "{PID_MARK}$$"; exec sh -c "$1"'
    return f"exec setsid sh -c {shlex.quote(inner)} opswatch {shlex.quote(command)}"


class _Lines:
    """Splits streamed bytes into lines, remembering the last few and the process-group id."""

    def __init__(self, keep: int, on_line: Callable[[str], None] | None) -> None:
        self.tail: deque[str] = deque(maxlen=keep)
        self.pgid: int | None = None
        self._buffer = b""
        self._on_line = on_line

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            self._emit(raw)

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = b""

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if self.pgid is None and line.startswith(PID_MARK):
            self.pgid = int(line[len(PID_MARK) :])
            return
        self.tail.append(line)
        if self._on_line is not None:
            self._on_line(line)


def run_command(
    transport: paramiko.Transport,
    command: str,
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    keep_lines: int = 40,
) -> CommandResult:
    try:
        channel = transport.open_session(timeout=10)
        channel.set_combine_stderr(True)  # one stream: no deadlock on a full stderr window
        channel.exec_command(wrap(command))
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectError(f"cannot start a remote command: {exc}") from exc
    lines = _Lines(keep_lines, on_line)
    deadline = time.monotonic() + timeout
    channel.settimeout(0.5)
    try:
        while True:
            try:
                data = channel.recv(65536)
            except TimeoutError:
                data = None
            if data:
                lines.feed(data)
            elif data == b"":
                break
            if time.monotonic() > deadline:
                _stop_group(transport, lines.pgid)
                lines.close()
                return CommandResult(exit_status=-1, output=list(lines.tail), timed_out=True)
        lines.close()
        status = channel.recv_exit_status()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise ConnectError(f"connection lost while running {command!r}: {exc}") from exc
    finally:
        channel.close()
    return CommandResult(exit_status=status, output=list(lines.tail))


def _stop_group(transport: paramiko.Transport, pgid: int | None) -> None:
    if pgid is None:
        return
    kill = (
        f"kill -TERM -- -{pgid} 2>/dev/null; sleep {KILL_GRACE_S:g}; "
        f"kill -KILL -- -{pgid} 2>/dev/null; true"
    )
    try:
        channel = transport.open_session(timeout=10)
        channel.exec_command(kill)
        channel.recv_exit_status()
        channel.close()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise RemoteCommandError(f"could not stop remote process group {pgid}: {exc}") from exc
