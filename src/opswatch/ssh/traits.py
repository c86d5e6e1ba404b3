"""What the uploader may assume of the server's SFTP: how many handles may be open at once.

Why: every file in flight holds a handle on the server for part of its life. OpenSSH's
sftp-server says how many it allows in its answer to ``limits@openssh.com``; that bounds the
files in flight. A server that does not answer (or is not OpenSSH, whose answer we know how to
read) gets a modest number of files in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from paramiko.message import Message
from paramiko.sftp import CMD_EXTENDED_REPLY

LIMITS_REQUEST = "limits@openssh.com"
SAFE_FILES = 64  # files in flight while the server's handle limit is unknown
# Never more, whatever the server allows: 1 024 small files per two round trips fill a 50 Mbit/s
# link at 40 ms, and each file in flight costs a few KiB of the daemon's memory.
MAX_FILES = 1024
HANDLE_RESERVE = 16  # handles left for the server's own use and for our other requests


@dataclass(frozen=True)
class ServerTraits:
    max_files: int  # files in flight at once (each holds a handle for part of its life)


UNKNOWN = ServerTraits(max_files=SAFE_FILES)


def is_openssh(banner: str) -> bool:
    """``SSH-2.0-OpenSSH_9.2p1 Debian-2`` and the like (the transport's ``remote_version``)."""
    return banner.startswith("SSH-2.0-OpenSSH_")


def from_limits(banner: str, kind: int, msg: Message) -> ServerTraits:
    """The traits given the reply to ``limits@openssh.com``; any refusal means: unknown."""
    if kind != CMD_EXTENDED_REPLY or not is_openssh(banner):
        return UNKNOWN
    msg.get_int64()  # max packet length
    msg.get_int64()  # max read length
    msg.get_int64()  # max write length
    handles = msg.get_int64()  # 0: the server does not say
    if handles == 0:
        return ServerTraits(max_files=SAFE_FILES)
    files = min(MAX_FILES, max(1, handles - HANDLE_RESERVE))
    return ServerTraits(max_files=files)
