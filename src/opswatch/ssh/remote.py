"""The server, over one SSH transport: SFTP for files, exec channels for commands.

Every paramiko, socket and SFTP error met here becomes an ``opswatch.errors`` type through
``ssh/failures.py``. ``SshRemote`` is not thread-safe: one engine thread owns it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import paramiko
import structlog
from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED

from opswatch.config import RemoteConfig
from opswatch.errors import (
    ConnectError,
    RemoteCommandError,
    RemoteError,
    RemoteFileError,
    RemoteFileMissing,
)
from opswatch.model import RemoteFile
from opswatch.ssh.commands import CommandResult, run_command
from opswatch.ssh.connect import STALL_S, HostKey, Link, fetch_host_key, open_link
from opswatch.ssh.endpoint import Endpoint, resolve_endpoint
from opswatch.ssh.failures import CAUGHT, describe, error_type, file_error
from opswatch.ssh.listing import list_folders
from opswatch.ssh.opening import Prepared, discard, prepare
from opswatch.ssh.server import (
    NO_DEADLINE,
    SFTP_ONLY,
    SftpInfo,
    SftpSupport,
    move_command,
    parse_moved,
)
from opswatch.ssh.traits import LIMITS_REQUEST, UNKNOWN, from_limits
from opswatch.ssh.transfer import UploadJob, UploadOutcome
from opswatch.ssh.upload import PipelinedUploader
from opswatch.ssh.wire import Wire, stat_many

log = structlog.get_logger("opswatch.remote")

MOVE_BUDGET = 64 * 1024  # bytes of one ``mv -f`` command: well below Linux's 128 KiB argument cap


class Remote(Protocol):
    """What the engine needs from a server; ``SshRemote`` is the real one."""

    @property
    def connected(self) -> bool: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def probe(self, timeout: float) -> None: ...
    def stat_many(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]: ...
    def list_folders(
        self, folders: Sequence[str]
    ) -> Iterator[tuple[str, dict[str, RemoteFile]]]: ...
    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]: ...
    def remove(self, path: str) -> None: ...
    def remove_folder(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes: ...
    def set_mtime(self, path: str, mtime_s: int) -> None: ...


class SshRemote:
    def __init__(
        self, endpoint: Endpoint, *, timeout: float = 10.0, stall_s: float = STALL_S
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout  # connect, banner, handshake, auth, channel open
        self.stall_s = stall_s
        self._link: Link | None = None
        self._folders: set[str] = set()  # remote folders known to exist on this connection
        self._apart: paramiko.SFTPClient | None = None  # stat_apart's channel
        # Found by the first command of a connection, so said once: no shell at all (an
        # SFTP-only account), or no way to give a command a process group a deadline can stop.
        self._no_shell = False
        self._no_group = False
        self._support = SftpSupport(posix_rename=True)
        self._traits = UNKNOWN  # what the server allows, once it said (``traits``)
        self._traits_asked = False
        self._prepared: dict[str, Prepared] = {}  # temps opened by the last look, by target

    # -- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.transport.is_active()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._link is None or not self.connected:
            raise ConnectError(f"not connected to {self.endpoint.describe()}")
        return self._link.sftp

    @property
    def transport(self) -> paramiko.Transport:
        if self._link is None or not self.connected:
            raise ConnectError(f"not connected to {self.endpoint.describe()}")
        return self._link.transport

    def connect(self) -> None:
        self.close()
        self._link = open_link(self.endpoint, timeout=self.timeout, stall_s=self.stall_s)
        self._forget_server()
        self._support = SftpSupport.from_info(self._link.sftp_info)

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self._link = None
        self._apart = None  # went with the transport
        self._forget_server()
        self._no_shell = self._no_group = False

    def abort(self) -> None:
        """End the connection from another thread: every read or write blocked on it returns
        at once (as when the stall watchdog fires). The owner's ``close`` tidies up after."""
        link = self._link
        if link is not None:
            link.close()

    def _forget_server(self) -> None:
        self._folders.clear()
        self._traits = UNKNOWN
        self._traits_asked = False
        self._prepared.clear()

    @property
    def sftp_info(self) -> SftpInfo:
        """The server's SFTP version and extensions, as it announced them at connect."""
        if self._link is None:
            raise ConnectError(f"not connected to {self.endpoint.describe()}")
        return self._link.sftp_info

    @property
    def stalled(self) -> bool:
        """Whether the stall watchdog cut the current (now dead) connection."""
        return self._link is not None and self._link.watchdog.fired

    def server_host_key(self) -> HostKey:
        """The key the server offers, unchecked and without authenticating (``opswatch trust``)."""
        return fetch_host_key(self.endpoint, timeout=self.timeout)

    # -- error translation -----------------------------------------------------------------

    @contextmanager
    def _translate(self, path: str) -> Iterator[None]:
        """A failed request about ``path``: that file's error while the link is fine, else
        ``ConnectError`` (the mapping is ``ssh/failures.py``'s)."""
        try:
            yield
        except RemoteError:
            raise
        except CAUGHT as exc:
            if error_type(exc, file_request=self.connected) is not ConnectError:
                raise file_error(exc, path) from exc
            if self.stalled:
                cause = f"no answer for {self.stall_s:g} s"
            elif isinstance(exc, TimeoutError):
                cause = "no answer in time"
            else:
                cause = describe(exc)
            self.close()
            raise ConnectError(f"connection to {self.endpoint.describe()} lost: {cause}") from exc

    def probe(self, timeout: float) -> None:
        """One cheap round trip with a deadline; a dead link raises ``ConnectError``."""
        channel = self.sftp.get_channel()
        assert channel is not None
        previous = channel.gettimeout()
        channel.settimeout(timeout)
        try:
            with self._translate("."):
                self.sftp.normalize(".")
        finally:
            if self.connected:
                channel.settimeout(previous)

    # -- files -----------------------------------------------------------------------------

    def stat_many(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]:
        """All in one round trip; missing → None. The look before an upload: a temp is opened
        next to each path in the same flight, for the upload that usually follows (``prepare``)."""
        try:
            wire = self._wire()
            prepare(wire, paths, self._prepared)
            return stat_many(wire, paths)
        except ConnectError:
            self.close()
            raise

    def stat_apart(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]:
        """``stat_many`` on an SFTP channel of its own: for one thread other than the engine's
        (the rebuild worker), since paramiko's SFTPClient is not thread-safe while the transport
        is. The channel is opened on first use and kept for the connection's life: opening one
        costs round trips (channel, subsystem, SFTP version) that a build check need not pay
        each time."""
        where = self.endpoint.describe()
        if self._apart is None:
            try:
                self._apart = paramiko.SFTPClient.from_transport(self.transport)
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise ConnectError(f"sftp session with {where} failed: {exc}") from exc
            if self._apart is None:
                raise ConnectError(f"sftp session with {where} failed")
            channel = self._apart.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout * 3)
        return stat_many(Wire(self._apart, where), paths)

    def list_folders(self, folders: Sequence[str]) -> Iterator[tuple[str, dict[str, RemoteFile]]]:
        """Regular files directly in each folder by name, all folders pipelined (``listing``),
        each yielded as it completes; a missing folder is empty. A folder that cannot be
        listed raises its ``RemoteFileError`` once the others are read."""
        failure: RemoteFileError | None = None
        try:
            for folder, listing in list_folders(self._wire(), folders):
                if isinstance(listing, RemoteFileError):
                    failure = failure or listing
                elif failure is None:
                    if listing is not None:
                        self._folders.add(folder)
                    yield folder, listing or {}
        except ConnectError:
            self.close()
            raise
        if failure is not None:
            raise failure

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        """Many files in flight on the one SFTP channel (see ``upload``)."""
        if not jobs and not self._prepared:
            return []
        uploader = PipelinedUploader(
            self._wire(keep_prepared=True),
            self._folders,
            lambda: self._traits,
            self._prepared,
            support=self._support,
            move=self.move_into_place,
        )
        try:
            return uploader.upload_many(jobs)
        except ConnectError:
            self.close()
            raise

    def _wire(self, *, keep_prepared: bool = False) -> Wire:
        """A wire on the SFTP channel; the first of a connection also asks what the server
        allows (``traits``): its answer arrives before any reply to what is sent after it.
        Temps prepared by a look that no upload used are closed and removed on the way."""
        wire = Wire(self.sftp, self.endpoint.describe())
        if self._prepared and not keep_prepared:
            discard(wire, self._prepared)
        if not self._traits_asked:
            self._traits_asked = True
            banner = self.transport.remote_version

            def answered(kind: int, msg: Message) -> None:
                self._traits = from_limits(banner, kind, msg)

            wire.send(CMD_EXTENDED, answered, LIMITS_REQUEST)
        return wire

    def remove(self, path: str) -> None:
        try:
            with self._translate(path):
                self.sftp.remove(path)
        except RemoteFileMissing:
            pass  # already gone: what a remove wants

    def remove_folder(self, path: str) -> bool:
        """Remove ``path`` if it is an empty folder; False when it holds anything, is gone or
        the server refuses (SFTP's RMDIR only ever removes an empty folder)."""
        self._folders.discard(path)  # the next upload into it makes it again
        try:
            with self._translate(path):
                self.sftp.rmdir(path)
        except RemoteFileError:
            return False
        return True

    def read(self, path: str) -> bytes:
        with self._translate(path), self.sftp.open(path, "rb") as handle:
            handle.prefetch()
            return handle.read()

    def set_mtime(self, path: str, mtime_s: int) -> None:
        """Give a remote file the mtime an upload would have set (its bytes are already right)."""
        with self._translate(path):
            self.sftp.utime(path, (mtime_s, mtime_s))

    # -- commands --------------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
        keep_lines: int = 40,
    ) -> CommandResult:
        """Run ``command`` through the remote shell on a new channel of the same transport.

        An account without a shell, or a deadline the server could not enforce, raises
        ``RemoteCommandError`` with the one line that says so (found once per connection).
        """
        if self._no_shell or (self._no_group and timeout > 0):
            raise RemoteCommandError(SFTP_ONLY if self._no_shell else NO_DEADLINE)
        result = run_command(
            self.transport, command, timeout=timeout, on_line=on_line, keep_lines=keep_lines
        )
        if not result.shell and not result.timed_out:
            self._no_shell = True
            log.warning("sftp_only", host=self.endpoint.describe(), detail=SFTP_ONLY)
            raise RemoteCommandError(SFTP_ONLY)
        if result.no_group and timeout > 0:
            self._no_group = True
            log.warning("no_process_group", host=self.endpoint.describe(), detail=NO_DEADLINE)
            raise RemoteCommandError(NO_DEADLINE)
        return result

    def move_into_place(self, moves: Sequence[tuple[str, str]]) -> list[bool]:
        """``mv -f`` each (temp, target) over an exec channel, where the server's SFTP lacks
        posix-rename; whether each landed. No shell raises ``RemoteCommandError``."""
        landed: list[bool] = []
        for batch in _move_batches(list(moves)):
            lines: list[str] = []
            # Without a deadline: a rename does not hang, and a server whose commands cannot be
            # stopped can still rename.
            self.run(move_command(batch), timeout=0, on_line=lines.append, keep_lines=1)
            landed += parse_moved(lines, len(batch))
        return landed


def _move_batches(moves: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    used = 0
    for temp, target in moves:
        cost = len(shlex.quote(move_command([(temp, target)])))  # the exec wrapper quotes again
        if batch and used + cost > MOVE_BUDGET:
            yield batch
            batch, used = [], 0
        batch.append((temp, target))
        used += cost
    if batch:
        yield batch


@contextmanager
def connected_remote(config: RemoteConfig) -> Iterator[SshRemote]:
    """Resolve ``[remote]`` as ``ssh`` would, connect, hand the remote to one job, then close:
    what every one-shot command does (a running daemon keeps its own connection)."""
    remote = SshRemote(resolve_endpoint(config))
    remote.connect()
    try:
        yield remote
    finally:
        remote.close()
