"""Temp files opened ahead of their upload, and the flags and attributes every temp opens with.

A watched batch first looks at its targets (is the server's copy still the one we sent?), then
uploads them; the temps' OPENs go out with that look (``prepare``), so the upload that follows
goes straight to its writes (see ``upload``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_REMOVE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
)

from opswatch.ssh.transfer import TEMP_MODE, temp_name
from opswatch.ssh.wire import Wire

OPEN_FLAGS = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC


def ignored(kind: int, msg: Message) -> None:
    """For the replies of a clean-up: whatever it finds, the file's outcome is already decided."""


def sftp_attrs(*, mode: int | None = None, mtime: int | None = None) -> paramiko.SFTPAttributes:
    """The attributes an OPEN (none: the server's defaults) or an FSETSTAT carries."""
    result = paramiko.SFTPAttributes()
    if mode is not None:
        result.st_mode = mode
    if mtime is not None:
        result.st_atime = result.st_mtime = mtime
    return result


@dataclass(frozen=True)
class Prepared:
    """A temp file opened for a target before the upload was decided (see ``prepare``)."""

    temp: str
    handle: bytes


def prepare(wire: Wire, targets: Sequence[str], prepared: dict[str, Prepared]) -> None:
    """OPEN a temp next to each target, in the flight that looks at the targets.

    Why: a watched batch first looks at its targets (is the server's copy still the one we
    sent?), then uploads. The OPEN would cost a round trip of its own after that look; sent
    with it, a file costs two round trips from the look to its rename, not three. A target the
    batch does not upload after all has its temp closed and removed (``discard``).
    """
    for target in dict.fromkeys(targets):
        temp = temp_name(target)

        def opened(kind: int, msg: Message, target: str = target, temp: str = temp) -> None:
            if kind == CMD_HANDLE:
                prepared[target] = Prepared(temp, msg.get_binary())

        wire.send(CMD_OPEN, opened, temp, OPEN_FLAGS, sftp_attrs(mode=TEMP_MODE))


def discard(wire: Wire, prepared: dict[str, Prepared]) -> None:
    """Close and remove the temps that were prepared and not used (replies: the next drain)."""
    for unused in prepared.values():
        wire.send(CMD_CLOSE, ignored, unused.handle)
        wire.send(CMD_REMOVE, ignored, unused.temp)
    prepared.clear()
