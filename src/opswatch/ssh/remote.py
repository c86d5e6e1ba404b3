"""The server, over one SSH transport: SFTP for files, exec channels for commands.

This is the one place paramiko is called. Every paramiko, socket and SFTP error is translated
into an ``opswatch.errors`` type here. ``SshRemote`` is not thread-safe: one engine thread owns it.
"""

from __future__ import annotations

import errno
import posixpath
import secrets
import socket
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import paramiko
import structlog

from opswatch.errors import (
    ConnectError,
    RemoteError,
    RemoteFileError,
)
from opswatch.model import RemoteFile
from opswatch.ssh.commands import CommandResult, run_command
from opswatch.ssh.connect import STALL_S, HostKey, Link, fetch_host_key, open_link
from opswatch.ssh.endpoint import Endpoint

log = structlog.get_logger("opswatch.remote")

TEMP_MARK = ".opswatch-"
CHUNK = 255 * 1024  # OpenSSH's sftp-server accepts writes up to 256 KiB minus headers


@dataclass(frozen=True)
class UploadJob:
    source: Path  # absolute local path
    remote: str  # absolute remote path
    mode: int
    mtime_ns: int


@dataclass(frozen=True)
class UploadOutcome:
    job: UploadJob
    sha256: str = ""
    size: int = 0
    error: RemoteError | None = None
    refused: str | None = None  # content that must not leave, e.g. a private key block

    @property
    def ok(self) -> bool:
        return self.error is None and self.refused is None


class Remote(Protocol):
    """What the engine needs from a server; ``SshRemote`` is the real one."""

    @property
    def connected(self) -> bool: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def probe(self, timeout: float) -> None: ...
    def stat_many(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]: ...
    def list_folder(self, folder: str) -> dict[str, RemoteFile]: ...
    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]: ...
    def remove(self, path: str) -> None: ...
    def read(self, path: str) -> bytes: ...
    def set_mtime(self, path: str, mtime_s: int) -> None: ...


def temp_name(target: str) -> str:
    folder, name = posixpath.split(target)
    return posixpath.join(folder, f".{name}{TEMP_MARK}{secrets.token_hex(4)}.tmp")


def is_temp_name(name: str) -> bool:
    return TEMP_MARK in name and name.endswith(".tmp") and name.startswith(".")


PRIVATE_KEY_MARKERS = (b"-----BEGIN ", b" PRIVATE KEY-----")


def holds_private_key(data: bytes) -> bool:
    """True when ``data`` contains a PEM/OpenSSH private key block header."""
    start = data.find(PRIVATE_KEY_MARKERS[0])
    while start != -1:
        line_end = data.find(b"\n", start)
        line = data[start : line_end if line_end != -1 else len(data)]
        if PRIVATE_KEY_MARKERS[1] in line:
            return True
        start = data.find(PRIVATE_KEY_MARKERS[0], start + 1)
    return False


def _attrs_to_file(attrs: paramiko.SFTPAttributes) -> RemoteFile:
    return RemoteFile(
        size=attrs.st_size or 0, mtime_s=int(attrs.st_mtime or 0), mode=attrs.st_mode or 0
    )


class SshRemote:
    def __init__(
        self, endpoint: Endpoint, *, timeout: float = 10.0, stall_s: float = STALL_S
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout  # connect, banner, handshake, auth, channel open
        self.stall_s = stall_s
        self._link: Link | None = None
        self._folders: set[str] = set()  # remote folders known to exist on this connection

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
        self._folders.clear()

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self._link = None
        self._folders.clear()

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
        """Map an SFTP failure to ``RemoteFileError`` if the link is fine, else ``ConnectError``."""
        try:
            yield
        except RemoteError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if (
                isinstance(exc, socket.timeout | EOFError | paramiko.SSHException)
                or not self.connected
            ):
                if self.stalled:
                    cause = f"no answer for {self.stall_s:g} s"
                elif isinstance(exc, socket.timeout):
                    cause = "no answer in time"
                else:
                    cause = str(exc) or type(exc).__name__
                self.close()
                raise ConnectError(
                    f"connection to {self.endpoint.describe()} lost: {cause}"
                ) from exc
            raise RemoteFileError(path, _describe_sftp_error(exc)) from exc

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
        """All in one round trip (``sftpwire.stat_many``); missing → None."""
        from opswatch.ssh.wire import stat_many

        try:
            return stat_many(self.sftp, paths, self.endpoint.describe())
        except ConnectError:
            self.close()
            raise

    def list_folder(self, folder: str) -> dict[str, RemoteFile]:
        """Regular files directly in ``folder`` by name; a missing folder is empty."""
        try:
            with self._translate(folder):
                entries = self.sftp.listdir_attr(folder)
        except RemoteFileError as exc:
            if "no such file" in exc.reason:
                return {}
            raise
        self._folders.add(folder)
        return {
            e.filename: _attrs_to_file(e)
            for e in entries
            if e.st_mode is not None and stat.S_ISREG(e.st_mode)
        }

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        """Many files in flight on the one SFTP channel (see ``pipeline``)."""
        from opswatch.ssh.upload import PipelinedUploader  # imports this module

        uploader = PipelinedUploader(self.sftp, self._folders, self.endpoint.describe())
        try:
            return uploader.upload_many(jobs)
        except ConnectError:
            self.close()
            raise

    def remove(self, path: str) -> None:
        try:
            with self._translate(path):
                self.sftp.remove(path)
        except RemoteFileError as exc:
            if "no such file" not in exc.reason:
                raise

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
        """Run ``command`` through the remote shell on a new channel of the same transport."""
        return run_command(
            self.transport, command, timeout=timeout, on_line=on_line, keep_lines=keep_lines
        )


def _describe_sftp_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENOENT:
            return "no such file or folder"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return exc.strerror or str(exc)
    text = str(exc) or type(exc).__name__
    if text.lower() == "failure":
        # SSH2_FX_FAILURE carries no errno; none of the requests made through here is a write.
        return "the server refused it without saying why"
    return text
