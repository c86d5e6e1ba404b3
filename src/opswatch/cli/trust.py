"""``opswatch trust``: show the server's host key as ``ssh`` does and, if confirmed, add it."""

from __future__ import annotations

import click

from opswatch.config import Config
from opswatch.daemon.control import ControlClient
from opswatch.errors import NotRunningError, OpswatchError
from opswatch.paths import StatePaths
from opswatch.ssh.connect import HostKey
from opswatch.ssh.endpoint import resolve_endpoint
from opswatch.ssh.known_hosts import HASH_MAGIC, known_entries, new_lines, write_known_hosts
from opswatch.ssh.remote import SshRemote


def trust(config: Config, paths: StatePaths, *, yes: bool, hash_names: bool | None) -> int:
    endpoint = resolve_endpoint(config.remote)
    name = endpoint.known_hosts_name
    key = SshRemote(endpoint).server_host_key()
    path = endpoint.known_hosts
    lines = path.read_text().splitlines() if path.is_file() else []
    known = known_entries(lines, name)
    # Per key type, as OpenSSH compares: another type already known for the host (an ECDSA
    # line from ssh-keyscan, say) is not a changed key; the new type goes next to it.
    same_type = [e for e in known if e.key_type == key.key_type]
    if any(e.base64 == key.base64 for e in same_type):
        click.echo(f"{key.short_type} key of {name} ({key.fingerprint}) is already in {path}")
        _ask_reconnect(config, paths)
        return 0
    if same_type:
        click.echo(
            f"WARNING: the {key.short_type} host key of {name} in {path} differs from the one "
            "the server offers now. If the server was not rebuilt, someone may be "
            "intercepting the connection.",
            err=True,
        )
    else:
        click.echo(f"The authenticity of host '{name} ({endpoint.hostname})' can't be established.")
        if known:
            others = ", ".join(sorted({_short(e.key_type) for e in known}))
            click.echo(f"Keys of another type are already known for this host: {others}.")
    click.echo(f"{key.short_type} key fingerprint is {key.fingerprint}.")
    if not yes and not click.confirm(
        "Replace the old key with this one?" if same_type else "Trust this key?", default=False
    ):
        raise OpswatchError(f"the host key of {name} was not trusted")
    hashed = (
        hash_names if hash_names is not None else any(line.startswith(HASH_MAGIC) for line in lines)
    )
    write_known_hosts(path, new_lines(lines, name, key, hashed=hashed))
    click.echo(f"Added the {key.short_type} key of {name} to {path}.")
    _ask_reconnect(config, paths)
    return 0


def _short(key_type: str) -> str:
    return HostKey(key_type, "", "").short_type


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
