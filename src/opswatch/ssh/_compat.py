"""What opswatch borrows from paramiko's and invoke's internals, in one place.

Each borrowing is one function here, and tests/unit/ssh/test_compat_sftp.py (paramiko) and
tests/unit/ssh/test_compat.py (invoke) fail loudly when an upgrade changes what it relies on.

* invoke: paramiko imports it as soon as ``paramiko.config`` is imported, only to run the
  command of an ssh_config ``Match exec`` line; invoke brings PyYAML, unittest.mock and argparse
  along: about 4 MB resident in a daemon that otherwise never touches them. A stand-in module
  takes its place in ``sys.modules`` and imports the real one the first time an attribute is
  read, so a ``Match exec`` line still works.
* paramiko's SFTP client, channel and transport: the wire (``ssh/wire.py``) numbers and frames
  its own requests on the client's channel, packs and reads attributes without a round trip
  through ``SFTPClient``, and sizes its writes to paramiko's packets; commands wait on a
  channel's exit status with a deadline; the connection tunes the transport thread's poll.

paramiko is imported here only for type checking: ``defer_rarely_used`` must run before it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

# -- invoke, loaded on first use ----------------------------------------------------------------

RARELY_USED = ("invoke",)

_loading = threading.Lock()


class _StandIn(types.ModuleType):
    """Answers ``import name``; any attribute read imports the real module and delegates."""

    def __getattr__(self, attr: str) -> object:
        return getattr(_real(self), attr)


def _real(stand_in: _StandIn) -> types.ModuleType:
    name = stand_in.__name__
    with _loading:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
        return importlib.import_module(name)


def defer_rarely_used() -> None:
    """Put stand-ins in place; call before paramiko is imported (a module already imported,
    or not installed, is left alone: paramiko then raises its own ImportError on use)."""
    for name in RARELY_USED:
        if name not in sys.modules and importlib.util.find_spec(name) is not None:
            sys.modules[name] = _StandIn(name)


# -- paramiko's SFTP client, channel and transport ----------------------------------------------


def next_request_number(sftp: paramiko.SFTPClient) -> int:
    """Take an SFTP request number as ``SFTPClient._async_request`` takes one (``request_number``
    under ``_lock``), so the client's own later requests never reuse it."""
    with sftp._lock:  # type: ignore[attr-defined]
        number: int = sftp.request_number
        sftp.request_number = number + 1
    return number


def attrs_from_msg(
    msg: paramiko.Message, filename: str | None = None, longname: str | None = None
) -> paramiko.SFTPAttributes:
    """An ATTRS (or NAME entry) reply as paramiko decodes it: ``SFTPAttributes._from_msg``."""
    import paramiko

    attrs: paramiko.SFTPAttributes = paramiko.SFTPAttributes._from_msg(  # type: ignore[attr-defined]
        msg, filename, longname
    )
    return attrs


def pack_attrs(attrs: paramiko.SFTPAttributes, msg: paramiko.Message) -> None:
    """Append ``attrs`` to ``msg`` as paramiko encodes them: ``SFTPAttributes._pack``."""
    attrs._pack(msg)  # type: ignore[attr-defined]


def packet_payload(channel: paramiko.Channel | None) -> int:
    """The most bytes paramiko puts in one SSH packet of ``channel`` (its ``_send`` caps each
    packet at ``out_max_packet_size - 64``); 0 when the channel does not say."""
    size = getattr(channel, "out_max_packet_size", 0)
    return max(0, size - 64) if isinstance(size, int) else 0


def wait_exit_status(channel: paramiko.Channel, timeout: float) -> bool:
    """Wait at most ``timeout`` seconds for the command's exit status; True once it came.
    paramiko offers only a wait without a deadline (``recv_exit_status``) or none at all."""
    return bool(channel.status_event.wait(timeout))


def set_transport_poll(transport: paramiko.Transport, seconds: float) -> None:
    """How often the transport thread wakes to check for a stop: its socket's read timeout
    (paramiko sets 0.1 s, which costs an idle daemon CPU)."""
    transport.sock.settimeout(seconds)


def remote_cipher(transport: paramiko.Transport) -> str:
    """The cipher the server's packets are encrypted with, for the log."""
    return str(getattr(transport, "remote_cipher", "") or "?")


# -- paramiko's key exchange internals ---------------------------------------------------------
# paramiko knows the curve25519 exchange only by its pre-standard name
# ``curve25519-sha256@libssh.org``; RFC 8731 names the very same exchange ``curve25519-sha256``,
# and some servers (Dropbear builds, appliances, hardened OpenSSH configs) offer only that name.
# Registering the alias needs ``Transport._kex_info``; seeing what a server offered when no
# algorithm matched needs ``Transport._parse_kex_init`` and ``_really_parse_kex_init``.
# tests/unit/ssh/test_server.py fails loudly when an upgrade changes any of them.

RFC_CURVE25519 = "curve25519-sha256"
LIBSSH_CURVE25519 = "curve25519-sha256@libssh.org"


def accept_rfc_curve25519(transport: paramiko.Transport) -> None:
    """Let ``transport`` offer and accept ``curve25519-sha256``, just ahead of the old name."""
    kex_info = dict(type(transport)._kex_info)  # type: ignore[attr-defined]
    if LIBSSH_CURVE25519 not in kex_info:
        return  # this build of paramiko has no curve25519 at all
    kex_info[RFC_CURVE25519] = kex_info[LIBSSH_CURVE25519]
    transport._kex_info = kex_info  # type: ignore[attr-defined]
    options = transport.get_security_options()
    kex = [name for name in options.kex if name != RFC_CURVE25519]
    at = kex.index(LIBSSH_CURVE25519) if LIBSSH_CURVE25519 in kex else 0
    options.kex = tuple([*kex[:at], RFC_CURVE25519, *kex[at:]])


def record_offered_algorithms(transport: paramiko.Transport) -> dict[str, list[str]]:
    """A dict that fills with the server's KEXINIT lists (``kex_algo_list``,
    ``server_encrypt_algo_list`` …) as soon as it arrives, before paramiko judges them."""
    offered: dict[str, list[str]] = {}
    parse = transport._parse_kex_init  # type: ignore[attr-defined]

    def recording(message: paramiko.Message) -> None:
        try:
            offered.update(transport._really_parse_kex_init(message))  # type: ignore[attr-defined]
        finally:
            message.rewind()
        parse(message)

    transport._parse_kex_init = recording  # type: ignore[attr-defined]
    return offered
