"""What an upload is, shared by the remote (which offers it) and the uploader (which does it).

A leaf of ``ssh/``: the job and its outcome, the temp name a file is written under before its
rename (within 255 bytes), the mode and mtime it lands with, the chunk size of a write, and the
private-key check every chunk passes before it leaves.
"""

from __future__ import annotations

import hashlib
import posixpath
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog

from opswatch.errors import RemoteError
from opswatch.model import Refusal, sftp_seconds

log = structlog.get_logger("opswatch.remote")

TEMP_MARK = ".opswatch-"
CHUNK = 255 * 1024  # OpenSSH's sftp-server accepts writes up to 256 KiB minus headers


@dataclass(frozen=True)
class UploadJob:
    source: Path  # absolute local path
    remote: str  # absolute remote path
    mode: int
    mtime_ns: int
    # The guarded open of the local side (``LocalTree.open``); it raises ``LocalRefusedError``
    # for what must not be sent. Without one, ``source`` is opened as it is (tests only).
    opener: Callable[[], BinaryIO] | None = None

    def open(self) -> BinaryIO:
        return self.opener() if self.opener is not None else open(self.source, "rb")


@dataclass(frozen=True)
class UploadOutcome:
    job: UploadJob
    sha256: str = ""
    size: int = 0
    error: RemoteError | None = None
    refused: str | None = None  # content that must not leave, e.g. a private key block
    refusal: Refusal | None = None  # why, typed (set together with ``refused``)

    @property
    def ok(self) -> bool:
        return self.error is None and self.refused is None


NAME_MAX = 255  # bytes: the longest file name OpenSSH's servers' file systems take
TEMP_MODE = 0o600  # while it is written, a temp file is readable by its owner only
SPECIAL_BITS = 0o7000  # setuid, setgid, sticky: never carried to the server


def temp_name(target: str) -> str:
    """A fresh temp name next to ``target``, within ``NAME_MAX`` bytes however long the name:
    a long name is cut (on a character boundary) and a hash of it keeps it distinct."""
    folder, name = posixpath.split(target)
    suffix = f"{TEMP_MARK}{secrets.token_hex(4)}.tmp"
    room = NAME_MAX - 1 - len(suffix)
    raw = name.encode("utf-8", errors="surrogateescape")
    if len(raw) > room:
        digest = hashlib.sha256(raw).hexdigest()[:8]
        raw = raw[: room - len(digest) - 1].decode("utf-8", errors="ignore").encode() + b"~"
        name = raw.decode() + digest
    return posixpath.join(folder, f".{name}{suffix}")


def final_mode(mode: int, path: str) -> int:
    """The mode a file lands with: the local one without setuid, setgid and sticky bits."""
    kept = mode & 0o777
    if mode & SPECIAL_BITS:
        log.warning("mode_stripped", path=path, mode=oct(mode), landed=oct(kept))
    return kept


def sftp_mtime(mtime_ns: int, path: str) -> int:
    """Whole seconds SFTP v3 can carry: before 1970 or after 2106 is clamped (and logged)."""
    seconds = mtime_ns // 1_000_000_000
    clamped = sftp_seconds(mtime_ns)
    if clamped != seconds:
        log.warning("mtime_clamped", path=path, mtime=seconds, sent=clamped)
    return clamped


def is_temp_name(name: str) -> bool:
    return TEMP_MARK in name and name.endswith(".tmp") and name.startswith(".")
