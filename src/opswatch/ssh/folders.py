"""The remote folders an upload batch needs: found or made, parents first, before any file.

Folders known to exist are remembered per connection (the caller's set), so a batch into
known folders costs nothing here. Unknown ones are looked at in one round trip; the missing
ones are made one depth per round trip (a folder's MKDIR goes out once its parent exists).
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Iterable

import paramiko
from paramiko.message import Message
from paramiko.sftp import CMD_MKDIR

from opswatch.errors import RemoteFileError
from opswatch.model import RemoteFile
from opswatch.ssh.wire import Wire, stat_on, status_error


def ensure_folders(
    wire: Wire, known: set[str], wanted: Iterable[str]
) -> dict[str, RemoteFileError]:
    """Make the missing folders, parents first; returns the folders that cannot be used."""
    unknown: set[str] = set()
    for folder in set(wanted):
        while folder not in known and folder not in ("", "/"):
            unknown.add(folder)
            folder = posixpath.dirname(folder)
    if not unknown:
        return {}
    broken: dict[str, RemoteFileError] = {}
    missing = []
    for folder, info in stat_on(wire, sorted(unknown)).items():
        if info is None:
            missing.append(folder)
        elif isinstance(info, RemoteFileError):
            broken[folder] = info  # e.g. permission denied: its files fail, others go on
        elif stat.S_ISDIR(info.mode):
            known.add(folder)
        else:
            broken[folder] = RemoteFileError(folder, "exists and is not a folder")
    for depth in sorted({f.count("/") for f in missing}):
        _mkdir(wire, known, [f for f in missing if f.count("/") == depth], broken)
    unusable = {}
    for folder in unknown:
        error = broken_above(folder, broken)
        if error is not None:
            unusable[folder] = error
    return unusable


def _mkdir(
    wire: Wire, known: set[str], folders: list[str], broken: dict[str, RemoteFileError]
) -> None:
    refused: list[str] = []
    for folder in folders:
        if broken_above(posixpath.dirname(folder), broken) is not None:
            continue

        def made(kind: int, msg: Message, folder: str = folder) -> None:
            if status_error(kind, msg, folder) is None:
                known.add(folder)
            else:
                refused.append(folder)

        attrs = paramiko.SFTPAttributes()
        attrs.st_mode = 0o755
        wire.send(CMD_MKDIR, made, folder, attrs)
    wire.drain()
    if refused:  # made meanwhile by someone else is fine; anything else is not
        for folder, info in stat_on(wire, refused).items():
            if isinstance(info, RemoteFile) and stat.S_ISDIR(info.mode):
                known.add(folder)
            else:
                broken[folder] = RemoteFileError(folder, "cannot create the folder")


def broken_above(folder: str, broken: dict[str, RemoteFileError]) -> RemoteFileError | None:
    """The error of ``folder`` or of the nearest broken folder above it."""
    while folder not in ("", "/"):
        if folder in broken:
            return broken[folder]
        folder = posixpath.dirname(folder)
    return None
