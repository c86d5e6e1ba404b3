"""What an upload is, shared by the remote (which offers it) and the uploader (which does it).

A leaf of ``ssh/``: the job and its outcome, the temp name a file is written under before its
rename, the chunk size of a write, and the private-key check every chunk passes before it leaves.
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass
from pathlib import Path

from opswatch.errors import RemoteError

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
