"""Running a command on the server: one exec channel, both streams drained, a deadline enforced.

The command runs in a process group of its own and first prints the group's id, so that a
deadline stops the whole group remotely instead of leaving an orphan behind: closing an exec
channel without a terminal sends the remote process no signal at all. Where util-linux is there,
``setsid -w`` makes a new session (it waits for the command and passes its exit status on); on a
BusyBox or macOS userland, whose ``setsid`` cannot wait, the shell sshd started is usually the
leader of its own group already (the wrapper checks), and the command simply replaces it. When
neither holds the wrapper says so instead of running a command nobody could stop.

A command that ends without the wrapper ever speaking never ran in a shell: the account allows
SFTP only (``ForceCommand internal-sftp`` answers with a refusal; a forced ``sftp-server`` reads
the end of stdin, which is closed at once, and exits).

stdout and stderr are read as they come, whichever has data (a ``select`` on the channel), so a
command that fills one stream while we wait on the other cannot stall the SSH window. Safe to
call from any thread: paramiko's ``Transport`` serialises channel opening and packet writes.
"""

from __future__ import annotations

import math
import select
import shlex
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paramiko

from opswatch.errors import RemoteCommandError
from opswatch.ssh._compat import wait_exit_status
from opswatch.ssh.failures import CAUGHT, translated

PID_MARK = "opswatch-pgid:"
NO_GROUP_MARK = "opswatch-no-group"
KILL_GRACE_S = 3.0
MARK_WAIT_S = 5.0  # how long a timed-out command may still take to report its group id
READ_SIZE = 256 * 1024


@dataclass
class CommandResult:
    exit_status: int  # -1 when the server sent none (killed by a signal, or timed out)
    output: list[str] = field(default_factory=list)  # the last lines, both streams, as they came
    timed_out: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    shell: bool = True  # False: the wrapper never spoke, no shell ran the command
    no_group: bool = False  # the wrapper found no way to give the command a process group

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


# Run by ``sh -c`` (whatever the login shell is) as ``sh -c WRAPPER opswatch COMMAND MODE``.
# MODE "group" refuses to run without a process group; "any" runs the command regardless.
_WRAPPER = f"""cmd=$1 mode=$2
run='printf "%s\\n" "{PID_MARK}$$"; exec sh -c "$1"'
if setsid -w true </dev/null >/dev/null 2>&1; then exec setsid -w sh -c "$run" opswatch "$cmd"; fi
pg=
if [ -r /proc/$$/stat ]; then set -- $(sed 's/.*) //' /proc/$$/stat); pg=$3; fi
[ -n "$pg" ] || pg=$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ')
if [ "$pg" = "$$" ]; then exec sh -c "$run" opswatch "$cmd"; fi
printf "%s\\n" "{NO_GROUP_MARK}"
if [ "$mode" = any ]; then exec sh -c "$cmd"; fi
exit 125"""


def wrap(command: str, *, need_group: bool = True) -> str:
    """``command`` for the remote login shell, in a process group that reports its id first."""
    mode = "group" if need_group else "any"
    return f"exec sh -c {shlex.quote(_WRAPPER)} opswatch {shlex.quote(command)} {mode}"


