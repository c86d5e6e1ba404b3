"""The one guarded way to look at and read a local file: no link, FIFO or swapped file gets through.

``inspect`` decides what a path is. A symlink (or a linked folder on the way) is followed only
when its target lies inside the same watched folder *and* the target's own path passes
``never``; a file with more than one hard link may be a secret's other name and is refused
unless ``sync.allow_hard_links``; a FIFO, socket or device is refused, never read.

A followed link is remembered with its target (``links_to``), so that a change to the target
can send the link again. A link to a folder is not walked (its files would go twice, and its
changes arrive under the target's path): ``inspect`` refuses it with the reason.

``open`` reads what ``inspect`` checked, and only that: the path is opened one component at a
time below the watched folder (``openat`` with ``O_NOFOLLOW``), so a link swapped in after the
check is not followed; with ``O_NONBLOCK``, so a FIFO swapped in cannot block the engine; and the
open descriptor is ``fstat``-ed: it must be the regular file (device, inode) that was checked.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

from opswatch.core.rules import Router
from opswatch.errors import LocalFileError, LocalRefusedError
from opswatch.model import LocalFile, Refusal, Skip, storable_ns

IGNORE_FILE_CAP = 1024 * 1024  # bytes; an ignore file is a few lines, never a disk image
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def watched_folder_of(path: str, folders: tuple[str, ...]) -> str | None:
    for folder in folders:
        if folder == "" or path.startswith(folder + "/"):
            return folder
    return None


def _below(path: str, folder: str) -> str:
    return path if folder == "" else path[len(folder) + 1 :]


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class LocalTree:
    """The watched folders of one ``local.root``, seen through ``inspect`` and ``open``."""

    def __init__(
        self,
        root: Path,
        folders: tuple[str, ...],
        router: Router,
        *,
        allow_hard_links: bool = False,
    ) -> None:
        self.root = root
        self.folders = folders
        self.router = router
        self.allow_hard_links = allow_hard_links
        self._real_folders: dict[str, str] = {}
        self._links: dict[str, set[str]] = {}  # target → the followed links leading to it
        self._target_of: dict[str, str] = {}  # link → its target, as last inspected

    def links_to(self, target: str) -> tuple[str, ...]:
        """The followed links whose target is ``target``, as last inspected."""
        return tuple(sorted(self._links.get(target, ())))

    def _remember(self, path: str, target: str | None) -> None:
        """``path`` leads to ``target`` (None: it is no followed link, or gone)."""
        old = self._target_of.pop(path, None)
        if old is not None:
            self._links[old].discard(path)
            if not self._links[old]:
                del self._links[old]
        if target is not None:
            self._target_of[path] = target
            self._links.setdefault(target, set()).add(path)

    def _base(self, path: str) -> tuple[str, str]:
        """(the watched folder holding ``path``, its real location on disk)."""
        folder = watched_folder_of(path, self.folders) or ""
        if folder not in self._real_folders:
            self._real_folders[folder] = os.path.realpath(os.path.join(self.root, folder))
        return folder, self._real_folders[folder]

    def inspect(self, path: str, *, walked: bool = False) -> LocalFile | Skip | None:
        """What is at ``path`` now: a file that may be read, a refusal, or None (gone, a folder).

        ``walked``: found by a walk that follows no folder link, so only the last component
        can be a link (saves a ``realpath`` per file of a big tree).
        """
        found = self._inspect(path, walked)
        self._remember(path, (found.real or None) if isinstance(found, LocalFile) else None)
        return found

    def _inspect(self, path: str, walked: bool) -> LocalFile | Skip | None:
        full = os.path.join(self.root, path)
        try:
            info = os.lstat(full)
            target = path
            via_link = stat.S_ISLNK(info.st_mode)
            if via_link or (not walked and os.path.realpath(full) != self._expected(path)):
                followed = self._follow(path, full)
                if isinstance(followed, Skip):
                    return followed
                target, info = followed
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            return Skip(path, f"cannot read: {exc.strerror}", refusal=Refusal.UNREADABLE)
        if stat.S_ISDIR(info.st_mode):
            if via_link:
                return Skip(
                    path,
                    f"symlink to the folder {target}/: a linked folder is not walked",
                    refusal=Refusal.SYMLINK_FOLDER,
                )
            return None
        if not stat.S_ISREG(info.st_mode):
            return Skip(
                path, "not a regular file (FIFO, socket or device)", refusal=Refusal.NOT_REGULAR
            )
        if info.st_nlink > 1 and not self.allow_hard_links:
            return Skip(
                path,
                f"has {info.st_nlink} hard links (sync.allow_hard_links is off)",
                refusal=Refusal.HARD_LINK,
            )
        return LocalFile(
            size=info.st_size,
            mtime_ns=storable_ns(info.st_mtime_ns),
            mode=stat.S_IMODE(info.st_mode),
            dev=info.st_dev,
            ino=info.st_ino,
            real="" if target == path else target,
        )

    def _expected(self, path: str) -> str:
        folder, real_folder = self._base(path)
        below = _below(path, folder)
        return os.path.join(real_folder, *below.split("/")) if below else real_folder

    def _follow(self, path: str, full: str) -> tuple[str, os.stat_result] | Skip:
        """Where a link on the way to ``path`` leads, if it may be followed."""
        folder, real_folder = self._base(path)
        real = os.path.realpath(full)
        if not _within(real, real_folder) or real == real_folder:
            shown = folder or "."
            return Skip(path, f"symlink leads outside {shown}/", refusal=Refusal.SYMLINK_OUTSIDE)
        below = os.path.relpath(real, real_folder).replace(os.sep, "/")
        target = f"{folder}/{below}" if folder else below
        if reason := self.router.never_reason(target):
            return Skip(
                path, f"symlink to {target}, which {reason}", refusal=Refusal.SYMLINK_TO_NEVER
            )
        return target, os.stat(real)

    def open(self, path: str, checked: LocalFile) -> io.BufferedReader:
        """The file ``inspect`` checked, opened for reading; see the module docstring."""
        target = checked.real or path
        fd = self._open_beneath(target)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise LocalRefusedError(f"{path}: not a regular file any more", Refusal.NOT_REGULAR)
            # The size too: a file deleted and made again may get the freed inode back.
            seen = (info.st_dev, info.st_ino, info.st_size)
            if seen != (checked.dev, checked.ino, checked.size):
                raise LocalFileError(f"{path}: changed since it was checked")
            if info.st_nlink > 1 and not self.allow_hard_links:
                raise LocalRefusedError(
                    f"{path}: has {info.st_nlink} hard links", Refusal.HARD_LINK
                )
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def _open_beneath(self, path: str) -> int:
        folder, real_folder = self._base(path)
        return open_beneath(real_folder, _below(path, folder), path)


def open_beneath(real_folder: str, below: str, shown: str) -> int:
    """``below`` opened read-only under ``real_folder``, no link on the way followed."""
    parts = below.split("/")
    fd = os.open(real_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise LocalRefusedError(
                f"{shown}: a symlink where a file or folder was", Refusal.NOT_REGULAR
            ) from exc
        raise
    finally:
        os.close(fd)


def read_small(root: Path, path: str, cap: int = IGNORE_FILE_CAP) -> bytes:
    """A small file (an ignore file; ``path`` relative to ``root``) read the guarded way:
    a link, a FIFO, a device or more than ``cap`` bytes raises ``LocalFileError``."""
    try:
        fd = open_beneath(os.path.realpath(root), path, path)
    except OSError as exc:
        raise LocalFileError(f"{path}: cannot read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise LocalRefusedError(f"{path}: not a regular file", Refusal.NOT_REGULAR)
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise LocalFileError(f"{path}: larger than {cap // 1024} KiB")
    return data


def read_regular(path: Path, cap: int) -> bytes | None:
    """The bytes of the regular file at ``path`` (absolute) when it holds at most ``cap``;
    None for anything else: a link at its end, a FIFO or device (never blocks), a bigger file,
    an error. For copies kept after an upload, checked by their hash, not for what is sent."""
    try:
        fd = os.open(path, _FILE_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            found = os.fstat(handle.fileno())
            if not stat.S_ISREG(found.st_mode) or found.st_size > cap:
                return None
            data = handle.read(cap + 1)
        except OSError:
            return None
    return data if len(data) <= cap else None
