"""Pipelined uploads: a whole batch in flight on the one SFTP channel, from one thread.

Why: on a real link the cost of a burst is round trips, not bytes. paramiko's ``put()`` waits
for every reply: 500 small files cost 2 500 round trips. Here every request that is ready goes
out without waiting (``wire`` packs them into full SSH packets) and each reply moves its file
on. What is in flight is bounded by bytes (``WINDOW_BYTES``: several times bandwidth × delay of
any link we aim at), so all OPENs of a batch leave together, and by the server's handles.

A file's life: OPEN of a temp name in the target folder; then in one flight its WRITEs, mode
and mtime (FSETSTAT on the handle), CLOSE; then ``posix-rename@openssh.com`` over the target,
only once every other reply of the file said OK. Sending the rename with the close would save a
round trip on a server that serves requests in order (OpenSSH's does), but a write the server
refuses (a full disk) would then be followed by the rename of the part that fit: the target
replaced by a partial file. A file costs three round trips; a watched batch's look at its
targets opens their temps in the same flight, which saves one of them. Where the server lacks
``fsetstat`` (paramiko-based servers), mode and mtime go by SETSTAT on the closed temp
instead; where it lacks posix-rename (asyncssh with it withheld, appliances), the finished temps
are moved into place by ``mv -f`` over an exec channel after the batch, and without a shell they
are not put in place at all: never a non-atomic write. Every reply is checked: a failure
becomes that file's ``RemoteFileError`` (its temp removed) and the others go on; a broken link
raises ``ConnectError`` for the batch. Content holding a private key block is refused before
its first byte is sent (or, in a later chunk, before the rename); the sha256 is of the bytes
sent.
"""

from __future__ import annotations

import enum
import hashlib
import posixpath
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_REMOVE,
    CMD_SETSTAT,
    CMD_WRITE,
    SFTP_OP_UNSUPPORTED,
    int64,
)

from opswatch.core.keyblock import KEY_REFUSAL, TAIL, holds_private_key
from opswatch.errors import (
    LocalFileError,
    LocalRefusedError,
    RemoteCommandError,
    RemoteFileError,
    RemoteFileMissing,
)
from opswatch.model import Refusal
from opswatch.ssh.folders import ensure_folders
from opswatch.ssh.opening import OPEN_FLAGS, Prepared, discard, ignored, sftp_attrs
from opswatch.ssh.server import NO_ATOMIC_RENAME, POSIX_RENAME, SftpSupport
from opswatch.ssh.traits import ServerTraits
from opswatch.ssh.transfer import (
    CHUNK,
    TEMP_MODE,
    UploadJob,
    UploadOutcome,
    final_mode,
    sftp_mtime,
    temp_name,
)
from opswatch.ssh.wire import Arg, OnReply, Wire, status_code, status_error

WINDOW_BYTES = 8 * 1024 * 1024  # in flight: file data read and not yet acknowledged, + overhead
FILE_COST = 512  # what one file's five requests and their replies weigh, beyond its data
# Moves finished temps onto their targets without SFTP (``SshRemote.move_into_place``).
Mover = Callable[[Sequence[tuple[str, str]]], list[bool]]


class _Stage(enum.Enum):
    OPENING = "opening"  # OPEN sent, waiting for the handle
    WRITING = "writing"  # writes going out
    CLOSING = "closing"  # FSETSTAT + CLOSE (and maybe the rename) sent: waiting for replies
    RENAMING = "renaming"
    PARKED = "parked"  # complete and closed: waits for ``mv -f`` after the batch
    CLEANING = "cleaning"  # failed: closing the handle and removing the temp
    DONE = "done"


class _File:
    """One upload in flight: its local source, temp name, handle and requests outstanding."""

    def __init__(
        self, index: int, job: UploadJob, source: IO[bytes], ready: Prepared | None
    ) -> None:
        self.index = index  # in the batch
        self.job = job
        self.source = source
        self.temp = ready.temp if ready else temp_name(job.remote)
        self.stage = _Stage.WRITING if ready else _Stage.OPENING
        self.handle = ready.handle if ready else b""
        self.digest = hashlib.sha256()
        self.chunk = b""  # read, checked and hashed, not sent yet
        self.offset = 0
        self.eof = False
        self.tail = b""
        self.outstanding = 0
        self.held = 0  # bytes of the window this file holds
        self.park = False  # the rename is not supported: ``mv -f`` after the batch
        self.needs_setstat = False  # the server had no FSETSTAT: SETSTAT the closed file
        self.error: RemoteFileError | None = None
        self.refused: str | None = None

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
            self.refused = KEY_REFUSAL
            return
        self.tail = chunk[-TAIL:]  # a marker cut by the chunk boundary, even in UTF-16
        self.digest.update(chunk)
        self.chunk = chunk
        self.eof = len(chunk) < CHUNK
        if self.eof:
            self.source.close()  # a batch of 10 000 small files must not hold 10 000 fds

    def outcome(self) -> UploadOutcome:
        if self.refused is not None:
            return UploadOutcome(self.job, refused=self.refused, refusal=Refusal.PRIVATE_KEY)
        if self.error is not None:
            return UploadOutcome(self.job, error=self.error)
        return UploadOutcome(self.job, sha256=self.digest.hexdigest(), size=self.offset)


