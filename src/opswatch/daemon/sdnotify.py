"""systemd's readiness protocol (sd_notify) in the standard library: READY, STATUS, STOPPING.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a datagram socket path, or an
abstract socket name when it starts with ``@``. Outside systemd the variable is unset and every
call does nothing, so the daemon calls these unconditionally.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger("opswatch.sdnotify")

NOTIFY_ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | bytes:
    """``@name`` is an abstract socket (a leading NUL byte); anything else a filesystem path."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def notify(*fields: str) -> bool:
    """Send ``fields`` ("READY=1", "STATUS=…") as one message; True if a manager was told."""
    target = os.environ.get(NOTIFY_ENV)
    if not target or not (target.startswith("/") or target.startswith("@")):
        return False
    message = "\n".join(field.replace("\n", " ") for field in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(socket_address(target))
            sock.sendall(message)
    except OSError as exc:
        # A manager that went away must not take the daemon with it.
        log.debug("sd_notify_failed", socket=target, error=str(exc))
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")
