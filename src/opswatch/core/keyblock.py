"""Whether bytes hold a private key block: refused wherever the file lives, whatever its name.

Pure: the uploader checks each chunk before it is sent; ``verify`` and ``sync --dry-run`` check
the local file the same way, so that what would be refused is shown as refused beforehand.
"""

from __future__ import annotations

KEY_REFUSAL = "holds a private key block"  # what a file refused for its content reads
TAIL = 256  # bytes of the previous chunk kept: a marker cut by a chunk boundary, even in UTF-16

PRIVATE_KEY_MARKERS = (b"-----BEGIN ", (b" PRIVATE KEY-----", b" PRIVATE KEY BLOCK-----"))
PUTTY_MARKER = b"PuTTY-User-Key-File-"


def holds_private_key(data: bytes) -> bool:
    """True when ``data`` holds a private key block: PEM and OpenSSH (``-----BEGIN … PRIVATE
    KEY-----``), PGP (``… PRIVATE KEY BLOCK-----``) or PuTTY, in UTF-8 or UTF-16 (whose
    ASCII letters are the same bytes with NULs between them)."""
    if _holds_key_text(data):
        return True
    return b"\0" in data and _holds_key_text(data.replace(b"\0", b""))


def _holds_key_text(data: bytes) -> bool:
    if PUTTY_MARKER in data:
        return True
    start = data.find(PRIVATE_KEY_MARKERS[0])
    while start != -1:
        line_end = data.find(b"\n", start)
        line = data[start : line_end if line_end != -1 else len(data)]
        if any(end in line for end in PRIVATE_KEY_MARKERS[1]):
            return True
        start = data.find(PRIVATE_KEY_MARKERS[0], start + 1)
    return False


class KeyScan:
    """Fed a file chunk by chunk: whether any chunk, or a marker across two, held a key block."""

    def __init__(self) -> None:
        self.tail = b""
        self.found = False

    def feed(self, chunk: bytes) -> bool:
        if not self.found and holds_private_key(self.tail + chunk):
            self.found = True
        self.tail = chunk[-TAIL:]
        return self.found
