"""Resolving how to reach a host the way ``ssh`` would: ssh config, keys, known_hosts.

Pure apart from reading the ssh config file: the result is one ``Endpoint`` the adapter dials.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import paramiko

from opswatch.config import RemoteConfig

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
JUMP_CONNECT_TIMEOUT_S = 10  # so an unreachable jump host fails as that, before our own deadline


@dataclass(frozen=True)
class Endpoint:
    alias: str  # what the user wrote in remote.host
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]
    known_hosts: Path
    proxy_command: str | None = None
    identities_only: bool = False
    proxy_jump: str | None = None  # as the ssh config says it, for messages

    @property
    def known_hosts_name(self) -> str:
        """The name ``ssh`` files a host key under: ``host`` on port 22, else ``[host]:port``."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _ssh_lookup(config: RemoteConfig) -> dict[str, object]:
    path = config.ssh_config or _home() / ".ssh" / "config"
    if not path.is_file():
        return {}
    ssh_config = paramiko.SSHConfig.from_path(str(path))
    return dict(ssh_config.lookup(config.host))


def resolve_endpoint(config: RemoteConfig) -> Endpoint:
    """``[remote]`` overrides win over the ssh config, which wins over ssh's defaults."""
    found = _ssh_lookup(config)
    hostname = str(found.get("hostname") or config.host)
    port = config.port or int(str(found.get("port") or 22))
    user = config.user or str(found.get("user") or _local_user())
    if config.identity_file is not None:
        identities: tuple[Path, ...] = (config.identity_file,)
    else:
        listed = found.get("identityfile") or []
        assert isinstance(listed, list)
        identities = tuple(Path(os.path.expanduser(str(p))) for p in listed)
    known_hosts = config.known_hosts
    if known_hosts is None:
        listed_known = str(found.get("userknownhostsfile") or "").split()
        known_hosts = Path(os.path.expanduser(listed_known[0])) if listed_known else None
    proxy = found.get("proxycommand")
    jump = found.get("proxyjump")
    if proxy is None and jump:
        proxy = jump_command(str(jump), hostname, port, config.ssh_config)
    return Endpoint(
        alias=config.host,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=identities,
        known_hosts=known_hosts or _home() / ".ssh" / "known_hosts",
        proxy_command=str(proxy) if proxy and str(proxy).lower() != "none" else None,
        identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=str(jump) if proxy is not None and jump else None,
    )


def jump_command(jump: str, hostname: str, port: int, ssh_config: Path | None) -> str:
    """The ``ssh -W`` command OpenSSH runs for ``ProxyJump``, as one shell command line.

    paramiko has no ProxyJump. An IPv6 address needs brackets in ``-W`` (``[::1]:22``); a
    config file given to opswatch is given to ssh too, as ``ssh -F`` passes it on; of a chain
    ``a,b`` the last hop is dialled through the ones before it (``-J a b``).
    """
    target = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
    hops = [hop.strip() for hop in jump.split(",") if hop.strip()]
    argv = ["ssh", "-o", f"ConnectTimeout={JUMP_CONNECT_TIMEOUT_S}"]
    if ssh_config is not None:
        argv += ["-F", str(ssh_config)]
    if len(hops) > 1:
        argv += ["-J", ",".join(hops[:-1])]
    argv += ["-W", target, _ssh_destination(hops[-1])]
    return " ".join(shlex.quote(arg) for arg in argv)


def _ssh_destination(hop: str) -> str:
    """A ProxyJump hop (``[user@]host[:port]``) as ``ssh`` takes a destination: a port needs
    the ``ssh://`` form, which also keeps an IPv6 address in its brackets."""
    if hop.startswith("ssh://"):
        return hop
    user, _, host_port = hop.rpartition("@")
    host, has_port = host_port, False
    if host_port.startswith("["):
        has_port = "]:" in host_port
    elif host_port.count(":") == 1:
        has_port = True
    if not has_port:
        return hop
    return f"ssh://{user + '@' if user else ''}{host}"


def default_identities() -> tuple[Path, ...]:
    ssh_dir = _home() / ".ssh"
    return tuple(ssh_dir / name for name in DEFAULT_KEYS if (ssh_dir / name).is_file())


def _local_user() -> str:
    import getpass

    return getpass.getuser()
