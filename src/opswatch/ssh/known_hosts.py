"""``opswatch trust``: show the server's host key as ``ssh`` does and, if confirmed, add it.

known_hosts is read and written here as OpenSSH does: ``host`` on port 22, else ``[host]:port``,
plain or hashed (``|1|salt|hmac``) as the file already is. A changed key replaces the old one
for that host, as ``ssh-keygen -R`` followed by the first connection of ``ssh`` would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import click

from opswatch.config import Config
from opswatch.daemon.control import ControlClient
from opswatch.errors import NotRunningError, OpswatchError
from opswatch.paths import StatePaths
from opswatch.ssh.connect import HostKey
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.remote import SshRemote

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
    """known_hosts without the stale keys of ``name``, with ``key`` added at the end."""
    stale = {e.line for e in known_entries(lines, name)}
    kept = [line for number, line in enumerate(lines) if number not in stale]
    host = hashed_name(name) if hashed else name
    return [*kept, f"{host} {key.key_type} {key.base64}"]


def write_known_hosts(path: Path, lines: list[str]) -> None:
    """Replace the file at once: a crash never leaves half a known_hosts behind."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    temp = path.with_name(f".{path.name}.opswatch-{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write("".join(line + "\n" for line in lines))
    os.replace(temp, path)


def trust(config: Config, paths: StatePaths, *, yes: bool, hash_names: bool | None) -> int:
    endpoint = resolve_endpoint(config.remote)
    name = endpoint.known_hosts_name
    key = SshRemote(endpoint).server_host_key()
    path = endpoint.known_hosts
    lines = path.read_text().splitlines() if path.is_file() else []
    known = known_entries(lines, name)
    if any((e.key_type, e.base64) == (key.key_type, key.base64) for e in known):
        click.echo(f"{key.short_type} key of {name} ({key.fingerprint}) is already in {path}")
        _ask_reconnect(config, paths)
        return 0
    if known:
        click.echo(
            f"WARNING: the host key of {name} in {path} differs from the one the server "
            "offers now. If the server was not rebuilt, someone may be intercepting the "
            "connection.",
            err=True,
        )
    else:
        click.echo(f"The authenticity of host '{name} ({endpoint.hostname})' can't be established.")
    click.echo(f"{key.short_type} key fingerprint is {key.fingerprint}.")
    if not yes and not click.confirm(
        "Replace the old key with this one?" if known else "Trust this key?", default=False
    ):
        raise OpswatchError(f"the host key of {name} was not trusted")
    hashed = (
        hash_names if hash_names is not None else any(line.startswith(HASH_MAGIC) for line in lines)
    )
    write_known_hosts(path, new_lines(lines, name, key, hashed=hashed))
    click.echo(f"Added the {key.short_type} key of {name} to {path}.")
    _ask_reconnect(config, paths)
    return 0


def _ask_reconnect(config: Config, paths: StatePaths) -> None:
    """A running daemon stopped at the old key: make it connect again now, not in a minute."""
    try:
        ControlClient(paths, config.source).request("reconnect")
    except NotRunningError:
        return
    except OpswatchError as exc:
        click.echo(
            f"note: the daemon did not take the reconnect request ({exc}); "
            "it retries on its own within a minute",
            err=True,
        )
        return
    click.echo("The running daemon is reconnecting.")
