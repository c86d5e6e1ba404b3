"""SFTP requests in batches on paramiko's channel, replies dispatched by request number.

Why it exists: paramiko's ``SFTPClient`` waits for each reply (``_request``) or writes each
request to the channel on its own (``_async_request``). Keeping many requests in flight and
sending every ready request in one channel write is what makes bursts fast (see ``pipeline``).

How it uses paramiko's internals, carefully: ``SFTPClient`` numbers requests and routes each
reply to the object registered for its number (``_expecting``, a weak dict, read by
``_read_response``). ``Wire.send`` registers requests exactly as ``_async_request`` does (under
``_lock``, the same numbering), but appends the framed packet to an outbox instead of writing
it; ``flush`` sends the outbox in pieces that each fill one SSH packet. Replies arrive through
``_read_response``, which hands them to ``Wire._async_response`` (the hook ``SFTPFile`` has).
SFTPClient is not thread-safe and is never shared: the engine thread that owns it runs this
between its own calls, and every request sent is answered before control returns.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_STAT,
    CMD_STATUS,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
    SFTPError,
    int64,
)

from opswatch.errors import ConnectError, RemoteFileError
from opswatch.model import RemoteFile

PIECE = 32 * 1024  # one channel write when the channel does not say its packet size
SFTP_FAILURE = 4
OnReply = Callable[[int, Message], None]
Arg = int | bytes | str | paramiko.SFTPAttributes
# OpenSSH answers a bare SSH2_FX_FAILURE ("Failure") for every errno it has no code for: ENOSPC,
# EDQUOT or EFBIG on a write, EISDIR or ENOTEMPTY on a rename onto a folder. The request that
# failed is all that tells the likely causes apart.
_FAILURE_CAUSES = {
    "write": "the server refused the write (disk full or quota?)",
    "rename": "the server could not put it in place (is there a folder of that name?)",
}


class Wire:
    """Requests out in batches, replies in by number; every link failure → ``ConnectError``."""

    def __init__(self, sftp: paramiko.SFTPClient, where: str) -> None:
        self.sftp = sftp
        self.where = where
        self._outbox: list[bytes] = []
        self._waiting: dict[int, OnReply] = {}
        self._arrived: deque[tuple[int, int, Message]] = deque()

    def send(self, kind: int, on_reply: OnReply, *args: Arg) -> int:
        """Queue one request; mirrors ``SFTPClient._async_request`` except for the write."""
        msg = Message()
        sftp = self.sftp
        with sftp._lock:  # type: ignore[attr-defined]
            num: int = sftp.request_number
            msg.add_int(num)
            for item in args:
                if isinstance(item, int64):
                    msg.add_int64(item)
                elif isinstance(item, int):
                    msg.add_int(item)
                elif isinstance(item, paramiko.SFTPAttributes):
                    item._pack(msg)  # type: ignore[attr-defined]
                else:
                    msg.add_string(item)
            sftp._expecting[num] = self  # type: ignore[attr-defined]
            sftp.request_number = num + 1
        body = msg.asbytes()
        self._outbox.append(struct.pack(">IB", len(body) + 1, kind) + body)
        self._waiting[num] = on_reply
        return num

    @property
    def busy(self) -> bool:
        return bool(self._waiting)

    def flush(self) -> None:
        """Send everything queued in pieces that each fill one SSH packet exactly.

        paramiko puts at most ``out_max_packet_size - 64`` bytes in a packet: pieces of that size
        leave no runt packet behind each piece, and ``sendall`` never sees a multi-MiB buffer.
        """
        if not self._outbox:
            return
        channel = self.sftp.get_channel()
        size = getattr(channel, "out_max_packet_size", 0) - 64
        piece = size if size >= 1024 else PIECE
        pending = bytearray()
        try:
            with self._link():
                for packet in self._outbox:
                    pending += packet
                    while len(pending) >= piece:
                        channel.sendall(bytes(pending[:piece]))  # type: ignore[union-attr]
                        del pending[:piece]
                if pending:
                    channel.sendall(bytes(pending))  # type: ignore[union-attr]
        finally:
            self._outbox.clear()

    def _async_response(self, kind: int, msg: Message, num: int) -> None:
        """Called by ``SFTPClient._read_response`` for the requests registered to us."""
        self._arrived.append((num, kind, msg))

    def pump(self) -> None:
        """Send what is queued, wait for at least one reply, handle every reply already here."""
        self.flush()
        channel = self.sftp.get_channel()
        assert channel is not None
        with self._link():
            self.sftp._read_response()  # type: ignore[attr-defined]
            while channel.recv_ready() and self._waiting:
                self.sftp._read_response()  # type: ignore[attr-defined]
        while self._arrived:
            num, kind, msg = self._arrived.popleft()
            on_reply = self._waiting.pop(num, None)
            if on_reply is not None:
                on_reply(kind, msg)

    def drain(self) -> None:
        while self._waiting:
            self.pump()

    @contextmanager
    def _link(self) -> Iterator[None]:
        try:
            yield
        except (OSError, EOFError, paramiko.SSHException, SFTPError) as exc:
            raise ConnectError(f"connection to {self.where} lost: {exc}") from exc


def status_error(
    kind: int, msg: Message, path: str, request: str = "write"
) -> RemoteFileError | None:
    """None for an OK status; else the reply to ``request`` as the error of ``path``."""
    if kind != CMD_STATUS:
        return RemoteFileError(path, f"unexpected SFTP reply type {kind}")
    code = msg.get_int()
    text = msg.get_text()
    if code == SFTP_OK:
        return None
    if code == SFTP_NO_SUCH_FILE:
        return RemoteFileError(path, "no such file or folder")
    if code == SFTP_PERMISSION_DENIED:
        return RemoteFileError(path, "permission denied")
    if code == SFTP_FAILURE:
        cause = _FAILURE_CAUSES.get(request, f"the server refused the {request}")
        return RemoteFileError(path, cause)
    return RemoteFileError(path, text or f"SFTP error {code}")


def stat_each(
    sftp: paramiko.SFTPClient, paths: Sequence[str], where: str
) -> dict[str, RemoteFile | RemoteFileError | None]:
    """``stat`` of every path in one round trip: what it is, None if missing, else the error."""
    wire = Wire(sftp, where)
    found: dict[str, RemoteFile | RemoteFileError | None] = {}

    def on_stat(path: str) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if kind == CMD_ATTRS:
                attrs = paramiko.SFTPAttributes._from_msg(msg)  # type: ignore[attr-defined]
                found[path] = RemoteFile(
                    size=attrs.st_size or 0,
                    mtime_s=int(attrs.st_mtime or 0),
                    mode=attrs.st_mode or 0,
                )
                return
            error = status_error(kind, msg, path, "stat")
            missing = error is None or error.reason == "no such file or folder"
            found[path] = None if missing else error

        return reply

    for path in dict.fromkeys(paths):
        wire.send(CMD_STAT, on_stat(path), path)
    wire.drain()
    return found


def stat_many(
    sftp: paramiko.SFTPClient, paths: Sequence[str], where: str
) -> dict[str, RemoteFile | None]:
    """``stat`` of every path in one round trip; missing → None; any other error is raised."""
    found: dict[str, RemoteFile | None] = {}
    for path, info in stat_each(sftp, paths, where).items():
        if isinstance(info, RemoteFileError):
            raise info
        found[path] = info
    return found
