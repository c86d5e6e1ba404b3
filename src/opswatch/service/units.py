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
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import click
import platformdirs

from opswatch.cli.app import App, expected_errors, pass_app
from opswatch.config import Config
from opswatch.errors import OpswatchError, UsageError

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
            "ssh-agent can't be used; see `opswatch service` in docs/background.md"
        )
    return None


def _run(commands: tuple[tuple[str, ...], ...], *, check: bool = True) -> None:
    for command in commands:
        click.echo(f"$ {shlex.join(command)}", err=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise OpswatchError(
                f"{command[0]} not found; run by hand: {shlex.join(command)}"
            ) from None
        if done.returncode != 0 and check:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise OpswatchError(
                f"`{shlex.join(command)}` failed: {detail[-1] if detail else done.returncode}"
            )


def _manager_lacks_agent(service: ServiceFile) -> bool:
    if service.platform != "systemd" or not os.environ.get("SSH_AUTH_SOCK"):
        return False
    if shutil.which("systemctl") is None:
        return False
    done = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, text=True, check=False
    )
    return done.returncode == 0 and "SSH_AUTH_SOCK=" not in done.stdout


@click.group()
def service() -> None:
    """Start opswatch at login: a systemd user unit or a launchd agent."""


platform_option = click.option(
    "--platform",
    type=click.Choice(PLATFORMS),
    default=default_platform,
    show_default="this system's",
    help="Which service manager to write for.",
)
name_option = click.option(
    "--name", help="Install under another name, to run a second config side by side."
)


@service.command()
@click.option("--dry-run", "-n", is_flag=True, help="Print the unit and commands; write nothing.")
@click.option("--no-enable", is_flag=True, help="Write the unit; print the enable command only.")
@platform_option
@name_option
@pass_app
@expected_errors
def install(app: App, dry_run: bool, no_enable: bool, platform: str, name: str | None) -> None:
    """Write the unit for this config and enable it."""
    unit = plan_service(app.config, platform, name)
    if dry_run:
        click.echo(unit.text, nl=False)
        click.echo(f"# would write {unit.path}", err=True)
        for command in unit.enable:
            click.echo(f"# would run: {shlex.join(command)}", err=True)
        return
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    if unit.log is not None:
        unit.log.parent.mkdir(parents=True, exist_ok=True)
    unit.path.write_text(unit.text)
    click.echo(f"wrote {unit.path}")
    if no_enable:
        click.echo("enable it with:")
        for command in unit.enable:
            click.echo(f"  {shlex.join(command)}")
    else:
        if platform == "launchd":
            _run(unit.disable, check=False)  # an older copy may be loaded: replace it
        _run(unit.enable)
        click.echo(f"{unit.name} enabled; `opswatch status` shows what it does")
    if _manager_lacks_agent(unit):
        click.echo(
            "note: the systemd user manager has no SSH_AUTH_SOCK; if your key lives in "
            "ssh-agent, run `systemctl --user import-environment SSH_AUTH_SOCK`",
            err=True,
        )


@service.command()
@click.option("--dry-run", "-n", is_flag=True, help="Print what would be done; change nothing.")
@platform_option
@name_option
@expected_errors
def uninstall(dry_run: bool, platform: str, name: str | None) -> None:
    """Disable the unit and remove it."""
    unit = plan_service(None, platform, name)
    commands = unit.disable
    reload = (("systemctl", "--user", "daemon-reload"),) if platform == "systemd" else ()
    if dry_run:
        for command in (*commands, *reload):
            click.echo(f"would run: {shlex.join(command)}")
        click.echo(f"would remove {unit.path}")
        return
    manager = "systemctl" if platform == "systemd" else "launchctl"
    if shutil.which(manager):
        _run(commands, check=False)  # not loaded is fine: the goal is "not running"
    unit.path.unlink(missing_ok=True)
    if reload and shutil.which(manager):
        _run(reload, check=False)
    click.echo(f"removed {unit.path}")