class _Lines:
    """Splits one stream's bytes into lines for a shared tail and the caller's callback."""

    def __init__(
        self, tail: deque[str], on_line: Callable[[str], None] | None, *, marks: bool
    ) -> None:
        self.tail = tail
        self.pgid: int | None = None
        self.no_group = False
        self.size = 0
        self._buffer = bytearray()
        self._on_line = on_line
        self._marks = marks  # only stdout carries the group id

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        start = len(self._buffer)  # only the new bytes can hold a newline not yet seen
        self._buffer += data
        while (end := self._buffer.find(b"\n", start)) != -1:
            self._emit(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
            start = 0

    def close(self) -> None:
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if self._marks and self.pgid is None and not self.no_group:
            if line.startswith(PID_MARK) and line[len(PID_MARK) :].isdigit():
                self.size -= len(raw) + 1
                self.pgid = int(line[len(PID_MARK) :])
                return
            if line == NO_GROUP_MARK:
                self.size -= len(raw) + 1
                self.no_group = True
                return
        self.tail.append(line)
        if self._on_line is not None:
            self._on_line(line)


class _Session:
    """One running command: its channel and the two line splitters."""

    def __init__(
        self, channel: paramiko.Channel, keep: int, on_line: Callable[[str], None] | None
    ) -> None:
        self.channel = channel
        self.tail: deque[str] = deque(maxlen=keep)
        self.stdout = _Lines(self.tail, on_line, marks=True)
        self.stderr = _Lines(self.tail, on_line, marks=False)
        self.fd = channel.fileno()  # a pipe paramiko sets when either stream has data

    def drain(self) -> None:
        """Read everything buffered on both streams, without blocking."""
        channel = self.channel
        while channel.recv_ready() or channel.recv_stderr_ready():
            if channel.recv_ready():
                self.stdout.feed(channel.recv(READ_SIZE))
            if channel.recv_stderr_ready():
                self.stderr.feed(channel.recv_stderr(READ_SIZE))

    @property
    def ended(self) -> bool:
        channel = self.channel
        drained = not channel.recv_ready() and not channel.recv_stderr_ready()
        return drained and bool(channel.eof_received or channel.closed)

    def wait(self, seconds: float) -> None:
        select.select([self.fd], [], [], max(0.0, min(seconds, 1.0)))

    def result(self, exit_status: int, *, timed_out: bool = False) -> CommandResult:
        self.stdout.close()
        self.stderr.close()
        return CommandResult(
            exit_status=exit_status,
            output=list(self.tail),
            timed_out=timed_out,
            stdout_bytes=self.stdout.size,
            stderr_bytes=self.stderr.size,
            shell=self.stdout.pgid is not None or self.stdout.no_group,
            no_group=self.stdout.no_group,
        )


def run_command(
    transport: paramiko.Transport,
    command: str,
    *,
    timeout: float,
    on_line: Callable[[str], None] | None = None,
    keep_lines: int = 40,
) -> CommandResult:
    """Run ``command`` through the remote shell; past ``timeout`` seconds its group is stopped.

    ``timeout`` of 0 or less means no deadline (and no process group needed). A lost connection
    raises ``ConnectError``; ``CommandResult.shell`` and ``no_group`` say what the server lacked.
    """
    with translated("cannot start a remote command"):
        channel = transport.open_session(timeout=10)
    try:
        channel.exec_command(wrap(command, need_group=timeout > 0))
        channel.shutdown_write()  # nothing reads stdin; a forced sftp-server sees its end
    except CAUGHT:
        channel.close()
        if transport.is_active():  # the server refuses exec requests: it runs no commands
            return CommandResult(exit_status=-1, shell=False)
        with translated("cannot start a remote command"):
            raise
    deadline = time.monotonic() + timeout if timeout > 0 else math.inf
    try:
        with translated(f"connection lost while running {command!r}"):
            return _follow(transport, _Session(channel, keep_lines, on_line), deadline)
    finally:
        channel.close()


def _follow(transport: paramiko.Transport, session: _Session, deadline: float) -> CommandResult:
    """Read the command's output until it ends, or stop it once ``deadline`` passes."""
    channel = session.channel
    while True:
        session.drain()
        if session.ended:
            break
        if time.monotonic() >= deadline:
            return _stop(transport, session)
        session.wait(deadline - time.monotonic())
    while not wait_exit_status(channel, max(0.0, min(deadline - time.monotonic(), 1.0))):
        # Output closed, process still running (it closed its streams, or a child holds on).
        if channel.closed:
            break
        if time.monotonic() >= deadline:
            return _stop(transport, session)
    return session.result(channel.exit_status)


def _stop(transport: paramiko.Transport, session: _Session) -> CommandResult:
    """The deadline passed: stop the command's process group on the server, then report."""
    mark_deadline = time.monotonic() + MARK_WAIT_S
    while session.stdout.pgid is None and not session.ended:
        if time.monotonic() >= mark_deadline:
            break
        session.wait(mark_deadline - time.monotonic())
        session.drain()
    session.drain()
    stop_group(transport, session.stdout.pgid)
    return session.result(-1, timed_out=True)


def stop_group(transport: paramiko.Transport, pgid: int | None) -> None:
    """TERM the remote process group, KILL what is left after ``KILL_GRACE_S``; wait for it."""
    if pgid is None:
        raise RemoteCommandError("the timed-out command never reported its process group")
    group = f"-{pgid}"
    steps = int(KILL_GRACE_S * 10)
    kill = (
        f"kill -TERM -- {group} 2>/dev/null || exit 0; i=0; "
        f'while kill -0 -- {group} 2>/dev/null && [ "$i" -lt {steps} ]; do '
        "sleep 0.1; i=$((i+1)); done; "
        f"kill -KILL -- {group} 2>/dev/null; true"
    )
    with translated(f"could not stop remote process group {pgid}"):
        channel = transport.open_session(timeout=10)
        try:
            channel.exec_command(kill)
            channel.recv_exit_status()
        finally:
            channel.close()
