"""``opswatch service install`` / ``uninstall``: write and enable the login service, or undo it."""

from __future__ import annotations

import shlex
import shutil
import subprocess

import click

from opswatch.cli.app import App, expected_errors, pass_app
from opswatch.errors import OpswatchError
from opswatch.service.units import (
    PLATFORMS,
    default_platform,
    manager_lacks_agent,
    plan_service,
    user_bus_problem,
)


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
    # Before anything is written: a unit no user manager will ever start helps nobody.
    no_bus = user_bus_problem() if platform == "systemd" else None
    if dry_run:
        click.echo(unit.text, nl=False)
        click.echo(f"# would write {unit.path}", err=True)
        for command in unit.enable:
            click.echo(f"# would run: {shlex.join(command)}", err=True)
        if no_bus is not None:
            click.echo(f"# but it would fail: {no_bus}", err=True)
        return
    if no_bus is not None and not no_enable:
        raise OpswatchError(no_bus)
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    if unit.log is not None:
        unit.log.parent.mkdir(parents=True, exist_ok=True)
    unit.path.write_text(unit.text)
    click.echo(f"wrote {unit.path}")
    if no_bus is not None:
        click.echo(f"note: {no_bus}", err=True)
    if no_enable:
        click.echo("enable it with:")
        for command in unit.enable:
            click.echo(f"  {shlex.join(command)}")
    else:
        if platform == "launchd":
            _run(unit.disable, check=False)  # an older copy may be loaded: replace it
        _run(unit.enable)
        click.echo(f"{unit.name} enabled; `opswatch status` shows what it does")
    if manager_lacks_agent(unit):
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