class PipelinedUploader:
    """Uploads a batch within a byte window; see the module docstring."""

    def __init__(
        self,
        wire: Wire,
        folders: set[str],
        traits: Callable[[], ServerTraits],
        prepared: dict[str, Prepared],
        *,
        support: SftpSupport | None = None,
        move: Mover | None = None,
    ) -> None:
        self.wire = wire
        self.folders = folders  # remote folders known to exist on this connection (shared)
        self.prepared = prepared  # temps already open, by target (shared)
        self.support = support or SftpSupport(posix_rename=True)  # learned: shared per link
        self.move = move
        self.parked: list[_File] = []
        self.traits = traits  # read when needed: the first replies of a connection set them
        self._held = 0  # bytes of the window in use
        self._touched: set[int] = set()  # files that got a reply since they were last advanced

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        self.folders.update(posixpath.dirname(target) for target in self.prepared)
        unusable = ensure_folders(
            self.wire, self.folders, (posixpath.dirname(j.remote) for j in jobs)
        )
        outcomes: dict[int, UploadOutcome] = {}
        waiting = deque(enumerate(jobs))
        active: dict[int, _File] = {}
        try:
            while waiting or active:
                limit = self.traits().max_files
                while waiting and len(active) < limit and self._held < WINDOW_BYTES:
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
                    if file.stage in (_Stage.DONE, _Stage.PARKED):
                        file.source.close()
                        self._release(file)
                        if file.stage is _Stage.DONE:
                            outcomes[index] = file.outcome()
                        else:
                            self.parked.append(file)
                        del active[index]
                if active:
                    self.wire.pump()
        finally:
            for file in active.values():
                file.source.close()
        if self.prepared:  # refused, vanished, or not part of this batch after all
            discard(self.wire, self.prepared)
            self.wire.drain()
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
                self.wire.send(CMD_REMOVE, ignored, file.temp)
        self.wire.drain()
        return parked

    # -- files -----------------------------------------------------------------------------

    def _start(self, index: int, job: UploadJob) -> _File | UploadOutcome:
        try:
            source = job.open()  # closed when the file is done
        except LocalRefusedError as exc:
            return UploadOutcome(job, refused=str(exc), refusal=exc.refusal)
        except LocalFileError as exc:
            return UploadOutcome(job, error=RemoteFileError(job.remote, str(exc)))
        except OSError as exc:
            reason = (
                "local file vanished"
                if isinstance(exc, FileNotFoundError)
                else f"cannot read the local file: {exc.strerror or exc}"
            )
            return UploadOutcome(job, error=RemoteFileError(job.remote, reason))
        file = _File(index, job, source, self.prepared.pop(job.remote, None))
        file.read()  # a refused file sends nothing at all, not even the OPEN
        if file.failed:
            source.close()
            if file.handle:
                self.prepared[job.remote] = Prepared(file.temp, file.handle)  # discarded
            return file.outcome()
        self._hold(file, FILE_COST + len(file.chunk))
        if not file.handle:
            self._send(
                file,
                CMD_OPEN,
                self._on_open(file),
                file.temp,
                OPEN_FLAGS,
                sftp_attrs(mode=TEMP_MODE),
            )
        return file

    def _hold(self, file: _File, size: int) -> None:
        file.held += size
        self._held += size

    def _release(self, file: _File, size: int | None = None) -> None:
        size = file.held if size is None else size
        file.held -= size
        self._held -= size

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
            self._release(file, payload)
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
            elif file.park or self.support.posix_rename is False:
                file.stage = _Stage.PARKED
            else:
                self._rename(file)
        elif file.stage is _Stage.RENAMING and file.outstanding == 0:
            file.stage = _Stage.PARKED if file.park else _Stage.DONE
            if file.failed:
                self._clean_up(file, close=False)
        elif file.stage is _Stage.CLEANING and file.outstanding == 0:
            file.stage = _Stage.DONE

    def _write(self, file: _File) -> None:
        while not file.failed:
            if file.chunk:
                size = len(file.chunk)
                if self._held >= WINDOW_BYTES and file.outstanding:
                    return  # other files hold the window; this one has writes in flight
                args = (file.handle, int64(file.offset), file.chunk)
                self._send(file, CMD_WRITE, self._checked(file, size), *args)
                file.offset += size
                file.chunk = b""
            if not file.eof:
                file.read()
                if file.chunk:
                    self._hold(file, len(file.chunk))
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
        self._clean_up(file, close=True)

    @staticmethod
    def _attrs(file: _File) -> paramiko.SFTPAttributes:
        """The final mode (no setuid, setgid, sticky) and an mtime SFTP v3 can carry."""
        remote = file.job.remote
        mode = final_mode(file.job.mode, remote)
        return sftp_attrs(mode=mode, mtime=sftp_mtime(file.job.mtime_ns, remote))

    def _on_fsetstat(self, file: _File) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if status_code(kind, msg) == SFTP_OP_UNSUPPORTED:
                self.support.fsetstat = False
                file.needs_setstat = True
                return
            file.fail(status_error(kind, msg, file.job.remote))

        return reply

    def _rename(self, file: _File) -> None:
        def reply(kind: int, msg: Message) -> None:
            code = status_code(kind, msg)
            if code == SFTP_OP_UNSUPPORTED:
                self.support.posix_rename = False  # not advertised, and not there either
                file.park = True
                return
            if self.support.posix_rename is None and code == 0:
                self.support.posix_rename = True
            file.fail(status_error(kind, msg, file.job.remote, "rename"))

        file.stage = _Stage.RENAMING
        self._send(file, CMD_EXTENDED, reply, POSIX_RENAME, file.temp, file.job.remote)

    def _clean_up(self, file: _File, *, close: bool, remove: bool = True) -> None:
        """Close the handle (if still open) and remove the temp; their replies are ignored."""
        file.stage = _Stage.CLEANING
        if close:
            self._send(file, CMD_CLOSE, ignored, file.handle)
        if remove:
            self._send(file, CMD_REMOVE, ignored, file.temp)
        if not file.outstanding:
            file.stage = _Stage.DONE
