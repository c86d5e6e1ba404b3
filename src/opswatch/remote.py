"""The server, over one SSH transport: SFTP for files, exec channels for commands.

This is the one place paramiko is called. Every paramiko, socket and SFTP error is translated
into an ``opswatch.errors`` type here. ``SshRemote`` is not thread-safe: one engine thread owns it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import posixpath
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko
import structlog

from opswatch.errors import (
    AuthError,
    ChangedHostKeyError,
    ConnectError,
    RemoteError,
    RemoteFileError,
    UnknownHostKeyError,
)
from opswatch.model import RemoteFile
from opswatch.remote_exec import CommandResult, run_command
from opswatch.sshconf import Endpoint, default_identities

log = structlog.get_logger("opswatch.remote")

TEMP_MARK = ".opswatch-"
CHUNK = 255 * 1024  # OpenSSH's sftp-server accepts writes up to 256 KiB minus headers
# GCM first: it roughly halves client CPU per byte against CTR + HMAC.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
STALL_S = 30.0  # an SFTP request unanswered this long means the link is dead: cut it


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


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _attrs_to_file(attrs: paramiko.SFTPAttributes) -> RemoteFile:
    return RemoteFile(
        size=attrs.st_size or 0, mtime_s=int(attrs.st_mtime or 0), mode=attrs.st_mode or 0
    )


@dataclass(frozen=True)
class HostKey:
    """A server's host key as known_hosts writes it and as ``ssh`` prints its fingerprint."""

    key_type: str  # "ssh-ed25519"
    base64: str
    fingerprint: str  # "SHA256:…"

    @property
    def short_type(self) -> str:
        """What ``ssh`` calls the type in "ED25519 key fingerprint is …"."""
        name = self.key_type.removeprefix("ssh-").split("-")[0]
        return "ECDSA" if name == "ecdsa" else name.upper()


class _SftpLink:
    """The SFTP channel, noting since when a request has gone unanswered.

    SFTP is strictly request → reply, so bytes sent with nothing received since is exactly
    "waiting on the server". Only the engine thread sends and receives on it; the stall
    watchdog only reads ``waiting_since``.
    """

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.waiting_since: float | None = None

    def send(self, data: bytes) -> int:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        return self.channel.send(data)

    def sendall(self, data: bytes) -> None:
        if self.waiting_since is None:
            self.waiting_since = time.monotonic()
        self.channel.sendall(data)

    def recv(self, size: int) -> bytes:
        data = self.channel.recv(size)
        if data:
            self.waiting_since = None
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.channel, name)


class _StallWatchdog(threading.Thread):
    """Cuts the transport when an SFTP request stays unanswered for ``stall_s``.

    A black-holed peer makes paramiko block forever in a socket write (its packetizer retries
    timeouts until the transport is closed), so the deadline must be enforced from outside.
    """

    def __init__(self, link: _SftpLink, transport: paramiko.Transport, stall_s: float) -> None:
        super().__init__(name="opswatch-stall-watchdog", daemon=True)
        self.link = link
        self.transport = transport
        self.stall_s = stall_s
        self.fired = False
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(min(1.0, self.stall_s / 4)):
            since = self.link.waiting_since
            if since is not None and time.monotonic() - since > self.stall_s:
                self.fired = True
                log.warning("stalled", seconds=self.stall_s, action="closing the connection")
                self.transport.close()  # wakes every blocked channel read and socket write
                return

    def stop(self) -> None:
        self._stop.set()


