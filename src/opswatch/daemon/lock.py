"""The daemon lock: one ``opswatch run`` per config.

The daemon holds an ``flock`` on the lock file while it runs. The kernel drops it when the
process dies, even by ``kill -9``, so a socket left behind is known to be stale without probing
it. The file holds the owner's pid, for the message a second instance gets; whatever else it
holds (garbage, nothing) is read as "unknown", never trusted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from opswatch.errors import AlreadyRunningError, StateError

PID_BYTES = 32


class DaemonLock:
    """An exclusive ``flock`` on ``path`` holding the owner's pid; gone when the process ends."""

    def __init__(self, path: Path, config: Path | str) -> None:
        self.path = path
        self.config = config
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _owner(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StateError(f"cannot lock {self.path}: {exc.strerror}") from None
            raise AlreadyRunningError(
                f"opswatch is already running for {self.config} (pid {owner})"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot write the lock file {self.path}: {exc.strerror}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock; the file stays, so no unlink race
        self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _owner(fd: int) -> str:
    """The pid the running owner wrote, or "unknown"."""
    try:
        text = os.pread(fd, PID_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return "unknown"
    return text if text.isdigit() else "unknown"
