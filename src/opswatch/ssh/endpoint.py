"""Resolving how to reach a host the way ``ssh`` would: ssh config, keys, known_hosts.

Pure apart from reading the ssh config file: the result is one ``Endpoint`` the adapter dials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import paramiko

from opswatch.config import RemoteConfig

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


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
        # paramiko has no ProxyJump; ``ssh -W`` through the jump host is what OpenSSH does.
        proxy = f"ssh -W {hostname}:{port} {jump}"
    return Endpoint(
        alias=config.host,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=identities,
        known_hosts=known_hosts or _home() / ".ssh" / "known_hosts",
        proxy_command=str(proxy) if proxy and str(proxy).lower() != "none" else None,
        identities_only=str(found.get("identitiesonly", "no")).lower() == "yes",
    )


def default_identities() -> tuple[Path, ...]:
    ssh_dir = _home() / ".ssh"
    return tuple(ssh_dir / name for name in DEFAULT_KEYS if (ssh_dir / name).is_file())


def _local_user() -> str:
    import getpass

    return getpass.getuser()
