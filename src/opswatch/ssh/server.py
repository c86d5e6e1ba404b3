"""What the server offers: algorithms, SFTP extensions, what its replies taught, its shell.

Not every server is Debian's OpenSSH. asyncssh, paramiko-based servers and some appliances lack
``posix-rename@openssh.com`` or ``fsetstat``; an account may allow SFTP only (``ForceCommand
internal-sftp``); a BusyBox or macOS userland has no ``setsid -w`` and no ``sha256sum -z``. The
uploader and the command runner ask here instead of finding out through a confusing failure.

When no algorithm is in common, the server's KEXINIT lists say what it wanted. The SFTP
version reply lists the server's extensions: recorded at connect, free. What a shell
offers is found by the first command itself (``commands.wrap`` reports it), not by a probe of
its own: a login shell that takes a minute to start would make any probe deadline guess wrong.
"""

from __future__ import annotations

import shlex
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko

POSIX_RENAME = "posix-rename@openssh.com"
SFTP_ONLY = "this account allows SFTP only; rebuilds need a shell"
NO_DEADLINE = (
    "the server has no `setsid -w` (util-linux) and its commands do not run in a process "
    "group of their own, so a command past its deadline could not be stopped; "
    "install util-linux there"
)


@dataclass(frozen=True)
class SftpInfo:
    """The server's SFTP version reply: protocol version and advertised extensions."""

    version: int
    extensions: tuple[tuple[str, bytes], ...] = ()

    def offers(self, name: str) -> bool:
        return any(key == name for key, _ in self.extensions)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.extensions)


def parse_version_packet(packet: bytes) -> SftpInfo:
    """``uint32 length, byte SSH_FXP_VERSION, uint32 version, (string name, string data)*``.

    A malformed tail is ignored: extensions are only hints, the requests themselves are checked.
    """
    if len(packet) < 9:
        return SftpInfo(version=0)
    (version,) = struct.unpack(">I", packet[5:9])
    extensions: list[tuple[str, bytes]] = []
    rest = packet[9:]
    while len(rest) >= 4:
        (size,) = struct.unpack(">I", rest[:4])
        name, rest = rest[4 : 4 + size], rest[4 + size :]
        if len(rest) < 4 or len(name) < size:
            break
        (size,) = struct.unpack(">I", rest[:4])
        data, rest = rest[4 : 4 + size], rest[4 + size :]
        extensions.append((name.decode("utf-8", "replace"), data))
    return SftpInfo(version=version, extensions=tuple(extensions))


@dataclass
class SftpSupport:
    """What this connection's SFTP server turned out to do, learned from its replies.

    ``posix_rename`` starts as advertised: True, or None (not advertised, so tried once: a
    paramiko-based server implements it without saying so) until a reply says unsupported.
    """

    posix_rename: bool | None
    fsetstat: bool = True

    @classmethod
    def from_info(cls, info: SftpInfo) -> SftpSupport:
        return cls(posix_rename=True if info.offers(POSIX_RENAME) else None)


NO_ATOMIC_RENAME = (
    f"not replaced: the server lacks {POSIX_RENAME} and allows no shell for `mv -f`, "
    "and opswatch never overwrites a file in place"
)
MOVED_MARK = "opswatch-moved:"


def move_command(moves: list[tuple[str, str]]) -> str:
    """``mv -f`` of each temp onto its target (rename(2) in one folder: atomic), each success
    reported as ``opswatch-moved:N``. A folder at the target is refused, as posix-rename
    refuses it, instead of receiving the temp inside it."""
    steps = [
        f"if [ -d {shlex.quote(target)} ]; then :; "
        f"elif mv -f -- {shlex.quote(temp)} {shlex.quote(target)}; then echo {MOVED_MARK}{i}; fi"
        for i, (temp, target) in enumerate(moves)
    ]
    return "; ".join([*steps, "exit 0"])


def parse_moved(lines: list[str], count: int) -> list[bool]:
    done = {line.strip()[len(MOVED_MARK) :] for line in lines if line.startswith(MOVED_MARK)}
    return [str(i) in done for i in range(count)]


# What a failed negotiation compares, per KEXINIT list: what it is, the list, our own choice.
_ALGORITHMS: tuple[tuple[str, str, Callable[[paramiko.SecurityOptions], Sequence[str]]], ...] = (
    ("key exchange", "kex_algo_list", lambda options: options.kex),
    ("host key type", "server_key_algo_list", lambda options: options.key_types),
    ("cipher", "server_encrypt_algo_list", lambda options: options.ciphers),
    ("MAC", "server_mac_algo_list", lambda options: options.digests),
)


def negotiation_mismatch(
    offered: dict[str, list[str]], options: paramiko.SecurityOptions
) -> str | None:
    """Which algorithm list had nothing in common, what the server offered and what we support."""
    for what, server_list, choice in _ALGORITHMS:
        theirs = [a for a in offered.get(server_list, []) if not _is_marker(a)]
        ours = list(choice(options))
        if theirs and not set(theirs) & set(ours):
            return (
                f"no {what} in common: the server offers {', '.join(theirs)}; "
                f"opswatch supports {', '.join(ours)}"
            )
    return None


def _is_marker(name: str) -> bool:
    """KEXINIT entries that name an extension, not an algorithm (RFC 8308, OpenSSH strict kex)."""
    return name.startswith(("ext-info-", "kex-strict-"))