class SshRemote:
    def __init__(
        self, endpoint: Endpoint, *, timeout: float = 10.0, stall_s: float = STALL_S
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout  # connect, banner, handshake, auth, channel open
        self.stall_s = stall_s
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._watchdog: _StallWatchdog | None = None
        self._folders: set[str] = set()  # remote folders known to exist on this connection

    # -- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None or not self.connected:
            raise ConnectError(f"not connected to {self.endpoint.describe()}")
        return self._sftp

    @property
    def transport(self) -> paramiko.Transport:
        if self._transport is None or not self.connected:
            raise ConnectError(f"not connected to {self.endpoint.describe()}")
        return self._transport

    def connect(self) -> None:
        self.close()
        sock = self._dial()
        transport = paramiko.Transport(sock)
        # paramiko waits up to an hour for a channel and 30 s for auth by default.
        transport.auth_timeout = self.timeout
        transport.channel_timeout = self.timeout
        try:
            self._negotiate(transport)
            self._check_host_key(transport)
            self._authenticate(transport)
            # No paramiko keepalive: it expects no reply, so it detects nothing, and it would
            # look like an unanswered request. TCP keepalive and the daemon's probe do the job.
            link = self._open_sftp(transport)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()  # the link died between the steps above
            raise ConnectError(f"connecting to {self.endpoint.describe()} failed: {exc}") from exc
        except BaseException:
            transport.close()
            raise
        self._transport = transport
        self._watchdog = _StallWatchdog(link, transport, self.stall_s)
        self._watchdog.start()
        self._folders.clear()
        log.info(
            "connected",
            host=self.endpoint.describe(),
            cipher=getattr(transport, "remote_cipher", "?"),
        )

    def _open_sftp(self, transport: paramiko.Transport) -> _SftpLink:
        """The SFTP channel, with a read deadline before its first exchange (the version)."""
        try:
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            channel.invoke_subsystem("sftp")
            link = _SftpLink(channel)
            self._sftp = paramiko.SFTPClient(link)  # type: ignore[arg-type]
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(
                f"sftp session with {self.endpoint.describe()} failed: {exc}"
            ) from exc
        channel.settimeout(self.timeout * 3)  # the deadline of every later SFTP reply
        return link

    def _dial(self) -> socket.socket | paramiko.ProxyCommand:
        ep = self.endpoint
        if ep.proxy_command:
            command = ep.proxy_command.replace("%h", ep.hostname).replace("%p", str(ep.port))
            return paramiko.ProxyCommand(command.replace("%r", ep.user))
        try:
            sock = socket.create_connection((ep.hostname, ep.port), timeout=self.timeout)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConnectError(f"cannot reach {ep.hostname}:{ep.port}: {reason}") from exc
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
        return sock

    def _negotiate(self, transport: paramiko.Transport) -> None:
        options = transport.get_security_options()
        available = list(options.ciphers)
        options.ciphers = tuple(
            [c for c in PREFERRED_CIPHERS if c in available]
            + [c for c in available if c not in PREFERRED_CIPHERS]
        )
        known = self._known_keys()
        if known:
            # Ask for a key type we can verify, as OpenSSH does for hosts it knows.
            types = [t for t in options.key_types if t in known]
            options.key_types = tuple(types + [t for t in options.key_types if t not in types])
        self._start_client(transport)

    def _start_client(self, transport: paramiko.Transport) -> None:
        transport.banner_timeout = self.timeout
        transport.handshake_timeout = self.timeout
        try:
            # A bit longer than the banner deadline, so a silent peer fails with that reason.
            transport.start_client(timeout=self.timeout + 1)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectError(
                f"ssh handshake with {self.endpoint.describe()} failed: {exc}"
            ) from exc
        if not transport.is_active() or transport.host_key is None:
            # start_client returns quietly when its own deadline passes mid-handshake.
            raise ConnectError(
                f"ssh handshake with {self.endpoint.describe()} timed out "
                f"after {self.timeout + 1:g} s"
            )

    def _known_keys(self) -> dict[str, paramiko.PKey]:
        path = self.endpoint.known_hosts
        if not path.is_file():
            return {}
        try:
            host_keys = paramiko.HostKeys(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise ConnectError(f"{path}: cannot read known_hosts: {exc}") from exc
        entry = host_keys.lookup(self.endpoint.known_hosts_name)
        return dict(entry) if entry else {}

    def _check_host_key(self, transport: paramiko.Transport) -> None:
        key = transport.get_remote_server_key()
        known = self._known_keys()
        name = self.endpoint.known_hosts_name
        if not known:
            raise UnknownHostKeyError(
                f"host key of {name} is not in {self.endpoint.known_hosts} "
                f"({key.get_name()} {_fingerprint(key)}); check it, then run `opswatch trust`"
            )
        expected = known.get(key.get_name())
        if expected is None or expected.asbytes() != key.asbytes():
            raise ChangedHostKeyError(
                f"HOST KEY OF {name} HAS CHANGED (now {key.get_name()} {_fingerprint(key)}); "
                f"if the server was rebuilt, run `ssh-keygen -R '{name}' -f "
                f"{self.endpoint.known_hosts}` and `opswatch trust`, else someone may be "
                "intercepting the connection"
            )

    def _candidate_keys(self) -> Iterator[paramiko.PKey]:
        ep = self.endpoint
        for path in ep.identity_files or default_identities():
            try:
                yield paramiko.PKey.from_path(str(path))
            except FileNotFoundError:
                log.debug("identity_missing", path=str(path))
            except (paramiko.SSHException, OSError, ValueError) as exc:
                log.warning("identity_unusable", path=str(path), error=str(exc))
        if not ep.identities_only:
            try:
                yield from paramiko.Agent().get_keys()
            except paramiko.SSHException as exc:
                log.warning("agent_unusable", error=str(exc))

    def _authenticate(self, transport: paramiko.Transport) -> None:
        tried = 0
        for key in self._candidate_keys():
            tried += 1
            try:
                transport.auth_publickey(self.endpoint.user, key)
            except paramiko.AuthenticationException:
                continue
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise ConnectError(
                    f"authentication with {self.endpoint.describe()} failed: {exc}"
                ) from exc
            if transport.is_authenticated():
                return
        hint = "" if tried else " (no key found: set remote.identity_file or start ssh-agent)"
        raise AuthError(
            f"{self.endpoint.describe()} refused every key offered ({tried} tried){hint}"
        )

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        # No polite SFTP close first: it writes to the socket, and on a black-holed link whose
        # send buffer is full that write never returns. Closing the transport writes nothing.
        if self._transport is not None:
            self._transport.close()
        self._sftp = None
        self._transport = None
        self._folders.clear()

    def abort(self) -> None:
        """Cut the connection now, from any thread: every blocked call fails at once."""
        transport = self._transport
        if transport is not None:
            transport.close()

    @property
    def stalled(self) -> bool:
        """Whether the stall watchdog cut the current (now dead) connection."""
        return self._watchdog is not None and self._watchdog.fired

    def server_host_key(self) -> HostKey:
        """The key the server offers, fetched without authenticating and without checking it.

        Only ``opswatch trust`` calls this, to show the fingerprint before anything is trusted.
        """
        transport = paramiko.Transport(self._dial())
        try:
            self._start_client(transport)
            key = transport.get_remote_server_key()
        finally:
            transport.close()
        return HostKey(key.get_name(), key.get_base64(), _fingerprint(key))

    def host_key(self) -> tuple[str, str]:
        """(key type, SHA256 fingerprint) of the connected server."""
        key = self.transport.get_remote_server_key()
        return key.get_name(), _fingerprint(key)

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
        from opswatch.sftpwire import stat_many

        try:
            return stat_many(self.sftp, paths, self.endpoint.describe())
        except ConnectError:
            self.close()
            raise

    def stat_one_by_one(self, paths: Sequence[str]) -> dict[str, RemoteFile | None]:
        found: dict[str, RemoteFile | None] = {}
        for path in paths:
            try:
                with self._translate(path):
                    found[path] = _attrs_to_file(self.sftp.stat(path))
            except RemoteFileError as exc:
                if "no such file" not in exc.reason:
                    raise
                found[path] = None
        return found

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

    def ensure_folder(self, folder: str) -> None:
        if folder in self._folders or folder in ("", "/"):
            return
        with self._translate(folder):
            try:
                attrs = self.sftp.stat(folder)
            except FileNotFoundError:
                self.ensure_folder(posixpath.dirname(folder))
                try:
                    self.sftp.mkdir(folder, 0o755)
                except OSError:
                    attrs = self.sftp.stat(folder)  # made meanwhile by someone else: fine
            else:
                if attrs.st_mode is not None and not stat.S_ISDIR(attrs.st_mode):
                    raise RemoteFileError(folder, "exists and is not a folder")
        self._folders.add(folder)

    def upload_many(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        """Many files in flight on the one SFTP channel (``pipeline``); same guarantees as
        ``upload``, which stays as the reference (``upload_sequential``)."""
        from opswatch.pipeline import PipelinedUploader  # imports this module

        uploader = PipelinedUploader(self.sftp, self._folders, self.endpoint.describe())
        try:
            return uploader.upload_many(jobs)
        except ConnectError:
            self.close()
            raise

    def upload_sequential(self, jobs: Sequence[UploadJob]) -> list[UploadOutcome]:
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(self.upload(job))
            except RemoteFileError as exc:
                outcomes.append(UploadOutcome(job, error=exc))
        return outcomes

    def upload(self, job: UploadJob) -> UploadOutcome:
        """Write a temp name in the target folder, set mode and mtime, rename over the target."""
        self.ensure_folder(posixpath.dirname(job.remote))
        temp = temp_name(job.remote)
        digest = hashlib.sha256()
        size = 0
        try:
            with open(job.source, "rb") as source, self._translate(job.remote):
                with self.sftp.open(temp, "wb") as target:
                    target.set_pipelined(True)
                    tail = b""
                    while chunk := source.read(CHUNK):
                        if holds_private_key(tail + chunk):
                            raise _Refused("holds a private key block")
                        tail = chunk[-64:]
                        digest.update(chunk)
                        size += len(chunk)
                        target.write(chunk)
                mtime = job.mtime_ns / 1e9
                self.sftp.utime(temp, (mtime, mtime))
                self.sftp.chmod(temp, job.mode)
                self.sftp.posix_rename(temp, job.remote)
        except _Refused as refused:
            self._discard(temp)
            return UploadOutcome(job, refused=str(refused))
        except FileNotFoundError as exc:
            if exc.filename == str(job.source):
                self._discard(temp)
                return UploadOutcome(job, error=RemoteFileError(job.remote, "local file vanished"))
            raise
        except BaseException:
            self._discard(temp)
            raise
        return UploadOutcome(job, sha256=digest.hexdigest(), size=size)

    def _discard(self, temp: str) -> None:
        if not self.connected:
            return  # the server's sweep at the next start removes it
        with suppress(OSError, EOFError, paramiko.SSHException):
            self.sftp.remove(temp)

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

    def sweep_temp_files(self, folders: Iterable[str]) -> list[str]:
        """Remove opswatch temp files a killed upload left behind; returns what was removed."""
        removed = []
        for folder in folders:
            try:
                with self._translate(folder):
                    names = self.sftp.listdir(folder)
            except RemoteFileError:
                continue
            for name in names:
                if is_temp_name(name):
                    self.remove(posixpath.join(folder, name))
                    removed.append(posixpath.join(folder, name))
        return removed

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


class _Refused(Exception):
    pass


def _describe_sftp_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENOENT:
            return "no such file or folder"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return exc.strerror or str(exc)
    text = str(exc) or type(exc).__name__
    if text.lower() == "failure":
        return "the server refused the write (disk full or quota?)"
    return text
