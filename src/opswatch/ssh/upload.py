"""Pipelined uploads: many files in flight on the one SFTP channel, from one thread.

Why: on a burst the cost is round trips and per-file requests (open, write, setstat, close,
rename), not bandwidth. paramiko's ``put()`` waits for every reply, so 500 small files cost
2 500 round trips. Here one thread keeps up to ``WINDOW`` files in flight: every request that
is ready goes out without waiting (``sftpwire`` batches them into one channel write), and each
reply moves its file on. Handles are the opaque strings of CMD_HANDLE replies.

Each file keeps the guarantees of ``SshRemote.upload``: a temp name in the target folder; its
writes, then mode and mtime (FSETSTAT on the same handle, which the server applies in order),
then close; only when every one of those replies said OK is ``posix-rename@openssh.com`` sent,
so a failure never leaves a partial target and the temp is removed. Where the server lacks
``fsetstat`` (paramiko-based servers), mode and mtime go by SETSTAT on the closed temp instead;
where it lacks posix-rename (asyncssh with it withheld, appliances), the finished temps are moved
into place by ``mv -f`` over an exec channel after the batch, and without a shell they are not
put in place at all: never a non-atomic write. Missing folders are made
first (parents first) and remembered per connection. A per-file failure becomes that file's
``RemoteFileError`` and the others go on; a broken link raises ``ConnectError`` for the batch.
Content holding a private key block is refused before its first byte is sent (or, in a later
chunk, before the rename), and the sha256 is of the bytes actually sent.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
import stat
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import IO

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_HANDLE,
    CMD_MKDIR,
    CMD_OPEN,
    CMD_REMOVE,
    CMD_SETSTAT,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_TRUNC,
    SFTP_FLAG_WRITE,
    SFTP_OP_UNSUPPORTED,
    int64,
)

from opswatch.errors import RemoteCommandError, RemoteFileError, RemoteFileMissing
from opswatch.model import RemoteFile
from opswatch.ssh.remote import CHUNK, UploadJob, UploadOutcome, holds_private_key, temp_name
from opswatch.ssh.server import NO_ATOMIC_RENAME, POSIX_RENAME, SftpSupport
from opswatch.ssh.wire import Arg, OnReply, Wire, stat_each, status_code, status_error

WINDOW = 64  # files in flight
WRITES_PER_FILE = 8  # 255 KiB writes in flight per big file
MAX_INFLIGHT_BYTES = 16 * 1024 * 1024  # of write payload, over all files
# Moves finished temps onto their targets without SFTP (``SshRemote.move_into_place``).
Mover = Callable[[Sequence[tuple[str, str]]], list[bool]]


class _Stage(enum.Enum):
    OPENING = "opening"  # OPEN sent, waiting for the handle
    WRITING = "writing"  # writes going out
    CLOSING = "closing"  # FSETSTAT + CLOSE sent: rename once every reply said OK
    RENAMING = "renaming"
    PARKED = "parked"  # complete and closed: waits for ``mv -f`` after the batch
    CLEANING = "cleaning"  # failed: closing the handle and removing the temp
    DONE = "done"


class _File:
    """One upload in flight: its local source, temp name, handle and requests outstanding."""

    def __init__(self, index: int, job: UploadJob, source: IO[bytes]) -> None:
        self.index = index  # in the batch
        self.job = job
        self.source = source
        self.temp = temp_name(job.remote)
        self.stage = _Stage.OPENING
        self.handle = b""
        self.digest = hashlib.sha256()
        self.chunk = b""  # read, checked and hashed, not sent yet
        self.offset = 0
        self.eof = False
        self.tail = b""
        self.outstanding = 0
        self.error: RemoteFileError | None = None
        self.refused: str | None = None
        self.needs_setstat = False  # the server had no FSETSTAT: SETSTAT the closed temp

    @property
    def failed(self) -> bool:
        return self.error is not None or self.refused is not None

    def fail(self, error: RemoteFileError | None) -> None:
        if error is not None and not self.failed:
            self.error = error

    def read(self) -> None:
        """Load the next chunk, checked for key blocks and hashed before it can be sent."""
        try:
            chunk = self.source.read(CHUNK)
        except OSError as exc:
            self.fail(RemoteFileError(self.job.remote, f"cannot read: {exc.strerror or exc}"))
            return
        if holds_private_key(self.tail + chunk):
            self.refused = "holds a private key block"
            return
        self.tail = chunk[-64:]
        self.digest.update(chunk)
        self.chunk = chunk
        self.eof = len(chunk) < CHUNK

    def outcome(self) -> UploadOutcome:
        if self.refused is not None:
            return UploadOutcome(self.job, refused=self.refused)
        if self.error is not None:
            return UploadOutcome(self.job, error=self.error)
        return UploadOutcome(self.job, sha256=self.digest.hexdigest(), size=self.offset)


class PipelinedUploader:
    """Uploads a batch with up to ``WINDOW`` files in flight; see the module docstring."""

    def __init__(
        self,
        sftp: paramiko.SFTPClient,
        folders: set[str],
        where: str,
        *,
        support: SftpSupport | None = None,
        move: Mover | None = None,
    ) -> None:
        self.wire = Wire(sftp, where)
        self.folders = folders  # remote folders known to exist on this connection (shared)
        self.support = support or SftpSupport(posix_rename=True)  # learned: shared per link
        self.move = move
        self.parked: list[_File] = []
        self._inflight_bytes = 0
        self._touched: set[int] = set()  # files that got a reply since they were last advanced

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        unusable = self._ensure_folders(posixpath.dirname(j.remote) for j in jobs)
        outcomes: dict[int, UploadOutcome] = {}
        waiting = deque(enumerate(jobs))
        active: dict[int, _File] = {}
        try:
            while waiting or active:
                while waiting and len(active) < WINDOW:
                    index, job = waiting.popleft()
                    error = unusable.get(posixpath.dirname(job.remote))
                    started = UploadOutcome(job, error=error) if error else self._start(index, job)
                    if isinstance(started, UploadOutcome):
                        outcomes[index] = started
                    else:
                        active[index] = started
                        self._touched.add(index)
                touched, self._touched = self._touched, set()
                for index in touched:
                    file = active[index]
                    self._advance(file)
                    if file.stage is _Stage.DONE:
                        file.source.close()
                        outcomes[index] = file.outcome()
                        del active[index]
                    elif file.stage is _Stage.PARKED:
                        file.source.close()
                        self.parked.append(file)
                        del active[index]
                if active:
                    self.wire.pump()
        finally:
            for file in active.values():
                file.source.close()
        for file in self._move_parked():
            outcomes[file.index] = file.outcome()
        return [outcomes[i] for i in range(len(jobs))]

    def _move_parked(self) -> list[_File]:
        """Put the parked temps in place with ``mv -f``; remove those that could not be."""
        parked, self.parked = self.parked, []
        if not parked:
            return []
        try:
            if self.move is None:
                raise RemoteCommandError("no way to run `mv -f` here")
            landed = self.move([(f.temp, f.job.remote) for f in parked])
        except RemoteCommandError:
            landed = [False] * len(parked)
            for file in parked:
                file.fail(RemoteFileError(file.job.remote, NO_ATOMIC_RENAME))
        for file, ok in zip(parked, landed, strict=True):
            if not ok:
                file.fail(RemoteFileError(file.job.remote, "`mv -f` could not put it in place"))
                self.wire.send(CMD_REMOVE, _ignored, file.temp)
        self.wire.drain()
        return parked

    # -- folders ---------------------------------------------------------------------------

    def _ensure_folders(self, wanted: Iterable[str]) -> dict[str, RemoteFileError]:
        """Make the missing folders, parents first; returns the folders that cannot be used."""
        unknown: set[str] = set()
        for folder in set(wanted):
            while folder not in self.folders and folder not in ("", "/"):
                unknown.add(folder)
                folder = posixpath.dirname(folder)
        if not unknown:
            return {}
        found = stat_each(self.wire.sftp, sorted(unknown), self.wire.where)
        broken: dict[str, RemoteFileError] = {}
        missing = []
        for folder, info in found.items():
            if info is None:
                missing.append(folder)
            elif isinstance(info, RemoteFileError):
                broken[folder] = info  # e.g. permission denied: its files fail, others go on
            elif stat.S_ISDIR(info.mode):
                self.folders.add(folder)
            else:
                broken[folder] = RemoteFileError(folder, "exists and is not a folder")
        # One depth per round trip: a folder's mkdir goes out only once its parent exists.
        for depth in sorted({f.count("/") for f in missing}):
            self._mkdir([f for f in missing if f.count("/") == depth], broken)
        unusable = {}
        for folder in unknown:
            error = _broken_above(folder, broken)
            if error is not None:
                unusable[folder] = error
        return unusable

    def _mkdir(self, folders: list[str], broken: dict[str, RemoteFileError]) -> None:
        refused: list[str] = []
        for folder in folders:
            if _broken_above(posixpath.dirname(folder), broken) is not None:
                continue

            def made(kind: int, msg: Message, folder: str = folder) -> None:
                if status_error(kind, msg, folder) is None:
                    self.folders.add(folder)
                else:
                    refused.append(folder)

            self.wire.send(CMD_MKDIR, made, folder, _attrs(mode=0o755))
        self.wire.drain()
        if refused:  # made meanwhile by someone else is fine; anything else is not
            for folder, info in stat_each(self.wire.sftp, refused, self.wire.where).items():
                if isinstance(info, RemoteFile) and stat.S_ISDIR(info.mode):
                    self.folders.add(folder)
                else:
                    broken[folder] = RemoteFileError(folder, "cannot create the folder")

    # -- files -----------------------------------------------------------------------------

    def _start(self, index: int, job: UploadJob) -> _File | UploadOutcome:
        try:
            source = open(job.source, "rb")  # noqa: SIM115 - closed when the file is done
        except OSError as exc:
            reason = (
                "local file vanished"
                if isinstance(exc, FileNotFoundError)
                else f"cannot read the local file: {exc.strerror or exc}"
            )
            return UploadOutcome(job, error=RemoteFileError(job.remote, reason))
        file = _File(index, job, source)
        file.read()  # a refused file sends nothing at all, not even the OPEN
        if file.failed:
            source.close()
            return file.outcome()
        self._send(file, CMD_OPEN, self._on_open(file), file.temp, _OPEN_FLAGS, _attrs())
        return file

    def _send(self, file: _File, kind: int, on_reply: OnReply, *args: Arg) -> None:
        file.outstanding += 1

        def reply(kind: int, msg: Message) -> None:
            file.outstanding -= 1
            self._touched.add(file.index)
            on_reply(kind, msg)

        self.wire.send(kind, reply, *args)

    def _on_open(self, file: _File) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if kind == CMD_HANDLE:
                file.handle = msg.get_binary()
                file.stage = _Stage.WRITING
                return
            error = status_error(kind, msg, file.job.remote)
            file.fail(error or RemoteFileError(file.job.remote, "the server sent no handle"))
            file.stage = _Stage.DONE  # no temp was made: nothing to clean up
            if isinstance(error, RemoteFileMissing):
                self.folders.discard(posixpath.dirname(file.job.remote))

        return reply

    def _checked(self, file: _File, payload: int = 0) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            self._inflight_bytes -= payload
            file.fail(status_error(kind, msg, file.job.remote))

        return reply

    def _advance(self, file: _File) -> None:
        """Send whatever this file can send now; move it on once its replies are in."""
        if file.stage is _Stage.WRITING:
            if file.failed:
                self._clean_up(file, close=True)
            else:
                self._write(file)
        elif file.stage is _Stage.CLOSING and file.outstanding == 0:
            if file.failed:
                self._clean_up(file, close=False)
            elif file.needs_setstat:
                file.needs_setstat = False
                self._send(file, CMD_SETSTAT, self._checked(file), file.temp, self._attrs(file))
            elif self.support.posix_rename is False:
                file.stage = _Stage.PARKED
            else:
                file.stage = _Stage.RENAMING
                args = (POSIX_RENAME, file.temp, file.job.remote)
                self._send(file, CMD_EXTENDED, self._on_renamed(file), *args)
        elif file.stage is _Stage.CLEANING and file.outstanding == 0:
            file.stage = _Stage.DONE

    def _write(self, file: _File) -> None:
        while file.outstanding < WRITES_PER_FILE and not file.failed:
            if file.chunk:
                size = len(file.chunk)
                if self._inflight_bytes + size > MAX_INFLIGHT_BYTES and file.outstanding:
                    return  # other files hold the budget; this one has writes in flight
                self._inflight_bytes += size
                args = (file.handle, int64(file.offset), file.chunk)
                self._send(file, CMD_WRITE, self._checked(file, size), *args)
                file.offset += size
                file.chunk = b""
            if not file.eof:
                file.read()
                continue
            # Mode and mtime on the handle, after the writes (in order on one handle).
            if self.support.fsetstat:
                attrs = self._attrs(file)
                self._send(file, CMD_FSETSTAT, self._on_fsetstat(file), file.handle, attrs)
            else:
                file.needs_setstat = True
            self._send(file, CMD_CLOSE, self._checked(file), file.handle)
            file.stage = _Stage.CLOSING
            return
        if file.failed:
            self._clean_up(file, close=True)

    @staticmethod
    def _attrs(file: _File) -> paramiko.SFTPAttributes:
        return _attrs(mode=file.job.mode, mtime=file.job.mtime_ns // 1_000_000_000)

    def _on_fsetstat(self, file: _File) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if status_code(kind, msg) == SFTP_OP_UNSUPPORTED:
                self.support.fsetstat = False
                file.needs_setstat = True
                return
            file.fail(status_error(kind, msg, file.job.remote))

        return reply

    def _on_renamed(self, file: _File) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if status_code(kind, msg) == SFTP_OP_UNSUPPORTED:
                self.support.posix_rename = False  # not advertised, and not there either
                file.stage = _Stage.PARKED
                return
            if self.support.posix_rename is None and status_code(kind, msg) == 0:
                self.support.posix_rename = True
            file.fail(status_error(kind, msg, file.job.remote, "rename"))
            if file.failed:
                self._clean_up(file, close=False)
            else:
                file.stage = _Stage.DONE

        return reply

    def _clean_up(self, file: _File, *, close: bool) -> None:
        """Close the handle (if still open) and remove the temp; their replies are ignored."""
        file.stage = _Stage.CLEANING
        if close:
            self._send(file, CMD_CLOSE, _ignored, file.handle)
        self._send(file, CMD_REMOVE, _ignored, file.temp)


_OPEN_FLAGS = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC


def _ignored(kind: int, msg: Message) -> None:
    pass


def _attrs(*, mode: int | None = None, mtime: int | None = None) -> paramiko.SFTPAttributes:
    attrs = paramiko.SFTPAttributes()
    if mode is not None:
        attrs.st_mode = mode
    if mtime is not None:
        attrs.st_atime = attrs.st_mtime = mtime
    return attrs


def _broken_above(folder: str, broken: dict[str, RemoteFileError]) -> RemoteFileError | None:
    """The error of ``folder`` or of the nearest broken folder above it."""
    while folder not in ("", "/"):
        if folder in broken:
            return broken[folder]
        folder = posixpath.dirname(folder)
    return None
