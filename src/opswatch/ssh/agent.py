"""Whether the ssh-agent named by ``SSH_AUTH_SOCK`` answers at all."""

from __future__ import annotations

import os
import socket


def agent_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why the ssh-agent at ``SSH_AUTH_SOCK`` can't be used; None if it answers or is unset."""
    env = os.environ if environ is None else environ
    path = env.get("SSH_AUTH_SOCK")
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            probe.connect(path)
    except OSError as exc:
        return (
            f"SSH_AUTH_SOCK={path} does not answer ({exc.strerror or exc}): keys held by "
            "ssh-agent can't be used (a service started before the agent? "
            "`systemctl --user import-environment SSH_AUTH_SOCK`, then restart it)"
        )
    return None
