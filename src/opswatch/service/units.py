"""Installing opswatch as a login service: a systemd user unit or a launchd agent, and back.

The unit files are rendered from ``templates/`` with the absolute path of the installed
``opswatch`` (or ``python -m opswatch`` when it was not started through its script) and the
absolute path of the config, so the service runs the same opswatch, on the same config, as the
shell that installed it.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import platformdirs

from opswatch.config import Config
from opswatch.errors import UsageError

PLATFORMS = ("systemd", "launchd")
LAUNCHD_LABEL = "com.opswatch.agent"
SERVICE_PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class ServiceFile:
    """A rendered unit, where it goes, and the commands that enable or disable it."""

    platform: str
    name: str  # unit name or launchd label
    path: Path
    text: str
    enable: tuple[tuple[str, ...], ...]
    disable: tuple[tuple[str, ...], ...]
    log: Path | None = None


def opswatch_program() -> list[str]:
    """How to start this very opswatch: its script if that is what runs, else ``python -m``."""
    script = Path(sys.argv[0])
    if script.name == "opswatch" and script.is_file():
        return [os.path.abspath(script)]  # keep a pipx-style symlink: it survives upgrades
    found = shutil.which("opswatch")
    if found and Path(sys.executable).parent == Path(found).parent:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "opswatch"]


def _template(name: str) -> str:
    return resources.files("opswatch.service").joinpath("templates", name).read_text()


def _check_plain(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise UsageError(f"cannot put {value!r} in a service file: it holds a line break")
    return value


def systemd_word(value: str) -> str:
    """One ExecStart argument: quoted, with systemd's specifier and variable expansion escaped."""
    escaped = _check_plain(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def systemd_text(value: str) -> str:
    """A value systemd expands specifiers in (Description=, WorkingDirectory=)."""
    return _check_plain(value).replace("%", "%%")


def render_systemd(program: list[str], config: Config, unit: str) -> str:
    argv = [*program, "--config", str(config.source), "--log-format", "json", "run"]
    status = shlex.join([*program, "--config", str(config.source), "status"])
    return Template(_template("opswatch.service")).substitute(
        unit=unit,
        status_command=_check_plain(status),
        root=systemd_text(str(config.local_root)),
        host=systemd_text(config.remote.host),
        exec_start=" ".join(systemd_word(arg) for arg in argv),
        workdir=systemd_text(str(config.source.parent)),
    )


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """Replace placeholder strings; a list value is spliced into the array that holds it."""
    if isinstance(node, dict):
        return {key: _fill(item, values) for key, item in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            filled = _fill(item, values)
            out.extend(filled if isinstance(item, str) and isinstance(filled, list) else [filled])
        return out
    if isinstance(node, str) and node in values:
        return values[node]
    return node


def render_launchd(program: list[str], config: Config, label: str, log: Path) -> str:
    template = plistlib.loads(_template("com.opswatch.agent.plist").encode())
    values = {
        "@LABEL@": label,
        "@PROGRAM@": program,
        "@CONFIG@": str(config.source),
        "@WORKDIR@": str(config.source.parent),
        "@LOG@": str(log),
        "@PATH@": SERVICE_PATH,
    }
    return plistlib.dumps(_fill(template, values), sort_keys=False).decode()


def default_platform() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def plan_service(
    config: Config | None, platform: str, name: str | None, program: list[str] | None = None
) -> ServiceFile:
    """The unit for ``config`` (None: only where it lives and how to disable it)."""
    program = program or opswatch_program()
    if platform == "systemd":
        unit = f"opswatch-{name}.service" if name else "opswatch.service"
        folder = Path(platformdirs.user_config_dir("systemd", appauthor=False)) / "user"
        ctl = ("systemctl", "--user")
        return ServiceFile(
            platform,
            unit,
            folder / unit,
            render_systemd(program, config, unit) if config else "",
            enable=((*ctl, "daemon-reload"), (*ctl, "enable", "--now", unit)),
            disable=((*ctl, "disable", "--now", unit),),
        )
    label = f"{LAUNCHD_LABEL}.{name}" if name else LAUNCHD_LABEL
    log = Path.home() / "Library" / "Logs" / "opswatch" / f"{name or 'opswatch'}.log"
    domain = f"gui/{os.getuid()}"
    path = Path.home() / "Library" / "LaunchAgents" / f"{label}.plist"
    return ServiceFile(
        platform,
        label,
        path,
        render_launchd(program, config, label, log) if config else "",
        enable=(("launchctl", "bootstrap", domain, str(path)),),
        disable=(("launchctl", "bootout", f"{domain}/{label}"),),
        log=log,
    )


def manager_lacks_agent(service: ServiceFile) -> bool:
    if service.platform != "systemd" or not os.environ.get("SSH_AUTH_SOCK"):
        return False
    if shutil.which("systemctl") is None:
        return False
    done = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "SSH_AUTH_SOCK=" not in done.stdout


def user_bus_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why ``systemctl --user`` can't reach a user manager here; None when it can.

    ``systemctl --user`` talks to the user manager over the bus at ``$DBUS_SESSION_BUS_ADDRESS``
    or ``$XDG_RUNTIME_DIR/bus``. Containers and SSH logins of a user without lingering have
    neither, and a unit written there would never start.
    """
    env = dict(os.environ) if environ is None else environ
    address = env.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        bus = Path(address.removeprefix("unix:path=").split(",")[0])
    elif env.get("XDG_RUNTIME_DIR"):
        bus = Path(env["XDG_RUNTIME_DIR"]) / "bus"
    else:
        bus = None
    if bus is not None and bus.exists():
        return None
    where = f"no user bus at {bus}" if bus else "XDG_RUNTIME_DIR is not set"
    user = env.get("USER") or env.get("LOGNAME") or "$USER"
    return (
        f"no systemd user manager is reachable ({where}: a container, or a login without "
        f"lingering); run `loginctl enable-linger {user}` and log in again, or run "
        "`opswatch run` under your own supervisor (tmux, a system unit, supervisord)"
    )
