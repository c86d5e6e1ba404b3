"""What a local file holds: its sha256, the fact that decides whether it is sent again.

A ``touch`` or a branch switched back and forth changes a file's mtime, not its bytes; the
size and mtime only say when to look, the hash says whether anything changed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO

from opswatch.core.keyblock import KeyScan

CHUNK = 1024 * 1024


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The hex sha256 of the regular file at ``path``; None when it can't be read (then it is
    sent, and the upload reports why it failed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError:
            return None


@dataclass(frozen=True)
class Content:
    sha256: str
    holds_key: bool  # a private key block: the file is refused, wherever it lives


def read_content(handle: BinaryIO) -> Content:
    """The sha256 of what ``handle`` holds, and whether it holds a private key block, in one
    pass (the uploader makes the same check on what it sends, so both refuse the same files)."""
    digest = hashlib.sha256()
    keys = KeyScan()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        keys.feed(chunk)
    return Content(digest.hexdigest(), keys.found)
