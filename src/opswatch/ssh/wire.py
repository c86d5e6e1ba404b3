"""SFTP requests in batches on paramiko's channel, replies dispatched by request number.

Why it exists: paramiko's ``SFTPClient`` waits for each reply (``_request``) or writes each
request to the channel on its own (``_async_request``). Keeping many requests in flight and
sending every ready request in one channel write is what makes bursts fast (see ``upload``).

How it uses paramiko's internals, carefully: ``SFTPClient`` numbers requests
(``request_number``, under ``_lock``); ``Wire.send`` takes its numbers the same way, so the
client's own later requests never collide, frames the packet itself (``struct``, not one
``Message`` per request) and appends it to an outbox; ``flush`` sends the outbox in pieces that
each fill one SSH packet. Replies are read from the channel in bulk, everything that has arrived
at once, and cut into packets here: paramiko's ``_read_response`` makes two channel reads, a
``Message`` and a weak-dict lookup per reply, which was a third of the client's CPU on a burst.
SFTPClient is not thread-safe and is never shared: the engine thread that owns it runs this
between its own calls, and every request sent is answered before control returns, so a wire
never reads a byte meant for anyone else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

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

from opswatch.errors import RemoteFileError, RemoteFileMissing
from opswatch.model import RemoteFile
from opswatch.ssh._compat import attrs_from_msg, next_request_number, pack_attrs, packet_payload
from opswatch.ssh.failures import translated

PIECE = 32 * 1024  # one channel write when the channel does not say its packet size
RECEIVE = 256 * 1024  # one channel read: whatever has arrived, up to this
MAX_REPLY = 1 << 24  # paramiko's limit too: a length with the high byte set is garbage
_INT = struct.Struct(">I")
_INT64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IBI")  # length, type, request number
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
        self._inbox = bytearray()  # reply bytes read, not yet cut into packets

    def send(self, kind: int, on_reply: OnReply, *args: Arg) -> int:
        """Queue one request, framed as ``SFTPClient._async_request`` frames it."""
        parts: list[bytes] = []
        for item in args:
            if isinstance(item, int64):
                parts.append(_INT64.pack(item))
            elif isinstance(item, int):
                parts.append(_INT.pack(item))
            elif isinstance(item, paramiko.SFTPAttributes):
                parts.append(packed_attrs(item))
            else:
                data = item.encode() if isinstance(item, str) else item
                parts.append(_INT.pack(len(data)))
                parts.append(data)
        body = b"".join(parts)
        num = next_request_number(self.sftp)
        self._outbox.append(_HEAD.pack(len(body) + 5, kind, num) + body)
        self._waiting[num] = on_reply
        return num

    def flush(self) -> None:
        """Send everything queued in pieces that each fill one SSH packet exactly.

        paramiko puts at most ``out_max_packet_size - 64`` bytes in a packet: pieces of that size
        leave no runt packet behind each piece, and ``sendall`` never sees a multi-MiB buffer.
        """
        if not self._outbox:
            return
        channel = self.sftp.get_channel()
        size = packet_payload(channel)
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

    def pump(self) -> None:
        """Send what is queued, wait for at least one reply, handle every reply already here."""
        self.flush()
        channel = self.sftp.get_channel()
        assert channel is not None
        with self._link():
            replies = self._receive(channel)
        for num, kind, msg in replies:
            # A number we did not ask for is ignored, as paramiko ignores one.
            on_reply = self._waiting.pop(num, None)
            if on_reply is not None:
                on_reply(kind, msg)

    def _receive(self, channel: paramiko.Channel) -> list[tuple[int, int, Message]]:
        """Every complete reply that has arrived, waiting for the first one if need be."""
        inbox = self._inbox
        while True:
            data = channel.recv(RECEIVE)
            if not data:
                raise EOFError("the server closed the SFTP channel")
            inbox += data
            while channel.recv_ready():
                inbox += channel.recv(RECEIVE)
            replies = []
            start = 0
            while len(inbox) - start >= 4:
                size = int.from_bytes(inbox[start : start + 4], "big")
                if size < 5 or size >= MAX_REPLY:
                    raise SFTPError(f"garbage SFTP packet received (length {size})")
                end = start + 4 + size
                if end > len(inbox):
                    break
                kind = inbox[start + 4]
                num = int.from_bytes(inbox[start + 5 : start + 9], "big")
                replies.append((num, kind, Message(bytes(inbox[start + 9 : end]))))
                start = end
            del inbox[:start]
            if replies:
                return replies

    def drain(self) -> None:
        while self._waiting:
            self.pump()

    def _link(self) -> AbstractContextManager[None]:
        return translated(f"connection to {self.where} lost")


def packed_attrs(attrs: paramiko.SFTPAttributes) -> bytes:
    """``SFTPAttributes._pack`` without a ``Message``: flags, then the fields that are set."""
    if attrs.attr:  # extended attributes: rare, left to paramiko
        msg = Message()
        pack_attrs(attrs, msg)
        return msg.asbytes()
    flags = 0
    fields = []
    if attrs.st_size is not None:
        flags |= attrs.FLAG_SIZE
        fields.append(_INT64.pack(attrs.st_size))
    if attrs.st_uid is not None and attrs.st_gid is not None:
        flags |= attrs.FLAG_UIDGID
        fields.append(struct.pack(">II", attrs.st_uid, attrs.st_gid))
    if attrs.st_mode is not None:
        flags |= attrs.FLAG_PERMISSIONS
        fields.append(_INT.pack(attrs.st_mode))
    if attrs.st_atime is not None and attrs.st_mtime is not None:
        flags |= attrs.FLAG_AMTIME
        fields.append(struct.pack(">II", int(attrs.st_atime), int(attrs.st_mtime)))
    return _INT.pack(flags) + b"".join(fields)


def status_code(kind: int, msg: Message) -> int | None:
    """The code of a STATUS reply, leaving ``msg`` unread; None for any other reply."""
    if kind != CMD_STATUS:
        return None
    code = msg.get_int()
    msg.rewind()
    return code


def status_error(
    kind: int, msg: Message, path: str, request: str = "write"
) -> RemoteFileError | None:
    """None for an OK status; else the reply to ``request`` as the error of ``path``."""
    if kind != CMD_STATUS:
        return RemoteFileError(path, f"unexpected SFTP reply type {kind}")
    code = msg.get_int()
    if code == SFTP_OK:
        return None  # 4 of a file's 5 replies: its message text is not worth decoding
    text = msg.get_text()
    if code == SFTP_NO_SUCH_FILE:
        return RemoteFileMissing(path)
    if code == SFTP_PERMISSION_DENIED:
        return RemoteFileError(path, "permission denied")
    if code == SFTP_FAILURE:
        cause = _FAILURE_CAUSES.get(request, f"the server refused the {request}")
        return RemoteFileError(path, cause)
    return RemoteFileError(path, text or f"SFTP error {code}")


def remote_file(attrs: paramiko.SFTPAttributes) -> RemoteFile:
    """What a stat or a listing entry says of a server file, as the plan compares it."""
    return RemoteFile(
        size=attrs.st_size or 0, mtime_s=int(attrs.st_mtime or 0), mode=attrs.st_mode or 0
    )


def stat_on(wire: Wire, paths: Sequence[str]) -> dict[str, RemoteFile | RemoteFileError | None]:
    """``stat`` of every path in one round trip: what it is, None if missing, else the error.

    On a wire in use: its other requests' replies are handled on the way."""
    found: dict[str, RemoteFile | RemoteFileError | None] = {}

    def on_stat(path: str) -> OnReply:
        def reply(kind: int, msg: Message) -> None:
            if kind == CMD_ATTRS:
                found[path] = remote_file(attrs_from_msg(msg))
                return
            error = status_error(kind, msg, path, "stat")
            missing = error is None or isinstance(error, RemoteFileMissing)
            found[path] = None if missing else error

        return reply

    for path in dict.fromkeys(paths):
        wire.send(CMD_STAT, on_stat(path), path)
    wire.drain()
    return found


def stat_many(wire: Wire, paths: Sequence[str]) -> dict[str, RemoteFile | None]:
    """``stat`` of every path in one round trip; missing → None; any other error is raised."""
    found: dict[str, RemoteFile | None] = {}
    for path, info in stat_on(wire, paths).items():
        if isinstance(info, RemoteFileError):
            raise info
        found[path] = info
    return found
