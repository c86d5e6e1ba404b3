"""The ``opswatch`` command: parse arguments, load the config, call the right module, map errors.

Expected failures print one ``error: …`` line and exit with the error's code (2 for bad config
or usage, 3 when the daemon is not running); anything unexpected prints a traceback, exit 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from opswatch import __version__, logs
from opswatch.cli import control as control_cli
from opswatch.cli import rebuild as rebuild_cli
from opswatch.cli import service
from opswatch.cli.app import App, expected_errors, pass_app
from opswatch.config import find_config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $OPSWATCH_CONFIG, ./opswatch.toml, then the user config dir).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "human", "console", "json"]),
    default="auto",
    show_default=True,
    help="auto: plain lines for a command; for `run`, console on a terminal, else JSON lines.",
)
@click.option(
    "--log-level",
    type=click.Choice(list(logs.LEVELS)),
    help="Default: info for `run`, warning for the other commands.",
)
@click.version_option(__version__, prog_name="opswatch")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, log_format: str, log_level: str | None
) -> None:
    """Keep a server's ops files in step with this repository while you edit them.

    opswatch watches the folders your rules name, uploads each saved file over one SSH
    connection (atomically: never half-written), refuses secrets, and can rebuild the
    compose services a change affects.
    """
    daemon = ctx.invoked_subcommand == "run"
    level = log_level or ("info" if daemon else "warning")
    logs.setup(log_format, level, one_shot=not daemon)
    ctx.obj = App(find_config(config_path), log_format, level)
    if ctx.invoked_subcommand not in OFFLINE_COMMANDS and sys.stdin.isatty():
        _allow_passphrase_prompt()


# Commands that never authenticate; ``run`` above all must never wait for a person.
OFFLINE_COMMANDS = frozenset(
    {"run", "status", "pause", "resume", "flush", "stop", "reload", "init", "service", "demo"}
)


def _allow_passphrase_prompt() -> None:
    """A person at a terminal can unlock an encrypted key that ssh-agent does not hold."""
    import getpass

    from opswatch.ssh.keys import allow_passphrase_prompt

    def ask(path: Path) -> str:
        # getpass reads from the terminal itself, without echo, as ssh does.
        return getpass.getpass(f"Enter passphrase for key '{path}': ")

    allow_passphrase_prompt(ask)


@cli.command()
@pass_app
@expected_errors
def run(app: App) -> None:
    """Run the daemon in the foreground (what systemd and launchd start)."""
    from opswatch.ssh._compat import defer_rarely_used

    defer_rarely_used()  # before paramiko is imported: megabytes a long-lived process never uses
    from opswatch.daemon.run import run_daemon

    sys.exit(run_daemon(app.config, app.paths))


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Overwrite files changed on the server (conflicts).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan or result as JSON.")
@pass_app
@expected_errors
def sync(app: App, paths: tuple[str, ...], dry_run: bool, force: bool, as_json: bool) -> None:
    """Make the remote match the local files the rules select, once.

    With PATHs (files or folders, relative to the current folder, as git takes them), only the
    files under them; a PATH that names nothing the rules select is an error (exit 1).
    """
    from opswatch.cli.sync import run_sync
    from opswatch.core.selection import parse_selection

    only = parse_selection(paths, Path.cwd(), app.config.local_root)
    code = run_sync(app.config, app.paths, dry_run=dry_run, force=force, as_json=as_json, only=only)
    sys.exit(code)


@cli.command()
@click.option("--yes", "-y", is_flag=True, help="Trust the key without asking (for scripts).")
@click.option(
    "--hash/--no-hash",
    "hash_names",
    default=None,
    help="Write the host name hashed, as HashKnownHosts does (default: as the file already is).",
)
@pass_app
@expected_errors
def trust(app: App, yes: bool, hash_names: bool | None) -> None:
    """Show the server's host key fingerprint and, once confirmed, add it to known_hosts."""
    from opswatch.cli.trust import trust as run_trust

    sys.exit(run_trust(app.config, app.paths, yes=yes, hash_names=hash_names))


for _command in (*control_cli.COMMANDS, service.service):
    cli.add_command(_command)
cli.add_command(rebuild_cli.rebuild)


# First run and daily use; these modules import their heavy parts only when a command runs.
from opswatch.cli import daily as daily_cli  # noqa: E402
from opswatch.cli import demo as demo_cli  # noqa: E402
from opswatch.cli import history as history_cli  # noqa: E402
from opswatch.cli import undo as undo_cli  # noqa: E402

for _command in (
    daily_cli.init,
    daily_cli.verify,
    demo_cli.demo,
    history_cli.history,
    undo_cli.undo,
):
    cli.add_command(_command)


# The group's options, accepted after the subcommand too (``opswatch status --config X``).
GLOBAL_OPTIONS = frozenset({"--config", "-c", "--log-format", "--log-level"})


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """``args`` with the global options moved before the subcommand, where click reads them."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":  # what follows is operands, never options
            rest.extend(args[index:])
            break
        if arg in GLOBAL_OPTIONS:
            front.extend(args[index : index + 2])
            index += 1
        elif arg.split("=", 1)[0] in GLOBAL_OPTIONS or (arg.startswith("-c") and arg[2:3] != "-"):
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: bad usage is one ``error:`` line and exit 2, like a bad config."""
    args = hoist_global_options(sys.argv[1:] if argv is None else argv)
    try:
        cli.main(args, prog_name="opswatch", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
