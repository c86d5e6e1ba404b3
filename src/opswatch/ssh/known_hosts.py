"""known_hosts as OpenSSH reads and writes it: the lines naming a host, and a new key added.

known_hosts is read and written here as OpenSSH does: ``host`` on port 22, else ``[host]:port``,
plain or hashed (``|1|salt|hmac``) as the file already is. A changed key replaces the old one
of the same type for that host; keys of other types stay, as OpenSSH keeps one per type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from opswatch.paths import write_atomically
from opswatch.ssh.connect import HostKey

HASH_MAGIC = "|1|"


@dataclass(frozen=True)
class KnownEntry:
    """One line of known_hosts that names our host: its index, key type and key."""

    line: int
    key_type: str
    base64: str


def hashed_name(name: str, salt: bytes | None = None) -> str:
    """``|1|salt|hmac`` as ``ssh-keygen -H`` writes it."""
    salt = salt if salt is not None else secrets.token_bytes(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"{HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def names_host(patterns: str, name: str) -> bool:
    """Whether a known_hosts host field names ``name`` exactly (wildcards are left alone)."""
    if patterns.startswith(HASH_MAGIC):
        try:
            salt = base64.b64decode(patterns[len(HASH_MAGIC) :].split("|")[0])
        except ValueError:
            return False
        return hmac.compare_digest(hashed_name(name, salt), patterns)
    return name in patterns.split(",")


def known_entries(lines: list[str], name: str) -> list[KnownEntry]:
    found = []
    for number, line in enumerate(lines):
        fields = line.split()
        # "@cert-authority" and "@revoked" lines are the user's policy: never touched here.
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        if names_host(fields[0], name):
            found.append(KnownEntry(number, fields[1], fields[2]))
    return found


def new_lines(lines: list[str], name: str, key: HostKey, *, hashed: bool) -> list[str]:
    """known_hosts without the stale key of ``name`` of ``key``'s type, ``key`` at the end.

    Lines of other key types for the host stay: OpenSSH keeps one key per type.
    """
    stale = {e.line for e in known_entries(lines, name) if e.key_type == key.key_type}
    kept = [line for number, line in enumerate(lines) if number not in stale]
    host = hashed_name(name) if hashed else name
    return [*kept, f"{host} {key.key_type} {key.base64}"]


def write_known_hosts(path: Path, lines: list[str]) -> None:
    """Replace the file at once: a crash never leaves half a known_hosts behind."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    write_atomically(path, "".join(line + "\n" for line in lines), mode=mode)
